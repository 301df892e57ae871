"""flywheel-import: bulk import of tabular exports into the Flywheel events API."""

from __future__ import annotations

from .config import Config, load_config
from .errors import ApiAbort, ConfigError, ErrorCode, FlywheelImportError, InputError, UsageError
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
    "Report",
    "UsageError",
    "__version__",
    "load_config",
    "run_import",
    "run_import_async",
    "validate",
]
