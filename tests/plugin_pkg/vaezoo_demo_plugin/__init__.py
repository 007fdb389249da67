"""Demo vaezoo plugin (tests only)."""
