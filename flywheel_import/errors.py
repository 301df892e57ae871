"""One exception root, and the stable per-row error codes.

A failed *run* is an exception (subclass of :class:`FlywheelImportError`, each with the exit
code the CLI returns). A bad *row* is a value: an :class:`ErrorCode` on that row, written to the
rejects file. Codes are a public interface: never rename one.
"""

from __future__ import annotations

from enum import StrEnum


class FlywheelImportError(Exception):
    """Root of every error this package raises on purpose.

    ``report`` is the run's :class:`~.report.Report` when the error stopped a run that had
    started (what was done, and what is still to do), else None.
    """

    exit_code = 2
    report: object | None = None


class ConfigError(FlywheelImportError):
    """The mapping file is unreadable or invalid; the message names the file and key."""


class InputError(FlywheelImportError):
    """An input file is missing, unreadable or does not fit the mapping."""


class UsageError(FlywheelImportError):
    """The command line or the environment is wrong (missing API key, insecure URL, ...)."""


class ApiAbort(FlywheelImportError):
    """The run cannot go on: stop at once, send nothing more.

    The API refused the key (401/403), the URL or proxy is wrong (3xx, 404, 405, 407), or an
    endpoint that never answered cannot be trusted or reached (see ``reachability``).
    """

    exit_code = 3


class ErrorCode(StrEnum):
    """Per-row error codes, in the fixed order a row's codes are reported.

    The API may add its own codes (for example ``VALIDATION_ERROR`` from a 400 body); those are
    written to the rejects file as the API sent them, and ``HTTP_<status>`` when it sent none.
    """

    MALFORMED_ROW = "MALFORMED_ROW"
    """The record could not be parsed (wrong field count, broken quoting, invalid text)."""
    MISSING_EVENT_NAME = "MISSING_EVENT_NAME"
    """The mapped event name is empty."""
    INVALID_EVENT_NAME = "INVALID_EVENT_NAME"
    """The event name does not match ``^[a-zA-Z0-9_-]+$``."""
    MISSING_TIMESTAMP = "MISSING_TIMESTAMP"
    """A timestamp is mapped but empty: the server would silently stamp it "now"."""
    INVALID_TIMESTAMP = "INVALID_TIMESTAMP"
    """The timestamp cannot be parsed, or is ambiguous/non-existent in the timezone."""
    MISSING_IDENTITY = "MISSING_IDENTITY"
    """Neither user_id nor anonymous_id is set (check can be turned off)."""
    IDENTIFY_WITHOUT_USER_ID = "IDENTIFY_WITHOUT_USER_ID"
    """``identify`` is true but there is no user_id to identify."""
    INVALID_IDENTIFY = "INVALID_IDENTIFY"
    """The ``identify`` column holds something other than a boolean."""
    DUPLICATE_EVENT_ID = "DUPLICATE_EVENT_ID"
    """The event_id was already seen earlier in this run; the first is kept."""
    INVALID_PROPERTY = "INVALID_PROPERTY"
    """A property value does not fit its declared type, or is infinite."""
    PAYLOAD_TOO_LARGE = "PAYLOAD_TOO_LARGE"
    """The encoded request body is larger than ``api.max_body_bytes``."""
    RETRIES_EXHAUSTED = "RETRIES_EXHAUSTED"
    """Every attempt failed with a retryable status or a network error."""


#: The order in which a row's own (pre-send) codes are reported.
CODE_ORDER: tuple[ErrorCode, ...] = tuple(ErrorCode)
