"""The IR: round trips between JSON, Arch, string and genome; clear errors on bad input."""

import json

import numpy as np
import pytest

from blocks import Arch, BlockSpec, HeadSpec, get_preset, get_space, list_spaces
from blocks.convert import block_from_string

SPACES = list_spaces()


@pytest.mark.parametrize("name", SPACES)
def test_round_trips_are_identity_on_500_random_archs(name):
    space = get_space(name)
    for arch in space.sample_many(500, seed=123):
        assert Arch.from_json(arch.to_json()) == arch
        assert Arch.from_dict(json.loads(json.dumps(arch.to_dict()))) == arch
        assert Arch.from_string(arch.to_string()) == arch
        genome = space.encode(arch)
        assert space.decode(genome) == arch
        np.testing.assert_array_equal(space.encode(space.decode(genome)), genome)


def test_json_file_round_trip_keeps_provenance(tmp_path):
    arch = get_space("mbconv-tiny").sample(1).with_provenance({"searcher": "test", "seed": 1})
    path = tmp_path / "a.json"
    arch.to_json(path)
    loaded = Arch.from_json(path)
    assert loaded == arch and loaded.provenance == {"searcher": "test", "seed": 1}


def test_key_is_canonical_and_ignores_provenance():
    space = get_space("mbconv-tiny")
    a, b = space.sample(0), space.sample(1)
    assert a.key != b.key
    assert a.key == Arch.from_string(a.to_string()).key
    assert a.with_provenance({"x": 1}).key == a.key
    assert len({arch.key for arch in space.sample_many(200, seed=0)}) == 200


def test_presets_are_readable():
    arch = get_preset("efficientnet_b0")
    assert len(arch.blocks) == 7 and arch.blocks[0].se == 0.25
    assert Arch.from_string(arch.to_string()) == arch


def test_future_schema_version_fails_clearly(tmp_path):
    data = get_space("mbconv-tiny").sample(0).to_dict()
    data["schema_version"] = 99
    path = tmp_path / "future.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="schema_version 99 .*newer version"):
        Arch.from_json(path)


def test_unknown_key_is_named_with_allowed_keys():
    data = get_space("mbconv-tiny").sample(0).to_dict()
    data["blocks"][2]["kernal"] = 3
    with pytest.raises(ValueError, match=r"blocks\[2\]: unknown key 'kernal'; allowed keys: type, kernel"):
        Arch.from_dict(data)
    data = get_space("mbconv-tiny").sample(0).to_dict()
    data["colour"] = "red"
    with pytest.raises(ValueError, match="unknown key 'colour'"):
        Arch.from_dict(data)


def test_out_of_space_value_names_slot_field_and_allowed_values():
    space = get_space("mbconv-tiny")
    arch = space.sample(0)
    bad = arch.with_blocks([arch.blocks[0].with_knobs(kernel=9), *arch.blocks[1:]])
    with pytest.raises(ValueError, match=r"slot 0: kernel 9 not in \[3, 5, 7\]"):
        space.validate(bad)
    bad = arch.with_blocks([*arch.blocks[:3], arch.blocks[3].with_knobs(out_channels=65), arch.blocks[4]])
    with pytest.raises(ValueError, match="slot 3: out_channels 65 not allowed.*fixes it to 64"):
        space.validate(bad)


@pytest.mark.parametrize(("field", "value", "allowed"), [
    ("out_channels", -8, "an integer >= 1"),
    ("kernel", 4, "odd integer"),
    ("act", "gelu", "relu, relu6, swish, hswish"),
    ("type", "transformer", "ir, fir, gir, ds, conv"),
    ("attn", -1, "an integer >= 0"),
    ("group_width", 2.5, "an integer >= 0"),
    ("stride", 3, "1, 2"),
    ("se", 1.5, "ratio in"),
])
def test_bad_block_values_name_field_and_allowed_values(field, value, allowed):
    fields = {"type": "ir", "kernel": 3, "stride": 1, "out_channels": 16, field: value}
    with pytest.raises(ValueError, match=f"{field} .*allowed: .*{allowed}"):
        BlockSpec(**fields)


@pytest.mark.parametrize("text", [
    "ir_d2_k3_s1_c16",            # no expansion is fine, but act token is optional: this one is valid
])
def test_block_string_defaults(text):
    assert block_from_string(text).expansion == 1


@pytest.mark.parametrize("text", [
    "ir_d2_kx_s1_e6_c16_arelu", "ir_d2_s1_e6_c16_arelu", "in3x32 stem[] ir_d1_k3_s1_e1_c8_arelu n10",
    "nonsense", "in3x32 stem[] ir_d1_k3_s1_e1_c8_agelu head[c0_arelu_dp0] n10",
])
def test_malformed_strings_raise_value_error(text):
    with pytest.raises(ValueError):
        if " " in text or text == "nonsense":
            Arch.from_string(text)
        else:
            block_from_string(text)


def test_head_validation():
    with pytest.raises(ValueError, match="dropout"):
        HeadSpec(channels=8, dropout=1.2)
    with pytest.raises(ValueError, match="channels"):
        HeadSpec(channels=-1)


def test_sizes_beyond_the_limits_are_refused_before_building():
    from blocks.ir import LIMITS, BlockSpec

    with pytest.raises(ValueError, match=r"depth 100000 is not allowed; allowed: at most 64"):
        BlockSpec(type="ir", kernel=3, stride=1, out_channels=16, depth=100000)
    with pytest.raises(ValueError, match="out_channels"):
        BlockSpec(type="ir", kernel=3, stride=1, out_channels=LIMITS["out_channels"] + 1)
    with pytest.raises(ValueError, match="expansion nan"):
        BlockSpec(type="ir", kernel=3, stride=1, out_channels=16, expansion=float("nan"))
    BlockSpec(type="ir", kernel=LIMITS["kernel"], stride=1, out_channels=16, depth=LIMITS["depth"])  # at the limit


def test_a_selected_json_is_accepted_wherever_an_architecture_file_is(tmp_path):
    from blocks import resolve_arch

    arch = get_space("mbconv-tiny").sample(3)
    selected = tmp_path / "selected.json"
    selected.write_text(json.dumps({"key": arch.key, "predicted_accuracy": 0.8, "ir": arch.to_dict()}))
    assert Arch.from_json(selected) == arch and resolve_arch(str(selected)) == arch
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"key": arch.key, "ir": "not an architecture"}))
    with pytest.raises(ValueError, match="other.json"):
        Arch.from_json(other)
