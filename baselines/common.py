"""What both gradient searchers share: data halves, devices, seeding, the result and its provenance."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import random
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from baselines.budget import (
    GIB,
    default_budget,
    fit_step_memory,
    largest_batch,
    limit_heap_retention,
    peak_rss_bytes,
    reset_peak_rss,
)
from baselines.costs import OpCost, macs_op_cost, table_op_cost
from blocks.ir import Arch
from blocks.spaces import SearchSpace
from common.batching import SeededBatches
from common.device import torch_device
from common.fileio import atomic_path
from search.base import Searcher, SearchResult, make_config
from search.objectives import Objective
from search.spec import RunSize, ScheduleCost, SearcherSpec

STATE_NAME = "supernet_state.pt"  # the per-epoch checkpoint of a gradient search inside its checkpoint folder
STATE_VERSION = 1
# Time of one forward + backward pass of a supernet on one CPU core: a fixed part (thousands of small op
# calls) plus a part per image and supernet MAC; CPU time measured on mbconv-tiny at batches 16 and 64.
SECONDS_PER_PASS = 2.9
SECONDS_PER_MAC = 4.2e-10


def check_settings(config: Any, searcher: str, checks: dict[str, bool]) -> None:
    """Raises ``ValueError`` naming the first setting of ``config`` whose check is false."""
    bad = [name for name, ok in checks.items() if not ok]
    if bad:
        raise ValueError(f"{searcher}: invalid {bad[0]}={getattr(config, bad[0])!r}; see "
                         f"{type(config).__name__} for the allowed range")


def resolve_dataset(data: Any) -> Dataset:
    """The training set behind ``data``: a torch ``Dataset``, a ``DataLoader`` or splits with ``.train``.

    Raises:
        ValueError: no data was given.
    """
    if data is None:
        raise ValueError("a gradient searcher needs training data: pass data=<torch Dataset, DataLoader or "
                         "splits with .train> to create_searcher")
    if isinstance(data, DataLoader):
        return data.dataset
    if not isinstance(data, Dataset) and hasattr(data, "train"):
        return data.train
    return data


def seed_everything(seed: int) -> None:
    """Seeds Python, numpy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def split_halves(n: int, portion: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded random split of ``range(n)``: the first ``portion`` and the rest.

    Raises:
        ValueError: either part would be empty.
    """
    order = np.random.default_rng(seed).permutation(n)
    cut = int(np.floor(portion * n))
    if cut < 1 or cut >= n:
        raise ValueError(f"train_portion {portion} of {n} samples leaves an empty half; use 0 < portion < 1 "
                         "and at least 2 samples")
    return order[:cut], order[cut:]


def make_loader(dataset: Dataset, indices: Sequence[int], batch_size: int, seed: int) -> SeededBatches:
    """Shuffled batches over ``indices`` whose order depends only on ``seed`` (and the pass)."""
    return SeededBatches(dataset, indices, batch_size, seed)


class Cycle:
    """A persistent iterator over a loader that starts a new pass when one ends (never a fresh ``iter`` per step)."""

    def __init__(self, loader: SeededBatches) -> None:
        self.loader = loader
        self._it: Iterator | None = None

    def __next__(self) -> Any:
        if self._it is None:
            self._it = iter(self.loader)
        try:
            return next(self._it)
        except StopIteration:
            self._it = iter(self.loader)
            return next(self._it)

    def __iter__(self) -> Cycle:
        return self


def to_device(batch: Any, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``(images, labels)`` of a batch, on ``device``."""
    x, y = batch[0], batch[1]
    return x.to(device, non_blocking=True), y.to(device, non_blocking=True)


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy of a batch."""
    return float((logits.argmax(1) == labels).float().mean())


def clip_grad_value(params: Sequence[nn.Parameter], value: float | None) -> None:
    """Clamps every gradient element into ``[-value, value]`` (MXNet's ``clip_gradient``)."""
    if value is not None:
        nn.utils.clip_grad_value_(list(params), value)


class SupernetSearcher(Searcher):
    """Base of the gradient searchers: config, data, costs, result; a subclass implements ``_run``.

    Args:
        data: training data (a torch ``Dataset``, a ``DataLoader`` or splits with ``.train``).
        op_cost: ``(slot_index, BlockSpec) -> cost`` for the cost-aware parts (ms from a latency
            table, see ``baselines.costs.table_op_cost``); default: MACs.
        arch_cost: ``Arch -> cost`` in the same unit, for the fixed stem and head when a target is
            given (``LatencyTable.predict``); default: none (the fixed part counts as 0).
        latency_table: a ``latency.LatencyTable`` giving both costs in ms (``table_op_cost``) when
            ``op_cost`` is not given.
        latency_target_ms: the run's latency target, used where the subclass says (``_run_target``).
        **settings: fields of the subclass's config dataclass.
    """

    config_cls: type
    spec = SearcherSpec(needs_data=True, latency="table", resumable=True, emits="single")
    seconds_per_pass: float = SECONDS_PER_PASS  # fixed time of one forward + backward of the supernet
    seconds_per_mac: float = SECONDS_PER_MAC  # time of one image's forward + backward per supernet MAC

    def __init__(self, data: Any = None, op_cost: OpCost | None = None, arch_cost: Any = None,
                 latency_table: Any = None, latency_target_ms: float | None = None, **settings: Any) -> None:
        self.config = make_config(self.config_cls, self.name, self._run_target(settings, latency_target_ms))
        self.data = data
        if latency_table is not None and op_cost is None:  # what `donna search` passes (SearcherSpec.latency)
            op_cost, arch_cost = table_op_cost(latency_table)
        self.op_cost = op_cost
        self.arch_cost = arch_cost
        self.batch_size = self.config.batch_size  # the batch in use: the budget may lower it (see choose_batch)
        self.memory: dict[str, Any] | None = None  # budget, chosen batch and measured peak of the last search
        self.checkpoint_dir: Path | None = None  # where the search saves its state after every epoch
        self._identity: dict[str, Any] = {}  # what a saved state must match (set when a search starts)

    @staticmethod
    def _run_target(settings: dict[str, Any], latency_target_ms: float | None) -> dict[str, Any]:
        """The settings, given the run's latency target (``latency_target_ms``); unused unless a subclass says."""
        return settings

    def cost(self, space: SearchSpace, size: RunSize) -> ScheduleCost:
        """Epochs x steps of the schedule (at the configured batch) and a time from the supernet's MACs."""
        plan = [(label, epochs, steps, passes) for label, epochs, steps, passes in self.epoch_plan(size.n_train)
                if epochs > 0]
        batch = int(self.config.batch_size)
        step_passes = sum(epochs * steps * passes for _, epochs, steps, passes in plan)
        work = " + ".join(f"{epochs} {label} epochs x {steps} steps" for label, epochs, steps, _ in plan)
        seconds = step_passes * (self.seconds_per_pass + batch * supernet_macs(space) * self.seconds_per_mac)
        return ScheduleCost(f"{work} of batch {batch}", seconds)

    def epoch_plan(self, n_train: int) -> list[tuple[str, int, int, int]]:
        """``(label, epochs, steps per epoch, forward-backward passes per step)`` of each stage of the schedule."""
        raise NotImplementedError

    def steps_per_epoch(self, n: int) -> int:
        """Steps of an epoch over ``n`` samples at the configured batch (as ``make_loader`` and the cap give)."""
        batch, cap = int(self.config.batch_size), self.config.max_steps_per_epoch
        steps = n // batch if n > batch else 1
        return min(steps, cap) if cap is not None else steps

    def settings(self) -> dict[str, Any]:
        """The config's fields; after a search also ``memory`` (budget, batch chosen, peak measured)."""
        out = dataclasses.asdict(self.config)
        if self.memory is not None:
            out["memory"] = dict(self.memory)
        return out

    def provenance(self) -> dict[str, Any]:
        """As ``Searcher.provenance`` but without the measured memory, so an architecture's provenance
        depends on the seed and settings only (the measurements are in ``settings()``, hence search.json)."""
        return {**super().provenance(), "settings": dataclasses.asdict(self.config)}

    def memory_hints(self) -> str:
        """Settings, besides a larger ``memory_gb``, that lower a step's memory (for the refusal message)."""
        hints = []
        if not getattr(self.config, "checkpointing", True):
            hints.append("checkpointing=True")
        if getattr(self.config, "partial_k", 4) < 4:
            hints.append("partial_k=4")
        hints.append("a space with fewer choices or a smaller input_size")
        return ", or " + ", or ".join(hints)

    def choose_batch(self, model: nn.Module, phases: Sequence[tuple[list[nn.Parameter], list[nn.Parameter]]],
                     sample: torch.Tensor, device: torch.device) -> int:
        """The batch for the search: ``batch_size``, lowered until a search step's measured peak fits the budget.

        A step is one forward and backward per phase (``(updated, frozen)`` parameter lists, as the
        searcher's own steps), measured at two small batches of random inputs shaped like ``sample``
        (``baselines.budget``); the model's buffers and the RNG are restored afterwards, so the
        search is the same as without probing. Records the budget, the fit and the batch in
        ``self.memory``.

        Raises:
            ValueError: even batch 1 does not fit ``memory_gb`` (one line naming what would).
        """
        cfg = self.config
        momentum = sum(p.numel() * p.element_size() for updated, _ in phases for p in updated)
        saved = [b.detach().clone() for b in model.buffers()]

        def step_at(batch: int) -> None:
            x = torch.randn((batch, *sample.shape), generator=torch.Generator().manual_seed(batch)).to(device)
            for updated, fixed in phases:
                with frozen(fixed):
                    loss = F.cross_entropy(model(x), torch.zeros(batch, dtype=torch.long, device=device))
                    loss.backward(inputs=updated)
                del loss
            for updated, _ in phases:
                for p in updated:
                    p.grad = None

        before = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else peak_rss_bytes()
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            fit = fit_step_memory(step_at, device, extra=momentum)
        with torch.no_grad():
            for buffer, value in zip(model.buffers(), saved):
                buffer.copy_(value)
        if cfg.memory_gb is not None:
            budget, source = int(cfg.memory_gb * GIB), "memory_gb"
        else:
            budget, source = default_budget(device)
        batch = largest_batch(fit, budget, cfg.batch_size, self.name, self.memory_hints())
        if batch < cfg.batch_size:
            warnings.warn(f"{self.name}: batch {cfg.batch_size} does not fit {budget / GIB:.2f} GB ({source}); "
                          f"searching at batch {batch}", stacklevel=3)
        self.memory = {"budget_gb": round(budget / GIB, 4), "budget_from": source, "batch_size": batch,
                       "requested_batch_size": cfg.batch_size, "predicted_peak_gb": round(fit.predict(batch) / GIB, 4),
                       "step_fit": fit.to_dict(), "peak_before_probe_gb": round(before / GIB, 4)}
        self._reset_peak(device)
        return batch

    @staticmethod
    def _reset_peak(device: torch.device) -> None:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        else:
            reset_peak_rss()

    def _record_peak(self, device: torch.device) -> None:
        """Adds the measured peak of the search (after ``choose_batch``) and of the whole process to ``self.memory``.

        Measuring the probes resets the kernel's peak (``VmHWM``, which ``/usr/bin/time`` and
        ``ru_maxrss`` also read), so the peak before the probes is kept and reported with it.
        """
        if self.memory is None:
            return
        if device.type == "cuda":
            peak, kind = torch.cuda.max_memory_allocated(device), "torch.cuda.max_memory_allocated"
        else:
            peak, kind = peak_rss_bytes(), "process peak resident set (VmHWM) since the batch was chosen"
        whole = max(peak / GIB, self.memory["peak_before_probe_gb"])
        self.memory.update({"peak_gb": round(peak / GIB, 4), "peak_measure": kind,
                            "process_peak_gb": round(whole, 4)})

    def cost_fn(self, space: SearchSpace) -> tuple[OpCost, str]:
        """The cost function in use and its unit (``"ms"`` when given, ``"macs"`` by default)."""
        if self.op_cost is not None:
            return self.op_cost, "ms"
        return macs_op_cost(space), "macs"

    def fixed_cost(self, space: SearchSpace) -> float:
        """Cost of the stem and head: ``arch_cost(ref) - sum of ref's block costs`` (0 without ``arch_cost``)."""
        if self.arch_cost is None or self.op_cost is None:
            return 0.0
        reference = space.reference()
        blocks = sum(self.op_cost(i, spec) for i, spec in enumerate(reference.blocks))
        return float(self.arch_cost(reference)) - float(blocks)

    def _search(self, space, objectives, checkpoint_dir, progress, hv_reference) -> SearchResult:
        if not isinstance(space, SearchSpace):
            raise ValueError(f"{self.name} searches a blocks.SearchSpace, got {type(space).__name__}")
        dataset = resolve_dataset(self.data)
        self.checkpoint_dir = None if checkpoint_dir is None else Path(checkpoint_dir)
        self._identity = self._state_identity(space, len(dataset))
        seed_everything(self.config.seed)
        device = torch_device(self.config.device)
        if device.type == "cpu":
            limit_heap_retention()
        self.memory, self.batch_size = None, self.config.batch_size
        arch, history = self._run(space, dataset, device, progress)
        self._record_peak(device)
        space.validate(arch)
        result = self._result(space, arch, objectives, history)
        if objectives and hv_reference is not None:
            result.hv_reference = hv_reference  # a front of one still has a hypervolume
        return result

    def _run(self, space: SearchSpace, dataset: Dataset, device: torch.device,
             progress: bool) -> tuple[Arch, list[dict[str, Any]]]:
        """The method itself: trains the supernet and returns the projected architecture and a history."""
        raise NotImplementedError

    def _state_identity(self, space: SearchSpace, n_train: int) -> dict[str, Any]:
        """What a saved state must match to be resumed: the searcher, its settings, the space, the data size."""
        lower, upper = space.genome_bounds()
        return json.loads(json.dumps({
            "searcher": self.name, "settings": dataclasses.asdict(self.config), "n_train": int(n_train),
            "space": {"name": space.name, "reference": space.reference().key, "bounds": [lower.tolist(),
                                                                                           upper.tolist()]}}))

    def _save_state(self, model: nn.Module, optimizers: Sequence[torch.optim.Optimizer],
                    history: list[dict[str, Any]], extra: Mapping[str, Any] | None = None) -> None:
        """Saves the supernet, the optimisers, the RNG and the history after an epoch (atomically; no-op
        without a checkpoint folder). ``extra`` is the searcher's own JSON-ready state."""
        if self.checkpoint_dir is None:
            return
        meta = {"version": STATE_VERSION, **self._identity, "history": history, "batch_size": self.batch_size,
                "memory": self.memory, "extra": dict(extra or {})}
        state = {"meta": json.dumps(meta), "model": model.state_dict(), "rng": torch.get_rng_state(),
                 "optimizers": [opt.state_dict() for opt in optimizers]}
        with atomic_path(self.checkpoint_dir / STATE_NAME) as tmp:
            torch.save(state, tmp)

    def _load_state(self, model: nn.Module, optimizers: Sequence[torch.optim.Optimizer],
                    device: torch.device) -> dict[str, Any] | None:
        """Restores what ``_save_state`` wrote (``None`` when there is nothing to resume); returns its metadata.

        Ops removed before the save are removed again first, so the model has the saved shape.

        Raises:
            ValueError: the saved state belongs to another search (names the first field that differs).
        """
        path = None if self.checkpoint_dir is None else self.checkpoint_dir / STATE_NAME
        if path is None or not path.is_file():
            return None
        state = torch.load(path, map_location=device, weights_only=True)
        meta = json.loads(state["meta"])
        for name, want in {"version": STATE_VERSION, **self._identity}.items():
            if meta.get(name) != want:
                raise ValueError(f"{path} belongs to another search (its {name} differ from this one's); resume "
                                 "with the same settings, space and data, or delete the file to start afresh")
        for name, module in model.named_modules():
            if hasattr(module, "remove_ops") and f"{name}.alive" in state["model"]:
                module.remove_ops(~state["model"][f"{name}.alive"].to(module.alive.device))
        model.load_state_dict(state["model"])
        for opt, saved in zip(optimizers, state["optimizers"]):
            opt.load_state_dict(saved)
        torch.set_rng_state(state["rng"].cpu())
        self.batch_size, self.memory = int(meta["batch_size"]), meta["memory"]
        return meta

    def _result(self, space: SearchSpace, arch: Arch, objectives: tuple[Objective, ...],
                history: list[dict[str, Any]]) -> SearchResult:
        genome = space.encode(arch)[None, :]
        values = np.array([[float(obj(genome)[0]) for obj in objectives]], dtype=float).reshape(1, -1)
        return SearchResult(
            archs=[arch], objectives=values, objective_names=tuple(o.name for o in objectives),
            maximize=tuple(o.maximize for o in objectives), history=history,
            n_evaluations=1 if objectives else 0, searcher=self.name, settings=self.settings(),
            genomes=genome.astype(np.int64),
        )


def supernet_macs(space: SearchSpace) -> float:
    """MACs of one image through every op of the supernet at each slot's deepest option (the cost proxy)."""
    cost = macs_op_cost(space)
    total = 0.0
    for i in range(space.num_slots):
        options = space.options(i)
        deepest = max(option.depth for option in options)
        total += sum(cost(i, option) for option in options if option.depth == deepest)
    return total


@contextlib.contextmanager
def frozen(params: Sequence[nn.Parameter]) -> Iterator[None]:
    """``params`` do not require grad inside the block (those that did are restored on exit).

    A step that updates one set of parameters freezes the other: autograd then records no graph
    for the frozen ones (the same gradients for the rest, less memory and time; in particular a
    checkpointed op whose input and weights need no gradient keeps only its output).
    """
    changed = [p for p in params if p.requires_grad]
    for p in changed:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in changed:
            p.requires_grad_(True)


def history_entry(epoch: int, steps: int, **values: Any) -> dict[str, Any]:
    """One epoch of a gradient search, shaped like a genome search's generation plus its own columns."""
    return {"generation": epoch, "evaluations": steps, "hypervolume": float("nan"), "front_size": 1, **values}
