"""DSO-NAS's staged sparsification: rising gamma until one op per slot survives, with its path in provenance."""

import numpy as np
import torch

import baselines  # noqa: F401  (registers the searchers)
from baselines.apg import APGNAG
from baselines.sparsify import SPARSIFICATION, TIE, StagedSparsification, survivors
from search import create_searcher

QUICK = {"pretrain_epochs": 1, "search_epochs": 2, "prune_every": 1, "batch_size": 32, "max_steps_per_epoch": 2}


def test_stages_end_with_one_op_per_slot_and_record_their_path(tiny_space, digits16):
    result = create_searcher("dso-nas", data=digits16, seed=1, **QUICK).search(tiny_space, progress=False)
    prov = result.archs[0].provenance
    path = prov["sparsification"]["path"]
    assert path and prov["sparsification"]["decided_slots"] == tiny_space.num_slots
    factors = [stage["gamma_factor"] for stage in path]
    assert factors == sorted(factors) and len(set(factors)) == len(factors)  # pressure rises stage by stage
    for slot in range(tiny_space.num_slots):
        counts = [stage["survivors"][slot] for stage in path]
        assert counts == sorted(counts, reverse=True) and counts[0] >= 1
    for record in prov["slots"]:
        assert record["decided_by"] in (SPARSIFICATION, TIE)
        if record["decided_by"] == SPARSIFICATION:
            assert record["other_survivors"] == []  # the sparsification, not an argmax, chose the op
    assert [h["stage"] for h in result.history].count("sparsify") == len(path)
    tiny_space.validate(result.archs[0])


def test_without_stages_the_projection_decides(tiny_space, digits16):
    result = create_searcher("dso-nas", data=digits16, sparsify_stages=0, **QUICK).search(tiny_space, progress=False)
    prov = result.archs[0].provenance
    assert prov["sparsification"]["path"] == []
    assert all(record["decided_by"] == "projection" for record in prov["slots"])


def test_a_step_that_empties_a_first_layer_is_undone_and_backs_off():
    lam = torch.nn.Parameter(torch.tensor([[0.5, 0.4, 0.0], [0.3, 0.0, 0.0]]))
    other = torch.nn.Parameter(torch.tensor([[0.2, 0.0], [0.0, 0.0]]))
    weights = [torch.ones(2, 3), torch.ones(2, 2)]
    stages = StagedSparsification([lam, other], weights, growth=2.0)
    assert stages.decided == {1: SPARSIFICATION}  # one op left already
    opt = APGNAG([{"params": [lam], "gamma": weights[0]}, {"params": [other], "gamma": weights[1]}], lr=1.0,
                 momentum=0.0)
    stages.set_pressure(opt, 10.0)  # strong enough to zero everything in one step
    lam.grad, other.grad = torch.zeros_like(lam), torch.zeros_like(other)
    snapshot = stages.before_step(opt)
    assert other.grad is None  # decided slots are frozen
    opt.step()
    stages.after_step(opt, snapshot)
    np.testing.assert_allclose(lam.detach().numpy(), [[0.5, 0.4, 0.0], [0.3, 0.0, 0.0]])
    assert stages.backoffs == [1, 0] and stages.scale[0] == 0.5 and 0 not in stages.decided
    assert survivors(lam.detach()) == [0, 1]
