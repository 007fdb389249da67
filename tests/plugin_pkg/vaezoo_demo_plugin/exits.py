"""A plugin module that calls sys.exit on import: vaezoo must warn and keep working."""

import sys

sys.exit(3)
