"""Per-(slot, option) costs for the searchers' penalties: MACs by default, or a device's latency table."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from blocks.ir import BlockSpec
from blocks.spaces import SearchSpace, conv_out

OpCost = Callable[[int, BlockSpec], float]  # (slot index, block option) -> cost (ms or MACs)


def _se_macs(channels: int, squeeze: int) -> int:
    return 2 * channels * squeeze  # 1x1 reduce and expand on the pooled vector


def layer_macs(spec: BlockSpec, cin: int, size: int, first: bool) -> int:
    """MACs of one layer of ``spec`` (the first layer applies the stride), as ``blocks.layers`` builds it.

    Counts convolutions only, like ``blocks.count_macs`` (torch's flop counter / 2).

    Args:
        spec: the block.
        cin: channels entering the block.
        size: spatial size entering the block.
        first: the block's first layer (stride, width change) rather than a later one.
    """
    cin = cin if first else spec.out_channels
    stride = spec.stride if first else 1
    size_in = size if first else conv_out(size, spec.stride)
    size_out = conv_out(size_in, stride)
    area_in, area_out, cout, k2 = size_in * size_in, size_out * size_out, spec.out_channels, spec.kernel ** 2
    squeeze = max(1, int(cin * spec.se))
    if spec.type == "conv":
        return cin * cout * k2 * area_out
    expansion = 1 if spec.type == "ds" else spec.expansion
    hidden = int(round(cin * expansion))
    se = _se_macs(hidden if (spec.type != "fir" or hidden != cin) else cout, squeeze) if spec.se > 0 else 0
    if spec.type == "fir":
        if hidden == cin:
            return cin * cout * k2 * area_out + se
        return cin * hidden * k2 * area_out + se + hidden * cout * area_out
    expand = cin * hidden * area_in if hidden != cin else 0
    return expand + hidden * k2 * area_out + se + hidden * cout * area_out


def block_macs(spec: BlockSpec, cin: int, size: int) -> int:
    """MACs of a whole block: its first layer plus ``depth - 1`` later layers."""
    return layer_macs(spec, cin, size, True) + (spec.depth - 1) * layer_macs(spec, cin, size, False)


def macs_op_cost(space: SearchSpace) -> OpCost:
    """The default cost: MACs of slot ``i``'s option at the slot's input shape (analytic, fast)."""
    shapes = [space.slot_input_shape(i) for i in range(space.num_slots)]

    def cost(i: int, spec: BlockSpec) -> float:
        channels, size, _ = shapes[i]
        return float(block_macs(spec, channels, size))

    return cost


def table_op_cost(table: Any) -> tuple[OpCost, Callable[[Any], float]]:
    """Costs in ms from a ``latency.LatencyTable``: ``(op_cost, arch_cost)``.

    ``op_cost`` is what (slot, option) adds to the table's prediction (``table.calibrated_block_ms``: its
    entry times its slot's calibration scale, plus the charge for its weights); ``arch_cost`` is
    ``table.predict``. Duck-typed: needs ``table.calibrated_block_ms(slot, spec)`` (raising ``ValueError`` for a
    block not in the table) and ``table.predict``.
    """

    def cost(i: int, spec: BlockSpec) -> float:
        return float(table.calibrated_block_ms(i, spec))

    return cost, table.predict


def slot_cost_matrix(space: SearchSpace, i: int, ops: list[dict[str, Any]], op_cost: OpCost) -> np.ndarray:
    """``[n_depths, n_ops]`` costs of slot ``i``: every candidate op at every allowed depth (sorted)."""
    slot = space.slots[i]
    depths = sorted(slot.choices["depth"])
    return np.array([[op_cost(i, slot.block(depth=d, **op)) for op in ops] for d in depths], dtype=float)


def layer_costs(costs: np.ndarray, depths: tuple[int, ...]) -> np.ndarray:
    """``[Dmax, n_ops]`` cost of each layer position from a ``[n_depths, n_ops]`` block-cost matrix.

    Layers after the first cost the average marginal cost per layer over the allowed depths; the
    first layer costs the rest of the shallowest block (exact when cost is linear in depth).
    """
    d = np.asarray(depths, dtype=float)
    if len(depths) > 1:
        marginal = (costs[-1] - costs[0]) / (d[-1] - d[0])
    else:
        marginal = costs[0] / d[0]
    first = costs[0] - (d[0] - 1) * marginal
    rows = [first] + [marginal] * (int(d[-1]) - 1)
    return np.maximum(np.stack(rows), 0.0)
