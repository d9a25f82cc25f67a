"""DSO-NAS (Zhang et al., "You Only Search Once") on a DONNA block space: sparse lambdas by APG-NAG.

Faithful parts: lambda >= 0 on every candidate op, initialised to 1, without weight decay;
BatchNorm gamma inside the ops frozen at 1; the APG-NAG optimiser (soft threshold, momentum 0.9)
for the lambdas and Nesterov SGD for the weights; the three stages (pretrain with lambda fixed,
search with weights and lambdas updated on alternating batches from two halves of the data with
paths of zero lambda removed every few epochs, hand-over); budget-aware penalty weights rescaled
into [0.5 gamma, gamma]. Adapted to the block space (see docs/baselines.md): lambda per (layer,
op) on each layer's residual branch, depth from surviving layers, one op per slot decided by
stages of rising gamma (``baselines.sparsify``), whose path is recorded in provenance. Memory:
per-op activation checkpointing, zero-lambda ops left out of the weight step, a batch chosen
for ``memory_gb`` (``baselines.budget``).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from baselines.apg import APGNAG
from baselines.common import (
    Cycle,
    SupernetSearcher,
    accuracy,
    check_settings,
    clip_grad_value,
    frozen,
    history_entry,
    make_loader,
    split_halves,
    to_device,
)
from baselines.costs import layer_costs, slot_cost_matrix
from baselines.mixed_supernet import SuperNet, op_name
from baselines.project import ADAPTATION_DSONAS, project_dsonas
from baselines.sparsify import StagedSparsification
from blocks.ir import Arch
from blocks.spaces import SearchSpace
from common.device import make_optimizer
from search.registry import register_searcher
from search.spec import Schedule

QUICK = {"pretrain_epochs": 1, "search_epochs": 2, "prune_every": 1, "batch_size": 16, "max_steps_per_epoch": 6,
         "sparsify_stages": 4}  # the "quick" schedule


@dataclass(frozen=True)
class DSONASConfig:
    """Settings of DSO-NAS; defaults follow the official CIFAR code where it is explicit."""

    pretrain_epochs: int = 120  # stage 1: weights only, lambda fixed at 1 (recalled; keep it a default)
    search_epochs: int = 120  # stage 2: alternating weight and lambda steps (official num_epoch)
    prune_every: int = 5  # remove paths whose lambda is zero every this many search epochs (official: 5)
    batch_size: int = 128  # per step (official: 64 per GPU on 2 GPUs); the memory budget may lower it
    memory_gb: float | None = None  # memory budget of a step; None = held + a safe share of free memory
    checkpointing: bool = True  # recompute each op's activations in backward: same result, far less memory
    partial_k: int = 1  # K of partial channels (PC-DARTS's) on layers after a slot's first; 1 = faithful
    sparsify_stages: int = 20  # stages of rising gamma after search until one op per slot survives; 0 = argmax
    sparsify_growth: float = 2.0  # gamma grows by this factor from one stage to the next
    stage_epochs: int = 1  # epochs of alternating steps per sparsification stage
    train_portion: float = 0.5  # share of the training data for the weights; the rest is for lambda
    w_lr: float = 0.1  # Nesterov SGD learning rate of the weights (constant during search, as in the code)
    w_momentum: float = 0.9  # Nesterov momentum
    w_weight_decay: float = 1e-4  # weight decay of the weights (never of lambda or of frozen gammas)
    lambda_lr: float | None = None  # APG-NAG step size; None = w_lr (one optimiser in the official code)
    lambda_momentum: float = 0.9  # mu of APG-NAG
    gamma: float = 1e-3  # L1 weight on lambda (1e-3 on CIFAR, 1e-2 on ImageNet)
    budget_aware: bool = True  # per-lambda gamma scaled by the cost of its path into [0.5 gamma, gamma]
    grad_clip: float | None = 2.0  # element-wise gradient clip (the official clip_gradient); None = off
    max_steps_per_epoch: int | None = None  # cap on weight steps per epoch (quick runs); None = full pass
    seed: int = 0  # seeds data splits, order and initialisation
    device: str | None = None  # torch device; None = CUDA when available, else CPU

    def __post_init__(self) -> None:
        checks = {"pretrain_epochs": self.pretrain_epochs >= 0, "search_epochs": self.search_epochs >= 1,
                  "prune_every": self.prune_every >= 1, "batch_size": self.batch_size >= 1,
                  "train_portion": 0 < self.train_portion < 1, "gamma": self.gamma >= 0,
                  "lambda_momentum": 0 <= self.lambda_momentum < 1,
                  "memory_gb": self.memory_gb is None or self.memory_gb > 0, "partial_k": self.partial_k >= 1,
                  "sparsify_stages": self.sparsify_stages >= 0, "sparsify_growth": self.sparsify_growth > 1,
                  "stage_epochs": self.stage_epochs >= 1}
        check_settings(self, "dso-nas", checks)


class DSONASNet(nn.Module):
    """The supernet with one lambda per (layer, candidate op) of every slot, initialised to 1."""

    def __init__(self, space: SearchSpace, partial_k: int = 1) -> None:
        super().__init__()
        self.net = SuperNet(space, partial_k=partial_k, bn_mode="frozen_gamma")
        self.lambdas = nn.ParameterList(nn.Parameter(torch.ones(s.max_depth, s.num_ops)) for s in self.net.slots)

    def weight_parameters(self) -> list[nn.Parameter]:
        """Trainable parameters of the supernet (frozen BatchNorm gammas and lambdas excluded)."""
        return [p for p in self.net.parameters() if p.requires_grad]

    def phases(self) -> list[tuple[list[nn.Parameter], list[nn.Parameter]]]:
        """``(updated, frozen)`` parameters of a search step's two halves: weight step, lambda step."""
        weights, lambdas = self.weight_parameters(), list(self.lambdas)
        return [(weights, lambdas), (lambdas, weights)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x, list(self.lambdas), None)

    @torch.no_grad()
    def prune(self) -> int:
        """Removes every op whose lambda is zero (never all ops of a slot's first layer); returns how many."""
        removed = 0
        for lam, slot in zip(self.lambdas, self.net.slots):
            for row, layer in enumerate(slot.layers):
                dead = lam[row] == 0
                if row == 0 and bool(dead.all()):
                    continue  # the first layer cannot vanish
                removed += int((dead & layer.alive).sum())
                layer.remove_ops(dead)
        return removed

    @torch.no_grad()
    def mask_removed(self, optimizer: APGNAG) -> None:
        """Keeps the lambdas (and their momentum) of removed ops at exactly zero."""
        for lam, slot in zip(self.lambdas, self.net.slots):
            alive = torch.stack([layer.alive for layer in slot.layers]).to(lam.dtype)
            lam.mul_(alive)
            buffer = optimizer.state.get(lam, {}).get("momentum_buffer")
            if buffer is not None:
                buffer.mul_(alive)


def penalty_weights(costs: list[np.ndarray], gamma: float, budget_aware: bool) -> list[torch.Tensor]:
    """Per-lambda L1 weights: ``gamma`` everywhere, or cost rescaled into ``[0.5 gamma, gamma]``.

    Args:
        costs: per slot, ``[Dmax, n_ops]`` cost of each path (layer position x op).
        gamma: the L1 weight.
        budget_aware: scale by cost (DSO-NAS's budget-aware variant) rather than uniform.
    """
    if not budget_aware:
        return [torch.full(c.shape, gamma, dtype=torch.float32) for c in costs]
    low = min(float(c.min()) for c in costs)
    high = max(float(c.max()) for c in costs)
    span = high - low if high > low else 1.0
    return [torch.tensor(gamma * (0.5 + 0.5 * (c - low) / span), dtype=torch.float32) for c in costs]


@register_searcher("dso-nas")
class DSONASSearcher(SupernetSearcher):
    """DSO-NAS as a searcher over a block space; returns one architecture.

    Args:
        data: training data (``Dataset``, ``DataLoader`` or splits with ``.train``).
        op_cost: ``(slot, BlockSpec) -> cost`` for the budget-aware penalty weights (ms from a latency
            table); default MACs.
        arch_cost: unused by DSO-NAS (accepted so both searchers take the same arguments).
        **settings: fields of ``DSONASConfig``.
    """

    name = "dso-nas"
    config_cls = DSONASConfig
    spec = dataclasses.replace(SupernetSearcher.spec, schedules={
        "paper": Schedule({}, "the official CIFAR code: 120 pretrain + 120 search epochs at batch 128"),
        "quick": Schedule(QUICK, "minutes on the embedded default (glyphs, mbconv-tiny) on a CPU core"),
    })
    seconds_per_mac = 8.5e-10  # all channels through every op (partial_k=1): about twice PC-DARTS's, measured

    def epoch_plan(self, n_train: int) -> list[tuple[str, int, int, int]]:
        cfg = self.config
        half = self.steps_per_epoch(int(math.floor(cfg.train_portion * n_train)))
        return [("pretrain", cfg.pretrain_epochs, self.steps_per_epoch(n_train), 1),
                ("search", cfg.search_epochs, half, 2),
                ("sparsify (at most)", cfg.sparsify_stages * cfg.stage_epochs, half, 2)]

    def build(self, space: SearchSpace, device: torch.device) -> tuple[DSONASNet, torch.optim.Optimizer, APGNAG,
                                                                      list[np.ndarray], list[torch.Tensor], str]:
        """The supernet, both optimisers, block costs, per-path penalty weights and the cost unit."""
        cfg = self.config
        model = DSONASNet(space, cfg.partial_k).to(device)
        model.net.set_memory_options(checkpointing=cfg.checkpointing)
        cost, unit = self.cost_fn(space)
        block_costs = [slot_cost_matrix(space, i, s.ops, cost) for i, s in enumerate(model.net.slots)]
        path_costs = [layer_costs(c, s.depths) for c, s in zip(block_costs, model.net.slots)]
        gammas = penalty_weights(path_costs, cfg.gamma, cfg.budget_aware)
        w_opt = make_optimizer(torch.optim.SGD, model.weight_parameters(), cfg.w_lr, momentum=cfg.w_momentum,
                               weight_decay=cfg.w_weight_decay, nesterov=True)
        l_opt = APGNAG([{"params": [lam], "gamma": g.to(device)} for lam, g in zip(model.lambdas, gammas)],
                       lr=self.lambda_lr, gamma=cfg.gamma, momentum=cfg.lambda_momentum, grad_clip=cfg.grad_clip)
        return model, w_opt, l_opt, block_costs, gammas, unit

    @property
    def lambda_lr(self) -> float:
        """APG-NAG's step size (the weights' learning rate unless set)."""
        return self.config.lambda_lr if self.config.lambda_lr is not None else self.config.w_lr

    def _run(self, space: SearchSpace, dataset: Dataset, device: torch.device,
             progress: bool) -> tuple[Arch, list[dict[str, Any]]]:
        cfg = self.config
        model, w_opt, l_opt, block_costs, gammas, unit = self.build(space, device)
        saved = self._load_state(model, (w_opt, l_opt), device)  # a killed search continues after its last epoch
        if saved is None:
            self.batch_size = self.choose_batch(model, model.phases(), dataset[0][0], device)
        halves = split_halves(len(dataset), cfg.train_portion, cfg.seed)
        history: list[dict[str, Any]] = list(saved["history"]) if saved else []
        extra = dict(saved["extra"]) if saved else {}
        self._train(model, dataset, halves, (w_opt, l_opt), device, history, extra, progress)
        stages = StagedSparsification(list(model.lambdas), gammas, cfg.sparsify_growth)
        if "sparsify" in extra:
            stages.restore(extra["sparsify"])
        if cfg.sparsify_stages:
            self._sparsify(model, dataset, halves, (w_opt, l_opt), stages, device, history, progress, extra)
        removed = sum(int((~layer.alive).sum()) for layer in model.net.mixed_layers())
        return self._finish(space, model, block_costs, gammas, unit, removed, stages), history

    def _train(self, model: DSONASNet, dataset: Dataset, halves: tuple[np.ndarray, np.ndarray],
               opts: tuple[torch.optim.Optimizer, APGNAG], device: torch.device, history: list[dict[str, Any]],
               extra: dict[str, Any], progress: bool) -> None:
        """Stages 1 and 2 (pretrain, search), from the epoch after the last one in ``history``; saves each epoch."""
        cfg = self.config
        steps = int(history[-1]["evaluations"]) if history else 0
        total = cfg.pretrain_epochs + cfg.search_epochs
        bar = tqdm(total=total, initial=min(len(history), total), desc="dso-nas search", unit="epoch",
                   disable=not progress)
        for epoch in range(len(history), cfg.pretrain_epochs):
            stats = self._pretrain_epoch(model, dataset, np.arange(len(dataset)), epoch, opts[0], device)
            steps += stats.pop("steps")
            history.append(history_entry(epoch + 1, steps, stage="pretrain", **stats))
            self._save_state(model, opts, history, extra)
            bar.update(1)
        for epoch in range(len(history) - cfg.pretrain_epochs, cfg.search_epochs):
            stats = self._search_epoch(model, dataset, halves, cfg.pretrain_epochs + epoch, opts, device)
            steps += stats.pop("steps")
            if (epoch + 1) % cfg.prune_every == 0 or epoch + 1 == cfg.search_epochs:
                extra["removed"] = extra.get("removed", 0) + model.prune()
                model.mask_removed(opts[1])
            history.append(history_entry(cfg.pretrain_epochs + epoch + 1, steps, stage="search",
                                         removed_ops=extra.get("removed", 0), **stats, **self._sparsity(model)))
            self._save_state(model, opts, history, extra)
            bar.update(1)
        bar.close()

    def _stage_steps(self, n_weight_half: int) -> int:
        """Lambda steps in one sparsification stage."""
        per_epoch = max(n_weight_half // self.batch_size, 1)
        if self.config.max_steps_per_epoch is not None:
            per_epoch = min(per_epoch, self.config.max_steps_per_epoch)
        return self.config.stage_epochs * per_epoch

    def _sparsify(self, model: DSONASNet, dataset: Dataset, halves: tuple[np.ndarray, np.ndarray],
                  opts: tuple[torch.optim.Optimizer, APGNAG], stages: StagedSparsification, device: torch.device,
                  history: list[dict[str, Any]], progress: bool, extra: dict[str, Any]) -> None:
        """Stages of rising gamma (``baselines.sparsify``) until one op per slot survives; paths go as they hit 0.

        Continues after the last stage recorded in ``stages`` (a resumed search); saves after each stage.
        """
        cfg = self.config
        n_steps = self._stage_steps(len(halves[0]))
        first = extra.get("sparsify", {}).get("first")
        if first is None:
            first = stages.first_exponent(n_steps, self.lambda_lr, cfg.lambda_momentum)
        epoch, steps = (int(history[-1]["generation"]), int(history[-1]["evaluations"])) if history else (0, 0)
        done = len(stages.path)
        bar = tqdm(total=cfg.sparsify_stages, initial=done, desc="dso-nas sparsify", unit="stage",
                   disable=not progress)
        for stage in range(done + 1, cfg.sparsify_stages + 1):
            if stages.done:
                break
            factor = cfg.sparsify_growth ** (first + stage - 1)
            stages.set_pressure(opts[1], factor)
            stats = {"steps": 0}
            for _ in range(cfg.stage_epochs):
                stats = self._search_epoch(model, dataset, halves, epoch, opts, device, stages)
                epoch, steps = epoch + 1, steps + stats.pop("steps")
            entry = stages.record(stage, factor, cfg.gamma, steps)
            history.append(history_entry(epoch, steps, stage="sparsify", gamma=entry["gamma"],
                                         decided_slots=len(entry["decided"]), **stats, **self._sparsity(model)))
            extra["sparsify"] = {"first": first, **stages.state()}
            self._save_state(model, opts, history, extra)
            bar.update(1)
        bar.close()

    def _pretrain_epoch(self, model: DSONASNet, dataset: Dataset, indices: np.ndarray, epoch: int,
                        w_opt: torch.optim.Optimizer, device: torch.device) -> dict[str, Any]:
        loader = make_loader(dataset, indices, self.batch_size, self.config.seed * 100_003 + epoch)
        model.train()
        loss = acc = 0.0
        n = 0
        for step, batch in enumerate(loader):
            if self.config.max_steps_per_epoch is not None and step >= self.config.max_steps_per_epoch:
                break
            batch_loss, batch_acc = self._weight_step(model, batch, w_opt, device)
            loss, acc, n = loss + batch_loss, acc + batch_acc, n + 1
        return {"steps": n, "loss": loss / max(n, 1), "acc": acc / max(n, 1)}

    def _search_epoch(self, model: DSONASNet, dataset: Dataset, halves: tuple[np.ndarray, np.ndarray], epoch: int,
                      opts: tuple[torch.optim.Optimizer, APGNAG], device: torch.device,
                      stages: StagedSparsification | None = None) -> dict[str, Any]:
        cfg = self.config
        seed = cfg.seed * 100_003 + epoch
        w_loader = make_loader(dataset, halves[0], self.batch_size, seed)
        l_batches = Cycle(make_loader(dataset, halves[1], self.batch_size, seed + 50_000))
        model.train()
        loss = acc = lam_loss = 0.0
        n = 0
        for step, batch in enumerate(w_loader):
            if cfg.max_steps_per_epoch is not None and step >= cfg.max_steps_per_epoch:
                break
            batch_loss, batch_acc = self._weight_step(model, batch, opts[0], device)
            lam_loss += self._lambda_step(model, next(l_batches), opts[1], device, stages)
            loss, acc, n = loss + batch_loss, acc + batch_acc, n + 1
        return {"steps": n, "loss": loss / max(n, 1), "acc": acc / max(n, 1), "lambda_loss": lam_loss / max(n, 1)}

    def _weight_step(self, model: DSONASNet, batch: Any, opt: torch.optim.Optimizer,
                     device: torch.device) -> tuple[float, float]:
        """One Nesterov SGD step of the weights; ops whose lambda is exactly zero are left out of the graph."""
        x, y = to_device(batch, device)
        params = model.weight_parameters()
        opt.zero_grad(set_to_none=True)
        model.net.set_memory_options(skip_zero=True)
        try:
            with frozen(list(model.lambdas)):
                logits = model(x)
                loss = F.cross_entropy(logits, y)
                loss.backward(inputs=params)
        finally:
            model.net.set_memory_options(skip_zero=False)
        clip_grad_value(params, self.config.grad_clip)
        opt.step()
        return loss.item(), accuracy(logits.detach(), y)

    def _lambda_step(self, model: DSONASNet, batch: Any, opt: APGNAG, device: torch.device,
                     stages: StagedSparsification | None = None) -> float:
        """One APG-NAG step of the lambdas; during the stages, zeroed paths are removed at once."""
        x, y = to_device(batch, device)
        opt.zero_grad(set_to_none=True)
        with frozen(model.weight_parameters()):
            loss = F.cross_entropy(model(x), y)
            loss.backward(inputs=list(model.lambdas))
        snapshot = stages.before_step(opt) if stages is not None else None
        opt.step()
        model.mask_removed(opt)
        if stages is not None:
            stages.after_step(opt, snapshot)
            model.prune()
            model.mask_removed(opt)
        return loss.item()

    @staticmethod
    def _sparsity(model: DSONASNet) -> dict[str, Any]:
        zeros = sum(int((lam == 0).sum()) for lam in model.lambdas)
        return {"zero_lambdas": zeros, "total_lambdas": sum(lam.numel() for lam in model.lambdas)}

    def _finish(self, space: SearchSpace, model: DSONASNet, block_costs: list[np.ndarray],
                gammas: list[torch.Tensor], unit: str, removed: int, stages: StagedSparsification) -> Arch:
        lambdas = [lam.detach().cpu().numpy() for lam in model.lambdas]
        arch, records = project_dsonas(space, lambdas, block_costs)
        for record in records:
            record["decided_by"] = stages.decided_by(record["slot"])
            if record["slot"] in stages.ties:
                record["tie"] = [op_name(model.net.slots[record["slot"]].ops[o]) for o in stages.ties[record["slot"]]]
        cfg = self.config
        provenance = {
            "method": "dso-nas", "adaptation": ADAPTATION_DSONAS,
            "projection": "per slot the one op that survived the staged sparsification; where several survive "
                          "(a tie in the last step, or stages exhausted) the largest sum of lambdas among them; "
                          "depth = surviving layers snapped to the allowed depths; see decided_by per slot",
            "stages": {"pretrain_epochs": cfg.pretrain_epochs, "search_epochs": cfg.search_epochs,
                       "prune_every": cfg.prune_every, "removed_ops": removed},
            "sparsification": {"max_stages": cfg.sparsify_stages, "growth": cfg.sparsify_growth,
                               "stage_epochs": cfg.stage_epochs, "path": stages.path,
                               "decided_slots": len(stages.decided), "slots": len(stages.lambdas)},
            "penalty": {"gamma": cfg.gamma, "budget_aware": cfg.budget_aware, "cost_unit": unit,
                        "min_weight": min(float(g.min()) for g in gammas),
                        "max_weight": max(float(g.max()) for g in gammas)},
            "memory": {"checkpointing": cfg.checkpointing, "partial_k": cfg.partial_k, "batch_size": self.batch_size},
            "slots": records,
        }
        return arch.with_provenance(provenance)
