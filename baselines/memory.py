"""Activation memory kept for backward, counted with ``torch.autograd.graph.saved_tensors_hooks``.

Every tensor autograd saves during a forward pass goes through a pack hook; we count the bytes of
the distinct storages behind them (a view counts its whole storage, since that is what stays
alive), skipping parameters and buffers. Bytes saved while a "partial-channel layer" runs (the
layers after a slot's first, which PC-DARTS runs on 1/K of the channels) are also counted apart,
so K = 4 and K = 1 compare on exactly the same layers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from baselines.mixed_supernet import MixedLayer, SuperNet


@dataclass(frozen=True)
class SavedBytes:
    """Bytes of activations saved for backward by one forward pass."""

    total: int  # the whole forward (a search step's loss)
    partial_layers: int  # saved while a layer after a slot's first (partial at K > 1) was running


def partial_layers(net: SuperNet) -> list[MixedLayer]:
    """The layers that run on partial channels when K > 1: every layer after a slot's first."""
    return [layer for slot in net.slots for layer in list(slot.layers)[1:]]


def _storage_key(t: torch.Tensor) -> tuple[int, int]:
    storage = t.untyped_storage()
    return storage.data_ptr(), storage.nbytes()


def saved_bytes(model: nn.Module, net: SuperNet, x: torch.Tensor, y: torch.Tensor) -> SavedBytes:
    """Bytes autograd keeps for backward in ``cross_entropy(model(x), y)`` (the graph is then freed).

    Args:
        model: the module to run (e.g. a ``PCDartsNet``).
        net: its ``SuperNet``, whose partial-channel layers are counted apart.
        x: input batch.
        y: labels.
    """
    skip = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]}
    seen: dict[int, int] = {}
    inside = [0]
    partial: set[int] = set()

    def pack(t: torch.Tensor) -> torch.Tensor:
        ptr, nbytes = _storage_key(t)
        if ptr not in skip and ptr not in seen:
            seen[ptr] = nbytes
            if inside[0]:
                partial.add(ptr)
        return t

    handles = []
    for layer in partial_layers(net):
        handles.append(layer.register_forward_pre_hook(lambda *_: inside.__setitem__(0, inside[0] + 1)))
        handles.append(layer.register_forward_hook(lambda *_: inside.__setitem__(0, inside[0] - 1)))
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = F.cross_entropy(model(x), y)
    finally:
        for handle in handles:
            handle.remove()
    del loss
    return SavedBytes(total=sum(seen.values()), partial_layers=sum(seen[p] for p in partial))
