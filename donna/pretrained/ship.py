"""Trains the default run's teacher and ships it into ``donna/pretrained`` (``python -m donna.pretrained.ship``).

The teacher is the one ``donna run`` would train with every default (and ``--seed``): its fingerprint names the
file. A ``--workdir`` that already holds that teacher (``teacher.pt`` + ``teacher.json``) is shipped as is.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
from pathlib import Path

import torch

from blocks.spaces import get_space
from common.fileio import atomic_write_bytes, atomic_write_json
from donna.config import DonnaConfig, TeacherConfig
from donna.data import load_data
from donna.pretrained import paths
from donna.runfolder import RunFolder, read_json
from donna.teacher import get_teacher
from latency.cache import file_sha256


def ship(workdir: Path, seed: int = 0, progress: bool = True) -> Path:
    """Trains (or reuses) the default teacher in ``workdir`` and copies it into the package; returns its path."""
    cfg = DonnaConfig(seed=seed)
    cfg.teacher = dataclasses.replace(cfg.teacher, pretrained=False)
    base = get_space(cfg.space)
    data = load_data(cfg.data, base.input_size, base.in_channels)
    get_teacher(cfg.teacher, base.with_classes(data.num_classes), data, workdir, progress)
    return ship_run(workdir, cfg.teacher, cfg.data.name, f"python -m donna.pretrained.ship --seed {seed}")


def ship_run(workdir: Path, teacher: TeacherConfig, data_name: str, command: str) -> Path:
    """Copies the teacher trained in ``workdir`` with ``teacher``'s recipe into the package, with its record."""
    info = read_json(RunFolder(workdir).teacher_json)
    if info is None or info.get("kind") != "trained" or info.get("pretrained"):
        raise SystemExit(f"{workdir} holds no teacher trained there; ship one trained with pretrained=false")
    source = RunFolder(workdir).teacher_pt
    ckpt = torch.load(source, map_location="cpu", weights_only=True)
    weights, record = paths(info["fingerprint"])
    atomic_write_bytes(weights, source.read_bytes())
    from donna.glyphs import GLYPH_FORMAT

    atomic_write_json(record, {
        "fingerprint": info["fingerprint"], "sha256": file_sha256(weights), "val_accuracy": info["val_accuracy"],
        "data": info["data"], "glyph_format": GLYPH_FORMAT if data_name == "glyphs" else None,
        "recipe": teacher.train_settings(), "train_seconds": round(float(ckpt["train_seconds"]), 1),
        "trained_on": f"{_cpu_name()}, {torch.get_num_threads()} torch threads",
        "torch": torch.__version__, "command": command})
    return weights


def _cpu_name() -> str:
    """The CPU's model name where Linux says it, else the platform's machine type."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m donna.pretrained.ship", description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("runs/ship-teacher"), help="where it trains")
    parser.add_argument("--seed", type=int, default=0, help="the run seed whose default teacher to ship")
    args = parser.parse_args(argv)
    weights = ship(args.workdir, args.seed)
    record = json.loads(weights.with_suffix(".json").read_text())
    print(f"shipped {weights} ({weights.stat().st_size / 1e6:.1f} MB): val accuracy {record['val_accuracy']:.4f}")


if __name__ == "__main__":
    main(sys.argv[1:])
