"""PC-DARTS (Xu et al., ICLR 2020) on a DONNA block space: partial channels, exit normalisation, first order.

Faithful parts: partial channels with K and channel shuffle, softmax-normalised exit weights
(edge normalisation), alpha and beta initialised at 1e-3 * N(0, 1), first-order bilevel steps
(one architecture step on the architecture half, then one weight step on the weight half),
the warm-up freeze of the architecture, the optimisers and hyperparameters of the paper,
non-affine BatchNorm in the ops, derivation by argmax of the softmaxes at the last epoch.
Adapted to the block space (see docs/baselines.md): alpha tied per slot; beta over the slot's
exits; partial channels only on a slot's stride-1 equal-width layers. The latency penalty is an
opt-in extension, off by default.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from baselines.common import (
    Cycle,
    SupernetSearcher,
    accuracy,
    check_settings,
    frozen,
    history_entry,
    make_loader,
    split_halves,
    to_device,
)
from baselines.costs import slot_cost_matrix
from baselines.mixed_supernet import SuperNet
from baselines.project import ADAPTATION_PCDARTS, project_pcdarts
from blocks.ir import Arch
from blocks.spaces import SearchSpace
from common.device import make_optimizer
from search.registry import register_searcher
from search.spec import Schedule

QUICK = {"epochs": 4, "warmup_epochs": 1, "batch_size": 32, "max_steps_per_epoch": 10}  # the "quick" schedule


@dataclass(frozen=True)
class PCDartsConfig:
    """Settings of PC-DARTS; defaults are the paper's CIFAR-10 settings."""

    epochs: int = 50  # search epochs
    warmup_epochs: int = 15  # architecture parameters frozen for these first epochs
    batch_size: int = 256  # batch of each half (K=4 on CIFAR lets it grow from 64 to 256); a budget may lower it
    memory_gb: float | None = None  # memory budget of a step; None = held + a safe share of free memory
    checkpointing: bool = True  # recompute each op's activations in backward: same result, far less memory
    partial_k: int = 4  # K: 1/K of the channels go through the mixed op (4 on CIFAR, 2 on ImageNet)
    train_portion: float = 0.5  # share of the training data for the weights; the rest is for the architecture
    w_lr: float = 0.1  # SGD learning rate of the weights (cosine schedule)
    w_lr_min: float = 1e-3  # end of the cosine schedule (official code's learning_rate_min)
    w_momentum: float = 0.9  # SGD momentum
    w_weight_decay: float = 3e-4  # SGD weight decay
    grad_clip: float = 5.0  # gradient-norm clip of the weights
    arch_lr: float = 6e-4  # Adam learning rate of alpha and beta
    arch_betas: tuple[float, float] = (0.5, 0.999)  # Adam betas
    arch_weight_decay: float = 1e-3  # Adam weight decay
    init_scale: float = 1e-3  # alpha, beta ~ init_scale * N(0, 1)
    latency_weight: float = 0.0  # opt-in latency penalty weight; 0 = faithful PC-DARTS (no latency term)
    target_ms: float | None = None  # with the penalty: penalise only expected cost above this target
    max_steps_per_epoch: int | None = None  # cap on weight steps per epoch (quick runs); None = full pass
    seed: int = 0  # seeds data splits, order and initialisation
    device: str | None = None  # torch device; None = CUDA when available, else CPU

    def __post_init__(self) -> None:
        checks = {"epochs": self.epochs >= 1, "warmup_epochs": self.warmup_epochs >= 0,
                  "batch_size": self.batch_size >= 1, "partial_k": self.partial_k >= 1,
                  "train_portion": 0 < self.train_portion < 1, "latency_weight": self.latency_weight >= 0,
                  "target_ms": self.target_ms is None or self.target_ms > 0,
                  "memory_gb": self.memory_gb is None or self.memory_gb > 0}
        check_settings(self, "pc-darts", checks)
        if self.warmup_epochs >= self.epochs:
            raise ValueError(f"pc-darts: warmup_epochs={self.warmup_epochs} freezes the architecture for all "
                             f"{self.epochs} epochs, so nothing would be searched; set warmup_epochs below epochs "
                             "(the paper: 15 of 50)")


class PCDartsNet(nn.Module):
    """The supernet with PC-DARTS's architecture parameters: alpha per slot and beta per slot's exits."""

    def __init__(self, space: SearchSpace, partial_k: int, init_scale: float) -> None:
        super().__init__()
        self.net = SuperNet(space, partial_k=partial_k, bn_mode="non_affine")
        self.alphas = nn.ParameterList(nn.Parameter(init_scale * torch.randn(s.num_ops)) for s in self.net.slots)
        self.betas = nn.ParameterList(nn.Parameter(init_scale * torch.randn(len(s.depths)))
                                      for s in self.net.slots)

    def arch_parameters(self) -> list[nn.Parameter]:
        """alpha and beta of every slot."""
        return [*self.alphas, *self.betas]

    def weight_parameters(self) -> list[nn.Parameter]:
        """Every trainable parameter of the supernet (never alpha or beta)."""
        return [p for p in self.net.parameters() if p.requires_grad]

    def phases(self) -> list[tuple[list[nn.Parameter], list[nn.Parameter]]]:
        """``(updated, frozen)`` parameters of a search step's two halves: architecture step, weight step."""
        weights, arch = self.weight_parameters(), self.arch_parameters()
        return [(arch, weights), (weights, arch)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        op_w = [F.softmax(a, dim=-1).expand(s.max_depth, -1) for a, s in zip(self.alphas, self.net.slots)]
        exit_w = [F.softmax(b, dim=-1) for b in self.betas]
        return self.net(x, op_w, exit_w)

    def expected_cost(self, costs: list[torch.Tensor]) -> torch.Tensor:
        """Expected block cost under softmax(beta) x softmax(alpha); ``costs[i]`` is ``[n_depths, n_ops]``."""
        total = 0.0
        for a, b, c in zip(self.alphas, self.betas, costs):
            total = total + F.softmax(b, -1) @ c @ F.softmax(a, -1)
        return total


def alpha_spread(model: PCDartsNet) -> dict[str, float]:
    """How far the alphas are from uniform: mean normalised entropy of softmax(alpha) over slots (1 =
    uniform, 0 = one-hot) and the largest op probability over uniform (1 = uniform)."""
    entropies, ratios = [], []
    for a in model.alphas:
        p = F.softmax(a.detach().float(), dim=-1)
        entropies.append(float(-(p * p.clamp_min(1e-12).log()).sum() / math.log(p.numel())))
        ratios.append(float(p.max() * p.numel()))
    return {"alpha_entropy": float(np.mean(entropies)), "alpha_max_over_uniform": float(np.max(ratios))}


@register_searcher("pc-darts")
class PCDartsSearcher(SupernetSearcher):
    """PC-DARTS as a searcher over a block space; returns one architecture.

    Args:
        data: training data (``Dataset``, ``DataLoader`` or splits with ``.train``), split 50/50.
        op_cost: ``(slot, BlockSpec) -> ms`` for the opt-in latency penalty; default MACs.
        arch_cost: ``Arch -> ms`` (``LatencyTable.predict``) to account for stem and head.
        **settings: fields of ``PCDartsConfig``.
    """

    name = "pc-darts"
    config_cls = PCDartsConfig
    spec = dataclasses.replace(SupernetSearcher.spec, schedules={
        "paper": Schedule({}, "the paper's CIFAR-10 search: 50 epochs (15 warm-up) at batch 256"),
        "quick": Schedule(QUICK, "minutes on the embedded default (glyphs, mbconv-tiny) on a CPU core"),
    })

    @staticmethod
    def _run_target(settings: dict[str, Any], latency_target_ms: float | None) -> dict[str, Any]:
        """With the opt-in latency penalty on and no ``target_ms`` of its own, the run's target is the target."""
        if settings.get("latency_weight", 0) > 0 and "target_ms" not in settings and latency_target_ms is not None:
            return {**settings, "target_ms": latency_target_ms}
        return settings

    def epoch_plan(self, n_train: int) -> list[tuple[str, int, int, int]]:
        cfg = self.config
        steps = self.steps_per_epoch(int(math.floor(cfg.train_portion * n_train)))
        return [("warm-up", cfg.warmup_epochs, steps, 1), ("search", cfg.epochs - cfg.warmup_epochs, steps, 2)]

    def _penalty_setup(self, space: SearchSpace, model: PCDartsNet, device: torch.device) -> dict[str, Any] | None:
        cfg = self.config
        if cfg.latency_weight == 0:
            if cfg.target_ms is not None:
                warnings.warn("pc-darts: target_ms is ignored in the faithful mode (latency_weight=0); set "
                              "latency_weight > 0 for the opt-in latency penalty", stacklevel=3)
            return None
        cost, unit = self.cost_fn(space)
        if cfg.target_ms is not None and unit != "ms":
            raise ValueError("pc-darts: target_ms needs costs in ms; pass op_cost (and arch_cost) from a latency "
                             "table, e.g. baselines.costs.table_op_cost(table)")
        mats = [torch.tensor(slot_cost_matrix(space, i, s.ops, cost), dtype=torch.float32, device=device)
                for i, s in enumerate(model.net.slots)]
        fixed = self.fixed_cost(space)
        reference = fixed + sum(float(m.max()) for m in mats)
        return {"costs": mats, "fixed": fixed, "reference": reference, "unit": unit}

    def _penalty(self, model: PCDartsNet, setup: dict[str, Any] | None) -> torch.Tensor | None:
        if setup is None:
            return None
        expected = setup["fixed"] + model.expected_cost(setup["costs"])
        if self.config.target_ms is not None:
            return self.config.latency_weight * F.relu(expected / self.config.target_ms - 1.0)
        return self.config.latency_weight * expected / setup["reference"]

    def build(self, space: SearchSpace, device: torch.device) -> tuple[PCDartsNet, torch.optim.Optimizer,
                                                                      torch.optim.Optimizer]:
        """The supernet with alpha and beta, the weights' SGD and the architecture's Adam."""
        cfg = self.config
        model = PCDartsNet(space, cfg.partial_k, cfg.init_scale).to(device)
        model.net.set_memory_options(checkpointing=cfg.checkpointing)
        w_opt = make_optimizer(torch.optim.SGD, model.weight_parameters(), cfg.w_lr, momentum=cfg.w_momentum,
                               weight_decay=cfg.w_weight_decay)
        a_opt = torch.optim.Adam(model.arch_parameters(), cfg.arch_lr, betas=tuple(cfg.arch_betas),
                                 weight_decay=cfg.arch_weight_decay)
        return model, w_opt, a_opt

    def _run(self, space: SearchSpace, dataset: Dataset, device: torch.device,
             progress: bool) -> tuple[Arch, list[dict[str, Any]]]:
        cfg = self.config
        model, w_opt, a_opt = self.build(space, device)
        saved = self._load_state(model, (w_opt, a_opt), device)  # a killed search continues after its last epoch
        if saved is None:
            self.batch_size = self.choose_batch(model, model.phases(), dataset[0][0], device)
        w_idx, a_idx = split_halves(len(dataset), cfg.train_portion, cfg.seed)
        penalty = self._penalty_setup(space, model, device)
        history: list[dict[str, Any]] = list(saved["history"]) if saved else []
        steps = int(history[-1]["evaluations"]) if history else 0
        for epoch in tqdm(range(len(history), cfg.epochs), initial=len(history), total=cfg.epochs,
                          desc="pc-darts search", unit="epoch", disable=not progress):
            lr = cfg.w_lr_min + 0.5 * (cfg.w_lr - cfg.w_lr_min) * (1 + math.cos(math.pi * epoch / cfg.epochs))
            for group in w_opt.param_groups:
                group["lr"] = lr
            stats = self._epoch(model, dataset, (w_idx, a_idx), epoch, (w_opt, a_opt), penalty, device)
            steps += stats.pop("steps")
            arch, _ = project_pcdarts(space, *self._arch_arrays(model))
            history.append(history_entry(epoch + 1, steps, lr=lr, arch=arch.to_string(), **stats,
                                         **alpha_spread(model)))
            self._save_state(model, (w_opt, a_opt), history)
        return self._finish(space, model, penalty, history)

    def _epoch(self, model: PCDartsNet, dataset: Dataset, halves: tuple[np.ndarray, np.ndarray], epoch: int,
               opts: tuple[torch.optim.Optimizer, torch.optim.Optimizer], penalty: dict[str, Any] | None,
               device: torch.device) -> dict[str, Any]:
        cfg = self.config
        seed = cfg.seed * 100_003 + epoch
        w_loader = make_loader(dataset, halves[0], self.batch_size, seed)
        a_batches = Cycle(make_loader(dataset, halves[1], self.batch_size, seed + 50_000))  # persistent iterator
        update_arch = epoch >= cfg.warmup_epochs
        model.train()
        sums = {"loss": 0.0, "acc": 0.0, "arch_loss": 0.0}
        n = 0
        for step, batch in enumerate(w_loader):
            if cfg.max_steps_per_epoch is not None and step >= cfg.max_steps_per_epoch:
                break
            if update_arch:
                sums["arch_loss"] += self._arch_step(model, next(a_batches), opts[1], penalty, device)
            loss, acc = self._weight_step(model, batch, opts[0], device)
            sums["loss"] += loss
            sums["acc"] += acc
            n += 1
        means = {k: v / max(n, 1) for k, v in sums.items()}
        if not update_arch:
            means["arch_loss"] = float("nan")
        return {"steps": n, "arch_frozen": not update_arch, **means}

    def _arch_step(self, model: PCDartsNet, batch: Any, opt: torch.optim.Optimizer,
                   penalty: dict[str, Any] | None, device: torch.device) -> float:
        x, y = to_device(batch, device)
        opt.zero_grad(set_to_none=True)
        with frozen(model.weight_parameters()):
            loss = F.cross_entropy(model(x), y)
            extra = self._penalty(model, penalty)
            total = loss if extra is None else loss + extra
            total.backward(inputs=model.arch_parameters())
        opt.step()
        return total.item()

    def _weight_step(self, model: PCDartsNet, batch: Any, opt: torch.optim.Optimizer,
                     device: torch.device) -> tuple[float, float]:
        x, y = to_device(batch, device)
        params = model.weight_parameters()
        opt.zero_grad(set_to_none=True)
        with frozen(model.arch_parameters()):
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            loss.backward(inputs=params)
        nn.utils.clip_grad_norm_(params, self.config.grad_clip)
        opt.step()
        return loss.item(), accuracy(logits.detach(), y)

    @staticmethod
    def _arch_arrays(model: PCDartsNet) -> tuple[list[np.ndarray], list[np.ndarray]]:
        alphas = [a.detach().cpu().numpy() for a in model.alphas]
        betas = [b.detach().cpu().numpy() for b in model.betas]
        return alphas, betas

    def _finish(self, space: SearchSpace, model: PCDartsNet, penalty: dict[str, Any] | None,
                history: list[dict[str, Any]]) -> tuple[Arch, list[dict[str, Any]]]:
        arch, records = project_pcdarts(space, *self._arch_arrays(model))
        cfg = self.config
        provenance = {
            "method": "pc-darts", "mode": "faithful" if penalty is None else "latency-penalty",
            "adaptation": ADAPTATION_PCDARTS, "derivation": "argmax softmax(alpha), argmax softmax(beta), last epoch",
            "partial_k": cfg.partial_k, "slots": records,
            "memory": {"checkpointing": cfg.checkpointing, "batch_size": self.batch_size},
            "latency_penalty": None if penalty is None else {
                "weight": cfg.latency_weight, "target_ms": cfg.target_ms, "unit": penalty["unit"],
                "fixed_cost": penalty["fixed"],
                "expected_cost": penalty["fixed"] + model.expected_cost(penalty["costs"]).item(),
            },
        }
        if penalty is not None:
            cost, _ = self.cost_fn(space)
            provenance["latency_penalty"]["derived_cost"] = float(penalty["fixed"] + sum(
                cost(i, spec) for i, spec in enumerate(arch.blocks)))
        return arch.with_provenance(provenance), history
