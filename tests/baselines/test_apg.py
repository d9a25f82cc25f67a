"""APG-NAG: exact zeros and scikit-learn's Lasso solution on a small lasso problem."""

import numpy as np
import pytest
import torch
from sklearn.linear_model import Lasso

from baselines.apg import APGNAG, soft_threshold


def _lasso_problem(seed: int = 0, n: int = 100, p: int = 20):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, p))
    w = np.zeros(p)
    w[:5] = [3.0, 1.5, 2.0, 0.5, 1.0]
    return X, X @ w + 0.5 * rng.normal(size=n)


def _apg_solve(X, y, alpha, steps=2000, nonnegative=True):
    n = len(y)
    Xt, yt = torch.tensor(X), torch.tensor(y)
    lipschitz = float(np.linalg.eigvalsh(X.T @ X / n).max())
    w = torch.ones(X.shape[1], dtype=torch.float64, requires_grad=True)
    opt = APGNAG([w], lr=1.0 / lipschitz, gamma=alpha, momentum=0.9, nonnegative=nonnegative)
    for _ in range(steps):
        opt.zero_grad()
        (((yt - Xt @ w) ** 2).sum() / (2 * n)).backward()
        opt.step()
    return w.detach().numpy()


@pytest.mark.parametrize("alpha", [0.05, 0.1, 0.5])
def test_apg_nag_matches_sklearn_nonnegative_lasso_with_exact_zeros(alpha):
    X, y = _lasso_problem()
    ours = _apg_solve(X, y, alpha)
    reference = Lasso(alpha=alpha, fit_intercept=False, positive=True, tol=1e-12, max_iter=100_000).fit(X, y).coef_
    np.testing.assert_allclose(ours, reference, atol=1e-6)
    assert np.count_nonzero(ours == 0.0) == np.count_nonzero(reference == 0.0) > 0  # exact zeros, same support


def test_apg_nag_without_nonnegativity_matches_plain_lasso():
    X, y = _lasso_problem(seed=1)
    y = y - 2.0 * X[:, 7]  # a negative coefficient
    ours = _apg_solve(X, y, 0.1, nonnegative=False)
    reference = Lasso(alpha=0.1, fit_intercept=False, tol=1e-12, max_iter=100_000).fit(X, y).coef_
    np.testing.assert_allclose(ours, reference, atol=1e-6)
    assert ours[7] < 0 and np.any(ours == 0.0)


def test_per_element_gamma_and_soft_threshold():
    assert soft_threshold(torch.tensor([-2.0, -0.5, 0.5, 2.0]), 1.0).tolist() == [-1.0, 0.0, 0.0, 1.0]
    w = torch.nn.Parameter(torch.ones(2))
    opt = APGNAG([{"params": [w], "gamma": torch.tensor([0.0, 100.0])}], lr=0.1, momentum=0.0)
    w.grad = torch.zeros(2)
    opt.step()
    assert w.tolist() == [1.0, 0.0]


@pytest.mark.parametrize("kwargs", [{"lr": -1.0}, {"lr": 0.1, "gamma": -1.0}, {"lr": 0.1, "momentum": 1.0}])
def test_bad_settings_raise(kwargs):
    with pytest.raises(ValueError):
        APGNAG([torch.nn.Parameter(torch.ones(1))], **kwargs)
