"""Teachers shipped with donna: the default run's teacher, trained once with the default recipe.

DONNA starts from a trained teacher (the paper's EfficientNet-B0 comes pretrained on ImageNet). The embedded
default data set has no published weights, so its teacher (the reference member of the default space, trained
with ``TeacherConfig``'s default recipe and seed) is trained once and shipped here as ``teacher-<fp>.pt``, next
to ``teacher-<fp>.json``: the recipe, its val accuracy, how long it trained and on what, and the file's SHA-256.
``<fp>`` is the teacher fingerprint of ``donna.teacher`` (data description, architecture, recipe, seed), so a
run uses a shipped file only when it would have trained exactly that teacher itself; ``--set
teacher.pretrained=false`` trains it instead. ``python -m donna.pretrained.ship`` re-makes the files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from latency.cache import file_sha256

HERE = Path(__file__).resolve().parent


def paths(fp: str) -> tuple[Path, Path]:
    """The weights file and its record for teacher fingerprint ``fp``."""
    return HERE / f"teacher-{fp}.pt", HERE / f"teacher-{fp}.json"


def find(fp: str, data_name: str) -> tuple[Path, dict[str, Any]] | None:
    """The shipped teacher with fingerprint ``fp`` and its record, or None when there is none for it.

    Raises:
        ValueError: the weights file does not match its record (a damaged install).
    """
    weights, record = paths(fp)
    if not (weights.is_file() and record.is_file()):
        return None
    info = json.loads(record.read_text())
    if data_name == "glyphs":  # the data description names the generator, not its version
        from donna.glyphs import GLYPH_FORMAT

        if info.get("glyph_format") != GLYPH_FORMAT:
            return None
    if file_sha256(weights) != info.get("sha256"):
        raise ValueError(f"the shipped teacher {weights} does not match its record {record.name} (SHA-256); "
                         "reinstall donna-nas, or pass --set teacher.pretrained=false to train the teacher here")
    return weights, info


def ships_recipe(train_settings: dict[str, Any]) -> bool:
    """Whether a shipped teacher was trained with these settings (for plans; ``find`` decides)."""
    return any(json.loads(record.read_text()).get("recipe") == train_settings
               for record in HERE.glob("teacher-*.json"))
