"""On digits and mbconv-tiny (the fast smoke data set): lower NSR means higher accuracy before finetuning.

Slow (the whole teacher -> BKD -> scoring pipeline with default settings, minutes on 2 CPU cores): run with
``pytest -m slow tests/donna/test_embedded.py``. Set ``DONNA_EMBEDDED_RUN=DIR`` to keep (and reuse) the run
folder.
"""

from __future__ import annotations

import itertools
import os

import pytest

from blocks import get_space
from donna.assemble import assemble_recalibrated, evaluate
from donna.bkd import run_bkd
from donna.config import BKDConfig, ScoreConfig, TeacherConfig
from donna.data import get_dataset
from donna.nsr import arch_nsr, score_library
from donna.teacher import get_teacher

ARCH_SEEDS = range(10)  # the first ten seeded samples of the space, not picked
THRESHOLD = 0.5  # "more often than not": share of concordant pairs must exceed one half


def concordant_share(nsr: list[float], acc: list[float]) -> float:
    """Share of pairs (with different accuracy) where the lower-NSR architecture is the more accurate one."""
    pairs = [(i, j) for i, j in itertools.combinations(range(len(acc)), 2) if acc[i] != acc[j]]
    good = sum((nsr[i] < nsr[j]) == (acc[i] > acc[j]) for i, j in pairs)
    return good / len(pairs)


def test_concordant_share_counts_pairs():
    assert concordant_share([0.1, 0.2, 0.3], [0.9, 0.8, 0.7]) == 1.0
    assert concordant_share([0.1, 0.2, 0.3], [0.7, 0.8, 0.9]) == 0.0


@pytest.mark.slow
def test_lower_nsr_means_higher_accuracy_more_often_than_not(tmp_path, request):
    if "slow" not in (request.config.getoption("markexpr") or "") and os.environ.get("DONNA_SLOW") != "1":
        pytest.skip("slow: run with -m slow or DONNA_SLOW=1")
    workdir = os.environ.get("DONNA_EMBEDDED_RUN") or tmp_path
    data = get_dataset("digits", input_size=32, seed=0)
    space = get_space("mbconv-tiny").with_classes(data.num_classes)
    teacher = get_teacher(TeacherConfig(epochs=6), space, data, workdir, progress=False)  # digits: 6 suffice
    run_bkd(BKDConfig(), space, teacher, data, workdir, progress=False)
    table = score_library(ScoreConfig(), space, teacher, data, workdir, progress=False)
    archs = [space.sample(seed) for seed in ARCH_SEEDS]
    nsr = [sum(arch_nsr(table, arch)) for arch in archs]
    acc = [evaluate(assemble_recalibrated(arch, workdir, teacher, data.train), data.val) for arch in archs]
    share = concordant_share(nsr, acc)
    print(f"NSR sums {[round(v, 3) for v in nsr]}\naccuracies {[round(a, 3) for a in acc]}\nshare {share:.3f}")
    assert share > THRESHOLD
