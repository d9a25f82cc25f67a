"""The differentiable supernet over a DONNA block space, shared by PC-DARTS and DSO-NAS.

Per block slot: ``Dmax`` mixed layers (``Dmax`` = the slot's largest depth choice). A mixed layer
holds one candidate op per combination of the slot's non-depth knobs (type, kernel, expansion,
SE, activation): each op is one layer of that block type without its residual, which the mixed
layer adds once. The first layer of a slot applies the slot's stride and width change; the
others map the slot's width to itself and may run on partial channels (PC-DARTS). Depth is
chosen over the slot's exits (the outputs after layer ``d`` for every allowed depth ``d``).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from blocks.builder import build_head, build_stem, init_weights
from blocks.ir import KNOBS, UNUSED_KNOBS, BlockSpec
from blocks.layers import BLOCK_LAYERS, LocalGlobalAttention
from blocks.spaces import SearchSpace, SlotSpace

OP_KNOBS = tuple(k for k in KNOBS if k != "depth")  # the knobs that make one candidate op (+ the slot's optional)
BN_MODES = ("affine", "non_affine", "frozen_gamma")


def slot_ops(slot: SlotSpace) -> list[dict[str, Any]]:
    """Every candidate op of ``slot``: one dict per combination of its knobs but depth (last knob fastest); a knob
    the op's type ignores holds its neutral value, as in ``SlotSpace.block``."""
    knobs = tuple(k for k in slot.knobs if k != "depth")
    sizes = [len(slot.choices[k]) for k in knobs]
    ops = []
    for flat in range(math.prod(sizes)):
        idx, rest = [], flat
        for size in reversed(sizes):
            idx.append(rest % size)
            rest //= size
        op = {k: slot.choices[k][j] for k, j in zip(knobs, reversed(idx))}
        op.update({k: v for k, v in UNUSED_KNOBS.get(op["type"], {}).items() if k in op})
        ops.append(op)
    return ops


def op_block(slot: SlotSpace, op: dict[str, Any], depth: int) -> BlockSpec:
    """The ``BlockSpec`` of ``slot`` made of ``depth`` layers of candidate op ``op``."""
    return slot.block(depth=depth, **op)


def op_name(op: dict[str, Any]) -> str:
    """A short readable name of a candidate op, e.g. ``ir_k3_e4_se0.25_swish`` (``gir_k3_e4_g8_se0_mh4_swish``)."""
    group = f"_g{op['group_width']}" if op.get("group_width") else ""
    attn = f"_mh{op['attn']}" if op.get("attn") else ""
    return f"{op['type']}_k{op['kernel']}_e{op['expansion']}{group}_se{op['se']:g}{attn}_{op['act']}"


def set_bn_mode(module: nn.Module, mode: str) -> None:
    """Turns every BatchNorm in ``module`` into the given mode.

    Args:
        module: the module to change in place.
        mode: ``"affine"`` (unchanged), ``"non_affine"`` (no gamma, no beta: PC-DARTS's search
            network) or ``"frozen_gamma"`` (gamma fixed at 1, beta trained: DSO-NAS, so that
            BatchNorm cannot absorb the lambda that scales the op).

    Raises:
        ValueError: unknown mode.
    """
    if mode not in BN_MODES:
        raise ValueError(f"unknown BatchNorm mode {mode!r}; allowed: {', '.join(BN_MODES)}")
    for m in module.modules():
        if not isinstance(m, nn.BatchNorm2d) or mode == "affine":
            continue
        if mode == "non_affine":
            m.affine = False
            m.register_parameter("weight", None)
            m.register_parameter("bias", None)
        else:
            with torch.no_grad():
                m.weight.fill_(1.0)
            m.weight.requires_grad_(False)


def make_op(op: dict[str, Any], cin: int, cout: int, stride: int, bn_mode: str = "affine") -> nn.Module:
    """One candidate op: a single layer of ``op['type']`` without its residual connection.

    With ``op['attn']`` > 0 the layer is followed by the block's self-attention layer. An adaptation: a block has
    one attention layer after its last layer; here every layer position of the op carries it, so that one op is
    one module. Partial channels narrow an op: a group width or head count that does not divide the narrower
    width shrinks to the greatest common divisor (the op is a proxy of the block, as partial channels are).
    """
    cls = BLOCK_LAYERS[op["type"]]
    extras = {}
    if "group_width" in getattr(cls, "extra_fields", ()):
        extras["group_width"] = math.gcd(op["group_width"], int(round(cin * op["expansion"])))
    layer = cls(cin, cout, op["kernel"], stride, op["expansion"], op["se"], op["act"], **extras)
    if hasattr(layer, "use_residual"):
        layer.use_residual = False
    if op.get("attn"):
        layer = nn.Sequential(layer, LocalGlobalAttention(cout, math.gcd(op["attn"], cout), op["act"]))
    init_weights(layer)
    set_bn_mode(layer, bn_mode)
    return layer


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Interleaves the channels of ``x`` from ``groups`` groups (ShuffleNet's shuffle)."""
    if groups == 1:
        return x
    b, c, h, w = x.shape
    return x.view(b, groups, c // groups, h, w).transpose(1, 2).contiguous().view(b, c, h, w)


@contextlib.contextmanager
def frozen_running_stats(module: nn.Module) -> Iterator[None]:
    """Restores the BatchNorm running statistics of ``module`` on exit (the forward itself is unchanged).

    Used while checkpointing recomputes an op in the backward pass: the forward already updated the
    running statistics once for this batch, and the recomputation must not update them again.
    """
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    saved = [[b.clone() for b in (m.running_mean, m.running_var, m.num_batches_tracked)] for m in norms]
    try:
        yield
    finally:
        with torch.no_grad():
            for m, values in zip(norms, saved):
                for buffer, value in zip((m.running_mean, m.running_var, m.num_batches_tracked), values):
                    buffer.copy_(value)


def _weighted_op(op: nn.Module, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return weight * op(x)


class MixedLayer(nn.Module):
    """One layer position of a slot: a weighted sum of candidate ops plus the residual, if any.

    With ``partial_k`` K > 1 (stride 1, equal widths only) the ops see the first C/K channels; the
    others bypass them; both parts are concatenated and channel-shuffled in K groups (PC-DARTS).

    Memory: with ``checkpointing`` each weighted op ``w_o * op_o(x)`` is checkpointed on its own
    (``torch.utils.checkpoint``, non-reentrant): the forward keeps only the layer's input, and the
    backward recomputes one op at a time, so the activations held at once are one op's rather than
    all of them. Outputs and gradients are unchanged; BatchNorm running statistics are updated once
    (see ``frozen_running_stats``). ``skip_zero`` leaves out ops whose weight is exactly zero
    (their term is zero, so the output is unchanged; their own weights then get no gradient).

    Args:
        ops: the candidate ops (dicts of ``OP_KNOBS``).
        cin: input channels.
        cout: output channels.
        stride: stride of this layer.
        partial_k: K of partial channels; 1 = full channels.
        bn_mode: see ``set_bn_mode``.

    Raises:
        ValueError: partial channels asked for on a layer that changes shape, or K not dividing C.
    """

    def __init__(self, ops: Sequence[dict[str, Any]], cin: int, cout: int, stride: int, partial_k: int = 1,
                 bn_mode: str = "affine") -> None:
        super().__init__()
        self.residual = stride == 1 and cin == cout
        if partial_k > 1 and not self.residual:
            raise ValueError(f"partial channels need stride 1 and equal widths; got {cin}->{cout}, stride {stride}")
        if partial_k < 1 or cin % partial_k:
            raise ValueError(f"partial_k {partial_k} must be >= 1 and divide the {cin} channels of this layer; "
                             "pick a K that divides every slot's width")
        self.partial_k = partial_k
        self.stride, self.out_channels = stride, cout
        self.op_channels = cin // partial_k
        width_out = self.op_channels if partial_k > 1 else cout
        self.ops = nn.ModuleList(make_op(op, self.op_channels, width_out, stride, bn_mode) for op in ops)
        self.register_buffer("alive", torch.ones(len(self.ops), dtype=torch.bool))
        self.checkpointing = False  # recompute each op in backward (see the class docstring)
        self.skip_zero = False  # leave out ops whose weight is exactly zero

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """``sum_o weights[o] * op_o(x)`` (+ x), over the ops still alive."""
        xp = x[:, : self.op_channels] if self.partial_k > 1 else x
        run = self.alive & (weights.detach() != 0) if self.skip_zero else self.alive
        recompute = self.checkpointing and torch.is_grad_enabled()
        y = None
        for o, keep in enumerate(run.tolist()):
            if not keep:
                continue
            op = self.ops[o]
            if recompute and (xp.requires_grad or any(p.requires_grad for p in op.parameters())):
                term = checkpoint(_weighted_op, op, xp, weights[o], use_reentrant=False,
                                  context_fn=lambda op=op: (contextlib.nullcontext(), frozen_running_stats(op)))
            else:
                term = _weighted_op(op, xp, weights[o])
            y = term if y is None else y + term
        if y is None:  # every op removed: the layer is the identity (or zero without a residual)
            y = torch.zeros_like(xp) if self.residual else self._zeros(x)
        if self.residual:
            y = y + xp
        if self.partial_k > 1:
            y = channel_shuffle(torch.cat([y, x[:, self.op_channels:]], dim=1), self.partial_k)
        return y

    def _zeros(self, x: torch.Tensor) -> torch.Tensor:
        """Zeros shaped like the layer's output (odd kernels, padding k // 2: size -> ceil(size / stride))."""
        h, w = ((n - 1) // self.stride + 1 for n in x.shape[2:])
        return x.new_zeros((x.shape[0], self.out_channels, h, w))

    def remove_ops(self, dead: torch.Tensor) -> None:
        """Physically removes the ops flagged in ``dead`` (their weights are dropped; they never run again)."""
        for o in torch.nonzero(dead & self.alive).flatten().tolist():
            self.ops[o] = nn.Identity()
        self.alive &= ~dead


class SuperSlot(nn.Module):
    """All layer positions of one block slot.

    Args:
        slot: the slot of the search space.
        in_channels: channels entering the slot.
        partial_k: K of partial channels for layers 2..Dmax (the first layer is always full).
        bn_mode: see ``set_bn_mode``.
    """

    def __init__(self, slot: SlotSpace, in_channels: int, partial_k: int = 1, bn_mode: str = "affine") -> None:
        super().__init__()
        self.slot = slot
        self.ops = slot_ops(slot)
        self.depths = tuple(sorted(slot.choices["depth"]))
        self.max_depth = self.depths[-1]
        width = slot.out_channels
        layers = [MixedLayer(self.ops, in_channels, width, slot.stride, 1, bn_mode)]
        layers += [MixedLayer(self.ops, width, width, 1, partial_k, bn_mode) for _ in range(self.max_depth - 1)]
        self.layers = nn.ModuleList(layers)

    @property
    def num_ops(self) -> int:
        return len(self.ops)

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> list[torch.Tensor]:
        """Outputs after every layer; ``weights`` is ``[Dmax, num_ops]`` (one row per layer)."""
        outs = []
        for layer, row in zip(self.layers, weights):
            x = layer(x, row)
            outs.append(x)
        return outs


class SuperNet(nn.Module):
    """Fixed stem -> one ``SuperSlot`` per slot -> fixed head, for a whole search space.

    Args:
        space: the search space.
        partial_k: K of partial channels (see ``SuperSlot``).
        bn_mode: BatchNorm mode inside the candidate ops (stem and head keep affine BatchNorm).
    """

    def __init__(self, space: SearchSpace, partial_k: int = 1, bn_mode: str = "affine") -> None:
        super().__init__()
        reference = space.reference()
        self.space = space
        self.stem = build_stem(reference)
        channels = space.stem_output_shape()[0]
        slots = []
        for slot in space.slots:
            slots.append(SuperSlot(slot, channels, partial_k, bn_mode))
            channels = slot.out_channels
        self.slots = nn.ModuleList(slots)
        self.head = build_head(reference, channels)
        init_weights(self.stem)
        init_weights(self.head)

    def mixed_layers(self) -> list[MixedLayer]:
        """Every mixed layer of every slot, in order."""
        return [layer for slot in self.slots for layer in slot.layers]

    def set_memory_options(self, checkpointing: bool | None = None, skip_zero: bool | None = None) -> None:
        """Turns per-op activation checkpointing and the skipping of zero-weight ops on or off (None: unchanged)."""
        for layer in self.mixed_layers():
            if checkpointing is not None:
                layer.checkpointing = checkpointing
            if skip_zero is not None:
                layer.skip_zero = skip_zero

    def forward(self, x: torch.Tensor, op_weights: Sequence[torch.Tensor],
                exit_weights: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        """Logits of the supernet.

        Args:
            x: input batch.
            op_weights: per slot, ``[Dmax, num_ops]`` weights of the candidate ops in each layer.
            exit_weights: per slot, weights of the exits (one per allowed depth); ``None`` takes the
                output of the slot's last layer.
        """
        x = self.stem(x)
        for i, slot in enumerate(self.slots):
            outs = slot(x, op_weights[i])
            if exit_weights is None:
                x = outs[-1]
            else:
                x = sum(w * outs[d - 1] for w, d in zip(exit_weights[i], slot.depths))
        return self.head(x)
