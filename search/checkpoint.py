"""Search checkpoints: one ``.npz`` file of plain arrays plus JSON metadata, replaced atomically.

Nothing here unpickles: a checkpoint holds numbers and a JSON string only, so loading one from a
run folder never executes code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from common.fileio import atomic_path

CHECKPOINT_NAME = "search_state.npz"
CHECKPOINT_VERSION = 1


def checkpoint_path(checkpoint_dir: str | Path) -> Path:
    """The checkpoint file inside ``checkpoint_dir``."""
    return Path(checkpoint_dir) / CHECKPOINT_NAME


def save_checkpoint(checkpoint_dir: str | Path, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> Path:
    """Writes ``meta`` (JSON-ready) and ``arrays`` (numeric) in one atomic replace.

    Args:
        checkpoint_dir: folder of the checkpoint; created when missing.
        meta: JSON-serialisable metadata (settings, generation, RNG state, history).
        arrays: numeric arrays (population, archive); object arrays are refused.

    Returns:
        The path written.
    """
    for name, value in arrays.items():
        if np.asarray(value).dtype == object:
            raise ValueError(f"checkpoint array {name!r} has dtype object; only numeric arrays are stored")
    text = json.dumps({"version": CHECKPOINT_VERSION, **meta})
    path = checkpoint_path(checkpoint_dir)
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, _meta=np.array(text), **arrays)
    return path


def load_checkpoint(checkpoint_dir: str | Path) -> tuple[dict[str, Any], dict[str, np.ndarray]] | None:
    """Reads a checkpoint written by ``save_checkpoint``; ``None`` when there is none yet."""
    path = checkpoint_path(checkpoint_dir)
    if not path.exists():
        return None
    with np.load(path, allow_pickle=False) as data:
        arrays = {name: data[name] for name in data.files if name != "_meta"}
        meta = json.loads(str(data["_meta"]))
    if meta.get("version") != CHECKPOINT_VERSION:
        raise ValueError(f"{path}: checkpoint version {meta.get('version')!r}, this code reads "
                         f"{CHECKPOINT_VERSION}; delete the folder to start the search again")
    return meta, arrays


def check_compatible(path: str | Path, saved: dict[str, Any], expected: dict[str, Any]) -> None:
    """Refuses to resume when the checkpoint was written by a different search.

    Raises:
        ValueError: naming the first field that differs and how to proceed.
    """
    for name, want in expected.items():
        have = saved.get(name)
        if json.loads(json.dumps(have)) != json.loads(json.dumps(want)):
            raise ValueError(
                f"checkpoint {checkpoint_path(path)} belongs to another search: {name} is {have!r} there "
                f"but {want!r} now. Use the same settings to resume, or another (empty) checkpoint folder "
                "to start afresh."
            )
