"""One network, one key: every knob a block type accepts changes the built network; the others are refused."""

from __future__ import annotations

import json

import pytest
import torch

from blocks import BLOCK_TYPES, UNUSED_KNOBS, BlockSpec, build_block, count_params, get_space

CIN = 8
BASE = {"kernel": 3, "stride": 1, "out_channels": 16, "expansion": 3, "depth": 1, "se": 0.25, "act": "relu",
        "group_width": 4, "attn": 2}
OTHER = {"kernel": 5, "stride": 2, "out_channels": 24, "expansion": 6, "depth": 2, "se": 0.5, "act": "swish",
         "group_width": 8, "attn": 4}
FIELDS = tuple(BASE)  # every field of a BlockSpec but its type


def _base(block_type: str) -> BlockSpec:
    return BlockSpec(type=block_type, **{**BASE, **UNUSED_KNOBS.get(block_type, {})})


def _network(spec: BlockSpec) -> tuple[int, str]:
    """What tells two built blocks apart: the parameter count and the module structure (layers, shapes, acts)."""
    block = build_block(spec, CIN)
    return count_params(block), repr(block)


@pytest.mark.parametrize("block_type", BLOCK_TYPES)
@pytest.mark.parametrize("knob", FIELDS)
def test_every_accepted_knob_changes_the_network_and_the_others_are_refused(block_type, knob):
    base = _base(block_type)
    if knob in UNUSED_KNOBS.get(block_type, {}):
        with pytest.raises(ValueError, match=f"{knob} .* has no effect on a '{block_type}' block; use {knob}"):
            base.with_knobs(**{knob: OTHER[knob]})
        return
    changed = base.with_knobs(**{knob: OTHER[knob]})
    assert str(changed) != str(base)  # another name, and another network:
    assert _network(changed) != _network(base), f"{knob} of a {block_type!r} block builds the same network"


@pytest.mark.parametrize("block_type", ["ir", "fir"])
def test_expansion_one_is_a_network_of_its_own(block_type):
    base = _base(block_type)
    assert _network(base.with_knobs(expansion=1)) != _network(base)


def test_attention_heads_change_the_output_with_the_same_weights():
    torch.manual_seed(0)
    two = build_block(_base("ir"), CIN).eval()
    four = build_block(_base("ir").with_knobs(attn=4), CIN).eval()
    four.load_state_dict(two.state_dict())  # heads split the same projections differently
    x = torch.randn(2, CIN, 5, 5)
    assert count_params(two) == count_params(four)
    assert not torch.allclose(two(x), four(x))


def test_attention_off_removes_the_layer():
    plain, attended = _base("fir").with_knobs(attn=0), _base("fir")
    assert count_params(build_block(plain, CIN)) < count_params(build_block(attended, CIN))


def test_unused_knobs_are_refused_from_json_and_strings_with_the_field_named():
    from blocks.convert import block_from_string

    bad = {"type": "ds", "kernel": 3, "stride": 1, "out_channels": 16, "expansion": 6}
    with pytest.raises(ValueError, match=r"blocks\[2\]: expansion 6 has no effect on a 'ds' block"):
        BlockSpec.from_dict(bad, "blocks[2]")
    with pytest.raises(ValueError, match="se 0.25 has no effect on a 'conv' block; use se 0.0"):
        block_from_string("conv_d1_k3_s1_e1_c16_se0.25_arelu")
    assert str(block_from_string("ds_d1_k3_s1_e1_c16_se0.25_arelu")) == "ds_d1_k3_s1_e1_c16_se0.25_arelu"


def test_a_space_pairing_a_type_with_a_knob_it_ignores_is_refused_at_load(tmp_path):
    data = {"input_size": 32, "num_classes": 10, "stem": [], "head": {"channels": 0},
            "choices": {"type": ["ir", "ds"], "kernel": [3], "expansion": [3, 6], "depth": [1], "se": [0],
                        "act": ["relu"]},
            "slots": [{"stride": 1, "out_channels": 16}]}
    path = tmp_path / "mixed.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"slot 0: type .ds. ignores expansion, but the expansion choices are \[3, 6"):
        get_space(path)
    data["choices"]["type"] = ["ds"]
    data["choices"]["expansion"] = [1]
    path.write_text(json.dumps(data))
    assert len(get_space(path).options(0)) == 1


def test_a_knob_some_types_ignore_may_offer_one_value_which_they_snap_to_neutral(tmp_path):
    data = {"input_size": 32, "num_classes": 10, "head": {"channels": 0},
            "stem": [{"type": "conv", "kernel": 3, "stride": 1, "out_channels": 16}],
            "choices": {"type": ["ir", "gir"], "kernel": [3], "expansion": [2], "depth": [1], "se": [0],
                        "act": ["relu"], "group_width": [8]},
            "slots": [{"stride": 1, "out_channels": 16}]}
    path = tmp_path / "grouped.json"
    path.write_text(json.dumps(data))
    space = get_space(path)
    assert [str(o) for o in space.options(0)] == ["ir_d1_k3_s1_e2_c16_arelu", "gir_d1_k3_s1_e2_c16_g8_arelu"]
    assert space.decode(space.encode(space.make_arch(space.options(0)[:1]))).blocks[0].group_width == 0
    data["choices"]["group_width"] = [4, 8]
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"type 'ir' ignores group_width, but the group_width choices are \[4, 8\]"):
        get_space(path)


def test_new_knobs_refuse_bad_values_with_the_field_named(tmp_path):
    with pytest.raises(ValueError, match="group_width 0 is not allowed; allowed: an integer >= 2 for a 'gir'"):
        BlockSpec(type="gir", kernel=3, stride=1, out_channels=16, expansion=2)
    with pytest.raises(ValueError, match="group_width 6 is not allowed; allowed: a divisor of the hidden width 32"):
        BlockSpec(type="gir", kernel=3, stride=1, out_channels=16, expansion=2, group_width=6)
    with pytest.raises(ValueError, match="attn 3 is not allowed; allowed: a number of heads dividing out_channels 16"):
        BlockSpec(type="ir", kernel=3, stride=1, out_channels=16, expansion=2, attn=3)
    with pytest.raises(ValueError, match="group_width 4 has no effect on a 'ir' block"):
        BlockSpec(type="ir", kernel=3, stride=1, out_channels=16, expansion=2, group_width=4)
    data = {"input_size": 32, "num_classes": 10, "stem": [{"type": "conv", "kernel": 3, "stride": 1,
                                                           "out_channels": 12}], "head": {"channels": 0},
            "choices": {"type": ["gir"], "kernel": [3], "expansion": [2], "depth": [1], "se": [0], "act": ["relu"],
                        "group_width": [16]},
            "slots": [{"stride": 1, "out_channels": 16}]}
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="slot 0: .*group_width 16 .* first layer's hidden width 24"):
        get_space(path)  # 12 input channels x 2 = 24 is not a multiple of 16
    data["choices"] = {**data["choices"], "attn": [0, 2], "type": ["conv"], "group_width": [0], "expansion": [1]}
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"type 'conv' ignores attn, but the attn choices are \[0, 2\]"):
        get_space(path)
    data["choices"] = {**data["choices"], "heads": [2]}
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="unknown key 'heads'"):
        get_space(path)
