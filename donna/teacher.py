"""The teacher: a torchvision model with a weights file, a checkpoint of ours, or an architecture trained here.

By default the space's reference architecture (its largest options) is trained on the data set and cached in
the run folder as ``teacher.pt`` (arch + weights) and ``teacher.json`` (what it is, its val accuracy). Every
teacher is cut into stem / block slots / head aligned with the space (``blocks.teachers.cut_teacher``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from blocks import Arch, SearchSpace, build_model, resolve_arch
from blocks.teachers import TORCHVISION_CUTTERS, TeacherParts, cut_teacher, torchvision_teacher
from common.device import torch_device, torch_threads
from common.fileio import atomic_save
from donna.assemble import evaluate
from donna.config import TeacherConfig
from donna.data import DataSplits
from donna.runfolder import RunFolder, fingerprint, read_json, save_config, write_json
from donna.train import TrainConfig, train

TEACHER_FORMAT = "donna-teacher-v1"


def get_teacher(cfg: TeacherConfig, space: SearchSpace, data: DataSplits, workdir: str | Path,
                progress: bool = True) -> TeacherParts:
    """The teacher cut for ``space``, trained and cached in ``workdir`` when needed.

    Args:
        cfg: which teacher (``cfg.source``: None = the space's reference; a torchvision name with
            ``cfg.weights``; a ``.pt`` checkpoint of ours; a preset, architecture string or IR JSON file).
        space: the search space (its class count is set to the data set's).
        data: the data splits (trains the teacher, measures its val accuracy).
        workdir: the run folder; ``teacher.json`` records the teacher and its accuracy.
        progress: show tqdm progress bars.

    Returns:
        The teacher's ``TeacherParts`` in eval mode on the chosen device.

    Raises:
        ValueError: an unreadable or unfitting teacher file, or a run folder made with another teacher.
    """
    with torch_threads(cfg.threads):
        return _get_teacher(cfg, space, data, Path(workdir), progress)


def _get_teacher(cfg: TeacherConfig, space: SearchSpace, data: DataSplits, workdir: Path,
                 progress: bool) -> TeacherParts:
    device = torch_device(cfg.train_device)
    space = space.with_classes(data.num_classes)
    kind, arch = _kind(cfg)
    fp = fingerprint({"kind": kind, "source": cfg.source, "weights": cfg.weights, "data": data.describe(),
                      "arch": arch.key if arch else None, "train": cfg.fingerprint() if kind == "trained" else None})
    info = read_json(RunFolder(workdir).teacher_json)
    if info is not None and info.get("fingerprint") != fp:
        raise ValueError(f"{workdir} already holds a teacher made with other settings ({info.get('source')}, "
                         f"data {info.get('data', {}).get('name')}); use a new --workdir for this teacher")
    if kind == "trained":
        parts = _trained_teacher(cfg, arch or space.reference(), space, data, workdir, device, fp, progress)
    else:
        parts = _loaded_teacher(cfg, kind, space).to(device).eval()
    if info is None:
        save_config(workdir, "teacher", cfg)
        write_json(RunFolder(workdir).teacher_json,  # last: marks it done
                   _describe(cfg, kind, parts, data, device, fp))
    return parts


def _kind(cfg: TeacherConfig) -> tuple[str, Arch | None]:
    source = cfg.source
    if source is None or source in ("", "reference"):
        return "trained", None
    if any(source.startswith(prefix) for prefix in TORCHVISION_CUTTERS):
        return "torchvision", None
    if source.endswith(".pt"):
        return "checkpoint", None
    return "trained", resolve_arch(source)


def _loaded_teacher(cfg: TeacherConfig, kind: str, space: SearchSpace) -> TeacherParts:
    if kind != "torchvision":
        return load_teacher_checkpoint(cfg.source, space)
    if not cfg.weights:
        raise ValueError(f"teacher {cfg.source!r} needs --teacher-weights FILE (a local torchvision state dict); "
                         "a randomly initialised teacher has nothing to distil")
    parts = torchvision_teacher(cfg.source, space, cfg.weights)
    linears = [m for m in parts.head.modules() if isinstance(m, nn.Linear)]
    if linears and linears[-1].out_features != space.num_classes:
        raise ValueError(f"{cfg.weights}: the teacher classifies {linears[-1].out_features} classes but the data set "
                         f"has {space.num_classes}; finetune the teacher on this data set first")
    return parts


def load_teacher_checkpoint(path: str | Path, space: SearchSpace) -> TeacherParts:
    """Loads a teacher checkpoint of ours (``teacher.pt``: arch + weights) and cuts it for ``space``.

    Raises:
        ValueError: the file is missing, does not load, or its network does not fit ``space``.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"teacher checkpoint {str(path)!r} does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(ckpt, dict) or ckpt.get("format") != TEACHER_FORMAT:
            raise ValueError(f"not a {TEACHER_FORMAT} checkpoint (a teacher.pt written by donna)")
        arch = Arch.from_dict(ckpt["arch"])
        model = build_model(arch)
        model.load_state_dict(ckpt["state_dict"])
    except Exception as err:  # unpickling, key and shape errors all mean the same thing to the user
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"teacher checkpoint {str(path)!r} could not be loaded: {reason}") from None
    if arch.num_classes != space.num_classes:
        raise ValueError(f"teacher checkpoint {str(path)!r} has {arch.num_classes} classes; the data set has "
                         f"{space.num_classes}")
    try:
        parts = cut_teacher(model, space)
    except ValueError as err:
        raise ValueError(f"teacher checkpoint {str(path)!r} does not fit space {space.name!r}: {err}") from None
    parts.arch = arch  # a member of the space: its blocks are the teacher-identical options
    return parts


def _trained_teacher(cfg: TeacherConfig, arch: Arch, space: SearchSpace, data: DataSplits, workdir: Path,
                     device: torch.device, fp: str, progress: bool) -> TeacherParts:
    arch = Arch.from_dict({**arch.to_dict(), "num_classes": data.num_classes})
    run = RunFolder(workdir)
    path, checkpoint = run.teacher_pt, run.teacher_checkpoint(fp)  # per settings: never mixed
    if path.is_file() and torch.load(path, map_location="cpu", weights_only=True).get("fingerprint") == fp:
        return load_teacher_checkpoint(path, space).to(device).eval()
    model = _init_model(arch, cfg.seed).to(device)
    parts = cut_teacher(model, space)  # fails early, before training, when the arch does not fit
    parts.arch = arch
    start = time.perf_counter()
    train_classifier(model, data, cfg, device, progress, checkpoint=checkpoint)
    seconds = time.perf_counter() - start
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    atomic_save(path, lambda p: torch.save({"format": TEACHER_FORMAT, "arch": arch.to_dict(), "fingerprint": fp,
                                            "state_dict": state, "train_seconds": seconds}, p))
    checkpoint.unlink(missing_ok=True)
    return parts.eval()


def _init_model(arch: Arch, seed: int) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_model(arch)


def train_classifier(model: nn.Module, data: DataSplits, cfg: TeacherConfig, device: torch.device,
                     progress: bool = True, checkpoint: Path | None = None) -> list[float]:
    """Trains ``model`` with AdamW, linear warm-up over a quarter of the run, cosine decay and label smoothing.

    Returns:
        The val accuracy after every epoch. With ``checkpoint``, a killed training resumes from its last epoch.
    """
    recipe = TrainConfig(epochs=cfg.epochs, batch_size=cfg.batch_size, optimizer="adamw", lr=cfg.lr,
                         weight_decay=cfg.weight_decay, warmup_epochs=cfg.epochs / 4,
                         label_smoothing=cfg.label_smoothing, seed=cfg.seed)
    bar = tqdm(total=cfg.epochs, desc="teacher", disable=not progress, leave=False)

    def on_epoch(epoch: int, loss: float, acc: float) -> None:
        bar.update()
        bar.set_postfix(val_acc=f"{acc:.3f}")

    history = train(model, data.train, data.val, recipe, on_epoch=on_epoch, device=device, checkpoint=checkpoint)
    bar.close()
    model.eval()
    return history.val_accuracy


def _describe(cfg: TeacherConfig, kind: str, parts: TeacherParts, data: DataSplits, device: torch.device,
              fp: str) -> dict[str, Any]:
    return {"kind": kind, "source": cfg.source or "reference", "weights": cfg.weights, "name": parts.name,
            "fingerprint": fp, "data": data.describe(), "shapes": [list(s) for s in parts.shapes],
            "val_accuracy": evaluate(parts, data.val, device=device)}
