"""Every registered searcher through ``donna search`` on a tiny run folder, and PC-DARTS and DSO-NAS killed
after an epoch and resumed with the same result as an uninterrupted run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from tiny_space import QUICK_PROTOCOL, TINY  # noqa: E402  (tests/ is on sys.path: tests/conftest.py)

from baselines.common import SupernetSearcher
from donna.cli import main
from search import list_searchers, searcher_spec

BUILD = ["--data", "digits", "--teacher-epochs", "1", "--bkd-epochs", "1", "--labels", "4", "--label-epochs", "1",
         "--quiet"]
SEARCH = ["--target-ms", "100", "--no-measure", "--quiet"]
# tiny settings per searcher (a new searcher adds its own; test_every_searcher_has_tiny_settings says so)
TINY_RUN = {
    "nsga2": ["--pop-size", "6", "--generations", "2"],
    "random": ["--pop-size", "6", "--generations", "2"],
    "exact": [],
    "pc-darts": ["--schedule", "quick", "--set", "epochs=2", "--set", "warmup_epochs=1", "--set", "batch_size=8",
                 "--set", "max_steps_per_epoch=1"],
    "dso-nas": ["--schedule", "quick", "--set", "pretrain_epochs=1", "--set", "search_epochs=1", "--set",
                "batch_size=8", "--set", "max_steps_per_epoch=1", "--set", "sparsify_stages=1"],
}
RESUME = {  # a few epochs each
    "pc-darts": {"epochs": 3, "warmup_epochs": 1, "batch_size": 8, "max_steps_per_epoch": 2},
    "dso-nas": {"pretrain_epochs": 1, "search_epochs": 2, "prune_every": 1, "batch_size": 8,
                "max_steps_per_epoch": 2, "sparsify_stages": 2},
}


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory) -> Path:
    """A tiny run folder with a predictor and a quick cpu latency table (about 15 s)."""
    from donna.search_stage import run_space
    from latency import build_latency_table

    root = tmp_path_factory.mktemp("contract")
    (root / "tiny.json").write_text(json.dumps({"tiny-contract": TINY}))
    work = root / "work"
    assert main(["build-predictor", "--workdir", str(work), "--space", str(root / "tiny.json"), *BUILD]) == 0
    build_latency_table(run_space(work), "cpu", work / "latency" / "cpu", n_calibration=4, n_validation=4,
                        n_repeat=1, protocol=QUICK_PROTOCOL, progress=False, cache_dir=work / "latency" / "exports")
    return work


def search(work: Path, name: str, *extra: str, out: str | None = None) -> int:
    return main(["search", "--workdir", str(work), "--searcher", name, "--name", out or name, *SEARCH, *extra])


def test_registry_is_complete_without_importing_plug_ins():
    code = ("import sys, donna.cli, donna.search_stage, search; names = search.list_searchers(); "
            "print(','.join(names), 'baselines' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    names, imported = proc.stdout.split()
    assert {"nsga2", "random", "exact", "pc-darts", "dso-nas"} <= set(names.split(",")), (
        "pc-darts/dso-nas missing: reinstall (pip install -e .) so the entry points in pyproject.toml are read")
    assert imported == "False"  # donna never imports baselines; the registry imports a plug-in on first use


def test_every_searcher_has_tiny_settings():
    assert set(list_searchers()) <= set(TINY_RUN), "add tiny settings for the new searcher to TINY_RUN"


@pytest.mark.parametrize("name", list_searchers())
def test_every_searcher_runs_through_donna_search(run_folder, name, capsys):
    assert search(run_folder, name, *TINY_RUN[name]) == 0
    out = capsys.readouterr().out
    assert f"search: {name}, schedule " in out and "about " in out  # the schedule and its cost, printed first
    assert out.index("search: ") < out.index("front of")
    folder = run_folder / "search" / name
    front = pd.read_csv(folder / "pareto.csv")
    spec = searcher_spec(name)
    assert len(front) >= 1 and (len(front) == 1 if spec.emits == "single" else True)
    selected = json.loads((folder / "selected.json").read_text())
    assert selected["key"] in set(front["key"])
    state = list((folder / "state").glob("*/*")) if (folder / "state").is_dir() else []
    assert bool(state) == spec.resumable  # a resumable searcher leaves its checkpoint, the others none


def test_unknown_searcher_is_refused_before_any_work(tmp_path, capsys):
    assert main(["search", "--workdir", str(tmp_path), "--target-ms", "1", "--searcher", "annealing"]) == 2
    err = capsys.readouterr().err.strip()
    assert "unknown searcher 'annealing'; known searchers: " in err and "pc-darts" in err and "\n" not in err

    from donna.search_stage import SearchConfig, run_search

    with pytest.raises(ValueError, match="unknown searcher 'annealing'"):  # not "no predictor yet"
        run_search(tmp_path, SearchConfig(searcher="annealing"), progress=False)
    assert not (tmp_path / "latency").exists()


def test_unknown_schedule_lists_the_searchers_schedules(run_folder, capsys):
    assert search(run_folder, "pc-darts", "--schedule", "slow") != 0
    err = capsys.readouterr().err.strip()
    assert "unknown schedule 'slow' for searcher 'pc-darts'; its schedules: paper, quick" in err


class Killed(BaseException):
    """Stands for a kill: raised after an epoch's state is saved, caught by nothing in between."""


@pytest.mark.parametrize(("name", "kill_after"), [("pc-darts", 2), ("dso-nas", 2), ("dso-nas", 4)],
                         ids=["pc-darts", "dso-nas-search", "dso-nas-sparsify"])
def test_killed_gradient_search_resumes_to_the_same_result(run_folder, name, kill_after, monkeypatch):
    """Killed after epoch ``kill_after`` (DSO-NAS: 2 is in the search stage, 4 in the sparsification)."""
    settings = [arg for key, value in RESUME[name].items() for arg in ("--set", f"{key}={value}")]
    if not (run_folder / "search" / f"{name}-whole" / "pareto.csv").exists():
        assert search(run_folder, name, *settings, out=f"{name}-whole") == 0

    real_save, saves = SupernetSearcher._save_state, []

    def save_then_die(self, *args, **kwargs):
        real_save(self, *args, **kwargs)
        saves.append(1)
        if len(saves) == kill_after:
            raise Killed

    monkeypatch.setattr(SupernetSearcher, "_save_state", save_then_die)
    with pytest.raises(Killed):
        search(run_folder, name, *settings, out=f"{name}-killed{kill_after}")
    assert not (run_folder / "search" / f"{name}-killed{kill_after}" / "pareto.csv").exists()
    resumed_saves = []

    def count(self, *args, **kwargs):
        real_save(self, *args, **kwargs)
        resumed_saves.append(1)

    monkeypatch.setattr(SupernetSearcher, "_save_state", count)
    assert search(run_folder, name, *settings, out=f"{name}-killed{kill_after}") == 0
    history = pd.read_csv(run_folder / "search" / f"{name}-whole" / "history.csv")
    assert len(history) > kill_after
    assert len(resumed_saves) == len(history) - kill_after  # it went on after the kill, not from the start

    whole, resumed = run_folder / "search" / f"{name}-whole", run_folder / "search" / f"{name}-killed{kill_after}"
    for file in ("pareto.csv", "history.csv"):
        assert (whole / file).read_text() == (resumed / file).read_text(), file
    arch = json.loads((whole / "selected.json").read_text())["arch"]
    assert json.loads((resumed / "selected.json").read_text())["arch"] == arch
