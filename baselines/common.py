"""What both gradient searchers share: data halves, devices, seeding, the result and its provenance."""

from __future__ import annotations

import contextlib
import dataclasses
import random
import warnings
from collections.abc import Iterator, Sequence
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
from baselines.costs import OpCost, macs_op_cost
from blocks.ir import Arch
from blocks.spaces import SearchSpace
from common.batching import SeededBatches
from common.device import torch_device
from search.base import Searcher, SearchResult, make_config
from search.objectives import Objective


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
        **settings: fields of the subclass's config dataclass.
    """

    config_cls: type

    def __init__(self, data: Any = None, op_cost: OpCost | None = None, arch_cost: Any = None,
                 **settings: Any) -> None:
        self.config = make_config(self.config_cls, self.name, settings)
        self.data = data
        self.op_cost = op_cost
        self.arch_cost = arch_cost
        self.batch_size = self.config.batch_size  # the batch in use: the budget may lower it (see choose_batch)
        self.memory: dict[str, Any] | None = None  # budget, chosen batch and measured peak of the last search

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
        if checkpoint_dir is not None:
            warnings.warn(f"{self.name}: checkpoint/resume is not implemented for gradient searchers yet; "
                          "the search runs from scratch and writes no checkpoint", stacklevel=3)
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
