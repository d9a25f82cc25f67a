"""Assembly: any architecture of the space built from its BKD block weights, with the teacher's stem and head.

This is where the predictor's labels and the final finetune start: ``assemble(arch, workdir, teacher)``
gives an ``ArchNet`` (``.stem``, ``.blocks``, ``.head``, ``.features``) and ``assemble_recalibrated`` the same
network with every BatchNorm re-estimated on the student's own activations (what labels, finetunes and every
evaluation use: each option's statistics from scoring were taken on the teacher's inputs, as OFA and BigNAS
recalibrate every sampled subnet). ``RECAL_MODES`` keeps the per-block statistics reachable as an ablation.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset

from blocks import Arch, ArchNet, SearchSpace, get_space
from blocks.teachers import TeacherParts
from common.batching import batches
from donna.bkd import BlockLibrary
from donna.train import evaluate  # noqa: F401  (re-exported: assemble, then evaluate)


def assemble(arch: Arch, library: BlockLibrary | str | Path, teacher: TeacherParts,
             space: SearchSpace | None = None, recalibrated: bool = True) -> ArchNet:
    """``arch`` built from its BKD block weights, with copies of the teacher's stem and head.

    Args:
        arch: a member of the library's search space (any class count equal to the teacher's).
        library: a ``BlockLibrary``, or the run folder (or its ``library`` folder) holding one.
        teacher: the teacher the library was distilled from (gives the stem and the head).
        space: the search space; by default the library's, or the shipped space named by ``arch.space``.
        recalibrated: use each option's BatchNorm statistics recalibrated while scoring (when available).

    Returns:
        An ``ArchNet`` in eval mode on the teacher's device, independent of the library and the teacher.

    Raises:
        ValueError: ``arch`` is not in the space, a slot has no BKD weights, or the class counts differ.
    """
    if not isinstance(library, BlockLibrary):
        library = BlockLibrary(library, space or _space_of(arch))
    space = library.space.with_classes(arch.num_classes)
    space.validate(arch)
    out_features = _head_classes(teacher)
    if out_features is not None and out_features != arch.num_classes:
        raise ValueError(f"arch has {arch.num_classes} classes but the teacher's head gives {out_features}")
    blocks = [library.block(i, spec, recalibrated) for i, spec in enumerate(arch.blocks)]
    device = next(teacher.parameters()).device
    model = ArchNet(copy.deepcopy(teacher.stem), blocks, copy.deepcopy(teacher.head), arch)
    return model.to(device).eval()


def _space_of(arch: Arch) -> SearchSpace:
    if arch.space is None:
        raise ValueError("arch names no search space; pass space= (or a BlockLibrary) to assemble it")
    return get_space(arch.space)


def _head_classes(teacher: TeacherParts) -> int | None:
    linears = [m for m in teacher.head.modules() if isinstance(m, nn.Linear)]
    return linears[-1].out_features if linears else None


@torch.no_grad()
def recalibrate_bn(module: nn.Module, inputs: Iterable[torch.Tensor]) -> nn.Module:
    """Re-estimates every BatchNorm's running statistics as the plain average over ``inputs`` batches.

    Weights are untouched; the module is left in eval mode.
    """
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: every batch counts equally
    module.train()
    for x in inputs:
        module(x)
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    return module.eval()


RECAL_MODES = ("network", "blocks")  # network: whole assembled network (default); blocks: per-option only (ablation)


def assemble_recalibrated(arch: Arch, library: BlockLibrary | str | Path, teacher: TeacherParts, split: Dataset,
                          space: SearchSpace | None = None, mode: str = "network", num_batches: int = 8,
                          batch_size: int = 64, seed: int = 0) -> ArchNet:
    """``assemble`` followed by whole-network BatchNorm recalibration on ``num_batches`` batches of ``split``.

    Args:
        arch: the architecture (a member of the library's space).
        library: the block library or its run folder.
        teacher: the teacher the library was distilled from.
        split: the split the statistics are estimated on (the train split: never val or test).
        space: the search space (default: the library's).
        mode: ``network`` (recalibrate the assembled network) or ``blocks`` (keep each option's statistics from
            scoring, taken on teacher inputs: the ablation).
        num_batches: recalibration batches.
        batch_size: recalibration batch size.
        seed: seeds the choice of recalibration batches.

    Raises:
        ValueError: an unknown mode, or anything ``assemble`` refuses.
    """
    if mode not in RECAL_MODES:
        raise ValueError(f"unknown recalibration mode {mode!r}; known: {', '.join(RECAL_MODES)}")
    model = assemble(arch, library, teacher, space=space)
    if mode == "network":
        recalibrate(model, split, num_batches=num_batches, batch_size=batch_size, seed=seed)
    return model


def recalibrate(model: nn.Module, split: Dataset, num_batches: int = 4, batch_size: int = 64,
                seed: int = 0) -> nn.Module:
    """``recalibrate_bn`` on ``num_batches`` seeded shuffled batches of ``split`` (e.g. ``data.train``)."""
    device = next(model.parameters()).device
    stream = batches(split, batch_size, shuffle=True, seed=seed, device=device, drop_last=True)
    return recalibrate_bn(model, (x for (x, _), _ in zip(stream, range(num_batches))))
