"""Content-addressed cache of prepared artifacts (ONNX files, .ort files, TensorRT engines)."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

from common.fileio import atomic_path, atomic_write_json

CACHE_ENV = "LATENCY_CACHE_DIR"


def default_cache_dir() -> Path:
    """``$LATENCY_CACHE_DIR`` or ``~/.cache/donna-nas/latency``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else Path.home() / ".cache" / "donna-nas" / "latency"


def artifact_key(**parts) -> str:
    """A stable 24-hex key of the JSON form of ``parts`` (model hash, runtime version, device, ...)."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:24]


def file_sha256(path: Path | str) -> str:
    """SHA-256 of a file's bytes, hex."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class ArtifactCache:
    """Artifacts stored as ``root/<kind>/<key><suffix>`` with a ``.json`` sidecar naming what went in.

    An artifact is made in a temporary file and renamed into place only when its maker returns,
    so a failed or killed maker never leaves a half-written artifact behind.
    """

    def __init__(self, root: Path | str | None = None):
        self.root = Path(root) if root is not None else default_cache_dir()

    def path(self, kind: str, key: str, suffix: str) -> Path:
        """Where the artifact of ``kind`` and ``key`` lives (it may not exist yet)."""
        return self.root / kind / f"{key}{suffix}"

    def get_or_make(self, kind: str, parts: dict, suffix: str, make: Callable[[Path], None]) -> Path:
        """Return the cached artifact for ``parts``, calling ``make(tmp_path)`` to create it if missing.

        Args:
            kind: sub-folder, e.g. ``"onnx"``.
            parts: everything the artifact depends on; hashed into the key and saved in the sidecar.
            suffix: file suffix, e.g. ``".onnx"``.
            make: writes the artifact to the temporary path it is given.
        """
        key = artifact_key(kind=kind, **parts)
        final = self.path(kind, key, suffix)
        if final.exists():
            return final
        with atomic_path(final, suffix=suffix) as tmp:
            make(tmp)
        atomic_write_json(final.with_suffix(final.suffix + ".json"),
                          {"kind": kind, "parts": parts, "sha256": file_sha256(final)})
        return final
