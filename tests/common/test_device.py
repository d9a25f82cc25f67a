"""make_optimizer: the fused step where torch has one, the same update as the per-tensor loop."""

import torch

from common.device import make_optimizer


def _params(seed: int) -> list[torch.nn.Parameter]:
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(s, generator=g)) for s in ((8, 3, 3, 3), (8,), (5, 8))]


def _run(opt_of, steps: int = 5) -> list[torch.Tensor]:
    params = _params(0)
    opt = opt_of(params)
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        for p in params:
            p.grad = torch.randn(p.shape, generator=g)
        opt.step()
    return [p.detach().clone() for p in params]


def test_fused_adamw_and_sgd_match_the_loop():
    for cls, kw in ((torch.optim.AdamW, {"lr": 1e-2, "weight_decay": 0.1}),
                    (torch.optim.SGD, {"lr": 0.1, "momentum": 0.9, "nesterov": True})):
        fused = make_optimizer(cls, _params(0), **kw)
        assert fused.defaults.get("fused") is True, f"{cls.__name__} was not fused on the CPU"
        a = _run(lambda ps, cls=cls, kw=kw: make_optimizer(cls, ps, **kw))
        b = _run(lambda ps, cls=cls, kw=kw: cls(ps, **kw))
        assert not torch.equal(a[0], _params(0)[0]), "the optimiser did not move the weights"
        for x, y in zip(a, b):
            torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6)


def test_an_optimiser_without_a_fused_version_is_built_plainly():
    opt = make_optimizer(torch.optim.Rprop, _params(0), lr=0.01)
    assert isinstance(opt, torch.optim.Rprop) and not opt.defaults.get("fused")
