"""One network, one key: every knob a block type accepts changes the built network; the others are refused."""

from __future__ import annotations

import json

import pytest

from blocks import BLOCK_TYPES, UNUSED_KNOBS, BlockSpec, build_block, count_params, get_space

CIN = 8
BASE = {"kernel": 3, "stride": 1, "out_channels": 16, "expansion": 3, "depth": 1, "se": 0.25, "act": "relu"}
OTHER = {"kernel": 5, "stride": 2, "out_channels": 24, "expansion": 6, "depth": 2, "se": 0.5, "act": "swish"}
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
