"""``python -m flywheel_import``."""

from .cli import main

raise SystemExit(main())
