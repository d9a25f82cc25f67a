"""PC-DARTS and DSO-NAS as registered searchers: determinism, settings, penalties, provenance, sparsity."""

import json

import numpy as np
import pytest

import baselines  # noqa: F401  (registers the searchers)
from baselines.costs import macs_op_cost
from search import Objective, create_searcher, list_searchers

QUICK = {
    "pc-darts": {"epochs": 2, "warmup_epochs": 1, "batch_size": 32, "max_steps_per_epoch": 2},
    "dso-nas": {"pretrain_epochs": 1, "search_epochs": 2, "prune_every": 1, "batch_size": 32,
                "max_steps_per_epoch": 2},
}


@pytest.mark.parametrize("name", sorted(QUICK))
def test_registered_and_deterministic(name, tiny_space, digits16):
    assert name in list_searchers()
    runs = [create_searcher(name, data=digits16, seed=3, **QUICK[name]).search(tiny_space, progress=False)
            for _ in range(2)]
    assert runs[0].archs[0] == runs[1].archs[0]
    assert json.dumps(runs[0].archs[0].provenance) == json.dumps(runs[1].archs[0].provenance)
    assert [h["loss"] for h in runs[0].history] == [h["loss"] for h in runs[1].history]
    arch = runs[0].archs[0]
    tiny_space.validate(arch)
    assert arch.provenance["searcher"] == name and arch.provenance["settings"]["seed"] == 3
    assert len(runs[0].history_frame()) == len(runs[0].history)


@pytest.mark.parametrize("name", sorted(QUICK))
def test_objectives_are_evaluated_on_the_result(name, tiny_space, digits16):
    objective = Objective("genes", lambda g: g.sum(axis=1).astype(float))
    result = create_searcher(name, data=digits16, **QUICK[name]).search(tiny_space, [objective], progress=False)
    assert result.objectives.shape == (1, 1) and result.n_evaluations == 1
    assert result.objectives[0, 0] == tiny_space.encode(result.archs[0]).sum()
    assert list(result.to_frame().columns[:3]) == ["arch", "key", "genes"]


def test_bad_inputs_raise(tiny_space):
    with pytest.raises(ValueError, match="training data"):
        create_searcher("pc-darts").search(tiny_space, progress=False)
    with pytest.raises(ValueError, match="unknown setting"):
        create_searcher("dso-nas", lr=1.0)
    with pytest.raises(ValueError, match="partial_k"):
        create_searcher("pc-darts", partial_k=0)


def test_pcdarts_faithful_mode_has_no_latency_term(tiny_space, digits16):
    arch = create_searcher("pc-darts", data=digits16, **QUICK["pc-darts"]).search(tiny_space, progress=False).archs[0]
    assert arch.provenance["mode"] == "faithful" and arch.provenance["latency_penalty"] is None
    with pytest.raises(ValueError, match="needs costs in ms"):
        create_searcher("pc-darts", data=digits16, latency_weight=1.0, target_ms=1.0,
                        **QUICK["pc-darts"]).search(tiny_space, progress=False)


def test_pcdarts_opt_in_latency_penalty_pulls_to_cheap_ops_and_is_recorded(tiny_space, digits16):
    macs = macs_op_cost(tiny_space)
    searcher = create_searcher("pc-darts", data=digits16, op_cost=lambda i, s: macs(i, s) / 1e5,
                               arch_cost=lambda a: 1.0 + sum(macs(i, s) / 1e5 for i, s in enumerate(a.blocks)),
                               latency_weight=50.0, target_ms=0.5, arch_lr=0.05, epochs=2, warmup_epochs=0,
                               batch_size=32, max_steps_per_epoch=3)
    arch = searcher.search(tiny_space, progress=False).archs[0]
    penalty = arch.provenance["latency_penalty"]
    assert arch.provenance["mode"] == "latency-penalty"
    assert penalty["target_ms"] == 0.5 and penalty["unit"] == "ms" and np.isclose(penalty["fixed_cost"], 1.0)
    assert all(b.depth == 1 and b.kernel == 3 for b in arch.blocks)  # the cheap choices (SE costs ~nothing here)


def test_dsonas_reaches_exact_zeros_removes_paths_and_projects(tiny_space, digits16):
    searcher = create_searcher("dso-nas", data=digits16, gamma=1.0, pretrain_epochs=0, search_epochs=2,
                               prune_every=1, batch_size=32, max_steps_per_epoch=4)
    result = searcher.search(tiny_space, progress=False)
    last = result.history[-1]
    assert last["zero_lambdas"] > 0 and last["removed_ops"] > 0
    arch = result.archs[0]
    tiny_space.validate(arch)
    prov = arch.provenance
    assert prov["penalty"]["budget_aware"] and np.isclose(prov["penalty"]["max_weight"], 1.0)
    assert {"op", "depth", "other_survivors", "surviving_layers"} <= set(prov["slots"][0])


def test_data_may_be_a_dataset_a_loader_or_splits(digits16):
    from types import SimpleNamespace

    from torch.utils.data import DataLoader

    from baselines.common import resolve_dataset

    assert resolve_dataset(digits16) is digits16
    assert resolve_dataset(DataLoader(digits16, batch_size=4)) is digits16
    assert resolve_dataset(SimpleNamespace(train=digits16, val=None)) is digits16
