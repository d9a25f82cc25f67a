"""The space of cheaper versions of a model (donna compress): shapes kept, the model its largest member."""

import pytest
import torch

from blocks import build_block, count_macs, get_space
from blocks.compress import CHEAPER_TYPES, compression_space, compression_space_dict


def _models():
    """Reference members and random members of the shipped embedded spaces (plain, fused, grouped, attention)."""
    out = []
    for name in ("mbconv-tiny", "mbconv-tiny-plus"):
        space = get_space(name)
        out += [space.reference(), *space.sample_many(3, seed=7)]
    plus = get_space("mbconv-tiny-plus")
    out.append(next(a for a in plus.sample_many(200, seed=1) if any(b.attn for b in a.blocks)))
    return out


@pytest.mark.parametrize("arch", _models(), ids=lambda a: a.key)
def test_every_option_keeps_its_slots_shapes_and_costs_at_most_the_models_block(arch):
    space = compression_space(arch)
    assert space.reference().blocks == arch.blocks  # the model is the largest member (the teacher)
    assert space.stem == arch.stem and space.head == arch.head and space.num_slots == len(arch.blocks)
    for i, own in enumerate(arch.blocks):
        c, h, w = space.slot_input_shape(i)
        x = torch.zeros(1, c, h, w)
        own_macs = count_macs(build_block(own, c), (c, h, w))
        options = space.options(i)
        assert own in options
        for spec in options[:: max(1, len(options) // 12)]:  # a spread of each slot's options
            block = build_block(spec, c).eval()
            with torch.no_grad():
                assert tuple(block(x).shape[1:]) == space.slot_output_shape(i) == (own.out_channels, *_hw(arch, i))
            assert count_macs(block, (c, h, w)) <= own_macs
        assert {s.type for s in options} == {own.type, *CHEAPER_TYPES.get(own.type, ())}  # and a cheaper type
        assert {s.act for s in options} == {own.act}


def _hw(arch, i):
    size = arch.input_size
    for spec in (*arch.stem, *arch.blocks[: i + 1]):
        size = (size + spec.stride - 1) // spec.stride
    return size, size


def test_the_choices_are_the_models_values_and_the_cheaper_ones():
    arch = get_space("mbconv-tiny").reference()
    slot = compression_space_dict(arch)["slots"][0]["choices"]
    assert slot == {"type": ["ir"], "kernel": [3, 5, 7], "expansion": [2, 3, 4, 6], "depth": [1, 2, 3],
                    "se": [0.0, 0.25], "act": ["swish"]}


def test_a_fused_or_grouped_block_is_offered_the_depthwise_type_too():
    plus = get_space("mbconv-tiny-plus")
    arch = next(a for a in plus.sample_many(200, seed=3) if {"fir", "gir"} <= {b.type for b in a.blocks})
    slots = compression_space_dict(arch)["slots"]
    for spec, slot in zip(arch.blocks, slots):
        assert slot["choices"]["type"] == ([spec.type] if spec.type == "ir" else ["ir", spec.type])
