"""polars' allocator set to one arena, before polars loads.

polars allocates with jemalloc and reads ``_RJEM_MALLOC_CONF`` when it is imported, adding it
to its own settings. By default jemalloc keeps four arenas per core and spreads threads over
them; the importer's threads (reader, examiners, writer) then free into arenas the others do
not allocate from, and the peak grows by what sits freed in each. One arena, measured on the
2M-row dry run (``benchmarks/bench_validate.py``), peak RSS: Parquet 290-305 MB to 263-265,
CSV 436-455 to 424-426, NDJSON 292-295 to 255-271; time unchanged (the threads' caches take
most allocations without the arena's lock).

A choice already in the environment wins. A program that imported polars before this
package keeps polars' defaults (the variable is read once). The variable stays set for child
processes, so the shards of ``--processes`` get the same arena.
"""

from __future__ import annotations

import os
import sys

_VARIABLE = "_RJEM_MALLOC_CONF"
_ONE_ARENA = "narenas:1"


def configure(environ: dict[str, str] | os._Environ[str] = os.environ) -> None:
    """Ask for one arena, unless polars is loaded already or arenas are chosen."""
    if "polars" in sys.modules:
        return
    current = environ.get(_VARIABLE, "")
    if "narenas" in current:
        return
    environ[_VARIABLE] = f"{current},{_ONE_ARENA}" if current else _ONE_ARENA
