"""``flywheel-import init``: a sample of an export -> a commented mapping file.

``sample`` reads the first rows with the importer's readers, ``presets`` knows other tools'
export layouts, ``infer`` guesses each mapping field (pure), ``render`` writes the YAML (pure).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageError
from ..inputs import SourceFile
from .infer import Inference, infer
from .presets import PRESETS, Preset, detect_preset
from .render import SCHEMA_FILE, render
from .sample import SAMPLE_ROWS, find_input, read_sample

__all__ = ["PRESETS", "SAMPLE_ROWS", "SCHEMA_FILE", "Drafted", "draft_mapping"]


@dataclass(frozen=True, slots=True)
class Drafted:
    text: str
    inference: Inference
    #: The preset recognised from the columns when none was asked for.
    detected: Preset | None


def draft_mapping(
    input: str, *, preset: str | None = None, output: Path | None = None, rows: int = SAMPLE_ROWS
) -> Drafted:
    """The mapping text for ``input``; ``output`` (None: stdout) anchors ``source.path``."""
    chosen: Preset | None = None
    if preset is not None:
        chosen = PRESETS.get(preset)
        if chosen is None:
            raise UsageError(f"unknown preset {preset!r}; known: {', '.join(PRESETS)}")
    src = find_input(input)
    frame = read_sample(src, rows)
    detected = None
    if chosen is None:
        detected = chosen = detect_preset(frame.columns)
    is_text = src.format in ("csv", "tsv")
    inference = infer(frame, is_text=is_text, preset=chosen)
    text = render(
        inference, source_path=_relative(src, output), source_name=src.name, is_text=is_text
    )
    return Drafted(text, inference, detected)


def _relative(src: SourceFile, output: Path | None) -> str:
    """The input as the mapping file should name it: relative to the file's folder."""
    if src.path is None:
        return src.name
    base = (output.parent if output is not None else Path()).resolve()
    try:
        return Path(os.path.relpath(src.path.resolve(), base)).as_posix()
    except ValueError:  # another drive
        return str(src.path.resolve())
