"""The run folder's small shared file helpers: atomic JSON, the merged ``config.json``, fingerprints."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

from common.fileio import atomic_write_text


def write_json(path: str | Path, data: Any) -> Path:
    """Writes ``data`` as indented JSON to ``path`` atomically."""
    return atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def read_json(path: str | Path) -> Any | None:
    """The JSON content of ``path``, or ``None`` when the file does not exist."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err}); delete it to rebuild this stage") from None


def fingerprint(data: Any) -> str:
    """A short stable hash of JSON-able ``data`` (names the inputs a stage's outputs came from)."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def save_config(workdir: str | Path, section: str, config: Any) -> Path:
    """Merges one stage's resolved config (a dataclass or dict) into ``workdir/config.json``."""
    path = Path(workdir) / "config.json"
    merged = read_json(path) or {}
    merged[section] = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config)
    return write_json(path, merged)


class RunFolder:
    """The paths of the DONNA stages inside one run folder (see DESIGN.md, "The run folder")."""

    def __init__(self, workdir: str | Path) -> None:
        self.root = Path(workdir)

    @property
    def library(self) -> Path:
        """Block library: BKD weights per slot, checkpoints, recalibrated BatchNorm statistics."""
        return self.root / "library"

    def slot_weights(self, slot: int) -> Path:
        """Final BKD weights of one slot."""
        return self.library / f"slot{slot}.pt"

    def slot_manifest(self, slot: int) -> Path:
        """What the slot's weights are (fingerprint, training history); written last, marks the slot done."""
        return self.library / f"slot{slot}.json"

    def slot_checkpoint(self, slot: int) -> Path:
        """Per-epoch BKD checkpoint of one slot (removed once the slot is done)."""
        return self.library / f"slot{slot}.ckpt.pt"

    def slot_bn(self, slot: int) -> Path:
        """BatchNorm statistics of every option of one slot, recalibrated while scoring."""
        return self.library / f"bn_slot{slot}.pt"

    def slot_scores(self, slot: int) -> Path:
        """NSR rows of one slot (a scoring job's result; merged into ``nsr.csv``)."""
        return self.library / f"nsr_slot{slot}.json"

    @property
    def nsr_csv(self) -> Path:
        """NSR of every (slot, option) on the val split."""
        return self.root / "nsr.csv"
