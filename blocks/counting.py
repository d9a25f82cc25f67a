"""Parameter and multiply-accumulate (MAC) counts of a module at an input shape."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_params(module: nn.Module) -> int:
    """Number of parameters (trainable or not) of ``module``."""
    return sum(p.numel() for p in module.parameters())


@torch.no_grad()
def count_macs(module: nn.Module, input_shape: tuple[int, ...]) -> int:
    """MACs of one forward pass at batch 1 (convolutions and matrix products; torch's flop counter / 2)."""
    was_training = module.training
    module.eval()
    device = next(module.parameters(), torch.empty(0)).device
    x = torch.zeros((1, *input_shape), device=device)
    counter = FlopCounterMode(display=False)
    with counter:
        module(x)
    module.train(was_training)
    return counter.get_total_flops() // 2


def count_params_macs(module: nn.Module, input_shape: tuple[int, ...]) -> tuple[int, int]:
    """``(params, macs)`` of ``module`` for one input of shape ``input_shape`` (no batch dim)."""
    return count_params(module), count_macs(module, input_shape)
