"""Costs (analytic MACs, latency-table adapter, per-layer costs) and the two projections to the IR."""

import numpy as np
import pytest

from baselines.costs import block_macs, layer_costs, macs_op_cost, slot_cost_matrix, table_op_cost
from baselines.dsonas import penalty_weights
from baselines.mixed_supernet import slot_ops
from baselines.project import project_dsonas, project_pcdarts, snap_depth
from blocks import UNUSED_KNOBS, build_block, count_macs, get_space
from latency.table import Calibration, LatencyTable, SlotLatencies


@pytest.mark.parametrize("block_type", ["ir", "fir", "ds", "conv"])
def test_analytic_macs_match_the_flop_counter(block_type):
    space = get_space("mbconv-tiny")
    for i in (0, 1, 4):
        channels, size, _ = space.slot_input_shape(i)
        for spec in space.options(i)[::17]:
            spec = spec.with_knobs(type=block_type, **UNUSED_KNOBS.get(block_type, {}))
            assert block_macs(spec, channels, size) == count_macs(build_block(spec, channels), (channels, size, size))


def test_layer_costs_are_exact_for_costs_linear_in_depth():
    first, later = np.array([10.0, 20.0]), np.array([3.0, 5.0])
    blocks = np.stack([first + (d - 1) * later for d in (1, 2, 3)])
    np.testing.assert_allclose(layer_costs(blocks, (1, 2, 3)), [first, later, later])
    np.testing.assert_allclose(layer_costs(blocks[1:], (2, 3)), [first, later, later])


def test_table_adapter_reads_entries_and_scales():
    space = get_space("mbconv-tiny")
    spec = space.options(0)[0]

    table = LatencyTable(profile={"name": "cpu"}, fingerprint={}, space_name=space.name, space_signature="",
                         protocol={}, stem=(), stem_ms=0.0, head_ms=0.0,
                         slots=(SlotLatencies(space.slot_input_shape(0), (str(spec),), (2.0,), (False,), (0.5,)),),
                         calibration=Calibration(intercept_ms=0.1, scale=1.5, per_mparam_ms=2.0))
    cost, arch_cost = table_op_cost(table)
    assert cost(0, spec) == 3.0 + 1.0 and arch_cost == table.predict  # scaled entry plus the weights' charge
    with pytest.raises(ValueError, match="not in the latency table"):
        cost(0, space.options(0)[1])


def test_budget_aware_weights_span_half_to_full_gamma():
    weights = penalty_weights([np.array([[1.0, 3.0]]), np.array([[2.0, 5.0]])], 0.01, True)
    flat = np.concatenate([w.numpy().ravel() for w in weights])
    assert np.isclose(flat.min(), 0.005) and np.isclose(flat.max(), 0.01)
    assert all(np.allclose(w.numpy(), 0.01) for w in penalty_weights([np.ones((2, 2))], 0.01, False))


def test_pcdarts_projection_is_argmax_of_softmax(tiny_space):
    alphas = [np.array([0.0, 2.0, 1.0, -1.0]), np.array([0.0, 0.0, 0.0, 3.0])]
    betas = [np.array([0.0, 0.0, 1.0]), np.array([5.0, 0.0, 0.0])]
    arch, records = project_pcdarts(tiny_space, alphas, betas)
    tiny_space.validate(arch)
    ops0, ops1 = slot_ops(tiny_space.slots[0]), slot_ops(tiny_space.slots[1])
    assert arch.blocks[0] == tiny_space.slots[0].block(depth=3, **ops0[1])
    assert arch.blocks[1] == tiny_space.slots[1].block(depth=1, **ops1[3])
    assert np.isclose(sum(records[0]["softmax_alpha"]), 1.0, atol=1e-5)


def test_dsonas_projection_keeps_the_largest_survivor_and_counts_layers(tiny_space):
    lam0 = np.array([[0.5, 0.0, 0.2, 0.0], [0.0, 0.0, 0.0, 0.0], [0.3, 0.0, 0.0, 0.0]])  # layer 2 vanished
    lam1 = np.zeros((3, 4))  # collapsed slot
    costs = [slot_cost_matrix(tiny_space, i, slot_ops(s), macs_op_cost(tiny_space))
             for i, s in enumerate(tiny_space.slots)]
    arch, records = project_dsonas(tiny_space, [lam0, lam1], costs)
    tiny_space.validate(arch)
    assert arch.blocks[0].depth == 2 and records[0]["surviving_layers"] == 2
    assert arch.blocks[0] == tiny_space.slots[0].block(depth=2, **slot_ops(tiny_space.slots[0])[0])
    assert [s["op"] for s in records[0]["other_survivors"]] == ["ir_k5_e2_se0_relu"]
    assert records[1]["collapsed"] and arch.blocks[1].depth == 1
    assert arch.blocks[1].kernel == 3 and arch.blocks[1].se == 0.0  # the cheapest op


def test_snap_depth():
    assert snap_depth(1, [2, 3, 4]) == 2 and snap_depth(5, [1, 2, 3]) == 3 and snap_depth(2, [1, 3]) == 3
