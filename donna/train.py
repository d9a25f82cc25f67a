"""Supervised training with optional distillation from a teacher's logits, checkpointed every epoch.

One loop serves the predictor's short label finetunes and ``donna finetune``: cross entropy plus
``kd_weight * T^2 * KL(student/T || teacher/T)``, SGD with a cosine schedule, AMP on a GPU. The
data order of epoch ``e`` depends only on ``(seed, e)``, so a run killed at any point and resumed
from its last checkpoint ends with the same weights as an uninterrupted run.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from common.batching import index_batches, take
from common.device import make_optimizer, torch_device
from common.fileio import atomic_save


@dataclass
class TrainConfig:
    """Settings of one training run."""

    epochs: int = 10  # passes over the training split
    batch_size: int = 64  # examples per step
    optimizer: str = "sgd"  # sgd (Nesterov momentum 0.9) or adamw
    lr: float = 0.05  # peak learning rate
    weight_decay: float = 4e-5  # L2 on every weight
    warmup_epochs: float = 0.0  # linear warm-up before the cosine decay
    kd_weight: float = 0.0  # weight of the distillation term; 0 = plain cross entropy
    kd_temperature: float = 4.0  # softmax temperature of the distillation term
    label_smoothing: float = 0.0  # cross-entropy label smoothing
    amp: bool = True  # mixed precision when on a CUDA device (ignored on CPU)
    seed: int = 0  # seeds the data order and any dropout


@dataclass
class TrainHistory:
    """Per-epoch training loss and validation accuracy."""

    train_loss: list[float] = field(default_factory=list)
    val_accuracy: list[float] = field(default_factory=list)


@torch.no_grad()
def predict_logits(model: nn.Module, split: Dataset, batch_size: int = 256,
                   device: torch.device | None = None) -> torch.Tensor:
    """Logits of ``model`` for every example of ``split`` (in order), on the CPU."""
    device = device or torch_device()
    was_training = model.training
    model.eval().to(device)
    batches = index_batches(len(split), batch_size, None)
    outs = [model(take(split, idx)[0].to(device)).float().cpu() for idx in batches]
    model.train(was_training)
    return torch.cat(outs)


@torch.no_grad()
def evaluate(model: nn.Module, split: Dataset, batch_size: int = 256, device: torch.device | None = None) -> float:
    """Top-1 accuracy of ``model`` on ``split``."""
    logits = predict_logits(model, split, batch_size, device)
    labels = torch.cat([take(split, idx)[1] for idx in index_batches(len(split), batch_size, None)])
    return float((logits.argmax(1) == labels).float().mean())


def distillation_loss(logits: torch.Tensor, labels: torch.Tensor, teacher_logits: torch.Tensor | None,
                      cfg: TrainConfig) -> torch.Tensor:
    """Cross entropy plus the temperature-scaled KL term when teacher logits are given."""
    loss = F.cross_entropy(logits, labels, label_smoothing=cfg.label_smoothing)
    if teacher_logits is not None and cfg.kd_weight > 0:
        t = cfg.kd_temperature
        kl = F.kl_div(F.log_softmax(logits / t, 1), F.log_softmax(teacher_logits / t, 1),
                      reduction="batchmean", log_target=True)
        loss = (1 - cfg.kd_weight) * loss + cfg.kd_weight * t * t * kl
    return loss


def _lr_at(step: int, total: int, warmup: int, peak: float) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * peak * (1 + math.cos(math.pi * progress))


def train(model: nn.Module, train_set: Dataset, val_set: Dataset | None, cfg: TrainConfig,
          teacher_logits: torch.Tensor | None = None, checkpoint: str | Path | None = None,
          on_epoch: Callable[[int, float, float], None] | None = None,
          device: torch.device | None = None, lr_scale: Callable[[str], float] | None = None) -> TrainHistory:
    """Trains ``model`` in place; resumes from ``checkpoint`` when it exists.

    Args:
        model: the network to train.
        train_set: yields ``(image, label)``.
        val_set: evaluated after every epoch (accuracy in the history), or None.
        cfg: the recipe.
        teacher_logits: the teacher's logits for every training example (same order), for distillation.
        checkpoint: file written atomically after every epoch; an existing one is resumed.
        on_epoch: called as ``on_epoch(epoch, train_loss, val_accuracy)``.
        device: defaults to CUDA when present, else CPU.
        lr_scale: the factor on the learning rate of each parameter, by its name in ``model.named_parameters()``
            (e.g. a pretrained backbone slower than a new classifier); default 1 for every parameter.
    """
    from donna import distributed

    device = device or torch_device()
    model.to(device)
    net = model  # under torchrun: the DDP wrapper that averages gradients over the ranks (model is trained in place)
    if distributed.world() > 1:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model)  # starts every rank from rank 0's weights and buffers
    opt = _optimizer(_param_groups(model, cfg.weight_decay, lr_scale), cfg)
    use_amp = cfg.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    history, start = TrainHistory(), 0
    if checkpoint is not None and Path(checkpoint).is_file():
        start, history = _resume(Path(checkpoint), model, opt, scaler, cfg)
    steps_per_epoch = math.ceil(len(train_set) / cfg.batch_size)
    total, warmup = cfg.epochs * steps_per_epoch, int(cfg.warmup_epochs * steps_per_epoch)
    for epoch in range(start, cfg.epochs):
        torch.manual_seed(cfg.seed * 100_003 + epoch)  # dropout and any augmentation of this epoch
        model.train()
        losses = []
        for i, idx in enumerate(index_batches(len(train_set), cfg.batch_size, cfg.seed * 1_000_003 + epoch)):
            for group in opt.param_groups:
                group["lr"] = _lr_at(epoch * steps_per_epoch + i, total, warmup, cfg.lr) * group.get("lr_scale", 1.0)
            idx = distributed.shard(idx)  # this rank's share of the global batch (all of it in one process)
            x, y = (t.to(device) for t in take(train_set, idx))
            t_logits = teacher_logits[idx].to(device) if teacher_logits is not None else None
            with torch.autocast(device.type, enabled=use_amp):
                loss = distillation_loss(net(x), y, t_logits, cfg)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            losses.append(float(loss.detach()))
        history.train_loss.append(distributed.mean(sum(losses) / len(losses)))
        accuracy = evaluate(model, val_set, device=device) if val_set is not None and distributed.is_main() else None
        history.val_accuracy.append(distributed.from_main(accuracy if val_set is not None else float("nan")))
        if checkpoint is not None and distributed.is_main():
            _save(Path(checkpoint), model, opt, scaler, cfg, epoch + 1, history)
        if on_epoch is not None:
            on_epoch(epoch, history.train_loss[-1], history.val_accuracy[-1])
    return history


def _param_groups(model: nn.Module, weight_decay: float, lr_scale: Callable[[str], float] | None) -> list[dict]:
    """Weight decay on weights (not on biases and norms), one pair of groups per learning-rate factor."""
    named = list(model.named_parameters())
    scales = [1.0 if lr_scale is None else float(lr_scale(name)) for name, _ in named]
    groups = []
    for scale in sorted(set(scales), reverse=True):
        for decay in (True, False):
            params = [p for (_, p), s in zip(named, scales) if s == scale and (p.ndim > 1) == decay]
            groups.append({"params": params, "weight_decay": weight_decay if decay else 0.0, "lr_scale": scale})
    return groups


def resumed_epoch(checkpoint: str | Path | None) -> int:
    """The epochs a checkpoint of ``train`` already holds (0 when there is none or it cannot be read), so a
    progress bar of a resumed run starts where the run stopped."""
    if checkpoint is None or not Path(checkpoint).is_file():
        return 0
    try:
        return int(torch.load(checkpoint, map_location="cpu", weights_only=True)["epoch"])
    except Exception:  # unreadable: train() itself reports it
        return 0


def _optimizer(params: list[dict], cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return make_optimizer(torch.optim.SGD, params, lr=cfg.lr, momentum=0.9, nesterov=True)
    if cfg.optimizer == "adamw":
        return make_optimizer(torch.optim.AdamW, params, lr=cfg.lr)
    raise ValueError(f"optimizer {cfg.optimizer!r} is not one of: sgd, adamw")


def _save(path: Path, model, opt, scaler, cfg: TrainConfig, epoch: int, history: TrainHistory) -> None:
    state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "scaler": scaler.state_dict(),
             "epoch": epoch, "config": asdict(cfg), "history": asdict(history)}
    atomic_save(path, lambda p: torch.save(state, p))


def _resume(path: Path, model, opt, scaler, cfg: TrainConfig) -> tuple[int, TrainHistory]:
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state["config"] != asdict(cfg):
        raise ValueError(f"{path} was written with other training settings; delete it to start over")
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    scaler.load_state_dict(state["scaler"])
    return state["epoch"], TrainHistory(**state["history"])
