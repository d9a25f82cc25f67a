"""Shared fixtures of the DONNA tests: a tiny space on 16x16 digits, a tiny teacher and block library."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from blocks import SearchSpace
from donna.bkd import run_bkd
from donna.config import BKDConfig, ScoreConfig, TeacherConfig
from donna.data import get_dataset
from donna.nsr import score_library
from donna.teacher import get_teacher

TINY = {
    "description": "two small slots at 16x16 for tests",
    "input_size": 16, "in_channels": 3, "num_classes": 10,
    "stem": [{"type": "conv", "kernel": 3, "stride": 2, "out_channels": 8, "act": "swish"}],
    "head": {"channels": 32, "act": "swish", "dropout": 0.0},
    "choices": {"type": ["ir"], "kernel": [3, 5], "expansion": [2, 3], "depth": [1, 2], "se": [0.0, 0.25],
                "act": ["relu", "swish"]},
    "slots": [{"stride": 1, "out_channels": 8}, {"stride": 2, "out_channels": 16}],
}
TEACHER = TeacherConfig(epochs=4, lr=5e-3, batch_size=32)
BKD = BKDConfig(epochs=3, batch_size=32, lr=3e-3, lr_schedule="epoch")  # the tiny tests train from scratch too:
# the lr of that regime, and DNA's per-epoch decay (test_bkd compares the cosine default with it)
SCORE = ScoreConfig(recal_batches=2, batch_size=64)


def tiny_space(**overrides) -> SearchSpace:
    """The tiny test space; ``overrides`` replace top-level keys (e.g. ``choices``)."""
    return SearchSpace.from_dict("tiny", {**TINY, **overrides})


@pytest.fixture(scope="session")
def space() -> SearchSpace:
    return tiny_space()


@pytest.fixture(scope="session")
def digits16():
    return get_dataset("digits", input_size=16, seed=0)


@pytest.fixture(scope="session")
def built(tmp_path_factory, space, digits16):
    """A run folder with a trained tiny teacher, a 2-epoch block library and its NSR table."""
    torch.manual_seed(0)
    workdir = tmp_path_factory.mktemp("run")
    teacher = get_teacher(TEACHER, space, digits16, workdir, progress=False)
    run_bkd(BKD, space, teacher, digits16, workdir, progress=False)
    table = score_library(SCORE, space, teacher, digits16, workdir, progress=False)
    return {"workdir": Path(workdir), "teacher": teacher, "table": table}
