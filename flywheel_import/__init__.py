"""flywheel-import: bulk import of tabular exports into the Flywheel events API.

The heavy parts (polars, the pipeline) load on first use, so ``python -m
flywheel_import.sandbox`` starts without them.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from . import allocator
from .errors import ApiAbort, ConfigError, ErrorCode, FlywheelImportError, InputError, UsageError

allocator.configure()  # before anything loads polars

if TYPE_CHECKING:
    from .config import Config, load_config
    from .logs import Progress
    from .pipeline import run_import, run_import_async, validate
    from .report import Report

__version__ = "0.1.0"

__all__ = [
    "ApiAbort",
    "Config",
    "ConfigError",
    "ErrorCode",
    "FlywheelImportError",
    "InputError",
    "Progress",
    "Report",
    "UsageError",
    "__version__",
    "load_config",
    "run_import",
    "run_import_async",
    "validate",
]

_LAZY = {
    "Config": "config",
    "load_config": "config",
    "run_import": "pipeline",
    "run_import_async": "pipeline",
    "validate": "pipeline",
    "Report": "report",
    "Progress": "logs",
}

# A library prints nothing unless its caller configures logging (the command does).
logging.getLogger(__name__).addHandler(logging.NullHandler())


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'flywheel_import' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f".{module}", __name__), name)
