"""The teacher: a torchvision model with a weights file, a checkpoint of ours, or an architecture trained here.

By default the space's reference architecture (its largest options) is trained on the data set and cached in
the run folder as ``teacher.pt`` (arch + weights) and ``teacher.json`` (what it is, its val accuracy); when
donna ships a teacher trained with exactly the run's settings (``donna.pretrained``: the embedded default's),
that file is copied in instead and recorded under ``pretrained`` in ``teacher.json``. Every
teacher is cut into stem / block slots / head aligned with the space (``blocks.teachers.cut_teacher``). A loaded
teacher whose classifier has another class count than the data set gets a new classifier and a short finetune
on the run's train split, cached as ``teacher.pt`` and recorded under ``adapted`` in ``teacher.json``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from blocks import Arch, SearchSpace, build_model, resolve_arch
from blocks.teachers import (
    TORCHVISION_CUTTERS,
    TeacherParts,
    classifier_of,
    cut_teacher,
    load_torchvision_model,
    replace_classifier,
)
from common.device import torch_device, torch_threads
from common.fileio import atomic_save, atomic_write_bytes
from donna import pretrained
from donna.assemble import evaluate
from donna.config import TeacherConfig
from donna.data import DataSplits
from donna.runfolder import RunFolder, fingerprint, read_json, save_config, write_json
from donna.train import TrainConfig, resumed_epoch, train
from latency.cache import file_sha256

TEACHER_FORMAT = "donna-teacher-v1"
_SHIPPED_KEYS = ("sha256", "val_accuracy", "train_seconds", "trained_on", "torch", "command")


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
                      "arch": arch.key if arch else None, "train": cfg.train_settings() if kind == "trained" else None})
    info = read_json(RunFolder(workdir).teacher_json)
    if info is not None and info.get("fingerprint") != fp:
        raise _other_teacher(workdir, info)
    adapted = shipped = None
    if kind == "trained":
        parts, shipped = _trained_teacher(cfg, arch or space.reference(), space, data, workdir, device, fp, progress)
    else:
        parts, adapted = _loaded_teacher(cfg, kind, space, data, workdir, device, fp, info, progress)
    if info is None:
        save_config(workdir, "teacher", cfg)
        described = _describe(cfg, kind, parts, data, device, fp)
        if adapted:
            described["adapted"] = adapted
        if shipped:
            described["pretrained"] = shipped
        write_json(RunFolder(workdir).teacher_json, described)  # last: marks it done
    return parts


def _other_teacher(workdir: Path, info: dict[str, Any]) -> ValueError:
    return ValueError(f"{workdir} already holds a teacher made with other settings ({info.get('source')}, "
                      f"data {info.get('data', {}).get('name')}); use a new --workdir for this teacher")


def _kind(cfg: TeacherConfig) -> tuple[str, Arch | None]:
    source = cfg.source
    if source is None or source in ("", "reference"):
        return "trained", None
    if any(source.startswith(prefix) for prefix in TORCHVISION_CUTTERS):
        return "torchvision", None
    if source.endswith(".pt"):
        return "checkpoint", None
    return "trained", resolve_arch(source)


def _loaded_teacher(cfg: TeacherConfig, kind: str, space: SearchSpace, data: DataSplits, workdir: Path,
                    device: torch.device, fp: str, info: dict[str, Any] | None,
                    progress: bool) -> tuple[TeacherParts, dict[str, Any] | None]:
    """A torchvision teacher or a checkpoint of ours; one whose classifier has another class count gets a new
    classifier and a short finetune on the data (``_adapt``), cached as ``teacher.pt``."""
    if kind == "torchvision" and not cfg.weights:
        raise ValueError(f"teacher {cfg.source!r} needs --teacher-weights FILE (a local torchvision state dict); "
                         "a randomly initialised teacher has nothing to distil")
    file = cfg.weights if kind == "torchvision" else cfg.source
    if kind == "torchvision":
        model, arch, name = load_torchvision_model(cfg.source, cfg.weights), None, cfg.source
    else:
        model, arch, name = _read_checkpoint(cfg.source)
    found = classifier_of(model)
    classes = found[1].out_features if found else space.num_classes
    if classes == space.num_classes:
        if info is not None and info.get("adapted"):
            raise _other_teacher(workdir, info)  # the file changed: this run's teacher was adapted from another
        return _cut(model, arch, name, space, file).to(device).eval(), None
    sha = file_sha256(file)
    adapt_fp = fingerprint({"teacher": fp, "file_sha256": sha, "classes": classes, "adapt": cfg.adapt_settings()})
    if info is not None and (info.get("adapted") or {}).get("fingerprint") != adapt_fp:
        raise _other_teacher(workdir, info)  # the weights file or the adapting finetune changed
    path = RunFolder(workdir).teacher_pt
    if path.is_file():
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        if ckpt.get("fingerprint") == adapt_fp:
            return load_teacher_checkpoint(path, space).to(device).eval(), ckpt["adapted"]
    head = replace_classifier(model, space.num_classes, cfg.seed)
    if arch is not None:
        arch = Arch.from_dict({**arch.to_dict(), "num_classes": space.num_classes})
        model.arch = arch
    parts = _cut(model, arch, name, space, file)  # fails early, before training, when the teacher does not fit
    adapted = _adapt(cfg, model, head, data, workdir, device, adapt_fp, progress)
    adapted.update(kind=kind, from_classes=classes, to_classes=space.num_classes, classes=list(data.classes),
                   file_sha256=sha)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    network = {"arch": arch.to_dict()} if arch is not None else {"torchvision": name, "num_classes": space.num_classes}
    atomic_save(path, lambda p: torch.save({"format": TEACHER_FORMAT, **network, "fingerprint": adapt_fp,
                                            "state_dict": state, "train_seconds": adapted["train_seconds"],
                                            "adapted": adapted}, p))
    RunFolder(workdir).teacher_checkpoint(adapt_fp).unlink(missing_ok=True)
    return parts.to(device).eval(), adapted


def _adapt(cfg: TeacherConfig, model: nn.Module, head: str, data: DataSplits, workdir: Path, device: torch.device,
           adapt_fp: str, progress: bool) -> dict[str, Any]:
    """Finetunes ``model`` (new classifier ``head``) for ``cfg.adapt_epochs``: the classifier at ``adapt_lr``, the
    loaded layers at ``adapt_backbone_lr_scale`` times that. Returns what the finetune did and its val accuracy."""
    model.to(device)
    before = evaluate(model, data.val, device=device)
    scale = cfg.adapt_backbone_lr_scale
    start = time.perf_counter()
    history = train_classifier(model, data, cfg, device, progress, RunFolder(workdir).teacher_checkpoint(adapt_fp),
                               epochs=cfg.adapt_epochs, lr=cfg.adapt_lr,
                               lr_scale=lambda name: 1.0 if name.startswith(head + ".") else scale)
    return {"fingerprint": adapt_fp, "classifier": head, "epochs": cfg.adapt_epochs, "lr": cfg.adapt_lr,
            "backbone_lr_scale": scale, "val_accuracy_before": before, "val_accuracy_after": history[-1],
            "val_accuracy_history": history, "train_seconds": time.perf_counter() - start}


def _cut(model: nn.Module, arch: Arch | None, name: str, space: SearchSpace, file: str) -> TeacherParts:
    try:
        parts = cut_teacher(model, space, name)
    except ValueError as err:
        raise ValueError(f"teacher {str(file)!r} does not fit space {space.name!r}: {err}") from None
    if arch is not None:
        parts.arch = arch  # a member of the space: its blocks are the teacher-identical options
    return parts


def load_teacher_checkpoint(path: str | Path, space: SearchSpace) -> TeacherParts:
    """Loads a teacher checkpoint of ours (``teacher.pt``) and cuts it for ``space``.

    Raises:
        ValueError: the file is missing, does not load, classifies another number of classes than ``space``
            (``get_teacher`` adapts such a teacher to a data set), or its network does not fit ``space``.
    """
    model, arch, name = _read_checkpoint(path)
    found = classifier_of(model)
    if found is not None and found[1].out_features != space.num_classes:
        raise ValueError(f"teacher checkpoint {str(path)!r} has {found[1].out_features} classes; the data set has "
                         f"{space.num_classes} (as --teacher of a run, it is adapted to the data set's classes)")
    return _cut(model, arch, name, space, str(path))


def _read_checkpoint(path: str | Path) -> tuple[nn.Module, Arch | None, str | None]:
    """The network of a ``teacher.pt`` (our architecture, or a torchvision model adapted here), its ``Arch`` when
    it has one, and its torchvision name when it is one."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"teacher checkpoint {str(path)!r} does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(ckpt, dict) or ckpt.get("format") != TEACHER_FORMAT:
            raise ValueError(f"not a {TEACHER_FORMAT} checkpoint (a teacher.pt written by donna)")
        arch = Arch.from_dict(ckpt["arch"]) if "torchvision" not in ckpt else None
        model = build_model(arch) if arch is not None else \
            load_torchvision_model(ckpt["torchvision"], num_classes=ckpt["num_classes"])
        model.load_state_dict(ckpt["state_dict"])
    except Exception as err:  # unpickling, key and shape errors all mean the same thing to the user
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"teacher checkpoint {str(path)!r} could not be loaded: {reason}") from None
    return model, arch, ckpt.get("torchvision")


def _trained_teacher(cfg: TeacherConfig, arch: Arch, space: SearchSpace, data: DataSplits, workdir: Path,
                     device: torch.device, fp: str, progress: bool) -> tuple[TeacherParts, dict[str, Any] | None]:
    """The teacher trained with ``cfg``'s recipe: this run's ``teacher.pt``, else the one shipped with donna for
    fingerprint ``fp`` (copied in; its record returned), else trained here."""
    arch = Arch.from_dict({**arch.to_dict(), "num_classes": data.num_classes})
    run = RunFolder(workdir)
    path, checkpoint = run.teacher_pt, run.teacher_checkpoint(fp)  # per settings: never mixed
    shipped = None
    if cfg.pretrained and not checkpoint.is_file():
        try:
            shipped = pretrained.find(fp, data.name)
        except ValueError:
            if not path.is_file():  # a damaged install matters only when the run has no teacher yet
                raise
    if shipped is not None and not path.is_file():
        atomic_write_bytes(path, shipped[0].read_bytes())
    if path.is_file() and torch.load(path, map_location="cpu", weights_only=True).get("fingerprint") == fp:
        record = ({"file": shipped[0].name, **{k: shipped[1].get(k) for k in _SHIPPED_KEYS}}
                  if shipped is not None and file_sha256(path) == shipped[1]["sha256"] else None)
        return load_teacher_checkpoint(path, space).to(device).eval(), record
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
    return parts.eval(), None


def _init_model(arch: Arch, seed: int) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_model(arch)


def train_classifier(model: nn.Module, data: DataSplits, cfg: TeacherConfig, device: torch.device,
                     progress: bool = True, checkpoint: Path | None = None, *, epochs: int | None = None,
                     lr: float | None = None, lr_scale: Callable[[str], float] | None = None) -> list[float]:
    """Trains ``model`` with AdamW, linear warm-up over a quarter of the run, cosine decay and label smoothing.

    ``epochs`` and ``lr`` default to ``cfg``'s; ``lr_scale`` gives a parameter's share of ``lr`` by its name
    (``donna.train.train``).

    Returns:
        The val accuracy after every epoch. With ``checkpoint``, a killed training resumes from its last epoch.
    """
    epochs, lr = epochs or cfg.epochs, lr or cfg.lr
    recipe = TrainConfig(epochs=epochs, batch_size=cfg.batch_size, optimizer="adamw", lr=lr,
                         weight_decay=cfg.weight_decay, warmup_epochs=epochs / 4,
                         label_smoothing=cfg.label_smoothing, seed=cfg.seed)
    bar = tqdm(total=epochs, initial=resumed_epoch(checkpoint), desc="teacher", disable=not progress, leave=False)

    def on_epoch(epoch: int, loss: float, acc: float) -> None:
        bar.update()
        bar.set_postfix(val_acc=f"{acc:.3f}")

    history = train(model, data.train, data.val, recipe, on_epoch=on_epoch, device=device, checkpoint=checkpoint,
                    lr_scale=lr_scale)
    bar.close()
    model.eval()
    return history.val_accuracy


def _describe(cfg: TeacherConfig, kind: str, parts: TeacherParts, data: DataSplits, device: torch.device,
              fp: str) -> dict[str, Any]:
    return {"kind": kind, "source": cfg.source or "reference", "weights": cfg.weights, "name": parts.name,
            "fingerprint": fp, "data": data.describe(), "shapes": [list(s) for s in parts.shapes],
            "val_accuracy": evaluate(parts, data.val, device=device)}
