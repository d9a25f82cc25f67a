"""The DONNA pipeline end to end on a tiny space: build-predictor, search, finetune, CLI errors."""

import json

import pandas as pd
import pytest
from tiny_space import QUICK_PROTOCOL, TINY  # noqa: E402  (tests/ is on sys.path: tests/conftest.py)

from blocks import Arch, get_space
from donna.cli import main
from donna.config import BKDConfig, DataConfig, ScoreConfig, TeacherConfig
from donna.finetune_stage import FinetuneConfig, run_finetune
from donna.labels import LabelConfig
from donna.predictor_stage import PredictorRunConfig, build_predictor
from donna.search_stage import SearchConfig, run_search
from latency import build_latency_table, measure_model
from search import NoArchMeetsTarget


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A finished tiny build-predictor run and its latency table."""
    root = tmp_path_factory.mktemp("run")
    space_file = root / "tiny.json"
    space_file.write_text(json.dumps({"tiny-e2e": TINY}))
    cfg = PredictorRunConfig(space=str(space_file), data=DataConfig(name="digits"), teacher=TeacherConfig(epochs=2),
                             bkd=BKDConfig(epochs=1), score=ScoreConfig(recal_batches=2),
                             labels=LabelConfig(num_labels=6, epochs=1, pool_size=50))
    workdir = root / "work"
    result = build_predictor(workdir, cfg, progress=False)
    space = get_space(space_file)
    build_latency_table(space, "cpu", workdir / "latency" / "cpu", n_calibration=4, n_validation=4, n_repeat=1,
                        protocol=QUICK_PROTOCOL, progress=False, cache_dir=root / "exports")
    return workdir, result, cfg


def test_build_predictor_writes_every_stage(run):
    workdir, result, _ = run
    for name in ("teacher.json", "nsr.csv", "labels.csv", "predictor.json", "config.json"):
        assert (workdir / name).is_file(), name
    labels = pd.read_csv(workdir / "labels.csv")
    assert len(labels) == 6 and labels["accuracy"].between(0, 1).all()
    assert set(result.predictor.quality) >= {"predictor", "sum_nsr (DNA)", "macs", "params"}


def test_rerun_skips_finished_stages_and_refuses_another_space(run):
    workdir, result, cfg = run
    labels_stamp = (workdir / "labels.csv").stat().st_mtime_ns
    again = build_predictor(workdir, cfg, progress=False)
    assert (workdir / "labels.csv").stat().st_mtime_ns == labels_stamp  # no label was made again
    assert again.predictor.coef == result.predictor.coef
    with pytest.raises(ValueError, match="was built for space"):
        build_predictor(workdir, PredictorRunConfig(), progress=False)


def test_search_selects_under_target_and_fails_clearly_below_reach(run):
    workdir, _, _ = run
    out = run_search(workdir, SearchConfig(target_ms=100.0, settings={"pop_size": 8, "generations": 3}), progress=False)
    assert out.selected["measured_ms"] <= 100.0
    for name in ("pareto.csv", "pareto.png", "selected.json"):
        assert (workdir / "search" / "nsga2" / name).is_file()
    with pytest.raises(NoArchMeetsTarget, match="fastest"):
        run_search(workdir, SearchConfig(target_ms=1e-6, settings={"pop_size": 8, "generations": 3}), progress=False)


def test_a_margin_keeps_the_confirmed_choice_that_share_under_the_target(run, capsys):
    workdir, _, _ = run
    front = run_search(workdir, SearchConfig(target_ms=100.0, name="no-margin", confirm_max=0,
                                             settings={"pop_size": 8, "generations": 3}), progress=False).rows
    target = 3.0 * float(front["measured_ms_ci_high"].min())  # the fastest meets it with the margin, even at +40%
    out = run_search(workdir, SearchConfig(target_ms=target, margin=0.5, confirm_processes=2, name="margin",
                                           settings={"pop_size": 8, "generations": 3}), progress=False)
    printed = capsys.readouterr().out
    assert "less the margin 50.0%" in printed and "2 fresh processes" in printed
    assert out.selected["selection_ms"] <= 0.5 * target + 1e-9
    assert out.selected["selection_ms"] >= out.selected["fresh_ms_ci_high"]


def test_search_cli_without_predictor_names_the_command(tmp_path, capsys):
    assert main(["search", "--workdir", str(tmp_path), "--device", "cpu", "--target-ms", "1"]) == 2
    assert "donna build-predictor" in capsys.readouterr().err


def test_finetune_exports_onnx_that_agrees_with_torch(run):
    workdir, _, _ = run
    run_search(workdir, SearchConfig(target_ms=100.0, settings={"pop_size": 8, "generations": 3}), progress=False)
    metrics = run_finetune(workdir, FinetuneConfig(epochs=1, latency_device="cpu"), progress=False)
    assert metrics["onnx_torch_top1_agreement"] == 1.0
    assert metrics["examples"] > 100 and metrics["measured_ms"] > 0
    assert metrics["target_ms"] == 100.0 and metrics["target_met"] is (metrics["measured_ms"] <= 100.0)
    assert metrics["measured_in"] == "3 fresh processes (median of medians)"
    assert len(metrics["measured_process_ms"]) == 3 and metrics["classes"] == [str(i) for i in range(10)]
    assert metrics["measured_ms"] == sorted(metrics["measured_process_ms"])[1]
    assert metrics["preprocessing"]["mean"] and metrics["preprocessing"]["input_size"] == 16
    import onnx

    props = {p.key: json.loads(p.value) for p in onnx.load(metrics["out"] + "/model.onnx").metadata_props}
    assert props == {"preprocessing": metrics["preprocessing"], "classes": metrics["classes"]}
    out = workdir / "finetune" / metrics["key"]
    for name in ("model.pt", "model.onnx", "metrics.json", "report.md", "curve.png"):
        assert (out / name).is_file(), name
    assert "predicted" in (out / "report.md").read_text()
    arch_json = json.loads((out / "arch.json").read_text())  # the architecture file says how to feed the model
    assert arch_json["preprocessing"] == metrics["preprocessing"] and arch_json["classes"] == metrics["classes"]
    assert Arch.from_json(out / "arch.json").key == metrics["key"]
    _check_dynamic_batch(workdir, out, metrics)


def _check_dynamic_batch(workdir, out, metrics):
    """Batch 1 by default; on request, a finished finetune is exported again with a symbolic batch, not retrained."""
    import numpy as np
    import onnxruntime as ort
    import torch

    from blocks import build_model

    def session():
        return ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])

    x = np.random.default_rng(0).standard_normal((3, 3, 16, 16)).astype(np.float32)
    assert metrics["dynamic_batch"] is False
    with pytest.raises(Exception, match="(?i)dimension|shape"):
        session().run(None, {"input": x})
    stamp = (out / "model.pt").stat().st_mtime_ns
    again = run_finetune(workdir, FinetuneConfig(epochs=1, latency_device="cpu", dynamic_batch=True), progress=False)
    assert again["skipped"] and again["dynamic_batch"] is True and (out / "model.pt").stat().st_mtime_ns == stamp
    assert again["onnx_torch_top1_agreement"] == 1.0 and again["measured_ms"] == metrics["measured_ms"]
    assert json.loads((out / "metrics.json").read_text())["dynamic_batch"] is True
    model = build_model(Arch.from_json(out / "arch.json"))
    model.load_state_dict(torch.load(out / "model.pt", weights_only=True))
    with torch.no_grad():
        want = model.eval()(torch.from_numpy(x)).numpy()
    for batch in (1, 3):
        np.testing.assert_allclose(session().run(None, {"input": x[:batch]})[0], want[:batch], atol=1e-4, rtol=1e-4)
    import onnx

    props = {p.key: json.loads(p.value) for p in onnx.load(str(out / "model.onnx")).metadata_props}
    assert props == {"preprocessing": metrics["preprocessing"], "classes": metrics["classes"]}
    measured = measure_model(out / "model.onnx", "cpu", protocol=QUICK_PROTOCOL, cache_dir=workdir / "exports")
    assert measured.env["input_shape"] == [1, 3, 16, 16]  # the delivered model is measured at batch 1


def test_finetune_of_an_arch_outside_the_space_names_the_slot(run, tmp_path):
    workdir, _, _ = run
    space = get_space(workdir.parent / "tiny.json")
    arch = space.sample(0)
    bad = arch.with_blocks([arch.blocks[0].with_knobs(kernel=7), arch.blocks[1]])
    bad.to_json(tmp_path / "bad.json")
    with pytest.raises(ValueError, match=r"slot 0: kernel 7 not in \[3, 5\]"):
        run_finetune(workdir, FinetuneConfig(arch=str(tmp_path / "bad.json"), epochs=1), progress=False)


def test_search_with_measured_latency_caches_every_candidate(run):
    workdir, _, _ = run
    cfg = SearchConfig(target_ms=100.0, settings={"pop_size": 4, "generations": 2}, latency="measure")
    out = run_search(workdir, cfg, progress=False)
    cache = pd.read_csv(workdir / "latency" / "cpu" / "measured.csv")
    assert set(out.rows["key"]) <= set(cache["key"])
    assert (cache["measured_ms"] > 0).all()
    stamp = (workdir / "latency" / "cpu" / "measured.csv").stat().st_mtime_ns
    run_search(workdir, cfg, progress=False)  # the same candidates again: nothing new is measured
    assert (workdir / "latency" / "cpu" / "measured.csv").stat().st_mtime_ns == stamp


def test_finetune_killed_mid_epoch_resumes_and_finishes(run, monkeypatch):
    import donna.train

    workdir, _, _ = run
    run_search(workdir, SearchConfig(target_ms=100.0, settings={"pop_size": 8, "generations": 3}), progress=False)
    cfg = FinetuneConfig(epochs=2, seed=7, latency_device="cpu")
    real_loss, calls = donna.train.distillation_loss, {"n": 0}

    def dies_in_the_second_epoch(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 25:  # 1257 / 64 = 20 steps an epoch: step 5 of epoch 2
            raise KeyboardInterrupt
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(donna.train, "distillation_loss", dies_in_the_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        run_finetune(workdir, cfg, progress=False)
    assert list((workdir / "finetune").glob("*/checkpoint-*.pt"))  # epoch 1 was kept
    monkeypatch.setattr(donna.train, "distillation_loss", real_loss)
    metrics = run_finetune(workdir, cfg, progress=False)
    assert len(metrics["history"]["val_accuracy"]) == 2 and metrics["onnx_torch_top1_agreement"] == 1.0


def test_torchvision_teacher_without_weights_is_refused(tmp_path):
    cfg = PredictorRunConfig(space="mbconv-imagenet-mbv2", data=DataConfig(name="digits"),
                             teacher=TeacherConfig(source="mobilenet_v2"))
    with pytest.raises(ValueError, match="needs --teacher-weights"):
        build_predictor(tmp_path, cfg, progress=False)


def test_labels_do_not_depend_on_the_executor(run, tmp_path):
    """Every label job seeds what it draws: worker processes give the in-process labels."""
    import shutil

    from donna.data import get_dataset
    from donna.labels import make_labels
    from donna.nsr import load_nsr_table
    from donna.teacher import get_teacher

    workdir, _, cfg = run
    space = get_space(workdir.parent / "tiny.json")
    data = get_dataset("digits", input_size=16, seed=0)
    teacher = get_teacher(cfg.teacher, space, data, workdir, progress=False)
    frames = {}
    for executor in ("inprocess", "processes"):
        copy = tmp_path / executor
        shutil.copytree(workdir / "library", copy / "library")
        label_cfg = LabelConfig(num_labels=2, epochs=1, train_samples=300, executor=executor, seed=3)
        frames[executor] = make_labels(label_cfg, space, teacher, data, copy, load_nsr_table(workdir), progress=False)
    a, b = (frames[e].sort_values("key").reset_index(drop=True) for e in ("inprocess", "processes"))
    assert list(a["key"]) == list(b["key"]) and len(a) == 2
    assert (a["accuracy"] - b["accuracy"]).abs().max() < 1e-6
    assert (a["bkd_accuracy"] - b["bkd_accuracy"]).abs().max() < 1e-6


def test_finetune_under_torchrun_writes_once_and_matches_one_process(run, tmp_path):
    """Two gloo processes on CPU: one copy of every file, rank 0's; accuracy within 5 points of one process."""
    import os
    import shutil
    import subprocess
    import sys

    workdir, _, _ = run
    run_search(workdir, SearchConfig(target_ms=100.0, settings={"pop_size": 8, "generations": 3}), progress=False)
    one, two = tmp_path / "one", tmp_path / "two"
    for copy in (one, two):
        shutil.copytree(workdir, copy, ignore=shutil.ignore_patterns("finetune"))
    single = run_finetune(one, FinetuneConfig(epochs=2, latency_device="cpu"), progress=False)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           "-m", "donna.cli", "finetune", "--workdir", str(two), "--epochs", "2",
                           "--latency-device", "cpu"], capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("finetuned ") == 1  # rank 0 alone prints
    folders = list((two / "finetune").iterdir())
    assert [f.name for f in folders] == [single["key"]]
    files = sorted(p.name for p in folders[0].iterdir())
    assert files == sorted(p.name for p in (one / "finetune" / single["key"]).iterdir())  # the same set, once
    assert not list(folders[0].glob("checkpoint-*"))
    metrics = json.loads((folders[0] / "metrics.json").read_text())
    assert len(metrics["history"]["val_accuracy"]) == 2 and metrics["onnx_torch_top1_agreement"] == 1.0
    print(f"torchrun x2 val {metrics['val_accuracy']:.4f}, one process {single['val_accuracy']:.4f}")
    assert abs(metrics["val_accuracy"] - single["val_accuracy"]) <= 0.05
    log = (two / "run.log").read_text()
    assert log.count("donna finetune") == 1  # rank 1 wrote nothing to the run's log


def test_a_checkpoint_of_one_process_resumes_under_torchrun(run, tmp_path, monkeypatch):
    import os
    import shutil
    import subprocess
    import sys

    import torch

    import donna.train

    workdir, _, _ = run
    run_search(workdir, SearchConfig(target_ms=100.0, settings={"pop_size": 8, "generations": 3}), progress=False)
    copy = tmp_path / "work"
    shutil.copytree(workdir, copy, ignore=shutil.ignore_patterns("finetune"))
    real_loss, calls = donna.train.distillation_loss, {"n": 0}

    def dies_in_the_second_epoch(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 25:  # 20 steps an epoch: step 5 of epoch 2
            raise KeyboardInterrupt
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(donna.train, "distillation_loss", dies_in_the_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        run_finetune(copy, FinetuneConfig(epochs=2, latency_device="cpu"), progress=False)
    (checkpoint,) = (copy / "finetune").glob("*/checkpoint-*.pt")
    first_epoch = torch.load(checkpoint, weights_only=True)["history"]["val_accuracy"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           "-m", "donna.cli", "finetune", "--workdir", str(copy), "--epochs", "2",
                           "--latency-device", "cpu"], capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    metrics = json.loads(next((copy / "finetune").glob("*/metrics.json")).read_text())
    assert metrics["history"]["val_accuracy"][:1] == first_epoch  # epoch 1 came from the checkpoint, not again
    assert len(metrics["history"]["val_accuracy"]) == 2 and not list((copy / "finetune").glob("*/checkpoint-*"))


def test_compress_distils_the_model_into_its_own_cheaper_space_and_reports_side_by_side(run, tmp_path):
    import pandas as pd

    from blocks import Arch
    from blocks.compress import compression_space
    from donna.compress_stage import run_compress

    workdir, _, cfg = run
    teacher = workdir / "teacher.pt"
    arch = Arch.from_dict(__import__("torch").load(teacher, weights_only=True)["arch"])
    space = compression_space(arch)
    assert space.reference().blocks == arch.blocks
    work = tmp_path / "compress"
    build_latency_table(space, "cpu", work / "latency" / "cpu", n_calibration=4, n_validation=4, n_repeat=1,
                        protocol=QUICK_PROTOCOL, progress=False, cache_dir=tmp_path / "exports")
    table = run_compress(work, teacher, [0.9], cfg, SearchConfig(target_ms=None, settings={"pop_size": 8,
                                                                                         "generations": 3}),
                         FinetuneConfig(epochs=1, latency_device="cpu"), progress=False)
    assert table["model"].tolist() == ["original", "90% of the model's latency"]
    original, small = table.iloc[0], table.iloc[1]
    assert original["key"] == arch.key and small["key"] != arch.key and small["macs"] < original["macs"]
    assert small["target_ms"] == pytest.approx(0.9 * original["measured_ms"], abs=1e-4)
    front = pd.read_csv(work / "search" / "compress-90" / "pareto.csv")
    assert front.loc[front["key"] == small["key"], "selection_ms"].iloc[0] <= small["target_ms"]
    assert (work / "compress" / "compress.md").read_text().count("`") >= 4
    assert json.loads((work / "teacher.json").read_text())["source"].endswith("model.pt")  # the model taught
    assert len(list((work / "library").glob("slot*.pt"))) == space.num_slots
    from donna.runfolder import RunFolder

    files = [p for p in work.rglob("*") if p.is_file()]
    assert [str(p.relative_to(work)) for p in files if RunFolder(work).entry(p) is None] == []


def _digests(root):
    import hashlib

    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and "extend" not in p.relative_to(root).parts}


def test_extend_trains_only_the_new_options_reuses_the_rest_and_compares_fronts(run, tmp_path, monkeypatch):
    import shutil

    import torch

    from donna import labels as labels_module
    from donna.bkd import BlockLibrary
    from donna.extend_stage import run_extend
    from donna.runfolder import RunFolder
    from latency import LatencyTable

    workdir, _, _ = run
    base = tmp_path / "base"
    shutil.copytree(workdir, base)
    before = _digests(base)
    extended = {**TINY, "choices": {**TINY["choices"], "kernel": [3, 5, 7]}}  # kernel 7: two new options per slot
    space_file = tmp_path / "tiny-k7.json"
    space_file.write_text(json.dumps({"tiny-k7": extended}))
    record = run_extend(base, space_file, num_labels=3, progress=False)

    assert _digests(base) == before  # the run's files are only read
    folder = RunFolder(base).extend("tiny-k7")
    trained = [json.loads(folder.added.slot_manifest(s).read_text())["options"] for s in range(2)]
    old_space, new_space = get_space(base / "space.json"), get_space(space_file)
    added = [[str(o) for o in new_space.options(s) if o.kernel == 7] for s in range(2)]
    teacher = Arch.from_dict(__import__("torch").load(base / "teacher.pt", weights_only=True)["arch"])
    twins = [[str(o) for o in new_space.options(s) if o.kernel == 5 and o != teacher.blocks[s]]  # the controls,
             for s in range(2)]  # not the teacher's own block
    assert all(len(t) == 1 for t in twins)
    assert [sorted(t) for t in trained] == [sorted(a + t) for a, t in zip(added, twins)]
    assert all(json.loads(folder.added.slot_manifest(s).read_text())["init"] == "run's slot" for s in range(2))
    nsr_old, nsr_new = pd.read_csv(base / "nsr.csv"), pd.read_csv(folder.run.nsr_csv)
    assert len(nsr_new) == 12 and len(nsr_old) == 8
    merged = nsr_new.merge(nsr_old, on=["slot", "option"], suffixes=("", "_run"))
    assert len(merged) == 8 and (merged["nsr"] == merged["nsr_run"]).all()  # the same NSR, not re-scored
    scored = pd.read_csv(folder.added.nsr_csv).set_index("option")
    for s in range(2):  # new options' NSR on the run's budget: times their twins' run/extension NSR ratio
        factor = record["nsr_correction"][str(s)]
        ratios = [nsr_old.set_index(["slot", "option"]).loc[(s, t), "nsr"] / scored.loc[t, "nsr"] for t in twins[s]]
        assert factor == pytest.approx(float(pd.Series(ratios).median()), rel=1e-3)
        for o in added[s]:
            value = nsr_new.set_index(["slot", "option"]).loc[(s, o), "nsr"]
            assert value == pytest.approx(scored.loc[o, "nsr"] * factor, rel=1e-4)
    lib_old, lib_new = BlockLibrary(base, old_space), BlockLibrary(folder.root, new_space)
    for s in range(2):
        for spec in old_space.options(s):  # the same weights and statistics
            a, b = lib_old.block(s, spec).state_dict(), lib_new.block(s, spec).state_dict()
            assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
        for spec in new_space.options(s):
            if spec not in old_space.options(s):
                assert lib_new.block(s, spec)(torch.randn(2, *new_space.slot_input_shape(s))).isfinite().all()

    labels = pd.read_csv(folder.run.labels_csv)
    new = labels[labels["source"] == "extend"]
    assert len(new) == 3 and len(labels) == 3 + len(pd.read_csv(base / "labels.csv"))
    assert all(any(b.kernel == 7 for b in Arch.from_string(a).blocks) for a in new["arch"])
    assert json.loads(folder.run.predictor_json.read_text())["n_labels"] == len(labels)

    table = LatencyTable.load(folder.run.latency("cpu").root)
    old_table = LatencyTable.load(base / "latency" / "cpu")
    for s in range(2):
        assert {o: table.slots[s].by_option[o] for o in old_table.slots[s].options} == old_table.slots[s].by_option
        assert len(table.slots[s].options) == 6
    from common.fileio import read_jsonl

    measured = {row["job"] for row in read_jsonl(folder.run.latency("cpu").root / "rows.jsonl")}
    assert sorted(j for j in measured if j.startswith("block/")) == sorted(f"block/{s}/{o}" for s in range(2)
                                                                          for o in added[s])
    assert record["tables"]["cpu"]["extended"] and table.conditions["extends"]["new_blocks"] == 4

    fronts = pd.read_csv(folder.front_csv)
    old_front, new_front = fronts[fronts["front"] == "before"], fronts[fronts["front"] == "after"]
    assert len(old_front) and len(new_front) and (old_front["new_options"] == 0).all()
    for _, m in old_front.iterrows():  # a superset's exact front is never worse
        assert ((new_front["predicted_ms"] <= m["predicted_ms"] + 1e-9)
                & (new_front["predicted_accuracy"] >= m["predicted_accuracy"] - 1e-9)).any()
    assert folder.front_png.stat().st_size > 10_000 and "## cpu" in folder.extend_md.read_text()
    made = [p for p in (base / "extend").rglob("*") if p.is_file()]
    assert len(made) > 20 and [str(p.relative_to(base)) for p in made if RunFolder(base).entry(p) is None] == []

    def refuse(*args, **kwargs):
        raise AssertionError("a finished extension must not label again")

    monkeypatch.setattr(labels_module, "label_one", refuse)
    stamps = {p: p.stat().st_mtime_ns for p in folder.added.library.glob("slot*.pt")}
    assert run_extend(base, space_file, num_labels=3, progress=False)["labels"]["added"] == 3  # resumes: no work
    assert {p: p.stat().st_mtime_ns for p in folder.added.library.glob("slot*.pt")} == stamps

    code = main(["search", "--workdir", str(folder.root), "--searcher", "exact", "--latency-device", "cpu",
                 "--target-ms", "100", "--quiet"])
    assert code == 0 and (folder.root / "search" / "exact" / "pareto.csv").is_file()

    with pytest.raises(ValueError, match="is itself an extension"):
        run_extend(folder.root, space_file, progress=False)
    changed = tmp_path / "changed" / "tiny-k7.json"  # the same name, other choices
    changed.parent.mkdir()
    changed.write_text(json.dumps({"tiny-k7": {**TINY, "choices": {**TINY["choices"], "kernel": [3, 5, 7, 9]}}}))
    with pytest.raises(ValueError, match="another version of space 'tiny-k7'"):
        run_extend(base, changed, progress=False)


def test_extend_refuses_a_space_that_is_not_a_superset(run, tmp_path):
    from donna.extend_stage import run_extend

    workdir, _, _ = run
    smaller = {**TINY, "choices": {**TINY["choices"], "kernel": [3]}}
    path = tmp_path / "smaller.json"
    path.write_text(json.dumps({"tiny-k3": smaller}))
    with pytest.raises(ValueError, match="slot 0 no longer offers"):
        run_extend(workdir, path, progress=False)
    wider = {**TINY, "slots": [{"stride": 1, "out_channels": 12}, TINY["slots"][1]],
             "choices": {**TINY["choices"], "kernel": [3, 5, 7]}}
    path.write_text(json.dumps({"tiny-wide": wider}))
    with pytest.raises(ValueError, match="slot 0 has stride 1 and 12 channels"):
        run_extend(workdir, path, progress=False)
    assert not (workdir / "extend").exists() or not any((workdir / "extend").iterdir())


def test_only_new_options_that_can_start_from_the_run_s_weights_are_warmed_and_get_controls():
    from donna.extend_stage import controls, warmed

    base = get_space_from(TINY, "tiny")
    wider = get_space_from({**TINY, "choices": {**TINY["choices"], "kernel": [3, 5, 7]}}, "tiny-k7")
    other = get_space_from({**TINY, "choices": {**TINY["choices"], "type": ["ds", "ir"]}}, "tiny-ds")
    k7 = [[o for o in wider.options(i) if o.kernel == 7] for i in range(2)]
    ds = [[o for o in other.options(i) if o.type == "ds"] for i in range(2)]
    assert warmed(base, k7, "supernet") == [{str(o) for o in opts} for opts in k7]
    assert warmed(base, ds, "supernet") == [set(), set()]  # no ds stage in the run's supernet: a random start
    assert warmed(base, k7, "independent") == [set(), set()]  # one module per option: nothing to share
    reference = base.reference()
    twins = controls(base, k7, warmed(base, k7, "supernet"), reference)
    assert all(t and all("k5" in name for name in t) for t in twins)
    assert all(str(reference.blocks[i]) not in twins[i] for i in range(2))


def get_space_from(body, name):
    from blocks import SearchSpace

    return SearchSpace.from_dict(name, body)
