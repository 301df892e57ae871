"""The first rows of an input, read by the importer's own readers (any format, compression
or store), so that what ``init`` infers is what ``validate`` will read."""

from __future__ import annotations

import polars as pl

from ..config import CsvOptions
from ..errors import InputError
from ..inputs import SourceFile, expand
from ..sources import ROW, flatten, read_batches

SAMPLE_ROWS = 10_000


def find_input(pattern: str) -> SourceFile:
    """The file to sample: the first one a path, glob, folder or URL names."""
    return expand([pattern])[0]


def read_sample(src: SourceFile, rows: int = SAMPLE_ROWS) -> pl.DataFrame:
    """At most ``rows`` parsed rows (malformed records left out), nested objects flattened to
    ``parent.child`` columns as the run sees them."""
    frames: list[pl.DataFrame] = []
    got = 0
    batches = read_batches(src, CsvOptions(), rows)
    try:
        for batch in batches:
            frames.append(batch.frame.drop(ROW))
            got += batch.frame.height
            if got >= rows:
                break
    finally:
        batches.close()  # type: ignore[attr-defined]  # a generator: stops its reader thread
    if not frames:
        raise InputError(f"{src.name}: holds no rows to infer a mapping from")
    frame = pl.concat(frames, how="diagonal_relaxed").head(rows)
    if src.format == "ndjson":
        frame = flatten(frame, src.name)
    if frame.height == 0:
        raise InputError(f"{src.name}: holds no rows to infer a mapping from")
    return frame
