"""DSO-NAS's hand-over by sparsification: the L1 pressure on lambda rises in stages until one op per slot survives.

The IR holds one op per block, so a slot is decided when the ops with a positive lambda in any of
its layers are exactly one (and its first layer keeps it). Undecided slots get ``gamma x factor``
(their budget-aware per-path weights scaled), the factor growing by ``growth`` per stage; decided
slots are frozen (their lambdas are no longer updated). A lambda step that would zero the whole
first layer of a slot is undone for that slot (lambda restored, its APG momentum restarted at
zero) and the slot's pressure is halved ("back-off"), so the last survivors are separated by ever
finer steps. After ``MAX_BACKOFFS`` back-offs the slot is decided as a tie between the ops that
survived just before (the projection keeps the one with the largest lambda sum among them). Slots
whose lambdas were all zero before the stages keep the projection's "collapsed" rule.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from baselines.apg import APGNAG

SPARSIFICATION = "sparsification"  # one op survived the rising pressure
TIE = "tie"  # the last survivors reached zero in the same step: largest lambda sum among them
COLLAPSED = "collapsed"  # every lambda of the slot was zero before the stages
UNDECIDED = "projection"  # the stages ran out with several survivors: largest lambda sum among them
MAX_BACKOFFS = 12  # halvings of a slot's pressure before its last survivors count as a tie (2**-12 of the step)


def survivors(lam: torch.Tensor) -> list[int]:
    """Ops of a slot with a positive lambda in any of its layers (``lam`` is ``[Dmax, n_ops]``)."""
    return torch.nonzero((lam > 0).any(dim=0)).flatten().tolist()


class StagedSparsification:
    """Per-slot state of the stages and the path they took.

    Args:
        lambdas: the model's lambdas, one ``[Dmax, n_ops]`` parameter per slot.
        weights: per slot, the per-path L1 weights of the search stage (``penalty_weights``).
        growth: factor by which the pressure grows from one stage to the next.
    """

    def __init__(self, lambdas: list[torch.nn.Parameter], weights: list[torch.Tensor], growth: float) -> None:
        self.lambdas = lambdas
        self.weights = weights
        self.growth = growth
        self.decided: dict[int, str] = {}
        self.scale = [1.0] * len(lambdas)  # per-slot pressure multiplier, halved by each back-off
        self.backoffs = [0] * len(lambdas)
        self.ties: dict[int, list[int]] = {}
        self.path: list[dict[str, Any]] = []
        for i, lam in enumerate(lambdas):
            alive = survivors(lam.detach())
            if not alive:
                self.decided[i] = COLLAPSED
            elif len(alive) == 1 and bool((lam.detach()[0] > 0).any()):
                self.decided[i] = SPARSIFICATION

    @property
    def done(self) -> bool:
        """Every slot decided."""
        return len(self.decided) == len(self.lambdas)

    def first_exponent(self, steps_per_stage: int, lr: float, momentum: float) -> int:
        """The first stage's exponent k (factor ``growth**k``): the largest k whose stage cannot remove a path.

        A stage of ``n`` steps shrinks a lambda by at most about ``n * lr * w / (1 - momentum)`` from the
        penalty alone; stages below the one that can zero the smallest surviving lambda would only
        spend steps, so they are skipped (recorded in provenance).
        """
        ratios = []
        for i, (lam, w) in enumerate(zip(self.lambdas, self.weights)):
            if i in self.decided:
                continue
            positive = lam.detach().cpu() > 0
            if bool(positive.any()):
                shrink = steps_per_stage * lr * w[positive] / (1.0 - momentum)
                ratios.append(float((lam.detach().cpu()[positive] / shrink).min()))
        if not ratios or min(ratios) <= 1:
            return 1
        return max(1, math.floor(math.log(min(ratios)) / math.log(self.growth)))

    def set_pressure(self, opt: APGNAG, factor: float) -> None:
        """Scales the L1 weights of every undecided slot by ``factor`` (groups are one per slot)."""
        for i, group in enumerate(opt.param_groups):
            group["gamma"] = (self.weights[i] * factor * self.scale[i]).to(group["params"][0].device)

    def before_step(self, opt: APGNAG) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        """Freezes decided slots (no gradient, so APG-NAG skips them); returns a snapshot to undo a step."""
        snapshot = []
        for i, lam in enumerate(self.lambdas):
            if i in self.decided:
                lam.grad = None
            buffer = opt.state.get(lam, {}).get("momentum_buffer")
            snapshot.append((lam.detach().clone(), None if buffer is None else buffer.clone()))
        return snapshot

    @torch.no_grad()
    def after_step(self, opt: APGNAG, snapshot: list[tuple[torch.Tensor, torch.Tensor | None]]) -> None:
        """Decides slots left with one op; undoes a step that emptied a slot's first layer and backs off."""
        for i, lam in enumerate(self.lambdas):
            if i in self.decided:
                continue
            if not bool((lam[0] > 0).any()):
                lam.copy_(snapshot[i][0])
                if "momentum_buffer" in opt.state.get(lam, {}):
                    opt.state[lam]["momentum_buffer"].zero_()
                self.backoffs[i] += 1
                self.scale[i] *= 0.5
                opt.param_groups[i]["gamma"] = opt.param_groups[i]["gamma"] * 0.5
                if self.backoffs[i] >= MAX_BACKOFFS:
                    self.decided[i], self.ties[i] = TIE, survivors(lam)
            elif len(survivors(lam)) == 1:
                self.decided[i] = SPARSIFICATION

    def record(self, stage: int, factor: float, gamma: float, steps: int) -> dict[str, Any]:
        """Appends one stage to the path: its gamma, the survivors per slot and the decided slots."""
        entry = {"stage": stage, "gamma_factor": factor, "gamma": gamma * factor, "steps": steps,
                 "survivors": [len(survivors(lam.detach())) for lam in self.lambdas],
                 "slot_gamma": [round(gamma * factor * scale, 8) for scale in self.scale],
                 "decided": sorted(self.decided), "backoffs": list(self.backoffs)}
        self.path.append(entry)
        return entry

    def state(self) -> dict[str, Any]:
        """The stages' own state, JSON-ready (the lambdas live in the model): what ``restore`` reads back."""
        return {"decided": {str(k): v for k, v in self.decided.items()}, "scale": list(self.scale),
                "backoffs": list(self.backoffs), "ties": {str(k): list(v) for k, v in self.ties.items()},
                "path": self.path}

    def restore(self, state: dict[str, Any]) -> None:
        """Continues the stages saved by ``state`` (of a search over the same lambdas)."""
        self.decided = {int(k): v for k, v in state["decided"].items()}
        self.scale, self.backoffs = list(state["scale"]), list(state["backoffs"])
        self.ties = {int(k): list(v) for k, v in state["ties"].items()}
        self.path = list(state["path"])

    def decided_by(self, slot: int) -> str:
        """How the slot's op was decided."""
        return self.decided.get(slot, UNDECIDED)
