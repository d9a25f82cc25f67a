"""The latency guarantee: the delivered model is re-measured in a fresh process, and a miss names what passes."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from donna.finetune_stage import measure_in_fresh_process, render_report, target_verdict
from donna.runfolder import RunFolder
from latency import export_onnx


def _run_with_front(tmp_path, rows):
    run = RunFolder(tmp_path)
    run.save_config("search", {"target_ms": 1.0, "device": "cpu"})
    folder = run.search("nsga2")
    folder.root.mkdir(parents=True)
    pd.DataFrame(rows).to_csv(folder.pareto_csv, index=False)
    return tmp_path


def test_a_miss_names_the_most_accurate_member_whose_ci_meets_the_target(tmp_path):
    workdir = _run_with_front(tmp_path, [
        {"key": "chosen", "predicted_accuracy": 0.90, "measured_ms": 0.98, "measured_ms_ci_high": 0.99},
        {"key": "ci-too-high", "predicted_accuracy": 0.89, "measured_ms": 0.97, "measured_ms_ci_high": 1.05},
        {"key": "passes", "predicted_accuracy": 0.85, "measured_ms": 0.80, "measured_ms_ci_high": 0.82},
        {"key": "passes-worse", "predicted_accuracy": 0.70, "measured_ms": 0.50, "measured_ms_ci_high": 0.52},
    ])
    verdict = target_verdict(workdir, {"key": "chosen", "latency_device": "cpu", "measured_ms": 1.02})
    assert verdict == {"target_ms": 1.0, "target_met": False, "next_passing": "passes"}
    assert target_verdict(workdir, {"key": "chosen", "latency_device": "cpu", "measured_ms": 0.99}) == \
        {"target_ms": 1.0, "target_met": True}
    # another device's search sets no target for this model
    assert target_verdict(workdir, {"key": "chosen", "latency_device": "v100", "measured_ms": 5.0})["target_ms"] is None


def test_the_report_names_the_next_member_on_a_miss():
    metrics = {"key": "k", "arch": "a", "predicted_accuracy": 0.9, "val_accuracy": 0.8, "test_accuracy": 0.8,
               "latency_device": "cpu", "predicted_ms": 1.0, "measured_ms": 1.2, "measured_ms_ci": [1.1, 1.3],
               "measured_noisy": False, "target_ms": 1.0, "target_met": False, "next_passing": "faster",
               "params": 10, "macs": 10, "teacher_val_accuracy": 0.9, "epochs": 1, "init": "bkd",
               "train_seconds": 1.0, "onnx_torch_top1_agreement": 1.0, "examples": 1, "onnx_test_accuracy": 0.8}
    text = render_report(metrics)
    assert "FAIL" in text and "donna finetune --arch faster" in text


def test_fresh_process_measurement_of_a_real_onnx_model(tmp_path):
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU()).eval()
    path = export_onnx(model, (3, 8, 8), path=tmp_path / "m.onnx")
    result = measure_in_fresh_process(path, "cpu")
    assert result["median_ms"] > 0 and result["ci_low_ms"] <= result["median_ms"] <= result["ci_high_ms"]
    with pytest.raises(RuntimeError, match="fresh process failed"):
        measure_in_fresh_process(tmp_path / "missing.onnx", "cpu")


def test_several_fresh_processes_give_the_median_of_medians_and_a_ci_spanning_them(tmp_path):
    from latency.measure import measure_in_fresh_processes

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU()).eval()
    path = export_onnx(model, (3, 8, 8), path=tmp_path / "m.onnx")
    result = measure_in_fresh_processes(path, "cpu", processes=3)
    each = result["process_ms"]
    assert len(each) == 3 and result["median_ms"] == sorted(each)[1]
    assert result["ci_low_ms"] <= min(each) and result["ci_high_ms"] >= max(each)
    with pytest.raises(ValueError, match="at least 1"):
        measure_in_fresh_processes(path, "cpu", processes=0)
