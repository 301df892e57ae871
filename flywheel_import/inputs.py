"""Input discovery: paths, globs, directories and object URLs -> ordered, typed source files.

The order is deterministic (sorted) so that row identity (file + record number) and the
"first one wins" rule for duplicate event ids do not depend on the file system. Object-store
URLs (``s3://``, ``gs://``, ``az://``...) follow the same rules through :mod:`.cloud`, whose
library is imported only when one is given.
"""

from __future__ import annotations

import glob
import gzip
import io
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Literal

from . import cloud
from .cloud import CloudObject, is_url
from .errors import InputError

Format = Literal["csv", "tsv", "parquet", "ndjson"]
Compression = Literal["none", "gzip", "zstd"]

_FORMATS: dict[str, Format] = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".ndjson": "ndjson",
    ".jsonl": "ndjson",
}
_COMPRESSIONS: dict[str, Compression] = {
    ".gz": "gzip",
    ".gzip": "gzip",
    ".zst": "zstd",
    ".zstd": "zstd",
}


@dataclass(frozen=True, slots=True)
class SourceFile:
    """One input file, with its format and compression decided once.

    A local file has a ``path``; an object in a store has ``obj`` instead (and no path: what
    needs a file on disk must ask).
    """

    path: Path | None
    format: Format
    compression: Compression
    obj: CloudObject | None = None

    @property
    def name(self) -> str:
        """How the file is shown (``_source`` in rejects): the path, or the object's URL."""
        return self.obj.url if self.obj is not None else str(self.path)

    def size(self) -> int:
        if self.obj is not None:
            return self.obj.size
        assert self.path is not None
        return self.path.stat().st_size

    def fingerprint(self) -> dict[str, str | int]:
        """What identifies this version of the file: path, size and mtime_ns for a local file;
        URL, ETag, size and last-modified time for an object."""
        if self.obj is not None:
            return self.obj.fingerprint()
        assert self.path is not None
        st = self.path.stat()
        return {"path": str(self.path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def detect(path: Path, forced: str = "auto") -> SourceFile:
    """Format and compression from the file name; ``forced`` overrides the format."""
    fmt, compression = _kind(path.suffixes, str(path), forced)
    return SourceFile(path, fmt, compression)


def detect_object(obj: CloudObject, forced: str = "auto") -> SourceFile:
    """As :func:`detect`, from the object's key."""
    fmt, compression = _kind(PurePosixPath(obj.key).suffixes, obj.url, forced)
    return SourceFile(None, fmt, compression, obj)


def _kind(suffixes: list[str], shown: str, forced: str) -> tuple[Format, Compression]:
    suffixes = [s.lower() for s in suffixes]
    compression: Compression = "none"
    if suffixes and suffixes[-1] in _COMPRESSIONS:
        compression = _COMPRESSIONS[suffixes.pop()]
    if forced != "auto":
        return forced, compression  # type: ignore[return-value]
    fmt = _FORMATS.get(suffixes[-1]) if suffixes else None
    if fmt is None:
        raise InputError(
            f"{shown}: cannot tell the format from the file name; "
            "use .csv, .tsv, .parquet, .ndjson or .jsonl (optionally .gz/.zst), "
            "or set source.format"
        )
    return fmt, compression


def is_supported(path: Path | PurePosixPath) -> bool:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in _COMPRESSIONS:
        suffixes.pop()
    return bool(suffixes) and suffixes[-1] in _FORMATS


def _supported_key(key: str) -> bool:
    return is_supported(PurePosixPath(key))


def expand(
    patterns: Iterable[str | Path], *, base: Path | None = None, forced: str = "auto"
) -> list[SourceFile]:
    """Expand files, globs and directories (recursively) into source files, in sorted order.

    A pattern that matches nothing is an error: a silently empty import is worse than none.
    Hidden files are left out of directories (and of globs, as the shell does). The run's
    own outputs are not left out: an output that is also an input is refused by the caller,
    since skipping it silently would then replace a file the user may mean to read.
    """
    out: list[SourceFile] = []
    seen: set[Path | str] = set()
    for pattern in patterns:
        if isinstance(pattern, str) and is_url(pattern):
            for obj in cloud.expand_url(pattern, wanted=_supported_key):
                if obj.url not in seen:
                    seen.add(obj.url)
                    out.append(detect_object(obj, forced))
            continue
        raw = Path(pattern).expanduser()
        p = raw if raw.is_absolute() or base is None else base / raw
        if any(ch in str(pattern) for ch in "*?["):
            matches = sorted(Path(m) for m in glob.glob(str(p), recursive=True))
            files = [m for m in matches if m.is_file()]
            if not files:
                raise InputError(f"{pattern}: no files match this pattern")
        elif p.is_dir():
            files = sorted(
                f
                for f in p.rglob("*")
                if f.is_file()
                and is_supported(f)
                and not any(part.startswith(".") for part in f.relative_to(p).parts)
            )
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
    if src.obj is not None:
        return _decompressed(src, cloud.open_sequential(src.obj))
    assert src.path is not None
    try:
        if src.compression == "gzip":
            return gzip.open(src.path, "rb")  # type: ignore[return-value]
        if src.compression == "zstd":
            raw = open(src.path, "rb")  # noqa: SIM115 - closed with the reader
            return _decompressed(src, raw)
        return open(src.path, "rb")
    except OSError as e:
        raise InputError(f"{src.path}: cannot open: {e.strerror or e}") from None


def _decompressed(src: SourceFile, raw: BinaryIO) -> BinaryIO:
    """``raw`` through the file's decompressor; closing the result closes ``raw``."""
    if src.compression == "gzip":
        return _ClosingGzip(fileobj=raw)  # type: ignore[return-value]
    if src.compression == "zstd":
        import zstandard

        reader = zstandard.ZstdDecompressor().stream_reader(raw, closefd=True)
        return io.BufferedReader(reader, buffer_size=1 << 20)
    return raw


class _ClosingGzip(gzip.GzipFile):
    """A GzipFile that closes the stream it was given (``gzip.open`` only closes its own)."""

    def __init__(self, fileobj: BinaryIO) -> None:
        super().__init__(fileobj=fileobj, mode="rb")
        self._inner = fileobj

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._inner.close()


def open_random(src: SourceFile) -> Path | BinaryIO:
    """Something Parquet can seek in: the local path, or an object read by ranges."""
    if src.obj is not None:
        return cloud.open_random(src.obj)
    assert src.path is not None
    return src.path
