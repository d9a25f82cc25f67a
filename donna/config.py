"""The config tree of a DONNA run: one dataclass per stage, gathered in ``DonnaConfig`` (one seed, one
training device, one latency device); the ``donna`` command line is generated from it (``donna.cli_config``).

Every field carries a one-line comment (the CLI's help text) and, in its metadata, what the command line
and the stage keys need to know:

- ``result=False``: the field does not change the stage's result (devices, executors, threads, caches);
  ``fingerprint()`` leaves it out. Every other field is in the key.
- ``shared="seed"`` (or ``train_device``, ``latency_device``): the value comes from the tree's one field of
  that name; it is not a setting of its own.
- ``flag``: a short command-line name kept from earlier versions (``--data`` for ``data.name``).
- ``ge`` / ``gt`` / ``le`` / ``choices`` / ``kind``: what the command line accepts, checked while parsing.

The resolved values are saved into the run folder's ``config.json``, one section per stage, so a run can be
repeated exactly (``donna ... --config RUN/config.json``); ``from_sections`` reads such a file back,
including the names earlier versions wrote (``device``, the searcher's ``pop_size`` in ``search``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

SHARED = ("seed", "train_device", "latency_device", "ray_address")  # the tree's fields that every stage with them
# shares


def _meta(default: Any = dataclasses.MISSING, *, default_factory: Any = dataclasses.MISSING, **metadata: Any) -> Any:
    """A dataclass field with command-line / result metadata (see the module docstring)."""
    return field(default=default, default_factory=default_factory, metadata=metadata)


def _seed() -> Any:
    return _meta(0, shared="seed", ge=0, le=2**32 - 1)


def _train_device() -> Any:
    return _meta("auto", shared="train_device", result=False, kind="train_device")


def _ray_address() -> Any:
    return _meta(None, shared="ray_address", result=False)


def affects_result(f: dataclasses.Field) -> bool:
    """Whether field ``f`` changes a stage's result (``metadata={"result": False}`` says it does not)."""
    return f.metadata.get("result", True)


def result_fields(config: Any) -> dict[str, Any]:
    """The fields of a config dataclass that change its stage's result, nested configs included (JSON-able)."""
    out = {}
    for f in dataclasses.fields(config):
        if not affects_result(f):
            continue
        value = getattr(config, f.name)
        out[f.name] = result_fields(value) if dataclasses.is_dataclass(value) else _plain(value)
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


class _Section:
    """Mixin of every stage config: ``fingerprint()`` from the ``result`` marker."""

    def fingerprint(self) -> dict[str, Any]:
        """The fields that change this stage's result."""
        return result_fields(self)


@dataclass
class DataConfig(_Section):
    """Which data set and how it is split."""

    name: str = _meta("glyphs", flag="--data", kind="data")  # registry name: glyphs (generated offline), digits,
    # cifar10, a data set registered from Python (--plugin MODULE), or imagefolder:PATH
    samples: int | None = _meta(None, ge=1)  # generated data sets (glyphs): images generated; None: the default
    data_dir: str | None = _meta(None, flag="--data-dir")  # folder holding the files of file-based data sets (cifar10)
    download: bool = _meta(False, flag="--download")  # cifar10 only: download into data_dir when the files are missing
    seed: int = _seed()  # seed of the stratified train / val / test split
    val_fraction: float = _meta(0.15, gt=0.0, le=1.0)  # share of the labelled pool held out for choices (scoring,
    # labels)
    test_fraction: float = _meta(0.15, ge=0.0, le=1.0)  # share held out for the final report only (ignored when a test
    # set ships)


@dataclass
class TeacherConfig(_Section):
    """Which teacher and, when it is trained here, how."""

    source: str | None = _meta(None, flag="--teacher")  # None: train the space's reference; else torchvision name,
    # .pt checkpoint, preset name, architecture string or IR .json file
    weights: str | None = _meta(None, flag="--teacher-weights")  # weights file of a torchvision teacher (never
    # downloaded)
    epochs: int = _meta(20, ge=1)  # epochs when the teacher is trained here
    pretrained: bool = _meta(True, result=False)  # use the teacher shipped with donna (donna/pretrained) when it
    # was trained with exactly this run's settings (data, space, recipe, seed); false trains it here
    lr: float = _meta(4e-3, gt=0.0)  # peak learning rate (AdamW, warm-up then cosine)
    weight_decay: float = _meta(5e-4, ge=0.0)  # AdamW weight decay
    batch_size: int = _meta(64, ge=1)  # training batch size
    label_smoothing: float = _meta(0.1, ge=0.0, le=1.0)  # cross-entropy label smoothing
    seed: int = _seed()  # seed of the initialisation and the batch order
    adapt_epochs: int = _meta(2, ge=1)  # epochs of the short finetune that fits a loaded teacher (weights file or
    # .pt) whose classifier has another class count to the data set, after a new classifier replaces its own
    adapt_lr: float = _meta(1e-3, gt=0.0)  # peak learning rate of the new classifier in that finetune (AdamW,
    # warm-up then cosine)
    adapt_backbone_lr_scale: float = _meta(0.1, ge=0.0, le=1.0)  # learning rate of the loaded layers in that
    # finetune, as a share of adapt_lr (0 trains only the new classifier)
    train_device: str = _train_device()  # auto (CUDA when available), cpu or cuda[:N]
    threads: int | None = _meta(None, ge=1, result=False)  # torch CPU threads (None: the cores this process may use)

    def adapt_settings(self) -> dict[str, Any]:
        """The fields of the adapting finetune (in its key only when a teacher is adapted)."""
        return {k: v for k, v in self.fingerprint().items() if k.startswith("adapt_")}

    def train_settings(self) -> dict[str, Any]:
        """The fields that change a teacher trained here (the adapting finetune's are not among them)."""
        return {k: v for k, v in self.fingerprint().items() if not k.startswith("adapt_")}


@dataclass
class BKDConfig(_Section):
    """Blockwise knowledge distillation (METHODS.md, DONNA 2): one weight-shared supernet per slot by default."""

    mode: str = _meta("supernet", choices=("supernet", "independent"))  # supernet (nested weight sharing, OFA-style)
    # or independent (every option its own weights)
    init: str = _meta("teacher", choices=("teacher", "random"))  # teacher: start from the teacher's block where it is
    # an option (OFA); random
    sampling: str = _meta("sandwich", choices=("sandwich", "uniform"))  # supernet options per step: sandwich
    # (largest + smallest + random) or uniform (one)
    random_per_step: int = _meta(2, ge=0)  # sandwich: uniformly sampled options trained beside the largest and the
    # smallest
    epochs: int = _meta(2, ge=1)  # passes over the training split (DNA: 20 per stage on ImageNet)
    lr: float = _meta(1e-3, gt=0.0)  # Adam learning rate (DNA: 2e-3 to 5e-3 from scratch; 1e-3 keeps the
    # teacher-started option near the teacher)
    weight_decay: float = _meta(1e-4, ge=0.0)  # Adam (L2) weight decay, as DNA
    lr_decay: float = _meta(0.9, gt=0.0, le=1.0)  # schedule 'epoch': learning rate factor after every epoch, as DNA
    lr_schedule: str = _meta("cosine", choices=("epoch", "cosine"))  # epoch: x lr_decay after every epoch (DNA);
    # cosine: from lr to 0 over the run, step by step (lr_decay unused)
    batch_size: int = _meta(64, ge=1)  # training batch size
    seed: int = _seed()  # seed of weight init, batch order and option sampling
    augment_views: int = _meta(1, ge=0)  # extra randomly shifted views of the train split (teacher features per
    # view); epochs cycle
    features: str = _meta("auto", choices=("auto", "memory", "stream"), result=False)  # memory: cache teacher
    # features once; stream: one teacher forward per batch
    cache_limit_mb: int = _meta(2048, ge=0, result=False)  # auto picks memory when the cached features stay below
    # this size
    executor: str = _meta("threads", result=False)  # executor running the per-slot jobs: threads, processes,
    # inprocess (one after the other) or ray (tasks on a Ray cluster)
    ray_address: str | None = _ray_address()  # the Ray cluster of the ray executor (DonnaConfig.ray_address)
    train_device: str = _train_device()  # auto (CUDA when available), cpu or cuda[:N]
    threads: int | None = _meta(1, ge=1, result=False)  # torch CPU threads per job (None: all cores); 1 suits small
    # ops on few cores


@dataclass
class ScoreConfig(_Section):
    """NSR scoring of every (slot, option): BatchNorm recalibration, then NSR on the val split."""

    recal_batches: int = _meta(4, ge=1)  # training batches used to recalibrate BatchNorm (DNA uses 20 on ImageNet)
    batch_size: int = _meta(64, ge=1)  # batch size of the recalibration batches
    val_samples: int | None = _meta(1000, ge=1)  # val samples NSR is measured on; None: the whole val split
    eval_batch_size: int = _meta(512, ge=1, result=False)  # batch size of the NSR evaluation (memory only)
    seed: int = _seed()  # seed choosing the recalibration samples
    executor: str = _meta("threads", result=False)  # executor running the per-slot jobs: threads, processes,
    # inprocess (one after the other) or ray (tasks on a Ray cluster)
    ray_address: str | None = _ray_address()  # the Ray cluster of the ray executor (DonnaConfig.ray_address)
    train_device: str = _train_device()  # auto (CUDA when available), cpu or cuda[:N]
    threads: int | None = _meta(1, ge=1, result=False)  # torch CPU threads per job (None: all cores)


SAMPLINGS = ("uniform", "spread")


@dataclass
class LabelConfig(_Section):
    """How many architectures are labelled and how: the finetune recipe (``FinetuneConfig``), shortened."""

    num_labels: int = _meta(30, ge=4, flag="--labels")  # architectures finetuned to label the predictor (DONNA:
    # about 20-30; at least 4, the predictor's fit needs them)
    sampling: str = _meta("uniform", choices=SAMPLINGS)  # uniform over the space, or spread (farthest points over
    # sum-NSR and MACs)
    pool_size: int = _meta(4000, ge=1)  # uniform candidates the spread-out sample is drawn from
    # The finetune recipe (SGD, Nesterov, cosine, lr 0.05, KD 0.5 at T=4), shortened: fewer steps.
    epochs: int = _meta(1, ge=1)  # passes over the label training subset
    train_samples: int | None = _meta(3000, ge=1)  # seeded subset of the train split every label trains on (None:
    # all)
    lr: float = _meta(0.05, gt=0.0)  # peak learning rate (SGD, cosine), as the finetune
    batch_size: int = _meta(64, ge=1)  # finetune batch size
    kd_weight: float = _meta(0.5, ge=0.0, le=1.0)  # weight of distillation from the teacher's logits
    kd_temperature: float = _meta(4.0, gt=0.0)  # distillation temperature
    recalibrate: str = _meta("network", choices=("network", "blocks"))  # network: recalibrate the assembled
    # network's BatchNorm; blocks: ablation
    recal_batches: int = _meta(8, ge=1)  # training batches of the whole-network recalibration
    seed: int = _seed()  # seeds the sample and the finetunes
    executor: str = _meta("processes", choices=("processes", "inprocess", "ray"), result=False)  # runs the
    # per-architecture jobs: processes (one per core), inprocess or ray (tasks on a Ray cluster)
    ray_address: str | None = _ray_address()  # the Ray cluster of the ray executor (DonnaConfig.ray_address)
    train_device: str = _train_device()  # training device: auto (CUDA when present), cpu, cuda

    def __post_init__(self) -> None:
        if self.executor == "threads":
            raise ValueError("labels: the 'threads' executor would share the global RNG between finetunes and break "
                             "same-seed-same-labels; use 'inprocess'")
        if self.sampling not in SAMPLINGS:
            raise ValueError(f"labels: unknown sampling {self.sampling!r}; known: {', '.join(SAMPLINGS)}")

    def train_config(self) -> Any:
        """The shortened finetune recipe of one label (a ``donna.train.TrainConfig``)."""
        from donna.train import TrainConfig

        return TrainConfig(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, kd_weight=self.kd_weight,
                           kd_temperature=self.kd_temperature, seed=self.seed)


@dataclass
class SearchConfig(_Section):
    """Settings of ``donna search``; the searcher's own settings (population, epochs) are its config's, in
    ``settings``, never repeated here."""

    latency_device: str = _meta("cpu", shared="latency_device", kind="latency_device")  # latency device profile
    # (see `latency devices`)
    target_ms: float | None = _meta(1.0, gt=0.0, flag="--target-ms")  # latency budget the selected architecture must
    # meet when measured; None (donna run): the 30th percentile of the table's latency over the space
    searcher: str = _meta("nsga2", kind="searcher")  # registered searcher: nsga2, random, exact, pc-darts, dso-nas
    # (list_searchers())
    schedule: str = "paper"  # the searcher's schedule preset: paper (published) or quick (minutes on 2 CPU cores);
    # printed with its cost before the search
    settings: dict[str, Any] = _meta(default_factory=dict, kind="searcher_settings")  # the searcher's own settings
    # (its config dataclass), e.g. {"pop_size": 100}; unset ones keep the searcher's defaults
    name: str | None = _meta(None, kind="name")  # output folder search/<name>; default: the searcher's name
    latency: str = _meta("table", choices=("table", "measure"))  # table: the device's latency table; measure: every
    # candidate on the device (DONNA)
    seed: int = _seed()  # seeds the search
    measure_max: int = _meta(24, ge=1)  # front members measured on the device (those near or under the target
    # first)
    confirm_max: int = _meta(5, ge=0)  # the chosen member is measured again in fresh processes and kept only when
    # the slowest of its measurements meets the target; at most this many are tried (0: no second measurement)
    confirm_processes: int = _meta(3, ge=1)  # fresh processes of that confirmation (each one more sample of a shared
    # machine's state; the slowest process's CI bounds the choice)
    margin: float = _meta(0.02, ge=0.0, le=0.5)  # the confirmed latency must meet the target less this share: the
    # drift between the search's confirmation and the delivered model's check minutes later (+1.2% and +1.6% on two
    # demos here, the same networks 1.4-2.4% apart in two processes); 0 selects right at the target
    table_executor: str = _meta("inprocess", choices=("inprocess", "ray"), result=False)  # where the latency
    # table's measurements run: here, or as Ray tasks requesting device:<latency_device> (the device's host)
    ray_address: str | None = _ray_address()  # the Ray cluster of table_executor=ray (DonnaConfig.ray_address)
    force: bool = _meta(False, flag="--force")  # use a latency table made on another device fingerprint (warns), as
    # `latency table --force`
    no_measure: bool = _meta(False, result=False)  # select on predicted latency; print the command that measures
    # the front on the device machine


@dataclass
class FinetuneConfig(_Section):
    """Settings of ``donna finetune``."""

    arch: str = _meta("selected", kind="arch", result=False)  # selected (latest search), a search name's selection
    # (selected:NAME), a key, or IR JSON (the key of the architecture it names is in the stage key)
    epochs: int = _meta(3, ge=1)  # finetune epochs (DONNA: about 50 on ImageNet against about 450 from scratch)
    lr: float = _meta(0.05, gt=0.0)  # peak learning rate (SGD with Nesterov momentum, cosine schedule)
    batch_size: int = _meta(64, ge=1)  # batch size
    kd_weight: float = _meta(0.5, ge=0.0, le=1.0)  # weight of distillation from the teacher's logits (0 = labels only)
    kd_temperature: float = _meta(4.0, gt=0.0)  # distillation temperature
    seed: int = _seed()  # seeds the data order
    train_device: str = _train_device()  # training device: auto (CUDA when present), cpu, cuda
    latency_device: str = _meta("cpu", shared="latency_device", kind="latency_device", result=False)  # device
    # profile the exported model is measured on
    init: str = _meta("bkd", choices=("bkd", "scratch"))  # bkd: start from the distilled blocks (DONNA); scratch:
    # fresh weights (for comparison)
    recalibrate: str = _meta("network", choices=("network", "blocks"))  # bkd init: network re-estimates the
    # assembled net's BatchNorm; blocks: ablation
    recal_batches: int = _meta(8, ge=1)  # training batches of that recalibration
    dynamic_batch: bool = _meta(False, result=False)  # model.onnx with a symbolic batch dimension (latency is still
    # measured at batch 1); a finished finetune is re-exported, not retrained
    check_processes: int = _meta(3, ge=1, result=False)  # fresh processes the exported model is measured in: the
    # median of their medians is checked against the target, their CIs' span is reported

    def train_config(self) -> Any:
        """The training recipe (a ``donna.train.TrainConfig``)."""
        from donna.train import TrainConfig

        return TrainConfig(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, kd_weight=self.kd_weight,
                           kd_temperature=self.kd_temperature, seed=self.seed)


@dataclass
class DonnaConfig:
    """Every setting of a DONNA run, one section per stage. ``seed``, ``train_device`` and ``latency_device``
    exist once, here, and reach every section that has them."""

    seed: int = _meta(0, ge=0, le=2**32 - 1)  # seeds every stage: splits, teacher, BKD, scoring, labels, search,
    # finetune
    train_device: str = _meta("auto", kind="train_device", result=False)  # torch device of every training stage:
    # auto (CUDA when present), cpu, cuda[:N]
    latency_device: str = _meta("cpu", kind="latency_device")  # latency device profile searched for and measured on
    # (`latency devices` lists them)
    space: str = _meta("mbconv-tiny", kind="space")  # search space name or JSON file
    ray_address: str | None = _meta(None, result=False)  # Ray cluster of the stages whose executor is ray: none
    # starts one on this machine, auto joins the one `ray start` runs here, HOST:PORT joins that head
    plugins: list[str] = _meta(default_factory=list, kind="plugins", flag="--plugin", result=False)  # modules
    # imported first: they register data sets or searchers (repeatable)
    data: DataConfig = field(default_factory=DataConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    bkd: BKDConfig = field(default_factory=BKDConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)
    labels: LabelConfig = field(default_factory=LabelConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)

    def __post_init__(self) -> None:
        for name in SECTIONS:
            section = getattr(self, name)
            shared = {f.name: getattr(self, f.metadata["shared"]) for f in dataclasses.fields(section)
                      if "shared" in f.metadata}
            setattr(self, name, dataclasses.replace(section, **shared))


SECTIONS = ("data", "teacher", "bkd", "score", "labels", "search", "finetune")
RENAMED = {"force_table": "force"}  # field names earlier versions wrote into config.json
SEARCHER_KEYS = ("pop_size", "generations", "mutation_prob")  # search keys that are the searcher's own settings


def section_from_dict(cls: type, values: dict[str, Any]) -> Any:
    """A stage config from its ``config.json`` section, including the names earlier versions wrote.

    Raises:
        TypeError: a key that is no field of ``cls``.
    """
    values = {RENAMED.get(k, k): v for k, v in values.items()}
    names = {f.name for f in dataclasses.fields(cls)}
    if "device" in values:  # before train_device / latency_device: one word, two meanings
        values["latency_device" if "latency_device" in names and "train_device" not in names
               else "train_device"] = values.pop("device")
    if "settings" in names:
        moved = {k: values.pop(k) for k in SEARCHER_KEYS if k in values}
        values["settings"] = {**moved, **(values.get("settings") or {})}
    return cls(**values)


def from_sections(sections: dict[str, Any], main: str = "data") -> DonnaConfig:
    """The tree of a ``config.json`` (its sections; ``run`` gives the space). The shared seed, training and
    latency device are those of section ``main`` (the stage a command runs first).

    Raises:
        TypeError: a section or key the tree does not have.
    """
    built = {name: section_from_dict(_section_type(name), sections[name])
             for name in SECTIONS if isinstance(sections.get(name), dict)}
    top = {}
    first = built.get(main) or next(iter(built.values()), None)
    for name in SHARED:
        source = first if first is not None and hasattr(first, name) else next(
            (s for s in built.values() if hasattr(s, name)), None)
        if source is not None:
            top[name] = getattr(source, name)
    run = sections.get("run") or {}
    if run.get("space"):
        top["space"] = run["space"]
    if run.get("plugins"):
        top["plugins"] = list(run["plugins"])
    return DonnaConfig(**top, **built)


def _section_type(name: str) -> type:
    return {f.name: f.default_factory for f in dataclasses.fields(DonnaConfig) if f.name in SECTIONS}[name]
