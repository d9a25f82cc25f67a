"""Builder and blocks: every option builds, runs and exports; parity with torchvision's counts."""

import io

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torchvision
from torch import nn

from blocks import BLOCK_TYPES, UNUSED_KNOBS, BlockSpec, build_block, build_model, count_params, get_preset, get_space
from blocks.layers import BLOCK_LAYERS
from blocks.presets import describe_arch


class AllOptions(nn.Module):
    """Runs every option of one slot on the same input; one ONNX graph per slot keeps the test fast."""

    def __init__(self, options, in_channels):
        super().__init__()
        self.options = nn.ModuleList(build_block(spec, in_channels) for spec in options)

    def forward(self, x):
        return tuple(option(x) for option in self.options)


def _randomise_bn(module):
    gen = torch.Generator().manual_seed(0)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)


@pytest.mark.parametrize("slot", range(5))
def test_every_tiny_option_builds_runs_exports_and_matches_onnxruntime(slot):
    space = get_space("mbconv-tiny")
    options = space.options(slot)
    model = AllOptions(options, space.slot_input_shape(slot)[0]).eval()
    _randomise_bn(model)
    x = torch.randn(1, *space.slot_input_shape(slot))
    with torch.no_grad():
        expected = model(x)
    for out in expected:
        assert tuple(out.shape[1:]) == space.slot_output_shape(slot)
    buffer = io.BytesIO()
    torch.onnx.export(model, (x,), buffer, dynamo=False, input_names=["x"])
    onnx.checker.check_model(onnx.load_from_string(buffer.getvalue()))
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    got = session.run(None, {"x": x.numpy()})
    assert len(got) == len(options)
    for spec, ref, out in zip(options, expected, got):
        assert np.abs(ref.numpy() - out).max() < 1e-4, str(spec)


@pytest.mark.parametrize(("name", "expected"), [("efficientnet_b0", 5_288_548), ("mobilenet_v2", 3_504_872)])
def test_parameter_count_parity_with_torchvision(name, expected):
    ours = count_params(build_model(get_preset(name)))
    theirs = count_params(getattr(torchvision.models, name)(weights=None))
    assert ours == theirs == expected


def test_describe_reports_params_and_macs():
    info = describe_arch(get_preset("mobilenet_v2"))
    assert info["params"] == 3_504_872
    assert 290e6 < info["macs"] < 310e6  # MobileNetV2 is quoted at about 300M multiply-adds


def test_block_table_covers_every_block_type():
    assert set(BLOCK_LAYERS) == set(BLOCK_TYPES)


@pytest.mark.parametrize("block_type", BLOCK_TYPES)
@pytest.mark.parametrize(("stride", "cin", "cout"), [(1, 8, 8), (2, 8, 12)])
def test_every_block_type_maps_shapes(block_type, stride, cin, cout):
    knobs = {"expansion": 3, "se": 0.25, "group_width": 4, "attn": 2,
             **UNUSED_KNOBS.get(block_type, {})}  # knobs the type ignores stay neutral
    spec = BlockSpec(type=block_type, kernel=3, stride=stride, out_channels=cout, depth=2, **knobs)
    block = build_block(spec, cin)
    out = block(torch.randn(2, cin, 9, 9))
    assert out.shape == (2, cout, 5 if stride == 2 else 9, 5 if stride == 2 else 9)


def test_residual_only_where_shapes_allow():
    same = build_block(BlockSpec(type="ir", kernel=3, stride=1, out_channels=8, expansion=2, depth=2), 8)
    assert [layer.use_residual for layer in same] == [True, True]
    down = build_block(BlockSpec(type="ir", kernel=3, stride=2, out_channels=8, expansion=2, depth=2), 8)
    assert [layer.use_residual for layer in down] == [False, True]


def test_model_slots_can_be_run_one_at_a_time():
    arch = get_space("mbconv-tiny").sample(4)
    model = build_model(arch).eval()
    x = torch.randn(2, 3, 32, 32)
    feats = model.features(x)
    assert len(feats) == 1 + len(arch.blocks)
    torch.testing.assert_close(model.head(feats[-1]), model(x))


@pytest.mark.parametrize("name", ["mobilenet_v2", "mbconv-tiny/reference"])
def test_hook_mac_count_equals_torch_flop_counter(name):
    from torch.utils.flop_counter import FlopCounterMode

    from blocks import count_macs

    arch = get_preset(name)
    model = build_model(arch).eval()
    shape = (arch.in_channels, arch.input_size, arch.input_size)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, *shape))
    assert count_macs(model, shape) == counter.get_total_flops() // 2
