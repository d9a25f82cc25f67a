"""Projection of trained architecture parameters to the IR, with provenance of what was kept and dropped.

Both projections return an ``Arch`` of the space (one ``BlockSpec`` per slot) whose provenance
holds, per slot, the parameters the choice was made from, so the decision can be audited.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from baselines.mixed_supernet import op_name, slot_ops
from blocks.ir import Arch
from blocks.spaces import SearchSpace

ADAPTATION_PCDARTS = ("adapted from a cell space to a block space: alpha tied per slot (one op per slot), "
                      "beta = softmax over the slot's exits (depth), partial channels only on stride-1 "
                      "equal-width layers after the slot's first; see docs/baselines.md")
ADAPTATION_DSONAS = ("adapted from a cell space to a block space: lambda per (layer, candidate op) on each "
                     "layer's residual branch, depth from surviving layers (first layer kept), one op per slot "
                     "by staged sparsification (projection only for ties); see docs/baselines.md")


def softmax(x: np.ndarray) -> np.ndarray:
    """Softmax of a 1-D array."""
    e = np.exp(np.asarray(x, dtype=float) - np.max(x))
    return e / e.sum()


def _floats(values: Any, digits: int = 6) -> list:
    return np.round(np.asarray(values, dtype=float), digits).tolist()


def project_pcdarts(space: SearchSpace, alphas: list[np.ndarray], betas: list[np.ndarray]) -> tuple[Arch, list]:
    """PC-DARTS derivation: per slot the op is argmax softmax(alpha), the depth argmax softmax(beta).

    Args:
        space: the search space.
        alphas: per slot, the raw op logits (one per candidate op, ``slot_ops`` order).
        betas: per slot, the raw exit logits (one per allowed depth, ascending).

    Returns:
        The architecture and, per slot, a provenance record (chosen op, depth, both softmaxes).
    """
    blocks, records = [], []
    for i, slot in enumerate(space.slots):
        ops, depths = slot_ops(slot), sorted(slot.choices["depth"])
        p_op, p_exit = softmax(alphas[i]), softmax(betas[i])
        o, d = int(np.argmax(p_op)), int(np.argmax(p_exit))
        blocks.append(slot.block(depth=depths[d], **ops[o]))
        records.append({"slot": i, "op": op_name(ops[o]), "depth": depths[d], "op_prob": round(float(p_op[o]), 6),
                        "depth_prob": round(float(p_exit[d]), 6), "softmax_alpha": _floats(p_op),
                        "softmax_beta": _floats(p_exit), "depths": depths})
    return space.make_arch(blocks), records


def snap_depth(count: int, allowed: list[int]) -> int:
    """The allowed depth nearest to ``count`` (ties go to the deeper one)."""
    return min(sorted(allowed), key=lambda d: (abs(d - count), -d))


def project_dsonas(space: SearchSpace, lambdas: list[np.ndarray], costs: list[np.ndarray] | None = None
                   ) -> tuple[Arch, list]:
    """DSO-NAS hand-over: per slot keep the op with the largest lambda mass, depth = surviving layers.

    A layer survives when any of its lambdas is > 0; the first layer always survives. The op's
    score is the sum of its lambdas over the slot's layers; survivors are the ops with score > 0.
    A slot whose lambdas are all zero ("collapsed") gets its cheapest op at the smallest depth.

    Args:
        space: the search space.
        lambdas: per slot, ``[Dmax, n_ops]`` lambdas (row 0 = first layer).
        costs: per slot, ``[n_depths, n_ops]`` block costs, used only for collapsed slots.

    Returns:
        The architecture and, per slot, a provenance record (kept op, other survivors, depth).
    """
    blocks, records = [], []
    for i, slot in enumerate(space.slots):
        lam = np.asarray(lambdas[i], dtype=float)
        ops, depths = slot_ops(slot), sorted(slot.choices["depth"])
        score = lam.sum(axis=0)
        layers_alive = 1 + int((lam[1:] > 0).any(axis=1).sum())
        collapsed = not np.any(score > 0)
        if collapsed:
            o = int(np.argmin(costs[i][0])) if costs is not None else 0
            depth = depths[0]
        else:
            o, depth = int(np.argmax(score)), snap_depth(layers_alive, depths)
        blocks.append(slot.block(depth=depth, **ops[o]))
        survivors = [j for j in np.argsort(-score) if score[j] > 0 and j != o]
        records.append({
            "slot": i, "op": op_name(ops[o]), "depth": depth, "surviving_layers": layers_alive,
            "collapsed": collapsed, "op_lambda_sum": round(float(score[o]), 6),
            "other_survivors": [{"op": op_name(ops[j]), "lambda_sum": round(float(score[j]), 6)} for j in survivors],
            "layer_lambdas_of_kept_op": _floats(lam[:, o]),
            "zero_lambdas": int((lam == 0).sum()), "total_lambdas": int(lam.size),
        })
    return space.make_arch(blocks), records
