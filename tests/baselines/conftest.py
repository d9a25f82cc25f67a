"""Fixtures for the baselines: a tiny block space and a small digits data set at 32x32, 3 channels."""

import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch.utils.data import TensorDataset

from blocks import SearchSpace

TINY_SPACE = {
    "input_size": 16, "in_channels": 3, "num_classes": 10,
    "stem": [{"type": "conv", "kernel": 3, "stride": 2, "out_channels": 8, "act": "relu"}],
    "head": {"channels": 0, "act": "relu", "dropout": 0.0},
    "choices": {"type": ["ir"], "kernel": [3, 5], "expansion": [2], "depth": [1, 2, 3], "se": [0.0, 0.25],
                "act": ["relu"]},
    "slots": [{"stride": 1, "out_channels": 8}, {"stride": 2, "out_channels": 16}],
}


def digits_dataset(size: int = 32, n: int | None = None) -> TensorDataset:
    """scikit-learn's digits, resized to ``size`` x ``size`` with 3 channels, scaled to [0, 1]."""
    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32)[:n, None] / 16.0
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False).repeat(1, 3, 1, 1)
    return TensorDataset(x, torch.tensor(digits.target[:n], dtype=torch.long))


@pytest.fixture(scope="session")
def tiny_space() -> SearchSpace:
    return SearchSpace.from_dict("tiny", TINY_SPACE)


@pytest.fixture(scope="session")
def digits16() -> TensorDataset:
    return digits_dataset(16, n=256)


@pytest.fixture(scope="session")
def digits32() -> TensorDataset:
    return digits_dataset(32, n=128)
