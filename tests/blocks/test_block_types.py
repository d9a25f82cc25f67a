"""Every block type, with and without self-attention: channels-last forward, tracing, ONNX parity; stable keys;
the shipped mbconv-tiny-plus space."""

from __future__ import annotations

import io

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from blocks import BLOCK_TYPES, UNUSED_KNOBS, Arch, BlockSpec, build_block, build_model, get_space
from blocks.convert import block_from_string
from latency.export import OPSETS

CIN, COUT = 8, 16
CASES = [(t, heads) for t in BLOCK_TYPES for heads in (0, 4) if not (heads and "attn" in UNUSED_KNOBS[t])]


def _spec(block_type: str, heads: int) -> BlockSpec:
    knobs = {"expansion": 3, "se": 0.25, "group_width": 4, **UNUSED_KNOBS[block_type], "attn": heads}
    return BlockSpec(type=block_type, kernel=3, stride=2, out_channels=COUT, depth=2, act="swish", **knobs)


def _randomised(block: nn.Module) -> nn.Module:
    gen = torch.Generator().manual_seed(0)
    for m in block.modules():
        if isinstance(m, (nn.BatchNorm2d, nn.LayerNorm)):
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
            m.bias.data.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)
    return block.eval()


@pytest.mark.parametrize(("block_type", "heads"), CASES)
def test_every_block_type_runs_channels_last_traces_and_matches_onnxruntime(block_type, heads):
    torch.manual_seed(0)
    block = _randomised(build_block(_spec(block_type, heads), CIN))
    x = torch.randn(2, CIN, 8, 8).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        expected = block(x)
        traced = torch.jit.trace(block, (x,))
        torch.testing.assert_close(traced(x), expected)
    assert expected.shape == (2, COUT, 4, 4)
    buffer = io.BytesIO()
    torch.onnx.export(block, (x,), buffer, dynamo=False, input_names=["x"], opset_version=OPSETS["torchscript"])
    onnx.checker.check_model(onnx.load_from_string(buffer.getvalue()))
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"x": x.contiguous().numpy()})
    assert np.abs(expected.numpy() - got).max() < 1e-4


def test_attention_exports_with_the_dynamo_exporter_too():
    torch.manual_seed(0)
    block = _randomised(build_block(_spec("gir", 4), CIN))
    x = torch.randn(1, CIN, 8, 8)
    with torch.no_grad():
        expected = block(x)
    program = torch.onnx.export(block, (x,), dynamo=True, opset_version=OPSETS["dynamo"])
    buffer = io.BytesIO()
    program.save(buffer)
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    assert np.abs(expected.numpy() - got).max() < 1e-4


def test_keys_and_json_of_blocks_without_the_new_knobs_are_unchanged():
    space = get_space("mbconv-tiny")
    assert space.reference().key == "775f189c693b988e"  # the key before group_width and attn existed
    assert space.sample(0).key == "69cdff7956938a87"
    assert set(space.reference().blocks[0].to_dict()) == {"type", "kernel", "stride", "out_channels", "expansion",
                                                          "depth", "se", "act"}
    assert space.knobs == ("type", "kernel", "expansion", "depth", "se", "act")
    assert space.encode(space.sample(5)).size == 6 * space.num_slots


def test_new_knobs_round_trip_through_string_and_json():
    spec = BlockSpec(type="gir", kernel=5, stride=1, out_channels=64, expansion=4, depth=2, se=0.25, act="swish",
                     group_width=8, attn=4)
    assert str(spec) == "gir_d2_k5_s1_e4_c64_g8_se0.25_mh4_aswish"
    assert block_from_string(str(spec)) == spec
    assert BlockSpec.from_dict(spec.to_dict()) == spec
    arch = get_space("mbconv-tiny-plus").sample(11)
    assert Arch.from_string(arch.to_string()) == arch and Arch.from_json(arch.to_json()) == arch


def test_mbconv_tiny_plus_loads_samples_builds_and_keeps_the_plain_reference():
    tiny, plus = get_space("mbconv-tiny"), get_space("mbconv-tiny-plus")
    assert [plus.slot_output_shape(i) for i in range(5)] == [tiny.slot_output_shape(i) for i in range(5)]
    assert plus.knobs[-2:] == ("group_width", "attn")
    for i in range(plus.num_slots):
        options = plus.options(i)
        assert len(options) == plus.slots[i].num_options <= 162
        assert len({str(o) for o in options}) == len(options)  # one network per option
        assert {o.type for o in options} == {"ir", "fir", "gir"}
        assert {o.attn for o in options} == ({0, 4} if i >= 3 else {0})  # attention in the two 4x4 / 2x2 slots
    reference = plus.reference()
    assert all(b.type == "ir" and b.attn == 0 and b.group_width == 0 for b in reference.blocks)
    for i, block in enumerate(reference.blocks):
        assert block in plus.options(i)
    archs = plus.sample_many(20, seed=0)
    assert all(plus.decode(plus.encode(a)) == a for a in archs)
    assert any(b.attn for a in archs for b in a.blocks) and any(b.type == "gir" for a in archs for b in a.blocks)
    model = build_model(archs[0]).eval()
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_mbconv_imagenet_plus_offers_every_type_and_attention_at_imagenet_shapes_and_they_match_onnxruntime():
    base, plus = get_space("mbconv-imagenet"), get_space("mbconv-imagenet-plus")
    assert [plus.slot_output_shape(i) for i in range(5)] == [base.slot_output_shape(i) for i in range(5)]
    assert all(b.type == "ir" and b.attn == 0 for b in plus.reference().blocks)
    for slot in (3, 4):  # the 7x7 slots: one option of every type closed by attention, at the slot's real shape
        options = plus.options(slot)
        assert {o.type for o in options} == {"ir", "fir", "gir"} and {o.attn for o in options} == {0, 4}
        cin = plus.slot_input_shape(slot)
        for block_type in ("ir", "fir", "gir"):
            spec = next(o for o in options if o.type == block_type and o.attn == 4 and o.depth == 1)
            block = _randomised(build_block(spec, cin[0]))
            x = torch.randn(1, *cin)
            with torch.no_grad():
                expected = block(x)
            assert expected.shape[1:] == plus.slot_output_shape(slot)
            buffer = io.BytesIO()
            torch.onnx.export(block, (x,), buffer, dynamo=False, input_names=["x"],
                              opset_version=OPSETS["torchscript"])
            session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
            (got,) = session.run(None, {"x": x.numpy()})
            assert np.abs(expected.numpy() - got).max() < 1e-3, spec
