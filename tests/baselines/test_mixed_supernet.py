"""The shared supernet: candidate ops, the PC-DARTS mixed op, exits, BatchNorm modes, parity with the IR."""

import pytest
import torch

from baselines.mixed_supernet import (
    MixedLayer,
    SuperNet,
    channel_shuffle,
    make_op,
    op_block,
    set_bn_mode,
    slot_ops,
)
from blocks import build_model, get_space
from blocks.layers import InvertedResidual


@pytest.fixture(scope="module")
def ops():
    slot = get_space("mbconv-tiny").slots[0]
    return [op for op in slot_ops(slot) if op["expansion"] == 2 and op["act"] == "swish"]  # 6 ops, SE on/off


def test_slot_ops_follow_the_space_option_order():
    space = get_space("mbconv-tiny")
    slot = space.slots[2]
    ops = slot_ops(slot)
    assert len(ops) == 36
    for depth in slot.choices["depth"]:
        assert [op_block(slot, op, depth) for op in ops] == [o for o in space.options(2) if o.depth == depth]


def test_mixed_op_with_k1_equals_plain_darts(ops):
    torch.manual_seed(0)
    layer = MixedLayer(ops, 16, 16, 1, partial_k=1, bn_mode="non_affine")
    plain = []
    for op, module in zip(ops, layer.ops):  # plain DARTS: each candidate is a whole layer with its residual
        ref = InvertedResidual(16, 16, op["kernel"], 1, op["expansion"], op["se"], op["act"])
        set_bn_mode(ref, "non_affine")
        ref.load_state_dict(module.state_dict())
        plain.append(ref)
    x = torch.randn(4, 16, 8, 8)
    w = torch.softmax(torch.randn(len(ops)), 0)
    expected = sum(wi * ref(x) for wi, ref in zip(w, plain))
    torch.testing.assert_close(layer(x, w), expected, rtol=1e-5, atol=1e-5)


def test_partial_channels_k4_run_ops_on_a_quarter_and_shuffle(ops):
    torch.manual_seed(0)
    layer = MixedLayer(ops, 16, 16, 1, partial_k=4, bn_mode="non_affine")
    assert all(module.expand[0].in_channels == 4 for module in layer.ops)
    x = torch.randn(2, 16, 8, 8)
    w = torch.softmax(torch.randn(len(ops)), 0)
    part = x[:, :4] + sum(wi * op(x[:, :4]) for wi, op in zip(w, layer.ops))
    expected = channel_shuffle(torch.cat([part, x[:, 4:]], 1), 4)
    out = layer(x, w)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    bypass = {tuple(c.flatten().tolist()) for c in x[0, 4:]}
    assert sum(tuple(c.flatten().tolist()) in bypass for c in out[0]) == 12  # untouched channels survive


def test_channel_shuffle_is_a_permutation():
    x = torch.arange(8.0).view(1, 8, 1, 1)
    assert channel_shuffle(x, 4).flatten().tolist() == [0, 2, 4, 6, 1, 3, 5, 7]
    assert torch.equal(channel_shuffle(x, 1), x)


def test_partial_channels_rejected_where_shapes_change_or_k_does_not_divide(ops):
    with pytest.raises(ValueError, match="stride 1"):
        MixedLayer(ops, 16, 24, 2, partial_k=4)
    with pytest.raises(ValueError, match="divide"):
        MixedLayer(ops, 18, 18, 1, partial_k=4)


def test_bn_modes():
    op = {"type": "ir", "kernel": 3, "expansion": 2, "se": 0.0, "act": "relu"}
    bns = [m for m in make_op(op, 8, 8, 1, "non_affine").modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(m.weight is None and m.bias is None for m in bns)
    bns = [m for m in make_op(op, 8, 8, 1, "frozen_gamma").modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(not m.weight.requires_grad and bool((m.weight == 1).all()) and m.bias.requires_grad for m in bns)
    with pytest.raises(ValueError, match="allowed"):
        set_bn_mode(torch.nn.BatchNorm2d(2), "bogus")


def test_removed_ops_make_a_residual_layer_the_identity(ops):
    layer = MixedLayer(ops, 16, 16, 1)
    layer.remove_ops(torch.ones(len(ops), dtype=torch.bool))
    x = torch.randn(2, 16, 4, 4)
    assert torch.equal(layer(x, torch.ones(len(ops))), x)
    assert all(isinstance(m, torch.nn.Identity) for m in layer.ops)


def test_supernet_path_with_one_hot_weights_equals_the_built_architecture(tiny_space):
    torch.manual_seed(0)
    net = SuperNet(tiny_space, partial_k=1, bn_mode="affine").eval()
    choice = [(1, 2), (2, 3)]  # (op index, depth) per slot
    arch = tiny_space.make_arch([op_block(s.slot, s.ops[o], d) for s, (o, d) in zip(net.slots, choice)])
    model = build_model(arch).eval()
    model.stem.load_state_dict(net.stem.state_dict())
    model.head.load_state_dict(net.head.state_dict())
    for block, slot, (o, _) in zip(model.blocks, net.slots, choice):
        for layer, mixed in zip(block, slot.layers):
            layer.load_state_dict(mixed.ops[o].state_dict())
    op_w = [torch.nn.functional.one_hot(torch.tensor(o), s.num_ops).float().expand(s.max_depth, -1)
            for s, (o, _) in zip(net.slots, choice)]
    exit_w = [torch.tensor([float(x == d) for x in s.depths]) for s, (_, d) in zip(net.slots, choice)]
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(net(x, op_w, exit_w), model(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("partial_k", [1, 2])
def test_a_mixed_op_over_a_tiny_plus_slot_builds_and_runs(partial_k):
    from baselines.mixed_supernet import SuperSlot

    space, slot_index = get_space("mbconv-tiny-plus"), 3
    slot = space.slots[slot_index]
    ops = slot_ops(slot)
    assert len(ops) == slot.num_options // len(slot.choices["depth"])
    assert {op["type"] for op in ops} == {"ir", "fir", "gir"} and {op["attn"] for op in ops} == {0, 4}
    for depth in slot.choices["depth"]:  # the ops are the slot's options at each depth, in option order
        assert [op_block(slot, op, depth) for op in ops] == [o for o in space.options(slot_index) if o.depth == depth]
    torch.manual_seed(0)
    mixed = SuperSlot(slot, space.slot_input_shape(slot_index)[0], partial_k=partial_k, bn_mode="non_affine")
    weights = torch.softmax(torch.randn(mixed.max_depth, mixed.num_ops), 1)
    outs = mixed(torch.randn(2, *space.slot_input_shape(slot_index)), weights)
    assert [tuple(o.shape[1:]) for o in outs] == [space.slot_output_shape(slot_index)] * mixed.max_depth
    outs[-1].square().mean().backward()
    grads = [p.grad for op in mixed.layers[-1].ops for p in op.parameters() if p.requires_grad]
    assert grads and all(g is not None for g in grads)
