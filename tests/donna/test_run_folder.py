"""``donna run`` through its command line on a tiny space, and the run folder it leaves: every file in it has
its place in ``RunFolder``'s layout, the space file is copied in, and the finetune key covers its inputs."""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
from pathlib import Path

import pytest
from tiny_space import QUICK_PROTOCOL, TINY  # noqa: E402  (tests/ is on sys.path: tests/conftest.py)

from blocks import Arch, get_space
from donna.cli import main
from donna.runfolder import LAYOUT, RunFolder, read_json, write_json

REPO = Path(__file__).resolve().parents[2]
DEVICE = "cpu-quick"  # the cpu profile with a quick protocol, from a user profile file
BUILD = ["--data", "digits", "--teacher-epochs", "1", "--bkd-epochs", "1", "--labels", "4", "--label-epochs", "1",
         "--quiet"]
RUN = [*BUILD, "--generations", "2", "--finetune-epochs", "1", "--latency-device", DEVICE, "--target-ms", "100"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> tuple[Path, Path, str]:
    """A tiny ``donna run`` through the CLI (its latency table built first with few members): folder, space, stdout."""
    from latency import build_latency_table

    root = tmp_path_factory.mktemp("donna-run")
    profiles = root / "devices.json"
    write_json(profiles, {"profiles": {DEVICE: {"extends": "cpu", "protocol": QUICK_PROTOCOL}}})
    space_file = root / "tiny.json"
    space_file.write_text(json.dumps({"tiny-run": TINY}))
    work = root / "work"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LATENCY_DEVICES", str(profiles))
        run = RunFolder(work)
        build_latency_table(get_space(space_file), DEVICE, run.latency(DEVICE).root, n_calibration=3,
                            n_validation=3, n_repeat=1, progress=False, cache_dir=run.exports)
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = main(["run", "--workdir", str(work), "--space", str(space_file), *RUN])
    assert code == 0, out.getvalue()
    return work, space_file, out.getvalue()


def test_donna_run_cli_runs_every_stage_and_says_where(finished):
    work, _, printed = finished
    run = RunFolder(work)
    assert "whole pipeline done" in printed and str(run.report_html) in printed
    config = run.read_config()
    assert {"run", "data", "teacher", "bkd", "score", "labels", "search", "finetune"} <= set(config)
    (tuned,) = run.finetunes()
    metrics = read_json(tuned.metrics_json)
    assert metrics["latency_device"] == DEVICE and metrics["target_ms"] == 100.0 and metrics["measured_ms"] > 0
    selected = read_json(run.search("nsga2").selected_json)
    assert selected["key"] == metrics["key"] == tuned.root.name


def test_every_file_of_the_run_has_its_place_in_the_layout(finished):
    work, _, _ = finished
    run = RunFolder(work)
    files = [p for p in work.rglob("*") if p.is_file()]
    assert len(files) > 40
    assert [str(p.relative_to(work)) for p in files if run.entry(p) is None] == []
    used = {run.entry(p) for p in files}
    never = {"study/heldout-*of*.csv", "study/report.json", "teacher.ckpt-*.pt", "library/slot*.ckpt.pt",
             "finetune/*/checkpoint-*.pt", "search/*/state/*/*", ".lock", "latency/*/exports/*/*",
             "latency/*/measured.csv", "compress/model.pt", "compress/space.json", "compress/original.json",
             "compress/compress.csv", "compress/compress.md"}  # resume points, benchmark files, the lock, compress
    assert {pattern for pattern, _ in LAYOUT} - never <= used  # the layout names nothing a run does not make


def test_the_typed_paths_are_the_files_the_stages_wrote(finished):
    work, _, _ = finished
    run = RunFolder(work)
    (tuned,) = run.finetunes()
    search = run.search("nsga2")
    latency = run.latency(DEVICE)
    paths = [run.config_json, run.space_json, run.teacher_pt, run.teacher_json, run.nsr_csv, run.labels_csv,
             run.predictor_json, run.convergence_json, run.report_html, run.report_md, run.run_log, latency.table_json,
             latency.teacher_latency_json, search.pareto_csv, search.selected_json, search.search_json,
             search.pareto_png,
             tuned.model_pt, tuned.model_onnx, tuned.arch_json, tuned.metrics_json, tuned.curve_png, tuned.report_md]
    paths += [run.slot_weights(s) for s in range(len(TINY["slots"]))]
    paths += [run.slot_manifest(s) for s in range(len(TINY["slots"]))]
    paths += [run.slot_bn(s) for s in range(len(TINY["slots"]))]
    assert [str(p) for p in paths if not p.is_file()] == []
    assert all(run.entry(p) is not None for p in paths)
    assert search.member_json(read_json(search.selected_json)["key"]).is_file()


def test_donna_run_logs_every_stage_with_an_eta_on_the_console_and_in_run_log(finished):
    work, _, printed = finished  # the run was --quiet: no bars, still one line as each stage starts and ends
    stages = ("teacher", "bkd", "scoring", "labels", "fit", "latency table", "search", "finetune", "report")
    text = RunFolder(work).run_log.read_text()
    for i, stage in enumerate(stages, 1):
        for where in (printed, text):
            assert f"[{i}/9] {stage}: started" in where and f"[{i}/9] {stage}: done in" in where, stage
    assert re.search(r"\[8/9\] finetune: done in [\d.]+ s; [\d.]+ s so far; 1 stage left, ETA (< 1 min|~\d+ min)$",
                     text, re.M)
    assert "Traceback" not in text and text.splitlines()[0].endswith(")")


def test_the_space_file_is_copied_in_and_a_changed_file_is_refused(finished, tmp_path):
    work, space_file, _ = finished
    run = RunFolder(work)
    recorded = run.read_config()["run"]
    assert recorded["space_file"] == run.space_json.name and len(recorded["space_sha256"]) == 64
    copy = tmp_path / "work"
    shutil.copytree(work, copy)
    moved = tmp_path / "gone.json"
    shutil.move(space_file, moved)  # the user's file is gone: later stages read the copy
    try:
        from donna.search_stage import run_space

        space = run_space(copy)
        assert space.name == "tiny-run" and space.num_slots == len(TINY["slots"])
        changed = {"tiny-run": {**TINY, "head": {**TINY["head"], "channels": 48}}}
        space_file.write_text(json.dumps(changed))
        code = main(["build-predictor", "--workdir", str(copy), "--space", str(space_file), "--data", "digits",
                     "--quiet"])
        assert code == 2
        assert json.loads(RunFolder(copy).space_json.read_text()) == {"tiny-run": TINY}  # the copy is kept
    finally:
        shutil.move(moved, space_file)


def test_a_run_recorded_before_space_files_were_copied_is_taken_up(finished, tmp_path):
    work, space_file, _ = finished
    copy = tmp_path / "work"
    shutil.copytree(work, copy)
    run = RunFolder(copy)
    run.save_config("run", {"space": str(space_file), "num_classes": 10})  # the record of an older version
    run.space_json.unlink()
    assert main(["build-predictor", "--workdir", str(copy), "--space", str(space_file), *BUILD]) == 0
    assert run.read_config()["run"] == read_json(RunFolder(work).config_json)["run"] and run.space_json.is_file()


def test_the_finetune_key_covers_the_library_and_the_teacher(finished, tmp_path):
    from donna.finetune_stage import FinetuneConfig, finetune_fingerprint

    work, _, _ = finished
    copy = tmp_path / "work"
    shutil.copytree(work, copy)
    run = RunFolder(copy)
    arch = Arch.from_dict(read_json(run.search("nsga2").selected_json)["ir"])
    cfg = FinetuneConfig(epochs=1)
    before = finetune_fingerprint(copy, arch, cfg)
    for path in (run.slot_manifest(1), run.teacher_json):
        data = read_json(path)
        write_json(path, {**data, "fingerprint": "0" * 16})
        after = finetune_fingerprint(copy, arch, cfg)
        assert after != before, path.name
        before = after


def test_no_stage_spells_a_run_folder_path_by_hand():
    pattern = re.compile(r"\bworkdir\s*/\s*f?[\"']")
    files = [p for folder in ("donna", "benchmarks") for p in sorted((REPO / folder).glob("*.py"))
             if p.name != "runfolder.py"]
    offenders = [f"{p.relative_to(REPO)}:{i}" for p in files for i, line in enumerate(p.read_text().splitlines(), 1)
                 if pattern.search(line)]
    assert offenders == []
