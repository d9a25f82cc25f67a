"""APG-NAG: accelerated proximal gradient with Nesterov momentum for sparse, non-negative scale factors.

The update of DSO-NAS (Zhang et al., after Huang & Wang's sparse structure selection), per element:

    z      = S(lambda - lr * grad, lr * gamma)        S: soft threshold
    v      = z - lambda + mu * v_prev
    lambda = max(z + mu * v, 0)                        (the max only when ``nonnegative``)

It solves ``min f(lambda) + gamma * ||lambda||_1`` (subject to ``lambda >= 0``) and, unlike a
subgradient step on the L1 term, lands on exact zeros.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch.optim import Optimizer


def soft_threshold(x: torch.Tensor, threshold: torch.Tensor | float) -> torch.Tensor:
    """``sign(x) * max(|x| - threshold, 0)``, the proximal operator of ``threshold * ||x||_1``."""
    return torch.sign(x) * torch.clamp(x.abs() - threshold, min=0.0)


class APGNAG(Optimizer):
    """The APG-NAG optimiser of DSO-NAS.

    Args:
        params: the parameters (or parameter groups) to optimise; meant for the lambdas only.
        lr: step size.
        gamma: L1 weight, a float or, per group, a tensor shaped like the parameter (per-element
            penalty weights, as in DSO-NAS's budget-aware variant). Groups may override it.
        momentum: mu, 0.9 in DSO-NAS.
        nonnegative: clamp at zero after each step (DSO-NAS's lambdas are >= 0).
        grad_clip: clamp every gradient element into ``[-grad_clip, grad_clip]`` first (the official
            code clips at 2.0); ``None`` turns it off.

    Raises:
        ValueError: a negative ``lr``, ``gamma`` or ``momentum`` outside ``[0, 1)``.
    """

    def __init__(self, params: Iterable[torch.Tensor] | Iterable[dict], lr: float, gamma: float = 1e-3,
                 momentum: float = 0.9, nonnegative: bool = True, grad_clip: float | None = None) -> None:
        if lr < 0:
            raise ValueError(f"APGNAG: lr must be >= 0, got {lr}")
        if not isinstance(gamma, torch.Tensor) and gamma < 0:
            raise ValueError(f"APGNAG: gamma must be >= 0, got {gamma}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"APGNAG: momentum must be in [0, 1), got {momentum}")
        defaults = {"lr": lr, "gamma": gamma, "momentum": momentum, "nonnegative": nonnegative,
                    "grad_clip": grad_clip}
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):  # noqa: D102 - documented by Optimizer.step
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    self._update(p, group)
        return loss

    def _update(self, p: torch.Tensor, group: dict) -> None:
        grad = p.grad
        if group["grad_clip"] is not None:
            grad = grad.clamp(-group["grad_clip"], group["grad_clip"])
        state = self.state[p]
        if "momentum_buffer" not in state:
            state["momentum_buffer"] = torch.zeros_like(p)
        v = state["momentum_buffer"]
        lr, mu = group["lr"], group["momentum"]
        gamma = group["gamma"]
        if isinstance(gamma, torch.Tensor):
            gamma = gamma.to(device=p.device, dtype=p.dtype)
        z = soft_threshold(p - lr * grad, lr * gamma)
        v.mul_(mu).add_(z - p)
        p.copy_(z + mu * v)
        if group["nonnegative"]:
            p.clamp_(min=0.0)
