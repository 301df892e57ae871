"""``python -m flywheel_import.sandbox``: the sandbox without the importer's CLI."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
