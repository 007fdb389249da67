"""A plugin module that fails to import: vaezoo must warn and keep working."""

raise ImportError("this demo plugin is broken on purpose")
