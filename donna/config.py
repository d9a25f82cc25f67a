"""Config dataclasses of the DONNA stages (data, teacher, BKD, scoring); their defaults fit the embedded default.

Every field carries a one-line comment; the CLI fills these and the resolved values are saved into the run
folder's ``config.json`` so a run can be repeated exactly. ``fingerprint()`` lists the fields that change a
stage's result (devices, executors and progress bars do not).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

_NOT_RESULT = ("device", "executor", "threads", "features", "cache_limit_mb", "eval_batch_size")


def _result_fields(config: Any) -> dict[str, Any]:
    return {k: v for k, v in dataclasses.asdict(config).items() if k not in _NOT_RESULT}


@dataclass
class DataConfig:
    """Which data set and how it is split."""

    name: str = "glyphs"  # registry name: glyphs (generated offline), digits, cifar10, or imagefolder:PATH
    samples: int | None = None  # generated data sets (glyphs): images generated; None: the data set's default
    data_dir: str | None = None  # folder holding the files of file-based data sets (cifar10)
    download: bool = False  # cifar10 only: download into data_dir when the files are missing
    seed: int = 0  # seed of the stratified train / val / test split
    val_fraction: float = 0.15  # share of the labelled pool held out for choices (scoring, labels)
    test_fraction: float = 0.15  # share held out for the final report only (ignored when a test set ships)

    def fingerprint(self) -> dict[str, Any]:
        """The fields that change the splits."""
        return _result_fields(self)


@dataclass
class TeacherConfig:
    """Which teacher and, when it is trained here, how."""

    source: str | None = None  # None: train the space's reference; else torchvision name, .pt checkpoint,
    # preset name, architecture string or IR .json file
    weights: str | None = None  # weights file of a torchvision teacher (never downloaded)
    epochs: int = 6  # epochs when the teacher is trained here
    lr: float = 4e-3  # peak learning rate (AdamW, warm-up then cosine)
    weight_decay: float = 5e-4  # AdamW weight decay
    batch_size: int = 64  # training batch size
    label_smoothing: float = 0.1  # cross-entropy label smoothing
    seed: int = 0  # seed of the initialisation and the batch order
    device: str = "auto"  # auto (CUDA when available), cpu or cuda[:N]
    threads: int | None = None  # torch CPU threads (None: the cores this process may use)

    def fingerprint(self) -> dict[str, Any]:
        """The fields that change the teacher."""
        return _result_fields(self)


@dataclass
class BKDConfig:
    """Blockwise knowledge distillation (METHODS.md, DONNA 2): one weight-shared supernet per slot by default."""

    mode: str = "supernet"  # supernet (nested weight sharing, OFA-style) or independent (every option its own weights)
    init: str = "teacher"  # teacher: start from the teacher's block where it is an option (OFA); random
    sampling: str = "sandwich"  # supernet options per step: sandwich (largest + smallest + random) or uniform (one)
    random_per_step: int = 2  # sandwich: uniformly sampled options trained beside the largest and the smallest
    epochs: int = 2  # passes over the training split (DNA: 20 per stage on ImageNet)
    lr: float = 3e-3  # Adam learning rate (DNA: 2e-3 to 5e-3)
    weight_decay: float = 1e-4  # Adam (L2) weight decay, as DNA
    lr_decay: float = 0.9  # learning rate factor applied after every epoch, as DNA
    batch_size: int = 64  # training batch size
    seed: int = 0  # seed of weight init, batch order and option sampling
    augment_views: int = 1  # extra randomly shifted views of the train split (teacher features per view); epochs cycle
    features: str = "auto"  # memory: cache teacher features once; stream: one teacher forward per batch
    cache_limit_mb: int = 2048  # auto picks memory when the cached features stay below this size
    executor: str = "threads"  # executor running the per-slot jobs (inprocess: one after the other)
    device: str = "auto"  # auto (CUDA when available), cpu or cuda[:N]
    threads: int | None = 1  # torch CPU threads per job (None: all cores); 1 suits small ops on few cores

    def fingerprint(self) -> dict[str, Any]:
        """The fields that change the block library."""
        return _result_fields(self)


@dataclass
class ScoreConfig:
    """NSR scoring of every (slot, option): BatchNorm recalibration, then NSR on the val split."""

    recal_batches: int = 4  # training batches used to recalibrate BatchNorm (DNA uses 20 on ImageNet)
    batch_size: int = 64  # batch size of the recalibration batches
    val_samples: int | None = 1000  # val samples NSR is measured on; None: the whole val split
    eval_batch_size: int = 512  # batch size of the NSR evaluation (memory only, not the result)
    seed: int = 0  # seed choosing the recalibration samples
    executor: str = "threads"  # executor running the per-slot jobs (inprocess: one after the other)
    device: str = "auto"  # auto (CUDA when available), cpu or cuda[:N]
    threads: int | None = 1  # torch CPU threads per job (None: all cores)

    def fingerprint(self) -> dict[str, Any]:
        """The fields that change the NSR table."""
        return _result_fields(self)
