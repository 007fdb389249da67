"""`python -m vaezoo ...` is the `vaezoo` command."""

import sys

from vaezoo.cli import main

sys.exit(main())
