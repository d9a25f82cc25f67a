"""``donna compress``: faster versions of a trained model for a device (DONNA's hardware-aware model compression).

The model is the teacher. Its blocks become the slots of a space of cheaper options that keep every slot's
shapes (``blocks.compress``), and the usual pipeline runs on it once: blockwise distillation from the model,
NSR, labels and the predictor, the device's latency table. Then, per latency target (a share of the model's own
latency, measured in a fresh process), one search and one finetune from the distilled blocks. ``compress/``
holds the derived space, the model as a teacher checkpoint, and ``compress.csv`` / ``compress.md``: the model and
each compressed version side by side (measured latency, test accuracy, params, MACs, ONNX file).
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from blocks import Arch, build_model, count_params_macs
from blocks.compress import compression_space_dict
from common.fileio import atomic_save, atomic_write_text
from donna.config import FinetuneConfig, SearchConfig
from donna.predictor_stage import PredictorRunConfig
from donna.runfolder import RunFolder, read_json, write_json

log = logging.getLogger(__name__)


def model_checkpoint(model: str | Path, out: Path) -> tuple[Path, Arch]:
    """The model to compress as a teacher checkpoint (``out``) and its architecture.

    ``model`` is a run's ``teacher.pt`` (or any teacher checkpoint donna wrote) or a finetune folder
    (``finetune/<key>/`` with ``arch.json`` and ``model.pt``).

    Raises:
        ValueError: neither, or a torchvision teacher (its blocks are not in donna's IR).
    """
    from donna.teacher import TEACHER_FORMAT

    path = Path(model)
    if path.is_dir() and (path / "arch.json").is_file() and (path / "model.pt").is_file():
        arch = Arch.from_json(path / "arch.json")
        state = torch.load(path / "model.pt", map_location="cpu", weights_only=True)
    elif path.is_file() and path.suffix == ".pt":
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(ckpt, dict) or ckpt.get("format") != TEACHER_FORMAT:
            raise ValueError(f"--model {path}: not a teacher checkpoint written by donna (a run's teacher.pt)")
        if "torchvision" in ckpt:
            raise ValueError(f"--model {path}: a torchvision network; compression needs donna's block IR (a run's "
                             "teacher.pt of a donna architecture, or a finetune folder)")
        arch, state = Arch.from_dict(ckpt["arch"]), ckpt["state_dict"]
    else:
        raise ValueError(f"--model {path}: give a run's teacher.pt or a finetune folder (finetune/<key>/ with "
                         "arch.json and model.pt)")
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_save(out, lambda p: torch.save({"format": TEACHER_FORMAT, "arch": arch.to_dict(), "state_dict": state,
                                           "fingerprint": f"compress:{arch.key}"}, p))
    return out, arch


def run_compress(workdir: str | Path, model: str | Path, fractions: list[float], predictor_cfg: PredictorRunConfig,
                 search_cfg: SearchConfig, finetune_cfg: FinetuneConfig, progress: bool = True) -> pd.DataFrame:
    """Compresses ``model`` to each share of its measured latency in ``fractions``; returns ``compress.csv``'s rows.

    Every stage resumes as in ``donna run`` (a killed call continues where it stopped).

    Raises:
        ValueError: a bad model or share (each must be in (0, 1)).
    """
    from donna.finetune_stage import _run_inputs, measure_in_fresh_processes, run_finetune
    from donna.predictor_stage import build_predictor, summary
    from donna.search_stage import latency_table_for, run_search, run_space
    from donna.train import evaluate
    from latency import export_onnx
    from latency.cli import table_executor

    if not fractions or any(not 0 < f < 1 for f in fractions):
        raise ValueError(f"--target-fraction: shares of the model's latency in (0, 1), e.g. 0.5 0.75; got {fractions}")
    workdir = Path(workdir)
    folder = RunFolder(workdir).compress
    teacher_pt, arch = model_checkpoint(model, folder.model_pt)
    space_file = folder.space_json
    atomic_write_text(space_file, json.dumps({f"compress-{arch.key}": compression_space_dict(arch)}, indent=1))
    device = search_cfg.latency_device
    onnx_path = export_onnx(arch, cache_dir=RunFolder(workdir).exports)
    original = read_json(folder.original_json)  # a resumed call keeps the targets (and searches) of the first
    if original is None or original.get("device") != device or original.get("key") != arch.key:
        original = {**measure_in_fresh_processes(onnx_path, device, finetune_cfg.check_processes), "device": device,
                    "key": arch.key}
        write_json(folder.original_json, original)
    targets = [round(f * original["median_ms"], 4) for f in fractions]
    print(f"model {arch.key}: {original['median_ms']:.4f} ms on {device}; targets "
          + ", ".join(f"{t:g} ms ({f:.0%})" for f, t in zip(fractions, targets)))
    cfg = replace(predictor_cfg, space=str(space_file),
                  teacher=replace(predictor_cfg.teacher, source=str(teacher_pt), weights=None))
    print("\n" + summary(build_predictor(workdir, cfg, progress)) + "\n")
    latency_table_for(workdir, run_space(workdir), device, search_cfg.force, progress,
                      table_executor(search_cfg.table_executor, device, search_cfg.ray_address))
    data, teacher, _ = _run_inputs(workdir)
    params, macs = count_params_macs(build_model(arch), (arch.in_channels, arch.input_size, arch.input_size))
    rows: list[dict[str, Any]] = [{
        "model": "original", "key": arch.key, "target_ms": None, "measured_ms": original["median_ms"],
        "test_accuracy": evaluate(teacher, data.test), "val_accuracy": evaluate(teacher, data.val),
        "params": params, "macs": macs, "onnx": str(onnx_path), "target_met": None, "next_passing": None}]
    for fraction, target in zip(fractions, targets):
        name = f"compress-{round(fraction * 100)}"
        run_search(workdir, replace(search_cfg, target_ms=target, name=name), progress=progress)
        m = run_finetune(workdir, replace(finetune_cfg, arch=f"selected:{name}", latency_device=device),
                         progress=progress)
        rows.append({"model": f"{fraction:.0%} of the model's latency", "key": m["key"], "target_ms": target,
                     "measured_ms": m.get("measured_ms"), "test_accuracy": m["test_accuracy"],
                     "val_accuracy": m["val_accuracy"], "params": m["params"], "macs": m["macs"],
                     "onnx": str(Path(m["out"]) / "model.onnx"), "target_met": m.get("target_met"),
                     "next_passing": m.get("next_passing")})
    table = pd.DataFrame(rows)
    atomic_write_text(folder.compress_csv, table.to_csv(index=False))
    atomic_write_text(folder.compress_md, render(table, device))
    return table


def render(table: pd.DataFrame, device: str) -> str:
    """``compress.md``: the model and its compressed versions side by side."""
    first = table.iloc[0]

    def ratio(a: Any, b: Any) -> str:
        return f"{a / b:.2f}x" if a and b else "n/a"

    lines = [f"# donna compress: {first['key']} on {device}", "",
             "| model | key | target, ms | measured, ms | speed-up | test accuracy | params | MACs | target |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for _, r in table.iterrows():
        verdict = {True: "PASS", False: "FAIL"}.get(r["target_met"], "")
        if verdict == "FAIL" and isinstance(r.get("next_passing"), str):
            verdict += f" (next member that meets it: `{r['next_passing']}`, `donna finetune --arch KEY`)"
        target = "" if pd.isna(r["target_ms"]) else f"{r['target_ms']:.4f}"
        measured = "n/a" if pd.isna(r["measured_ms"]) else f"{r['measured_ms']:.4f}"
        lines.append(f"| {r['model']} | `{r['key']}` | {target} | {measured} | "
                     f"{ratio(first['measured_ms'], r['measured_ms'])} | {r['test_accuracy']:.4f} | "
                     f"{r['params']:,} | {r['macs']:,} | {verdict} |")
    lines += ["", "Latency measured in a fresh process (`latency bench`); the compressed models are finetuned from "
              "their blocks distilled from the model, with distillation from it. ONNX files: the `onnx` column of "
              "`compress.csv`."]
    return "\n".join(lines) + "\n"
