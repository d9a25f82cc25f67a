"""``donna report`` on a small finished run folder, and ``--searcher exact`` on the run's real objectives.

The run folder is made in seconds: a real latency table (quick protocol) and real searches, with a
predictor fitted on synthetic labels over a synthetic NSR table, and a finetune ``metrics.json`` and
``teacher.json`` written as those stages write them (training is tested elsewhere).
"""

import base64
import io
import json
import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from blocks import get_space
from donna.cli import main
from donna.predictor import fit_predictor, nsr_columns
from donna.report import measure_teacher, write_report
from donna.runfolder import RunFolder, save_config, write_json
from donna.search_stage import SearchConfig, run_search
from latency import build_latency_table
from search.pareto import non_dominated

SPACE = {
    "description": "report test space", "input_size": 16, "in_channels": 3, "num_classes": 10,
    "stem": [{"type": "conv", "kernel": 3, "stride": 2, "out_channels": 8, "act": "relu"}],
    "head": {"channels": 32, "act": "relu", "dropout": 0.0},
    "choices": {"type": ["ir"], "kernel": [3, 5], "expansion": [2], "depth": [1, 2], "se": [0.0], "act": ["relu"]},
    "slots": [{"stride": 1, "out_channels": 8}, {"stride": 2, "out_channels": 16}, {"stride": 1, "out_channels": 16}],
}
QUICK_PROTOCOL = {"min_time_s": 0.01, "max_time_s": 0.2, "min_samples": 10, "warmup_max_s": 0.05}
SECTIONS = ["Stages", "Teacher and chosen model", "Pareto front", "Latency: predicted vs measured",
            "Accuracy predictor", "Block library (NSR)", "Finetune", "Environment"]


def _nsr_and_labels(space, rng):
    rows = [{"slot": i, "option": str(o), "nsr": float(rng.uniform(0.2, 1.0)) / (o.depth * o.kernel / 3),
             "params": 100 * o.depth * o.kernel, "macs": 10_000 * o.depth * o.kernel ** 2}
            for i in range(space.num_slots) for o in space.options(i)]
    nsr = pd.DataFrame(rows)
    lookup = {(r["slot"], r["option"]): r["nsr"] for r in rows}
    labels = []
    for arch in space.sample_many(8, seed=1):
        features = [lookup[(i, str(b))] for i, b in enumerate(arch.blocks)]
        labels.append({"key": arch.key, "arch": arch.to_string(), "accuracy": 0.95 - 0.1 * sum(features)
                       + float(rng.normal(0, 0.005)), **dict(zip(nsr_columns(space.num_slots), features))})
    return nsr, pd.DataFrame(labels)


def _finetune_metrics(selected: dict) -> dict:
    return {"key": selected["key"], "arch": selected["arch"], "init": "bkd", "epochs": 3, "val_accuracy": 0.81,
            "test_accuracy": 0.8, "teacher_val_accuracy": 0.9, "predicted_accuracy": selected["predicted_accuracy"],
            "predicted_ms": selected["predicted_ms"], "measured_ms": selected["measured_ms"] * 1.01,
            "measured_ms_ci": [selected["measured_ms"], selected["measured_ms"] * 1.02], "measured_noisy": False,
            "latency_device": "cpu", "params": 12_345, "macs": 678_901, "train_seconds": 12.0,
            "history": {"train_loss": [2.0, 1.2, 0.9], "val_accuracy": [0.5, 0.72, 0.81]},
            "onnx_torch_top1_agreement": 1.0, "onnx_test_accuracy": 0.8, "examples": 270}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run folder with every file the report reads: nsga2, random and exact searches, one finetune."""
    root = tmp_path_factory.mktemp("report")
    (root / "space.json").write_text(json.dumps({"tiny-report": SPACE}))
    workdir = root / "run"
    space = get_space(root / "space.json")
    save_config(workdir, "run", {"space": str(root / "space.json"), "num_classes": 10})
    nsr, labels = _nsr_and_labels(space, np.random.default_rng(0))
    nsr.to_csv(workdir / "nsr.csv", index=False)
    labels.to_csv(workdir / "labels.csv", index=False)
    fit_predictor(labels, nsr_columns(space.num_slots), space="tiny-report").to_json(workdir / "predictor.json")
    write_json(workdir / "teacher.json", {"kind": "trained", "name": "archnet", "val_accuracy": 0.9,
                                          "fingerprint": "0123456789abcdef"})
    teacher = space.reference().with_blocks([b.with_knobs(expansion=6) for b in space.reference().blocks])
    torch.save({"arch": teacher.to_dict(), "train_seconds": 7.0}, workdir / "teacher.pt")  # what the report reads
    build_latency_table(space, "cpu", workdir / "latency" / "cpu", n_calibration=4, n_validation=4, n_repeat=1,
                        protocol=QUICK_PROTOCOL, progress=False, cache_dir=root / "exports")
    base, population = {"target_ms": 100.0, "measure_max": 3}, {"pop_size": 8, "generations": 3}
    outs = {name: run_search(workdir, SearchConfig(searcher=name, settings={} if name == "exact" else population,
                                                   **base), progress=False)
            for name in ("random", "exact", "nsga2")}  # nsga2 last: the config's search, as `donna run` leaves it
    selected = outs["nsga2"].selected
    write_json(workdir / "finetune" / selected["key"] / "metrics.json", _finetune_metrics(selected))
    return workdir, space, outs


def test_exact_search_is_the_front_of_every_member(run):
    workdir, space, outs = run
    from donna.predictor import AccuracyPredictor
    from latency import LatencyTable

    every = [space.decode(g) for g in np.ndindex(*(space.genome_bounds()[1] + 1))]
    predictor = AccuracyPredictor.load(workdir / "predictor.json")
    accuracy = predictor.predict_archs(every, pd.read_csv(workdir / "nsr.csv"), space)
    latency = LatencyTable.load(workdir / "latency" / "cpu").predict_many(every)
    F = np.column_stack([-accuracy, latency])
    truth = np.unique(F[non_dominated(F)], axis=0)
    rows = outs["exact"].rows
    found = np.unique(np.column_stack([-rows["predicted_accuracy"], rows["predicted_ms"]]), axis=0)
    np.testing.assert_allclose(found, truth, rtol=1e-9)
    info = json.loads((workdir / "search" / "exact" / "search.json").read_text())
    nsga2 = json.loads((workdir / "search" / "nsga2" / "search.json").read_text())
    assert info["searcher"] == "exact" and info["hypervolume"] >= nsga2["hypervolume"] > 0  # same reference


def test_exact_search_refuses_measured_latency(run):
    workdir, _, _ = run
    with pytest.raises(ValueError, match="--latency measure measures every candidate whole; use --latency table"):
        run_search(workdir, SearchConfig(searcher="exact", target_ms=100.0, latency="measure"), progress=False)


def _images(page: str) -> list[bytes]:
    sources = re.findall(r'<img [^>]*src="([^"]+)"', page)
    assert all(s.startswith("data:image/png;base64,") for s in sources)  # embedded, nothing fetched
    return [base64.b64decode(s.split(",", 1)[1], validate=True) for s in sources]


def test_report_has_every_section_and_valid_embedded_pngs(run):
    workdir, _, outs = run
    teacher = measure_teacher(workdir, "cpu", protocol=QUICK_PROTOCOL)
    assert teacher["measured_ms"] > 0 and measure_teacher(workdir, "cpu") == teacher  # measured once
    paths = write_report(workdir)
    run = RunFolder(workdir)
    assert paths.html == run.report_html and paths.markdown == run.report_md and paths.skipped == []
    page = paths.html.read_text()
    titles = re.findall(r"<h2>(.*?)</h2>", page)
    assert titles == [s.replace("&", "&amp;") for s in SECTIONS] and "Skipped" not in page
    images = _images(page)
    assert len(images) == 5 == len(paths.images)
    for png in images:
        with Image.open(io.BytesIO(png)) as img:
            assert img.format == "PNG" and img.size[0] > 300 and img.size[1] > 200
            img.verify()
    for name in ("random", "exact", "nsga2"):
        assert f"<td>{name}</td>" in page
    assert outs["nsga2"].selected["key"] in page and "PASS" in page
    speed_up = teacher["measured_ms"] / json.loads(next(workdir.glob("finetune/*/metrics.json")).read_text())[
        "measured_ms"]
    assert f"speed-up {speed_up:.2f}x" in page and "fewer" in page  # teacher params and MACs from teacher.pt
    assert "<td>teacher</td><td>" in page and "<td>7</td>" in page  # its training time as a stage time
    assert "onnxruntime" in page and "share of exact" in page and "100.0%" in page  # exact vs itself
    markdown = paths.markdown.read_text()
    assert [line[3:] for line in markdown.splitlines() if line.startswith("## ")] == SECTIONS
    for link in re.findall(r"!\[[^]]*\]\(([^)]+)\)", markdown):
        assert (workdir / link).is_file()


def test_report_of_a_partial_run_says_what_is_missing(tmp_path, capsys):
    save_config(tmp_path, "run", {"space": "mbconv-tiny", "num_classes": 10})
    assert main(["report", "--workdir", str(tmp_path)]) == 0
    page = RunFolder(tmp_path).report_html.read_text()
    assert page.count('class="missing"') == 6  # everything but stages and environment
    assert "run `donna search`" in page and "<img" not in page
    assert "report.html" in capsys.readouterr().out
    assert main(["report", "--workdir", str(tmp_path / "nothing")]) == 2


def _browser() -> str | None:
    return next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)


def test_report_images_load_in_headless_chromium(run, tmp_path):
    browser = _browser()
    if browser is None:
        pytest.skip("no chromium binary installed")
    workdir, _, _ = run
    page = write_report(workdir).html.read_text()
    probe = ("<script>window.addEventListener('load', () => { const imgs = [...document.images]; "
             "document.body.setAttribute('data-loaded', imgs.filter(i => i.complete && i.naturalWidth > 0).length "
             "+ '/' + imgs.length); });</script></body>")
    (tmp_path / "probe.html").write_text(page.replace("</body>", probe))
    dom = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=10000",
                          "--dump-dom", (tmp_path / "probe.html").as_uri()], capture_output=True, text=True,
                         timeout=120).stdout
    assert re.search(r'data-loaded="5/5"', dom), dom[-500:]


def test_front_near_a_target_inside_the_data_gets_a_zoomed_plot(run, tmp_path):
    workdir, _, _ = run
    copy = tmp_path / "run"
    shutil.copytree(workdir, copy)
    selected_file = copy / "search" / "nsga2" / "selected.json"
    selected = json.loads(selected_file.read_text())
    selected["target_ms"] = float(pd.read_csv(copy / "search" / "exact" / "pareto.csv")["predicted_ms"].median())
    selected_file.write_text(json.dumps(selected))
    page = write_report(copy).html.read_text()
    assert "near the target: 25% either side" not in write_report(workdir).html.read_text()
    assert f"near the target: 25% either side of {selected['target_ms']:g} ms" in page
    assert len(_images(page)) == 6
