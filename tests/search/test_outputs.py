"""Search outputs: front table, IRs, plot, selected.json, history; the clear failure under an unreachable target."""

import json

import numpy as np
import pandas as pd
import pytest

from search import NoArchMeetsTarget, create_searcher, finalize_search, front_rows

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def result(tiny_space, tiny_objectives):
    return create_searcher("nsga2", pop_size=16, generations=5, seed=0).search(
        tiny_space, tiny_objectives, progress=False)


def fake_device(arch):
    """A 'measurement': the genome's latency plus 10%, with a CI and params."""
    ms = 1.1 * (1.0 + sum(arch.genes))
    return {"measured_ms": ms, "measured_ms_ci_low": ms - 0.1, "measured_ms_ci_high": ms + 0.1,
            "params": 1000 * (1 + sum(arch.genes))}


def test_front_rows_have_the_standard_columns(result):
    rows = front_rows(result, measure=fake_device)
    assert list(rows.columns[:8]) == ["arch", "key", "predicted_accuracy", "predicted_ms", "measured_ms",
                                      "measured_ms_ci_low", "measured_ms_ci_high", "params"]
    assert rows["key"].tolist() == [a.key for a in result.archs]
    np.testing.assert_allclose(rows["predicted_accuracy"], result.objectives[:, 0])
    assert front_rows(result)["measured_ms"].isna().all()


def test_finalize_writes_every_output(result, tmp_path):
    rows = front_rows(result, measure=fake_device)
    target = float(rows["measured_ms"].median())
    out = finalize_search(tmp_path / "run", result, target, measure=fake_device, progress=False)
    folder = tmp_path / "run"
    assert sorted(p.name for p in folder.iterdir()) == ["history.csv", "pareto", "pareto.csv", "pareto.png",
                                                         "search.json", "selected.json"]
    table = pd.read_csv(folder / "pareto.csv")
    assert table["key"].tolist() == rows["key"].tolist() and len(table) == len(result.archs)
    assert sorted(p.stem for p in (folder / "pareto").glob("*.json")) == sorted(table["key"])
    assert (folder / "pareto.png").read_bytes()[:8] == PNG_MAGIC
    selected = json.loads((folder / "selected.json").read_text())
    meets = rows[rows["measured_ms"] <= target]
    assert selected["key"] == meets.loc[meets["predicted_accuracy"].idxmax(), "key"] == out.selected["key"]
    assert selected["measured_ms"] <= target and selected["target_ms"] == target
    assert selected["ir"]["genes"] == list(next(a for a in result.archs if a.key == selected["key"]).genes)
    assert len(pd.read_csv(folder / "history.csv")) == 5
    info = json.loads((folder / "search.json").read_text())
    assert info["searcher"] == "nsga2" and info["n_evaluations"] == 80 and info["hypervolume"] > 0
    assert not list(folder.rglob("*.tmp"))


def test_unreachable_target_fails_clearly_and_selects_nothing(result, tmp_path):
    rows = front_rows(result, measure=fake_device)
    finalize_search(tmp_path, result, float(rows["measured_ms"].max()), measure=fake_device, progress=False)
    assert (tmp_path / "selected.json").exists()
    with pytest.raises(NoArchMeetsTarget) as info:
        finalize_search(tmp_path, result, 0.01, measure=fake_device, progress=False)
    fastest = rows.loc[rows["measured_ms"].idxmin()]
    assert fastest["key"] in str(info.value) and f"{fastest['measured_ms']:.4g} ms" in str(info.value)
    assert not (tmp_path / "selected.json").exists()  # the earlier choice does not survive silently
    assert (tmp_path / "pareto.csv").exists() and (tmp_path / "pareto.png").exists()


def test_without_a_device_the_choice_uses_predicted_latency(result, tmp_path):
    target = float(np.median(result.objectives[:, 1]))
    out = finalize_search(tmp_path, result, target, progress=False)
    assert out.selected["predicted_ms"] <= target
    assert json.loads((tmp_path / "selected.json").read_text())["latency_column"] == "predicted_ms"


def test_irs_of_an_older_front_are_removed(result, tiny_space, tiny_objectives, tmp_path):
    stale = tmp_path / "pareto" / "0000000000000000.json"
    stale.parent.mkdir(parents=True)
    stale.write_text("{}")
    finalize_search(tmp_path, result, 1e9, progress=False)
    assert not stale.exists()


def test_measure_must_return_measured_ms(result, tmp_path):
    with pytest.raises(ValueError, match="measured_ms"):
        finalize_search(tmp_path, result, 5.0, measure=lambda arch: {"median": 1.0}, progress=False)


def test_a_searcher_without_genomes_fits_the_same_interface(tiny_space, tmp_path):
    """PC-DARTS / DSO-NAS style: one architecture out, no objectives; provenance and outputs still work."""
    from search import Searcher, SearchResult

    class OneShot(Searcher):
        name = "one-shot"

        def settings(self):
            return {"epochs": 1, "seed": 2}

        def _search(self, space, objectives, checkpoint_dir, progress, hv_reference):
            arch = space.decode([2, 1, 0, 0, 1, 1, 0, 2, 1]).with_provenance({"projection": "argmax"})
            return SearchResult.from_archs([arch], self.name, self.settings())

    result = OneShot().search(tiny_space)
    assert len(result.archs) == 1 and result.objectives.shape == (1, 0)
    assert result.archs[0].provenance == {"projection": "argmax", "searcher": "one-shot",
                                          "settings": {"epochs": 1, "seed": 2}, "seed": 2}
    out = finalize_search(tmp_path, result, 100.0, measure=fake_device, progress=False)
    assert out.selected["key"] == result.archs[0].key
    assert (tmp_path / "pareto.png").exists() and (tmp_path / "selected.json").exists()


def _files(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_crash_while_writing_leaves_the_old_outputs_whole(result, tmp_path, monkeypatch):
    import search.outputs

    out = tmp_path / "search" / "nsga2"
    rows = front_rows(result, measure=fake_device)
    finalize_search(out, result, float(rows["measured_ms"].max()), measure=fake_device, progress=False)
    (out / "state").mkdir()
    (out / "state" / "checkpoint.json").write_text("{}")  # the resume checkpoint is not an output: it stays
    before = _files(out)

    def crash(*args, **kwargs):
        raise RuntimeError("killed while plotting")  # after pareto.csv and pareto/*.json of the new set

    monkeypatch.setattr(search.outputs, "plot_pareto", crash)
    with pytest.raises(RuntimeError, match="plotting"):
        finalize_search(out, result, 0.01, measure=lambda arch: 2 * fake_device(arch)["measured_ms"],
                        progress=False)
    assert _files(out) == before  # not the new pareto.csv beside the old selected.json
    assert sorted(p.name for p in out.parent.iterdir()) == ["nsga2"]
    monkeypatch.undo()
    with pytest.raises(NoArchMeetsTarget):
        finalize_search(out, result, 0.01, measure=fake_device, progress=False)
    assert not (out / "selected.json").exists() and (out / "state" / "checkpoint.json").read_text() == "{}"


WRITER = """
import sys
import pandas as pd
from search.outputs import write_search_outputs
out = sys.argv[1]
sets = []
for v in (0, 1):
    rows = pd.DataFrame({"arch": ["a", "b"], "key": [f"v{v}a", f"v{v}b"], "predicted_accuracy": [0.5, 0.6 + v],
                         "predicted_ms": [1.0, 2.0 + v], "measured_ms": [1.1, 2.1 + v]})
    sets.append(dict(rows=rows, selected=rows.iloc[0].to_dict() if v == 0 else None, target_ms=3.0,
                     info={"version": v}))
print("ready", flush=True)
i = 0
while True:
    write_search_outputs(out, **sets[i % 2])
    i += 1
"""


def _one_set(out):
    """The version of the set in ``out``, checked to be whole: the front, the choice and search.json agree."""
    version = json.loads((out / "search.json").read_text())["version"]
    assert pd.read_csv(out / "pareto.csv")["key"].tolist() == [f"v{version}a", f"v{version}b"]
    if version == 0:
        assert json.loads((out / "selected.json").read_text())["key"] == "v0a"
    else:
        assert not (out / "selected.json").exists()
    return version


def test_a_search_killed_while_writing_never_leaves_a_mix(tmp_path):
    """A real writer process, SIGKILLed at random moments while it rewrites its outputs in a loop."""
    import os
    import random
    import signal
    import subprocess
    import sys
    import time

    from common.fileio import recover_dir
    from search.outputs import OUTPUT_NAMES

    out, rng, seen = tmp_path / "nsga2", random.Random(3), set()
    (out / "state").mkdir(parents=True)
    (out / "state" / "checkpoint.json").write_text("{}")
    for _ in range(3):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(out)], stdout=subprocess.PIPE, text=True,
                                env={**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"})
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.3, 1.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        if (out / "search.json").exists():  # what a reader sees before anything repairs the folder
            seen.add(_one_set(out))
        recover_dir(out, OUTPUT_NAMES)  # what the next search does first
        if (out / "search.json").exists():
            _one_set(out)
        assert (out / "state" / "checkpoint.json").read_text() == "{}"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["nsga2"]
    assert seen, "the writer never finished a set; the test did not exercise the switch"


def _front(*members):
    """Rows of a measured front: (key, predicted accuracy, upper end of the measured CI)."""
    return pd.DataFrame([{"key": k, "predicted_accuracy": acc, "measured_ms": ms - 0.05, "measured_ms_ci_high": ms}
                         for k, acc, ms in members])


class _Arch:
    def __init__(self, key):
        self.key = key


def _second(slower):
    """A fresh-process 'measurement' by key, recording the order of the calls."""
    calls = []

    def confirm(arch):
        calls.append(arch.key)
        return {"measured_ms": slower[arch.key] - 0.05, "measured_ms_ci_high": slower[arch.key]}
    return confirm, calls


def test_a_choice_that_its_fresh_process_puts_over_the_target_goes_to_the_next():
    from search.outputs import confirmed_rows

    rows = _front(("a", 0.9, 0.90), ("b", 0.8, 0.80), ("c", 0.7, 0.50), ("d", 0.95, 1.30))
    confirm, calls = _second({"a": 1.20, "b": 0.95, "c": 0.40})
    out = confirmed_rows(rows, [_Arch(k) for k in "abcd"], 1.0, "measured_ms_ci_high", confirm)
    assert calls == ["a", "b"]  # d is over the target here already; a fails in its fresh process; b passes
    by = out.set_index("key")
    assert by.loc["a", "selection_ms"] == 1.20 and by.loc["b", "selection_ms"] == 0.95  # the slower of the two
    assert by.loc["c", "selection_ms"] == 0.50 and np.isnan(by.loc["c", "fresh_ms"])  # not confirmed: as measured
    assert by.loc["b", "fresh_ms_ci_high"] == 0.95 and by.loc["b", "fresh_ms"] == pytest.approx(0.90)
    # a fresh process faster than the first keeps the first's bound
    out = confirmed_rows(rows, [_Arch(k) for k in "abcd"], 1.0, "measured_ms_ci_high", _second({"a": 0.5})[0])
    assert out.set_index("key").loc["a", "selection_ms"] == 0.90


def test_after_confirm_max_failures_only_confirmed_members_remain_candidates(tmp_path):
    from search.outputs import SELECTION_COLUMN, confirmed_rows

    rows = _front(("a", 0.9, 0.90), ("b", 0.8, 0.80), ("c", 0.7, 0.50))
    confirm, calls = _second({"a": 1.20, "b": 1.10, "c": 0.40})
    out = confirmed_rows(rows, [_Arch(k) for k in "abc"], 1.0, "measured_ms_ci_high", confirm, confirm_max=2)
    assert calls == ["a", "b"] and out[SELECTION_COLUMN].isna().tolist() == [False, False, True]
    with pytest.raises(NoArchMeetsTarget):
        from search.pareto import choose_under_target
        choose_under_target(out, 1.0, latency_column=SELECTION_COLUMN)


def test_finalize_confirms_its_choice_and_writes_the_columns(result, tmp_path):
    rows = front_rows(result, measure=fake_device)
    target = float(rows["measured_ms_ci_high"].median())
    first = finalize_search(tmp_path / "one", result, target, measure=fake_device, latency_column="measured_ms_ci_high",
                            progress=False)
    # the first choice measures over the target in its fresh process; every other member as in the first
    confirm, calls = _second({k: 1.1 * target if k == first.selected["key"] else v
                              for k, v in zip(rows["key"], rows["measured_ms_ci_high"])})
    out = finalize_search(tmp_path / "two", result, target, measure=fake_device, latency_column="measured_ms_ci_high",
                          progress=False, confirm=confirm)
    assert calls == [first.selected["key"], out.selected["key"]] and out.selected["key"] != first.selected["key"]
    assert out.selected["selection_ms"] <= target
    table = pd.read_csv(tmp_path / "two" / "pareto.csv")
    assert {"fresh_ms", "fresh_ms_ci_high", "selection_ms"} <= set(table.columns)
    assert table["fresh_ms"].notna().sum() == len(calls)
    assert json.loads((tmp_path / "two" / "selected.json").read_text())["latency_column"] == "selection_ms"
