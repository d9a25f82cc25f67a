"""Memory of the gradient searchers: checkpointing is exact, the budget picks the batch, a hopeless one is refused."""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import baselines  # noqa: F401  (registers the searchers)
from baselines.budget import GIB, MARGIN, SLACK, StepMemory, fit_step_memory, largest_batch
from baselines.common import frozen
from baselines.dsonas import DSONASNet
from baselines.pcdarts import PCDartsNet
from blocks import SearchSpace
from search import create_searcher

from .conftest import TINY_SPACE

# The tiny space at 32x32 without the stem's stride: activations large enough to measure as resident memory.
WIDE = {**TINY_SPACE, "input_size": 32,
        "stem": [{"type": "conv", "kernel": 3, "stride": 1, "out_channels": 8, "act": "relu"}]}


def _step(model, x, y, params):
    torch.manual_seed(1)  # the same dropout masks in both runs
    loss = F.cross_entropy(model(x), y)
    loss.backward(inputs=params)
    return loss.item(), [p.grad.clone() for p in params]


@pytest.mark.parametrize("kind", ["dso-nas", "pc-darts"])
def test_checkpointing_keeps_outputs_gradients_and_running_stats(kind, tiny_space):
    torch.manual_seed(0)
    plain = DSONASNet(tiny_space) if kind == "dso-nas" else PCDartsNet(tiny_space, 2, 1e-3)
    with torch.no_grad():  # lambdas away from 1 and one op switched off, so the weights matter
        for p in (plain.lambdas if kind == "dso-nas" else plain.alphas):
            p.uniform_(0.0, 2.0)
    recomputed = copy.deepcopy(plain)
    recomputed.net.set_memory_options(checkpointing=True)
    x, y = torch.randn(6, 3, 16, 16), torch.randint(0, 10, (6,))
    params = list(plain.parameters())
    loss_a, grads_a = _step(plain, x, y, [p for p in params if p.requires_grad])
    loss_b, grads_b = _step(recomputed, x, y, [p for p in recomputed.parameters() if p.requires_grad])
    assert loss_a == pytest.approx(loss_b, abs=1e-6)
    for a, b in zip(grads_a, grads_b):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    for a, b in zip(plain.buffers(), recomputed.buffers()):  # running statistics updated once, not twice
        torch.testing.assert_close(a, b)


def test_skipping_zero_weight_ops_keeps_the_output(tiny_space):
    torch.manual_seed(0)
    model = DSONASNet(tiny_space)
    with torch.no_grad():
        for lam in model.lambdas:
            lam[:, ::2] = 0.0
    x = torch.randn(4, 3, 16, 16)
    torch.manual_seed(1)
    full = model(x)
    model.net.set_memory_options(skip_zero=True)
    torch.manual_seed(1)
    skipped = model(x)
    torch.testing.assert_close(full, skipped, rtol=1e-5, atol=1e-6)
    first = model.net.slots[0].layers[0].ops[0]  # lambda 0: skipped, so its weights get no gradient
    F.cross_entropy(model(x), torch.zeros(4, dtype=torch.long)).backward()
    assert all(p.grad is None for p in first.parameters())


def test_frozen_restores_only_what_required_grad():
    a, b = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(2), requires_grad=False)
    with frozen([a, b]):
        assert not a.requires_grad and not b.requires_grad
    assert a.requires_grad and not b.requires_grad


def test_largest_batch_follows_the_budget():
    step = StepMemory("cpu", base=GIB, extra=0, fixed=0, per_sample=GIB / 100)
    assert largest_batch(step, 10 * GIB, 128, "x") == 128
    small = largest_batch(step, int(1.2 * GIB), 128, "x")
    assert 1 <= small < 128 and step.predict(small) <= 1.2 * GIB < step.predict(small + 1)
    with pytest.raises(ValueError, match=r"even batch 1 needs about .* set memory_gb>="):
        largest_batch(step, GIB, 128, "x")


def test_measured_step_memory_grows_with_the_batch():
    space = SearchSpace.from_dict("wide", WIDE)
    model = DSONASNet(space)
    params = model.weight_parameters()

    def step_at(batch):
        x = torch.randn(batch, 3, 32, 32)
        F.cross_entropy(model(x), torch.zeros(batch, dtype=torch.long)).backward(inputs=params)
        for p in params:
            p.grad = None

    fit = fit_step_memory(step_at, torch.device("cpu"), batches=(8, 64))
    assert fit.per_sample > 0 and fit.probes[64] > fit.probes[8]
    assert fit.predict(128) > fit.predict(64) > fit.base


@pytest.mark.parametrize("name", ["dso-nas", "pc-darts"])
def test_a_small_budget_picks_a_smaller_batch_and_an_impossible_one_gets_one_line(name, digits32):
    space = SearchSpace.from_dict("wide", WIDE)
    quick = ({"pretrain_epochs": 0, "search_epochs": 1, "sparsify_stages": 0} if name == "dso-nas"
             else {"epochs": 1, "warmup_epochs": 0})
    settings = {**quick, "batch_size": 64, "max_steps_per_epoch": 1, "checkpointing": False}
    roomy = create_searcher(name, data=digits32, memory_gb=1000.0, **settings)
    result = roomy.search(space, progress=False)
    memory = result.settings["memory"]
    assert memory["batch_size"] == 64 and memory["budget_from"] == "memory_gb" and memory["peak_gb"] > 0
    fit = memory["step_fit"]
    budget = fit["base_gb"] + fit["extra_gb"] + SLACK / GIB + MARGIN * (fit["fixed_gb"] + 16 * fit["per_sample_gb"])
    tight = create_searcher(name, data=digits32, memory_gb=budget, **settings)
    with pytest.warns(UserWarning, match="does not fit"):
        chosen = tight.search(space, progress=False).settings["memory"]["batch_size"]
    assert 1 <= chosen < 64
    with pytest.raises(ValueError) as err:
        create_searcher(name, data=digits32, memory_gb=0.01, **settings).search(space, progress=False)
    message = str(err.value)
    assert "\n" not in message and "even batch 1" in message and "memory_gb>=" in message
    assert "checkpointing=True" in message  # the setting that would lower the step's memory


@pytest.mark.parametrize("name", ["dso-nas", "pc-darts"])
def test_a_search_with_checkpointing_chooses_as_one_without(name, tiny_space, digits16):
    quick = ({"pretrain_epochs": 1, "search_epochs": 2, "sparsify_stages": 0} if name == "dso-nas"
             else {"epochs": 2, "warmup_epochs": 0})
    runs = [create_searcher(name, data=digits16, batch_size=32, max_steps_per_epoch=3, checkpointing=flag,
                            **quick).search(tiny_space, progress=False) for flag in (False, True)]
    assert runs[0].archs[0] == runs[1].archs[0]
    for a, b in zip(runs[0].history, runs[1].history):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4)
    if name == "dso-nas":
        sums = [[s["op_lambda_sum"] for s in run.archs[0].provenance["slots"]] for run in runs]
    else:
        sums = [[s["softmax_alpha"] for s in run.archs[0].provenance["slots"]] for run in runs]
    np.testing.assert_allclose(np.array(sums[0], dtype=float), np.array(sums[1], dtype=float), rtol=1e-4, atol=1e-6)
