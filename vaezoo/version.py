"""vaezoo's version (a module of its own: the CLI's parser reads it without importing TensorFlow)."""

__version__ = "0.1.0"
