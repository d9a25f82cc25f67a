"""Fixtures for search tests: a tiny enumerable space with deterministic, conflicting objectives."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from toy import ToySpace, toy_objectives  # noqa: E402

TINY = (3, 3, 2, 1, 3, 3, 2, 3, 2)  # 1,944 genomes; gene 3 has a single choice


@pytest.fixture
def tiny_space():
    return ToySpace(TINY)


@pytest.fixture
def tiny_objectives(tiny_space):
    return toy_objectives(tiny_space)
