"""Input discovery: paths, globs and directories -> an ordered list of typed source files.

The order is deterministic (sorted) so that row identity (file + record number) and the
"first one wins" rule for duplicate event ids do not depend on the file system.
"""

from __future__ import annotations

import glob
import gzip
import io
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

from .errors import InputError

Format = Literal["csv", "tsv", "parquet", "ndjson"]
Compression = Literal["none", "gzip", "zstd"]

_FORMATS: dict[str, Format] = {
    ".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".parquet": "parquet", ".pq": "parquet",
    ".ndjson": "ndjson", ".jsonl": "ndjson",
}
_COMPRESSIONS: dict[str, Compression] = {".gz": "gzip", ".gzip": "gzip", ".zst": "zstd",
                                         ".zstd": "zstd"}


@dataclass(frozen=True, slots=True)
class SourceFile:
    """One input file, with its format and compression decided once."""

    path: Path
    format: Format
    compression: Compression

    @property
    def name(self) -> str:
        return str(self.path)

    def size(self) -> int:
        return self.path.stat().st_size


def detect(path: Path, forced: str = "auto") -> SourceFile:
    """Format and compression from the file name; ``forced`` overrides the format."""
    suffixes = [s.lower() for s in path.suffixes]
    compression: Compression = "none"
    if suffixes and suffixes[-1] in _COMPRESSIONS:
        compression = _COMPRESSIONS[suffixes.pop()]
    if forced != "auto":
        return SourceFile(path, forced, compression)  # type: ignore[arg-type]
    fmt = _FORMATS.get(suffixes[-1]) if suffixes else None
    if fmt is None:
        raise InputError(
            f"{path}: cannot tell the format from the file name; "
            "use .csv, .tsv, .parquet, .ndjson or .jsonl (optionally .gz/.zst), "
            "or set source.format"
        )
    return SourceFile(path, fmt, compression)


def is_supported(path: Path) -> bool:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in _COMPRESSIONS:
        suffixes.pop()
    return bool(suffixes) and suffixes[-1] in _FORMATS


def expand(patterns: Iterable[str | Path], *, base: Path | None = None,
           forced: str = "auto") -> list[SourceFile]:
    """Expand files, globs and directories (recursively) into source files, in sorted order.

    A pattern that matches nothing is an error: a silently empty import is worse than none.
    Hidden files are left out of directories (and of globs, as the shell does). The run's
    own outputs are not left out: an output that is also an input is refused by the caller,
    since skipping it silently would then replace a file the user may mean to read.
    """
    out: list[SourceFile] = []
    seen: set[Path] = set()
    for pattern in patterns:
        raw = Path(pattern).expanduser()
        p = raw if raw.is_absolute() or base is None else base / raw
        if any(ch in str(pattern) for ch in "*?["):
            matches = sorted(Path(m) for m in glob.glob(str(p), recursive=True))
            files = [m for m in matches if m.is_file()]
            if not files:
                raise InputError(f"{pattern}: no files match this pattern")
        elif p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.is_file() and is_supported(f)
                           and not any(part.startswith(".") for part in f.relative_to(p).parts))
            if not files:
                raise InputError(f"{p}: directory holds no .csv/.tsv/.parquet/.ndjson files")
        elif p.is_file():
            files = [p]
        else:
            raise InputError(f"{p}: no such file or directory")
        for f in files:
            key = f.resolve()
            if key not in seen:
                seen.add(key)
                out.append(detect(f, forced))
    if not out:
        raise InputError("no input files: give INPUT arguments or set source.path in the config")
    return out


def open_stream(src: SourceFile) -> BinaryIO:
    """Open for sequential binary reading, decompressing on the fly (memory stays bounded)."""
    try:
        if src.compression == "gzip":
            return gzip.open(src.path, "rb")  # type: ignore[return-value]
        if src.compression == "zstd":
            import zstandard

            raw = open(src.path, "rb")  # noqa: SIM115 - closed with the reader
            reader = zstandard.ZstdDecompressor().stream_reader(raw, closefd=True)
            return io.BufferedReader(reader, buffer_size=1 << 20)
        return open(src.path, "rb")
    except OSError as e:
        raise InputError(f"{src.path}: cannot open: {e.strerror or e}") from None
