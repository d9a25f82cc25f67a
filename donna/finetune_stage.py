"""``donna finetune``: the chosen architecture from its BKD block weights, finetuned with distillation
from the teacher, exported to ONNX (checked against torch on the test split), measured on the device,
and reported next to what the predictor and the latency table promised (DONNA step 6)."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from blocks import Arch, SearchSpace, count_params_macs
from blocks.convert import arch_to_json
from blocks.teachers import TeacherParts
from common.device import torch_device
from common.fileio import atomic_save, atomic_write_text
from donna import distributed
from donna.config import DataConfig, FinetuneConfig, TeacherConfig, section_from_dict
from donna.data import DataSplits, load_data
from donna.predictor import PREDICTS, predicted_text
from donna.runfolder import FinetuneFolder, RunFolder, fingerprint, read_json, save_config, write_json
from donna.search_stage import run_space
from donna.train import TrainHistory, evaluate, predict_logits, resumed_epoch, train
from latency.measure import measure_in_fresh_process, measure_in_fresh_processes  # noqa: F401 (re-exported)


def resolve_run_arch(workdir: Path, ref: str, space: SearchSpace) -> Arch:
    """The architecture ``ref`` names in a run folder, validated against its space."""
    if ref == "selected" or ref.startswith("selected:"):
        arch = _selected(workdir, ref.partition(":")[2])
    elif ref.endswith(".json"):
        arch = Arch.from_json(Path(ref))
    else:
        found = [f.member_json(ref) for f in RunFolder(workdir).searches() if f.member_json(ref).is_file()]
        if not found:
            raise ValueError(f"no architecture with key {ref!r} on any front in {workdir}/search; "
                             "pass --arch selected, a key from pareto.csv or an IR .json file")
        arch = Arch.from_json(found[0])
    return space.validate(arch)


def _selected(workdir: Path, searcher: str) -> Arch:
    run = RunFolder(workdir)
    folders = [run.search(searcher)] if searcher else run.searches()
    found = sorted((f.selected_json for f in folders if f.selected_json.is_file()),
                   key=lambda p: p.stat().st_mtime)
    if not found:
        raise ValueError(f"no selected architecture in {run.search(searcher or '*').selected_json}; "
                         f"run `donna search --workdir {workdir} "
                         "--device D --target-ms T` first")
    return Arch.from_dict(json.loads(found[-1].read_text())["ir"])


def _run_inputs(workdir: Path) -> tuple[DataSplits, TeacherParts, SearchSpace]:
    from donna.teacher import get_teacher

    config = RunFolder(workdir).read_config()
    space = run_space(workdir)
    data = load_data(section_from_dict(DataConfig, config["data"]), space.input_size, space.in_channels)
    teacher = get_teacher(section_from_dict(TeacherConfig, config["teacher"]), space, data, workdir, progress=False)
    return data, teacher, space


def _initial_model(arch: Arch, cfg: FinetuneConfig, workdir: Path, teacher: TeacherParts,
                   space: SearchSpace, data: DataSplits) -> torch.nn.Module:
    from blocks import build_model
    from donna.assemble import assemble_recalibrated

    if cfg.init == "scratch":
        torch.manual_seed(cfg.seed)
        return build_model(arch)
    if cfg.init != "bkd":
        raise ValueError(f"init {cfg.init!r} is not one of: bkd, scratch")
    return assemble_recalibrated(arch, workdir, teacher, data.train, space=space, mode=cfg.recalibrate,
                                 num_batches=cfg.recal_batches, seed=cfg.seed)


def finetune_model(arch: Arch, cfg: FinetuneConfig, workdir: Path, data: DataSplits, teacher: TeacherParts,
                   space: SearchSpace, out: Path, progress: bool = True) -> tuple[torch.nn.Module, TrainHistory]:
    """Assembles (or initialises) ``arch`` and finetunes it, checkpointing every epoch in ``out``."""
    from tqdm.auto import tqdm

    device = torch_device(cfg.train_device)
    model = _initial_model(arch, cfg, workdir, teacher, space, data).to(device)
    logits = predict_logits(teacher, data.train, device=device) if cfg.kd_weight > 0 else None
    recipe = cfg.train_config()
    checkpoint = FinetuneFolder(out).checkpoint(fingerprint(asdict(recipe)))  # another recipe starts afresh
    bar = tqdm(total=cfg.epochs, initial=resumed_epoch(checkpoint), desc=f"finetune {arch.key}",
               disable=not progress or not distributed.is_main())

    def on_epoch(epoch: int, loss: float, acc: float) -> None:
        bar.n = epoch + 1
        bar.set_postfix(loss=f"{loss:.3f}", val_acc=f"{acc:.4f}")
    history = train(model, data.train, data.val, recipe, teacher_logits=logits, checkpoint=checkpoint,
                    on_epoch=on_epoch, device=device)
    bar.close()
    return model.cpu().eval(), history


def check_onnx_top1(onnx_path: Path, model: torch.nn.Module, split) -> dict[str, float]:
    """Top-1 of the ONNX model in ONNX Runtime against torch on every example of ``split`` (batch 1)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    torch_logits = predict_logits(model, split, device=torch.device("cpu")).numpy()
    onnx_top1, labels = [], []
    for i in range(len(split)):
        x, y = split[i][:2]
        onnx_top1.append(int(session.run(None, {name: x[None].numpy()})[0].argmax()))
        labels.append(int(y))
    onnx_top1, labels = np.array(onnx_top1), np.array(labels)
    return {"onnx_torch_top1_agreement": float((onnx_top1 == torch_logits.argmax(1)).mean()),
            "onnx_test_accuracy": float((onnx_top1 == labels).mean()), "examples": len(labels)}


def run_finetune(workdir: str | Path, cfg: FinetuneConfig | None = None, progress: bool = True) -> dict[str, Any]:
    """Finetunes, exports, checks, measures and reports; writes ``finetune/<key>/`` (``RunFolder.finetune``).

    ``cfg`` defaults to ``FinetuneConfig()`` (the latest search's selection). Returns the metrics of
    ``metrics.json`` with ``out``, the output folder (and ``skipped`` when it was already done).

    When the latency device is not reachable here (a V100 profile on a laptop), the model is still finetuned,
    exported and checked; the report says "not measured here" and gives the ``latency bench`` command to run
    on the device machine.

    Under ``torchrun`` (``donna.distributed``) every rank trains its share of each batch and only rank 0 writes;
    the other ranks return ``{"key", "rank", "out", "val_accuracy"}``.
    """
    from latency.devices import unreachable_reason

    workdir, cfg = Path(workdir), cfg or FinetuneConfig()
    data, teacher, space = _run_inputs(workdir)
    arch = resolve_run_arch(workdir, cfg.arch, space)
    fp = finetune_fingerprint(workdir, arch, cfg)
    folder = output_folder(workdir, arch, cfg, fp)
    out = folder.root
    done = read_json(folder.metrics_json)
    if done is not None and done.get("fingerprint") == fp and folder.model_onnx.is_file():
        if bool(done.get("dynamic_batch")) != cfg.dynamic_batch:  # only the export changes: not retrained
            done = _reexport(folder, arch, data, cfg, workdir, done)
        return {**done, "out": str(out), "skipped": True}  # finished with these inputs: nothing is redone
    unreachable = unreachable_reason(cfg.latency_device)  # checked before training: a profile typo fails now
    start = time.perf_counter()
    device = torch_device(cfg.train_device)
    model, history = finetune_model(arch, cfg, workdir, data, teacher, space, out, progress)
    seconds = time.perf_counter() - start
    if not distributed.is_main():  # under torchrun, rank 0 alone exports, measures and writes
        return {"key": arch.key, "rank": distributed.rank(), "out": str(out),
                "val_accuracy": history.val_accuracy[-1]}
    atomic_save(folder.model_pt, lambda p: torch.save(model.state_dict(), p))
    deploy = deployment(data)
    arch_to_json(arch, folder.arch_json, extra=deploy)
    onnx_path = deliver_onnx(folder, arch, model, deploy, cfg.dynamic_batch, RunFolder(workdir).exports)
    shape = (arch.in_channels, arch.input_size, arch.input_size)
    params, macs = count_params_macs(model, shape)
    metrics = {
        "key": arch.key, "arch": arch.to_string(), "init": cfg.init, "epochs": cfg.epochs,
        "val_accuracy": history.val_accuracy[-1], "test_accuracy": evaluate(model, data.test, device=device),
        "teacher_val_accuracy": evaluate(teacher, data.val, device=device),
        "predicted_accuracy": _predicted_accuracy(workdir, arch),
        "predicted_ms": _predicted_ms(workdir, arch, cfg.latency_device),
        **_measure(onnx_path, cfg.latency_device, unreachable, workdir, out, cfg.check_processes),
        "latency_device": cfg.latency_device, "params": params, "macs": macs, "train_seconds": seconds,
        "history": asdict(history), **check_onnx_top1(onnx_path, model, data.test), "fingerprint": fp,
        "dynamic_batch": cfg.dynamic_batch, **deploy,
    }
    metrics.update(target_verdict(workdir, metrics))
    save_config(workdir, "finetune", asdict(cfg))  # recorded once the stage has a result (a failure changes nothing)
    write_json(folder.metrics_json, metrics)
    for checkpoint in folder.checkpoints():  # the stage is done: its resume points go
        checkpoint.unlink(missing_ok=True)
    _plot_curve(history, folder.curve_png, arch.key)
    atomic_write_text(folder.report_md, render_report(metrics))
    return {**metrics, "out": str(out)}


def deployment(data: DataSplits) -> dict[str, Any]:
    """What a deployed model needs besides its weights: the preprocessing of its input and its class names (in
    ``arch.json``, ``metrics.json`` and the ONNX metadata)."""
    return {"preprocessing": data.preprocessing(), "classes": list(data.classes)}


def deliver_onnx(folder: FinetuneFolder, arch: Arch, model: torch.nn.Module, deploy: dict[str, Any],
                 dynamic_batch: bool, cache_dir: Path) -> Path:
    """Writes ``model.onnx`` (batch 1, or a symbolic batch dimension with ``dynamic_batch``) with ``deploy`` in
    its metadata."""
    from latency import export_onnx

    shape = (arch.in_channels, arch.input_size, arch.input_size)
    path = export_onnx(model, shape, path=folder.model_onnx, cache_dir=cache_dir, dynamic_batch=dynamic_batch)
    annotate_onnx(path, deploy)
    return path


def _reexport(folder: FinetuneFolder, arch: Arch, data: DataSplits, cfg: FinetuneConfig, workdir: Path,
              done: dict[str, Any]) -> dict[str, Any]:
    """A finished finetune's ``model.onnx`` exported again from ``model.pt`` with the batch ``cfg`` asks for,
    checked against torch again; returns the updated metrics."""
    from blocks import build_model

    model = build_model(arch)
    model.load_state_dict(torch.load(folder.model_pt, map_location="cpu", weights_only=True))
    model.eval()
    path = deliver_onnx(folder, arch, model, deployment(data), cfg.dynamic_batch, RunFolder(workdir).exports)
    done = {**done, **check_onnx_top1(path, model, data.test), "dynamic_batch": cfg.dynamic_batch}
    write_json(folder.metrics_json, done)
    atomic_write_text(folder.report_md, render_report(done))
    return done


def annotate_onnx(path: Path, info: dict[str, Any]) -> None:
    """Writes ``info`` (preprocessing, class names) into the ONNX model's metadata, one JSON value per key, so
    the model file alone says how to feed it and what its outputs mean."""
    import onnx

    model = onnx.load(str(path))
    onnx.helper.set_model_props(model, {k: json.dumps(v) for k, v in info.items()})
    atomic_save(path, lambda p: onnx.save(model, str(p)))


def finetune_fingerprint(workdir: Path, arch: Arch, cfg: FinetuneConfig) -> str:
    """What a finetune's outputs depend on: the architecture, the recipe, the teacher and the block library."""
    recipe = cfg.fingerprint()  # the architecture enters by its key, not by how --arch named it
    run = RunFolder(workdir)
    library = [(read_json(p) or {}).get("fingerprint") for p in run.slot_manifests()]
    teacher = (read_json(run.teacher_json) or {}).get("fingerprint")
    return fingerprint({"arch": arch.key, "recipe": recipe, "library": library, "teacher": teacher})


def output_folder(workdir: Path, arch: Arch, cfg: FinetuneConfig, fp: str) -> FinetuneFolder:
    """``finetune/<key>/`` (``<key>-scratch`` from scratch); a finished result of other inputs there is kept and
    this one goes to ``finetune/<key>-<fingerprint>/``, so no finished model is ever replaced by another."""
    name = arch.key if cfg.init == "bkd" else f"{arch.key}-{cfg.init}"
    out = RunFolder(workdir).finetune(name)
    done = read_json(out.metrics_json)
    if done is not None and done.get("fingerprint") != fp:
        return RunFolder(workdir).finetune(f"{name}-{fp[:8]}")
    return out


def target_verdict(workdir: Path, metrics: dict[str, Any]) -> dict[str, Any]:
    """The search's latency target (when the run has one for this device) and whether the final model meets it.

    ``target_met`` is None when there is no target or nothing was measured here. When the model misses the
    target, ``next_passing`` names the most accurate front member faster than it whose measured latency
    (upper end of its CI) meets the target, to finetune instead (``--arch KEY``); None when the front has none.
    """
    search = RunFolder(workdir).read_config().get("search") or {}
    device = search.get("latency_device", search.get("device"))  # "device" in run folders of earlier versions
    target = search.get("target_ms") if device == metrics["latency_device"] else None
    met = None if target is None or metrics.get("measured_ms") is None else bool(metrics["measured_ms"] <= target)
    verdict: dict[str, Any] = {"target_ms": target, "target_met": met}
    if met is False:
        verdict["next_passing"] = next_passing(workdir, metrics["key"], target)
    return verdict


def next_passing(workdir: Path, key: str, target_ms: float) -> str | None:
    """The most accurate measured front member other than ``key`` whose CI's upper end meets ``target_ms`` (the
    slower of its two measurements where the search confirmed it in a fresh process)."""
    columns = ["key", "latency", "predicted_accuracy"]
    fronts = [pd.read_csv(f.pareto_csv) for f in RunFolder(workdir).searches() if f.pareto_csv.is_file()]
    # the slower of a member's two measurements where it was confirmed in a fresh process (selection_ms)
    bound = [next((c for c in ("selection_ms", "measured_ms_ci_high") if c in f), None) for f in fronts]
    rows = pd.concat([f.assign(latency=f[c])[columns] for f, c in zip(fronts, bound)
                      if c is not None and {"key", "predicted_accuracy"} <= set(f.columns)]
                     or [pd.DataFrame(columns=columns)], ignore_index=True)
    ok = rows[(rows["key"] != key) & (rows["latency"].astype(float) <= target_ms)]
    return None if ok.empty else str(ok.loc[ok["predicted_accuracy"].astype(float).idxmax(), "key"])


def _measure(onnx_path: Path, device: str, unreachable: str | None, workdir: Path, out: Path,
             processes: int = 3) -> dict[str, Any]:
    """The measured latency of the exported model, or why it was not measured and the command that measures it."""
    if unreachable is not None:
        return {"measured_ms": None, "measured_ms_ci": None, "measured_noisy": None, "measured_here": False,
                "not_measured_why": unreachable,
                "measure_command": f"cd {workdir} && latency bench "
                                   f"{FinetuneFolder(out).model_onnx.relative_to(workdir)} --device {device}"}
    measured = measure_in_fresh_processes(onnx_path, device, processes)
    return {"measured_ms": measured["median_ms"], "measured_ms_ci": [measured["ci_low_ms"], measured["ci_high_ms"]],
            "measured_process_ms": measured["process_ms"], "measured_noisy": measured["noisy"],
            "measured_here": True,
            "measured_in": "fresh process" if processes == 1 else f"{processes} fresh processes (median of medians)"}


def _predicted_accuracy(workdir: Path, arch: Arch) -> float | None:
    from donna.predictor import AccuracyPredictor

    run = RunFolder(workdir)
    if not run.predictor_json.is_file():
        return None
    nsr = pd.read_csv(run.nsr_csv)
    return float(AccuracyPredictor.load(run.predictor_json).predict_archs([arch], nsr, run_space(workdir))[0])


def _predicted_ms(workdir: Path, arch: Arch, device: str) -> float | None:
    from latency import LatencyTable

    folder = RunFolder(workdir).latency(device)
    found = folder.table_json.is_file()
    return float(LatencyTable.load(folder.root, device=device, force=True).predict(arch)) if found else None


def _plot_curve(history: TrainHistory, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    epochs = np.arange(1, len(history.val_accuracy) + 1)
    ax.plot(epochs, history.val_accuracy, "o-", label="val accuracy")
    ax.set_xlabel("epoch")
    ax.set_ylabel("val accuracy")
    ax2 = ax.twinx()
    ax2.plot(epochs, history.train_loss, "s--", color="tab:orange", label="train loss")
    ax2.set_ylabel("train loss")
    ax.set_title(f"finetune {title}")
    fig.legend(loc="lower center", ncol=2, fontsize=8)
    fig.tight_layout()
    atomic_save(path, lambda p: fig.savefig(p, format="png", dpi=120))
    plt.close(fig)


def _fmt(value: Any, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def render_report(m: dict[str, Any]) -> str:
    """``report.md``: promised against achieved, in a table a person reads at a glance."""
    if m.get("measured_ms") is None:
        latency = (f"not measured here ({m.get('not_measured_why')}); measure it on the device: "
                   f"`{m.get('measure_command')}`")
    else:
        ci, each = m["measured_ms_ci"], m.get("measured_process_ms") or []
        where = (f" in {len(each)} fresh processes ({', '.join(f'{v:.4f}' for v in each)}; median of medians, CI "
                 "spanning theirs)" if len(each) > 1 else "")
        latency = (f"{m['measured_ms']:.4f} ms median (95% CI {ci[0]:.4f}-{ci[1]:.4f}){where}"
                   f"{' NOISY' if m['measured_noisy'] else ''}")
    return "\n".join([
        f"# Finetune report: {m['key']}", "", f"`{m['arch']}`", "",
        "| | predicted | achieved |", "| --- | --- | --- |",
        f"| accuracy | {predicted_text(m['predicted_accuracy'])} (predictor: {PREDICTS}) | "
        f"{m['val_accuracy']:.4f} val, {m['test_accuracy']:.4f} test |",
        f"| latency on `{m['latency_device']}` | {_fmt(m['predicted_ms'], '.4f')} ms (table) | {latency} |",
        f"| latency target | {_fmt(m.get('target_ms'), '.4f')} ms | "
        f"{ {True: 'PASS', False: 'FAIL', None: 'n/a'}[m.get('target_met')]} |",
        *([f"| next front member that meets the target | `{m['next_passing']}` | "
           f"`donna finetune --arch {m['next_passing']}` |"] if m.get("next_passing") else []),
        "", f"- params {m['params']:,}, MACs {m['macs']:,}; teacher val accuracy {m['teacher_val_accuracy']:.4f}",
        f"- {m['epochs']} epochs from {m['init']} initialisation in {m['train_seconds']:.0f} s",
        f"- ONNX Runtime agrees with torch on top-1 for {m['onnx_torch_top1_agreement']:.2%} of the "
        f"{m['examples']} test images (ONNX test accuracy {m['onnx_test_accuracy']:.4f})",
        f"- files: model.pt (state_dict), model.onnx (batch {'dynamic' if m.get('dynamic_batch') else 1}), "
        "arch.json (with preprocessing and class names), metrics.json, curve.png", "",
        "![training curve](curve.png)", ""])
