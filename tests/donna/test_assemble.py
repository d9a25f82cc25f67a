"""Assembly: any architecture from its BKD blocks with the teacher's stem and head; bad input fails clearly."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from blocks import BlockSpec
from donna.assemble import assemble, evaluate, recalibrate
from donna.bkd import BlockLibrary


def test_assembled_arch_runs_the_library_blocks(built, space, digits16):
    arch = space.sample(3)
    model = assemble(arch, built["workdir"], built["teacher"], space=space)
    library = BlockLibrary(built["workdir"], space)
    x = torch.randn(4, 3, 16, 16)
    feats = model.features(x)
    assert model(x).shape == (4, 10) and len(feats) == space.num_slots + 1
    assert torch.equal(feats[0], built["teacher"].stem(x))
    for i, spec in enumerate(arch.blocks):
        assert torch.equal(feats[i + 1], library.block(i, spec)(feats[i]))
    acc = evaluate(model, digits16.val)
    assert 0.0 <= acc <= 1.0
    own = {p.data_ptr() for p in model.parameters()}
    assert not own & {p.data_ptr() for p in built["teacher"].parameters()}  # a finetune cannot touch the teacher


def test_assembling_the_teacher_arch_and_recalibrating(built, space, digits16):
    model = assemble(space.reference(), built["workdir"] / "library", built["teacher"], space=space)
    before = [b.clone() for b in model.buffers()]
    recalibrate(model, digits16.train, num_batches=2, batch_size=32)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.buffers()))
    assert not model.training


def test_bad_archs_name_the_slot(built, space, tmp_path):
    arch = space.sample(0)
    bad = arch.with_blocks([arch.blocks[0], dataclasses.replace(arch.blocks[1], kernel=7)])
    with pytest.raises(ValueError, match="slot 1: kernel 7 not in"):
        assemble(bad, built["workdir"], built["teacher"], space=space)
    with pytest.raises(ValueError, match="slot 0 has no BKD weights"):
        assemble(arch, tmp_path, built["teacher"], space=space)
    with pytest.raises(ValueError, match="names no search space"):
        assemble(dataclasses.replace(arch, space=None), built["workdir"], built["teacher"])
    assert isinstance(arch.blocks[0], BlockSpec)


def test_whole_network_recalibration_changes_statistics_and_accuracy(built, space, digits16):
    """Each option's statistics were taken on teacher inputs; the assembled network's own differ."""
    from donna.assemble import assemble_recalibrated

    arch = space.sample(5)
    blocks_only = assemble_recalibrated(arch, built["workdir"], built["teacher"], digits16.train, space=space,
                                        mode="blocks")
    network = assemble_recalibrated(arch, built["workdir"], built["teacher"], digits16.train, space=space,
                                    num_batches=4, batch_size=32)
    a, b = blocks_only.state_dict(), network.state_dict()
    stats = [k for k in a if k.endswith("running_mean") and k.startswith("blocks.1")]  # after the first slot
    assert stats and any(not torch.allclose(a[k], b[k]) for k in stats)
    weights = [k for k in a if k.endswith("weight")]
    assert all(torch.equal(a[k], b[k]) for k in weights)  # only statistics change
    assert evaluate(blocks_only, digits16.val) != evaluate(network, digits16.val)
    with pytest.raises(ValueError, match="unknown recalibration mode"):
        assemble_recalibrated(arch, built["workdir"], built["teacher"], digits16.train, space=space, mode="x")
