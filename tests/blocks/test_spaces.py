"""Search spaces: size, sampling, mutation, genome bounds, shapes, loading from a file."""

import json
from collections import Counter
from importlib import resources

import numpy as np
import pytest

from blocks import KNOBS, get_space


def test_tiny_space_size_and_options():
    space = get_space("mbconv-tiny")
    assert space.num_slots == 5
    assert all(len(space.options(i)) == 108 for i in range(5))
    assert space.size == 108 ** 5
    assert len({str(o) for o in space.options(2)}) == 108


def test_imagenet_space_matches_donna_choices():
    space = get_space("mbconv-imagenet")
    assert space.num_slots == 5 and space.input_size == 224
    slot = space.slots[0]
    assert slot.choices["kernel"] == (3, 5, 7) and slot.choices["expansion"] == (2, 3, 4, 6)
    assert slot.choices["depth"] == (1, 2, 3, 4) and slot.choices["act"] == ("relu", "swish")
    assert [space.slot_output_shape(i) for i in range(5)][-1] == (320, 7, 7)


def test_sampling_is_seeded_and_uniform_per_knob():
    space = get_space("mbconv-tiny")
    assert space.sample(7) == space.sample(7)
    assert space.sample_many(20, seed=3) == space.sample_many(20, seed=3)
    kernels = Counter(a.blocks[1].kernel for a in space.sample_many(3000, seed=0))
    assert set(kernels) == {3, 5, 7}
    assert all(abs(n / 3000 - 1 / 3) < 0.04 for n in kernels.values())


def test_mutation_changes_some_genes_and_stays_in_space():
    space = get_space("mbconv-tiny")
    arch = space.sample(0)
    assert space.mutate(arch, prob=0.0, seed=1) == arch
    mutants = [space.mutate(arch, prob=0.5, seed=s) for s in range(20)]
    assert any(m != arch for m in mutants)
    for m in mutants:
        space.validate(m)


def test_genome_bounds_and_decode_errors():
    space = get_space("mbconv-tiny")
    lower, upper = space.genome_bounds()
    assert lower.shape == upper.shape == (5 * len(KNOBS),)
    assert space.decode(upper) == space.reference()
    bad = upper.copy()
    bad[1] = 5
    with pytest.raises(ValueError, match=r"slot 0 kernel: index 5 out of range 0..2 \(allowed values \[3, 5, 7\]\)"):
        space.decode(bad)
    with pytest.raises(ValueError, match="genome has 3 genes"):
        space.decode(np.zeros(3))


def test_shapes_follow_strides():
    space = get_space("mbconv-tiny")
    assert space.stem_output_shape() == (16, 16, 16)
    assert [space.slot_output_shape(i) for i in range(5)] == [
        (16, 16, 16), (24, 8, 8), (40, 4, 4), (64, 4, 4), (96, 2, 2)]
    with pytest.raises(ValueError, match="slot 5 does not exist"):
        space.slot_input_shape(5)


def test_space_from_user_file(tmp_path):
    data = json.loads(resources.files("blocks").joinpath("spaces.json").read_text())["mbconv-tiny"]
    data["choices"]["kernel"] = [3]
    path = tmp_path / "mine.json"
    path.write_text(json.dumps({"my-space": data}))
    space = get_space(path)
    assert space.name == "my-space" and len(space.options(0)) == 36
    with pytest.raises(ValueError, match="unknown search space 'nope'; known spaces: .*mbconv-tiny"):
        get_space("nope")
