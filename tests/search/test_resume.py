"""Resumable search: a killed search continues from its last generation and ends where an unkilled one does."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from toy import ToySpace, toy_objectives

from search import GenomeSearcher, Objective, create_searcher, list_searchers
from search.checkpoint import checkpoint_path, load_checkpoint

GENOME_SEARCHERS = [n for n in list_searchers() if issubclass(type(create_searcher(n)), GenomeSearcher)]
SETTINGS = {"pop_size": 12, "generations": 8, "seed": 7}


class Killed(Exception):
    pass


def dying(objectives, after_calls):
    """Objectives whose first one raises on call number ``after_calls`` (a kill mid-generation)."""
    calls = {"n": 0}

    def fn(G, inner=objectives[0].fn):
        calls["n"] += 1
        if calls["n"] == after_calls:
            raise Killed
        return inner(G)

    first = Objective(objectives[0].name, fn, objectives[0].maximize, objectives[0].bounds)
    return [first, *objectives[1:]]


def assert_same(a, b):
    np.testing.assert_array_equal(a.genomes, b.genomes)
    np.testing.assert_array_equal(a.objectives, b.objectives)
    assert a.history == b.history and a.n_evaluations == b.n_evaluations
    assert [x.provenance for x in a.archs] == [x.provenance for x in b.archs]


@pytest.mark.parametrize("name", GENOME_SEARCHERS)
@pytest.mark.parametrize("kill_at", [2, 3, 6, 9])  # call 1 samples the hypervolume box; call g+1 is generation g
def test_killed_search_resumes_to_the_same_result(name, kill_at, tiny_space, tiny_objectives, tmp_path):
    unkilled = create_searcher(name, **SETTINGS).search(tiny_space, tiny_objectives, progress=False)
    with pytest.raises(Killed):
        create_searcher(name, **SETTINGS).search(tiny_space, dying(tiny_objectives, kill_at), tmp_path,
                                                 progress=False)
    saved = load_checkpoint(tmp_path)
    assert (saved[0]["generation"] if saved else 0) == kill_at - 2
    resumed = create_searcher(name, **SETTINGS).search(tiny_space, tiny_objectives, tmp_path, progress=False)
    assert_same(resumed, unkilled)
    assert [p.name for p in tmp_path.iterdir()] == ["search_state.npz"]  # no temporary file left behind


@pytest.mark.parametrize("name", GENOME_SEARCHERS)
def test_finished_checkpoint_returns_without_evaluating(name, tiny_space, tiny_objectives, tmp_path):
    first = create_searcher(name, **SETTINGS).search(tiny_space, tiny_objectives, tmp_path, progress=False)
    calls = []
    counting = [Objective(o.name, lambda G, f=o.fn: calls.append(len(G)) or f(G), o.maximize)
                for o in tiny_objectives]
    again = create_searcher(name, **SETTINGS).search(tiny_space, counting, tmp_path, progress=False)
    assert_same(again, first)
    assert calls == [512, 512]  # only the fixed hypervolume sample, once per objective; no generation re-run


def test_checkpoint_of_another_search_is_refused(tiny_space, tiny_objectives, tmp_path):
    create_searcher("nsga2", **SETTINGS).search(tiny_space, tiny_objectives, tmp_path, progress=False)
    with pytest.raises(ValueError, match="settings"):
        create_searcher("nsga2", **{**SETTINGS, "seed": 8}).search(tiny_space, tiny_objectives, tmp_path,
                                                                   progress=False)
    with pytest.raises(ValueError, match="searcher"):
        create_searcher("random", **SETTINGS).search(tiny_space, tiny_objectives, tmp_path, progress=False)


def test_checkpoint_holds_no_pickle(tiny_space, tiny_objectives, tmp_path):
    create_searcher("nsga2", **SETTINGS).search(tiny_space, tiny_objectives, tmp_path, progress=False)
    with np.load(checkpoint_path(tmp_path), allow_pickle=False) as data:
        meta = json.loads(str(data["_meta"]))
        assert all(data[name].dtype != object for name in data.files)
    assert meta["generation"] == SETTINGS["generations"] and meta["settings"]["seed"] == 7


CHILD = """
import sys, time
sys.path.insert(0, {tests!r})
from toy import ToySpace, toy_objectives
from search import Objective, create_searcher
space = ToySpace({sizes!r})
acc, lat = toy_objectives(space)
slow = Objective(lat.name, lambda G: time.sleep(0.15) or lat.fn(G), lat.maximize)
create_searcher("nsga2", **{settings!r}).search(space, [acc, slow], {ckpt!r}, progress=False)
"""


def test_search_killed_with_sigkill_resumes_to_the_same_result(tiny_space, tiny_objectives, tmp_path):
    settings = {**SETTINGS, "generations": 12}
    code = CHILD.format(tests=str(Path(__file__).parent), sizes=tiny_space.sizes, settings=settings,
                        ckpt=str(tmp_path))
    child = subprocess.Popen([sys.executable, "-c", code])
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline and child.poll() is None:
            saved = load_checkpoint(tmp_path) if checkpoint_path(tmp_path).exists() else None
            if saved and saved[0]["generation"] >= 3:
                break
            time.sleep(0.05)
        assert child.poll() is None, "the child finished or died before it could be killed"
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    killed_at = load_checkpoint(tmp_path)[0]["generation"]
    assert 3 <= killed_at < 12
    resumed = create_searcher("nsga2", **settings).search(tiny_space, tiny_objectives, tmp_path, progress=False)
    unkilled = create_searcher("nsga2", **settings).search(ToySpace(tiny_space.sizes),
                                                           toy_objectives(tiny_space), progress=False)
    assert_same(resumed, unkilled)
