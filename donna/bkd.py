"""Blockwise knowledge distillation (BKD, METHODS.md DONNA 2): the block library of every slot.

For slot ``n`` the input is the teacher's (detached) output of slot ``n-1`` (of the stem for slot 0) and the
target is the teacher's output of slot ``n``; the loss is NSR = mean((Y - Y_hat)^2) / Var(Y). By default each
slot trains one weight-shared supernet with one uniformly sampled option per step (DNA); ``mode='independent'``
trains every option separately. Teacher features come from one teacher forward per batch: computed once and
cached in memory when they fit (one executor job per slot trains from the cache), else streamed (one job, one
teacher forward per batch feeding every slot). Every slot checkpoints after every epoch; all randomness is
seeded per (seed, slot, epoch), so a killed run resumes to the same weights as an unkilled one.
"""

from __future__ import annotations

import copy
import hashlib
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from blocks import BlockSpec, SearchSpace, init_weights
from blocks.teachers import TeacherParts
from common.batching import batches
from common.device import make_optimizer, set_threads, torch_device, torch_threads
from common.executor import Job, bar_position, executor_for
from common.fileio import atomic_save
from donna.config import BKDConfig
from donna.data import DataSplits, TensorSplit, shifted_copy
from donna.nested_supernet import ExtendedSlot, OptionBank, SlotSupernet, load_slot_module, make_slot_module, warm_start
from donna.runfolder import RunFolder, fingerprint, read_json, save_config, write_json

CKPT_FORMAT = "donna-bkd-ckpt-v1"
LIBRARY_FORMAT = "donna-library-v1"
StepCallback = Callable[[int, int, int], None]  # (slot, epoch, step) after every optimiser step


def nsr_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Noise-to-signal ratio of a batch: mean squared error over the (population) variance of the target."""
    return F.mse_loss(pred, target) / target.var(unbiased=False).clamp_min(1e-12)


def _seed(*parts: int) -> int:
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:7], "little")


def order_seed(seed: int, epoch: int) -> int:
    """Seed of the batch order of one epoch (shared by every slot, so both feature modes see the same batches)."""
    return _seed(seed, "order", epoch)


@torch.no_grad()
def compute_features(teacher: TeacherParts, split: Dataset, device: torch.device | str, batch_size: int = 256,
                     progress: bool = False) -> list[torch.Tensor]:
    """The teacher's stem output and every slot output for every sample of ``split``, on ``device``."""
    teacher.eval()
    chunks: list[list[torch.Tensor]] = [[] for _ in range(len(teacher.blocks) + 1)]
    total = math.ceil(len(split) / batch_size)
    for x, _ in tqdm(batches(split, batch_size, device=device), total=total, desc="teacher features",
                     disable=not progress, leave=False):
        for store, feat in zip(chunks, teacher.features(x)):
            store.append(feat)
    return [torch.cat(c) for c in chunks]


@torch.no_grad()
def seeded_init(module: torch.nn.Module, gen: torch.Generator) -> None:
    """``blocks.init_weights`` drawn from ``gen`` instead of the global RNG (jobs on threads stay deterministic)."""
    init_weights(module)  # the same rules; the draws below replace its random values
    for m in module.modules():
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(m.weight, mode="fan_out", generator=gen)
        elif isinstance(m, torch.nn.Linear):
            torch.nn.init.normal_(m.weight, 0, 0.01, generator=gen)


def teacher_fingerprint(teacher: TeacherParts) -> str:
    """A hash of the teacher's weights and buffers (names the teacher a library was distilled from)."""
    digest = hashlib.sha256()
    for name, tensor in teacher.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def slot_fingerprints(bkd: dict[str, Any], space: SearchSpace, teacher: TeacherParts,
                      data: DataSplits) -> list[str]:
    """Per slot, a hash of everything its BKD weights depend on (settings, teacher, data, the slot's options)."""
    base = {"bkd": bkd, "teacher": teacher_fingerprint(teacher), "data": data.describe()}
    return [fingerprint({**base, "slot": s, "input": space.slot_input_shape(s),
                         "options": [str(o) for o in space.options(s)]}) for s in range(space.num_slots)]


def feature_bytes(teacher: TeacherParts, num_samples: int) -> int:
    """Bytes of the cached float32 stem and slot outputs of ``num_samples`` samples."""
    return 4 * num_samples * sum(math.prod(s) for s in teacher.shapes)


class SlotTrainer:
    """Trains one slot's supernet (or option bank), checkpointing after every epoch.

    Args:
        cfg: BKD settings.
        space: the search space.
        slot: the block slot.
        run: the run folder.
        fp: the slot's library fingerprint (what its weights depend on).
        device: where to train.
    """

    def __init__(self, cfg: BKDConfig, space: SearchSpace, slot: int, run: RunFolder, fp: str,
                 device: torch.device, teacher_block: torch.nn.Module | None = None,
                 warm: dict[str, torch.Tensor] | None = None) -> None:
        self.cfg, self.slot, self.run, self.fp, self.device = cfg, slot, run, fp, device
        self.options = space.options(slot)
        self.module = make_slot_module(cfg.mode, space, slot)
        seeded_init(self.module, torch.Generator().manual_seed(_seed(cfg.seed, "init", slot)))
        if cfg.init not in ("teacher", "random"):
            raise ValueError(f"unknown BKD init {cfg.init!r}; known: teacher, random")
        # a trained slot to continue from (donna extend) comes first: it holds the teacher's block already trained
        self.warm_started = warm is not None and warm_start(self.module, warm) > 0
        self.from_teacher = not self.warm_started and cfg.init == "teacher" and teacher_block is not None and \
            self.module.load_teacher(copy.deepcopy(teacher_block).cpu())
        self.module.to(device).train()
        self.opt = make_optimizer(torch.optim.Adam, self.module.parameters(), lr=cfg.lr,
                                  weight_decay=cfg.weight_decay)
        self.sched = torch.optim.lr_scheduler.ExponentialLR(self.opt, gamma=cfg.lr_decay)
        self.epoch, self.history, self.seconds = 0, [], 0.0
        self._resume()

    def _resume(self) -> None:
        path = self.run.slot_checkpoint(self.slot)
        if not path.is_file():
            return
        ckpt = torch.load(path, map_location=self.device, weights_only=True)
        if ckpt.get("fingerprint") != self.fp:
            raise ValueError(f"slot {self.slot}: checkpoint {path} was made with other settings; use a new "
                             f"--workdir or delete {self.run.library}")
        self.module.load_state_dict(ckpt["module"])
        self.opt.load_state_dict(ckpt["opt"])
        self.sched.load_state_dict(ckpt["sched"])
        self.epoch, self.history, self.seconds = ckpt["epoch"], ckpt["history"], ckpt["seconds"]

    def sampler(self, epoch: int) -> torch.Generator:
        """The generator drawing this slot's options during ``epoch``."""
        return torch.Generator().manual_seed(_seed(self.cfg.seed, "options", self.slot, epoch))

    def step_options(self, gen: torch.Generator) -> list[BlockSpec]:
        """The options trained in one step (see ``BKDConfig.sampling``)."""
        if self.cfg.mode == "independent":
            return self.options
        if self.cfg.sampling == "uniform":
            return [self.options[int(torch.randint(len(self.options), (1,), generator=gen))]]
        if self.cfg.sampling != "sandwich":
            raise ValueError(f"unknown BKD sampling {self.cfg.sampling!r}; known: sandwich, uniform")
        picks = torch.randint(len(self.options), (self.cfg.random_per_step,), generator=gen).tolist()
        return [self.options[-1], self.options[0], *(self.options[i] for i in picks)]  # largest, smallest, random

    def set_lr(self, epoch: int, step: int, steps_per_epoch: int) -> None:
        """Schedule 'cosine': the learning rate of step ``step`` of ``epoch`` (schedule 'epoch' decays in
        ``end_epoch``). A function of the position alone, so a resumed run follows the same curve."""
        if self.cfg.lr_schedule != "cosine":
            return
        progress = (epoch * steps_per_epoch + step) / max(1, self.cfg.epochs * steps_per_epoch)
        for group in self.opt.param_groups:
            group["lr"] = 0.5 * self.cfg.lr * (1 + math.cos(math.pi * progress))

    def step(self, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """One optimiser step on a batch: the step's options' gradients summed (sandwich rule, OFA/BigNAS)."""
        specs = self.step_options(gen)
        self.opt.zero_grad(set_to_none=True)
        total = torch.zeros((), device=self.device)
        for spec in specs:
            loss = nsr_loss(self.module(x, spec), y)
            loss.backward()
            total += loss.detach()
        self.opt.step()
        return total / len(specs)

    def end_epoch(self, losses: list[torch.Tensor], seconds: float) -> None:
        """Decays the learning rate, records the epoch's mean NSR and writes the checkpoint atomically."""
        self.sched.step()
        self.history.append(float(torch.stack(losses).mean()) if losses else float("nan"))
        self.epoch += 1
        self.seconds += seconds
        state = {"format": CKPT_FORMAT, "fingerprint": self.fp, "epoch": self.epoch, "history": self.history,
                 "seconds": self.seconds, "module": self.module.state_dict(), "opt": self.opt.state_dict(),
                 "sched": self.sched.state_dict()}
        atomic_save(self.run.slot_checkpoint(self.slot), lambda p: torch.save(state, p))

    def finish(self) -> dict[str, Any]:
        """The slot's trained weights and manifest (``{"slot", "weights", "manifest"}``): a job's result, which the
        driver writes with ``write_slot``."""
        state = {k: v.detach().cpu() for k, v in self.module.state_dict().items()}
        weights = {"format": LIBRARY_FORMAT, "mode": self.cfg.mode, "slot": self.slot, "fingerprint": self.fp,
                   "state_dict": state}
        manifest = {"format": LIBRARY_FORMAT, "slot": self.slot, "mode": self.cfg.mode, "fingerprint": self.fp,
                    "init": "teacher" if self.from_teacher else "run's slot" if self.warm_started else "random",
                    "epochs": self.epoch,
                    "train_nsr": self.history, "seconds": round(self.seconds, 3),
                    "options": [str(o) for o in self.options]}
        return {"slot": self.slot, "weights": weights, "manifest": manifest}


def write_slot(run: RunFolder, trained: dict[str, Any]) -> dict[str, Any]:
    """Driver: writes a trained slot's weights, then its manifest (the done marker), and removes its checkpoint
    (the one in this run folder; a worker on another machine without a shared file system keeps its own)."""
    slot = trained["slot"]
    atomic_save(run.slot_weights(slot), lambda p: torch.save(trained["weights"], p))
    write_json(run.slot_manifest(slot), trained["manifest"])
    run.slot_checkpoint(slot).unlink(missing_ok=True)
    return trained["manifest"]


def train_slot_cached(cfg: BKDConfig, space: SearchSpace, slot: int, views: list[tuple[torch.Tensor, torch.Tensor]],
                      workdir: str, fp: str, progress: bool = True, step_callback: StepCallback | None = None,
                      teacher_block: torch.nn.Module | None = None,
                      warm: dict[str, torch.Tensor] | None = None) -> dict[str, Any]:
    """Job: trains one slot from cached teacher features; epoch e uses ``views[e % len(views)]`` (input, target).

    Checkpoints go to ``workdir`` as seen by the worker; the trained slot is returned (``SlotTrainer.finish``).
    ``warm``: another slot module's weights to start from instead of the teacher's block (``warm_start``).
    """
    set_threads(cfg.threads)
    trainer = SlotTrainer(cfg, space, slot, RunFolder(workdir), fp, torch_device(cfg.train_device), teacher_block,
                          warm)
    n, bs = len(views[0][0]), cfg.batch_size
    stop = n - n % bs if n >= bs else n
    steps = math.ceil(stop / bs)
    bar = tqdm(total=cfg.epochs * steps, initial=trainer.epoch * steps, desc=f"bkd slot {slot}",
               disable=not progress, leave=False, position=bar_position())  # a resumed slot starts where it was
    for epoch in range(trainer.epoch, cfg.epochs):
        start, losses = time.perf_counter(), []
        inputs, targets = views[epoch % len(views)]
        order = torch.randperm(n, generator=torch.Generator().manual_seed(order_seed(cfg.seed, epoch)))
        gen = trainer.sampler(epoch)
        for step, first in enumerate(range(0, stop, bs)):
            idx = order[first:first + bs].to(inputs.device)
            trainer.set_lr(epoch, step, steps)
            losses.append(trainer.step(inputs[idx].to(trainer.device), targets[idx].to(trainer.device), gen))
            bar.update()
            if step_callback is not None:
                step_callback(slot, epoch, step)
        trainer.end_epoch(losses, time.perf_counter() - start)
        bar.set_postfix(nsr=f"{trainer.history[-1]:.3f}")
    bar.close()
    return trainer.finish()


def train_slots_streaming(cfg: BKDConfig, space: SearchSpace, teacher: TeacherParts, data: DataSplits,
                          slots: list[int], workdir: str, fps: list[str], progress: bool = True,
                          step_callback: StepCallback | None = None,
                          warm: dict[int, dict[str, torch.Tensor]] | None = None) -> list[dict[str, Any]]:
    """Job: trains ``slots`` together, one teacher forward per batch feeding every slot (large data sets); returns
    every trained slot (``SlotTrainer.finish``)."""
    set_threads(cfg.threads)
    device, run = torch_device(cfg.train_device), RunFolder(workdir)
    trainers = [SlotTrainer(cfg, space, s, run, fps[s], device, teacher.blocks[s], (warm or {}).get(s))
                for s in slots]
    teacher = teacher.to(device).eval()
    first = min(t.epoch for t in trainers)
    for epoch in tqdm(range(first, cfg.epochs), initial=first, total=cfg.epochs, desc="bkd (streamed)",
                      disable=not progress, leave=False):
        active = [t for t in trainers if t.epoch == epoch]
        gens = {t.slot: t.sampler(epoch) for t in active}
        losses, start = {t.slot: [] for t in active}, time.perf_counter()
        split = view_split(cfg, data.train, epoch)
        steps = max(1, len(split) // cfg.batch_size)  # drop_last below
        for step, (x, _) in enumerate(batches(split, cfg.batch_size, shuffle=True, drop_last=True,
                                              seed=order_seed(cfg.seed, epoch), device=device)):
            with torch.no_grad():
                feats = teacher.features(x)
            for t in active:
                t.set_lr(epoch, step, steps)
                losses[t.slot].append(t.step(feats[t.slot], feats[t.slot + 1], gens[t.slot]))
                if step_callback is not None:
                    step_callback(t.slot, epoch, step)
        for t in active:
            t.end_epoch(losses[t.slot], time.perf_counter() - start)
    return [t.finish() for t in trainers]


def run_bkd(cfg: BKDConfig, space: SearchSpace, teacher: TeacherParts, data: DataSplits, workdir: str | Path,
            progress: bool = True, features: list[torch.Tensor] | None = None,
            step_callback: StepCallback | None = None, slots: list[int] | None = None,
            warm: dict[int, dict[str, Any]] | None = None) -> BlockLibrary:
    """Builds (or completes) the block library of every slot in ``workdir/library``.

    Args:
        cfg: BKD settings.
        space: the search space (one library entry per slot).
        teacher: the teacher cut for ``space``.
        data: the data splits (BKD trains on ``data.train`` only).
        workdir: the run folder.
        progress: show tqdm progress bars.
        features: precomputed ``compute_features(teacher, data.train, ...)``, reused when given.
        step_callback: called as ``(slot, epoch, step)`` after every step (tests interrupt runs with it).
        slots: the slots to train (default: every slot; ``donna extend`` trains only those that gained options).
        warm: per slot, ``{"fingerprint", "state_dict"}`` of a trained slot module to start from instead of the
            teacher's block (``donna extend``: the run's slot; ``nested_supernet.warm_start``).

    Returns:
        The ``BlockLibrary`` of ``workdir``.

    Raises:
        ValueError: the run folder holds a library made with other settings.
    """
    run, device = RunFolder(workdir), torch_device(cfg.train_device)
    fps = slot_fingerprints(cfg.fingerprint(), space, teacher, data)
    warm = warm or {}
    fps = [fingerprint({"slot": fp, "warm": warm[s]["fingerprint"]}) if s in warm else fp for s, fp in enumerate(fps)]
    wanted = range(space.num_slots) if slots is None else slots
    pending = [s for s in wanted if not _slot_done(run, s, fps[s])]
    save_config(workdir, "bkd", cfg)
    if pending:
        with torch_threads(None):  # features use every core; each job then sets cfg.threads
            jobs = _jobs(cfg, space, teacher, data, str(workdir), fps, pending, device, progress, features,
                         step_callback, {s: w["state_dict"] for s, w in warm.items()})
            for _, trained in executor_for(cfg).completed(jobs):
                for slot in trained if isinstance(trained, list) else [trained]:
                    write_slot(run, slot)
    return BlockLibrary(workdir, space)


def _slot_done(run: RunFolder, slot: int, fp: str) -> bool:
    manifest = read_json(run.slot_manifest(slot))
    if manifest is None:
        return False
    if manifest.get("fingerprint") != fp:
        raise ValueError(f"{run.library} holds slot {slot} weights made with other settings (teacher, data, "
                         "space or BKD config); use a new --workdir or delete that folder")
    return run.slot_weights(slot).is_file()


def _jobs(cfg: BKDConfig, space: SearchSpace, teacher: TeacherParts, data: DataSplits, workdir: str,
          fps: list[str], pending: list[int], device: torch.device, progress: bool,
          features: list[torch.Tensor] | None, step_callback: StepCallback | None,
          warm: dict[int, dict[str, torch.Tensor]] | None = None) -> list[Job]:
    mode = cfg.features
    if mode == "auto":
        fits = feature_bytes(teacher, len(data.train)) * (1 + cfg.augment_views) <= cfg.cache_limit_mb * 2**20
        mode = "memory" if features is not None or fits else "stream"
    if mode == "stream":
        return [Job("bkd (streamed)", train_slots_streaming,
                    (cfg, space, teacher, data, pending, workdir, fps, progress, step_callback, warm))]
    if mode != "memory":
        raise ValueError(f"unknown BKD features mode {cfg.features!r}; known: auto, memory, stream")
    views = [features] if features is not None else view_features(cfg, teacher.to(device), data.train, device, progress)
    return [Job(f"bkd slot {s}", train_slot_cached,
                (cfg, space, s, [(v[s], v[s + 1]) for v in views], workdir, fps[s], progress, step_callback,
                 teacher.blocks[s], (warm or {}).get(s)))
            for s in pending]


def view_features(cfg: BKDConfig, teacher: TeacherParts, split: Dataset, device: torch.device,
                  progress: bool = False) -> list[list[torch.Tensor]]:
    """Teacher features of the train split, then of ``cfg.augment_views`` randomly shifted copies of it.

    Augmentation happens before the teacher forward, so every view has its own targets; an epoch trains on one
    view (``epoch % views``), which gives more distinct targets at the same step count. Splits that are not held
    in memory get no extra views.
    """
    count = 1 + cfg.augment_views if isinstance(split, TensorSplit) else 1
    return [compute_features(teacher, view_split(cfg, split, v), device, progress=progress) for v in range(count)]


def view_split(cfg: BKDConfig, split: Dataset, epoch: int) -> Dataset:
    """The view of the train split epoch ``epoch`` trains on: the split itself or one of its shifted copies."""
    view = epoch % (1 + cfg.augment_views) if isinstance(split, TensorSplit) else 0
    return split if view == 0 else shifted_copy(split, _seed(cfg.seed, "view", view) % 2**31)


def read_bn_file(path: Path) -> dict[str, Any]:
    """A slot's recalibrated BatchNorm file (``library/bn_slotN.pt``).

    Raises:
        ValueError: it is missing, truncated or damaged (naming the file and the command that rebuilds it).
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # missing, truncated or damaged: the same fix
        raise ValueError(f"{path} could not be read ({type(err).__name__}); delete it and run "
                         "`donna build-predictor` on this run folder again to rebuild it") from None


class BlockLibrary:
    """The BKD block library of a run folder: any option of any slot as a static module with its BKD weights.

    Args:
        workdir: the run folder (or its ``library`` sub-folder).
        space: the search space the library was built for.
    """

    def __init__(self, workdir: str | Path, space: SearchSpace) -> None:
        root = Path(workdir)
        self.run = RunFolder(root.parent if root.name == "library" and not RunFolder(root).library.is_dir() else root)
        self.space = space
        self._modules: dict[int, SlotSupernet | OptionBank | ExtendedSlot] = {}
        self._bn: dict[int, dict[str, dict[str, torch.Tensor]]] = {}

    def manifest(self, slot: int) -> dict[str, Any] | None:
        """The slot's manifest (fingerprint, mode, training history), or None when the slot is not built."""
        self.space.slot_input_shape(slot)  # validates the slot index
        return read_json(self.run.slot_manifest(slot))

    def has_slot(self, slot: int) -> bool:
        """Whether the slot's BKD weights are complete."""
        return self.manifest(slot) is not None and self.run.slot_weights(slot).is_file()

    def slot_module(self, slot: int) -> SlotSupernet | OptionBank | ExtendedSlot:
        """The slot's trained supernet (or option bank), loaded once, in eval mode on the CPU."""
        if slot not in self._modules:
            manifest = self.manifest(slot)
            if manifest is None or not self.run.slot_weights(slot).is_file():
                raise ValueError(f"slot {slot} has no BKD weights in {self.run.library}; run BKD first "
                                 "(donna build-predictor)")
            if manifest["options"] != [str(o) for o in self.space.options(slot)]:
                raise ValueError(f"slot {slot}: the library in {self.run.library} was built for other options "
                                 f"than space {self.space.name!r} has")
            ckpt = torch.load(self.run.slot_weights(slot), map_location="cpu", weights_only=True)
            self._modules[slot] = load_slot_module(ckpt, self.space, slot, self.run.library).eval()
        return self._modules[slot]

    def load(self) -> BlockLibrary:
        """Loads every slot's weights and recalibrated statistics now (a copy sent to another process or machine
        then needs no run folder there); returns ``self``.

        Raises:
            ValueError: a slot has no BKD weights yet.
        """
        for slot in range(self.space.num_slots):
            self.slot_module(slot)
            self.bn_stats(slot)
        return self

    def bn_stats(self, slot: int) -> dict[str, dict[str, torch.Tensor]]:
        """Recalibrated BatchNorm buffers per option string (empty before scoring)."""
        if slot not in self._bn:
            path = self.run.slot_bn(slot)
            if not path.is_file() and self.run.slot_scores(slot).is_file():
                raise ValueError(f"{path} is missing although slot {slot} was scored; run `donna build-predictor` "
                                 "on this run folder again to rebuild it")
            data = read_bn_file(path) if path.is_file() else {}
            fp = (self.manifest(slot) or {}).get("fingerprint")
            self._bn[slot] = data.get("stats", {}) if data.get("fingerprint") == fp else {}
        return self._bn[slot]

    def block(self, slot: int, spec: BlockSpec, recalibrated: bool = True) -> torch.nn.Module:
        """Option ``spec`` of ``slot`` as a static module with its BKD weights (eval mode).

        With ``recalibrated`` the option's BatchNorm statistics recalibrated while scoring are loaded (when
        scoring has run); otherwise the supernet's shared statistics are kept.
        """
        block = self.slot_module(slot).extract(spec)
        stats = self.bn_stats(slot).get(str(spec)) if recalibrated else None
        if stats:
            block.load_state_dict(stats, strict=False)
        return block
