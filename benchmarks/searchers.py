"""Searcher benchmark: NSGA-II, random, PC-DARTS and DSO-NAS on one run folder (same space, predictor, latency table).

For every searcher, ``donna.search_stage.run_search`` runs under one latency target and the result is
reported: wall time (the searcher itself, then measuring the front on the device and writing the
outputs), front size and hypervolume (``search.json``; one shared reference, so the numbers compare;
the gradient searchers return a front of one), the selected architecture's measured latency against
the target and its predicted accuracy, and its accuracy after a short ``run_finetune`` from BKD
weights. PC-DARTS runs twice: faithful (no latency term, so it ignores the target) and with the
opt-in latency penalty (``latency_weight`` > 0). A searcher whose architecture misses the target is
reported as such (its architecture is still finetuned, marked as over the target).

The searches run in a scratch copy of the run folder (``--out``; the inputs are copied, the run folder
is left alone), and the device measurement cache is cleared before each searcher so that each pays
for its own measurements. The gradient searchers run short schedules by default (see
``--pcdarts-options`` and ``--dsonas-options``); their results are mechanics, not the papers' quality.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/searchers.py [--workdir runs/demo] [--target-ms T]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Run as a script, this file's folder comes first on sys.path and benchmarks/search.py would shadow the package.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)

import pandas as pd  # noqa: E402
import torch  # noqa: E402

import baselines  # noqa: E402,F401  (registers pc-darts and dso-nas before donna.search_stage asks about them)
from donna import search_stage  # noqa: E402
from donna.finetune_stage import FinetuneConfig, run_finetune  # noqa: E402
from donna.runfolder import RunFolder, SearchFolder, read_json  # noqa: E402
from donna.search_stage import SearchConfig, latency_table_for, run_search, run_space  # noqa: E402
from search import NoArchMeetsTarget, NSGA2Config  # noqa: E402

MARKER = ".bench-searchers"  # marks a scratch folder this script made (and may wipe)
PCDARTS_QUICK = {"epochs": 3, "warmup_epochs": 1, "max_steps_per_epoch": 6, "batch_size": 16}
DSONAS_QUICK = {"pretrain_epochs": 1, "search_epochs": 2, "max_steps_per_epoch": 6, "batch_size": 16}


@dataclass
class Variant:
    """One row of the benchmark: a registered searcher with its options, under its own folder name."""

    name: str  # folder under search/ and row label
    searcher: str  # registered searcher name
    options: dict[str, Any] = field(default_factory=dict)  # searcher_options of run_search


def print_header(args: argparse.Namespace) -> None:
    """What is measured, and on which machine."""
    print("Searcher benchmark: NSGA-II, random, PC-DARTS (faithful and latency penalty), DSO-NAS; same space, "
          "predictor and latency table")
    print(f"machine: {platform.platform()}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} torch threads, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
    print(f"workdir {args.workdir} (inputs copied to {args.out}), latency device {args.device!r}, seed {args.seed}, "
          f"finetune {args.finetune_epochs} epochs from BKD weights")


def ensure_predictor(workdir: Path, device: str, progress: bool) -> None:
    """Builds the predictor (with defaults) and the device's latency table when the run folder lacks them."""
    if not RunFolder(workdir).predictor_json.is_file():
        from donna.predictor_stage import build_predictor

        print(f"{workdir} has no predictor.json: running donna.predictor_stage.build_predictor with defaults first")
        build_predictor(workdir, progress=progress)
    latency_table_for(workdir, run_space(workdir), device, progress=progress)


def resolve_target(workdir: Path, device: str, given: float | None) -> float:
    """The target: as given, else the run's last search target, else ``donna run``'s default for the space."""
    if given:
        return given
    recorded = RunFolder(workdir).read_config().get("search") or {}
    if recorded.get("target_ms") and recorded.get("latency_device", recorded.get("device")) == device:
        return float(recorded["target_ms"])
    from donna.pipeline import default_target_ms

    return default_target_ms(workdir, device)


def prepare_scratch(workdir: Path, out: Path, device: str) -> None:
    """A fresh copy of the run folder's inputs (teacher, library, NSR, predictor, latency table) in ``out``."""
    if out.exists():
        if not (out / MARKER).is_file():
            raise SystemExit(f"{out} exists and was not made by this benchmark; pass another --out")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / MARKER).write_text("scratch folder of benchmarks/searchers.py; deleted on the next run\n")
    for source in inputs(RunFolder(workdir), device):
        target = out / source.relative_to(workdir)
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target)
        elif source.is_file():
            shutil.copy2(source, target)


def inputs(run: RunFolder, device: str) -> tuple[Path, ...]:
    """What a search and a finetune read in a run folder: settings, space, teacher, library, NSR, predictor, table."""
    return (run.config_json, run.space_json, run.teacher_json, run.teacher_pt, run.nsr_csv, run.labels_csv,
            run.predictor_json, run.library, run.latency(device).table_json)


@contextmanager
def timed_finalize(seconds: list[float]) -> Iterator[None]:
    """Times ``finalize_search`` (front measurement and output files) inside ``run_search``."""
    original = search_stage.finalize_search

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            seconds.append(time.perf_counter() - start)

    search_stage.finalize_search = wrapper
    try:
        yield
    finally:
        search_stage.finalize_search = original


def run_one_search(out: Path, variant: Variant, cfg: SearchConfig) -> dict[str, Any]:
    """Runs one search in ``out``; its chosen row (or the fastest when nothing meets the target) and timings."""
    RunFolder(out).latency(cfg.latency_device).measured_csv.unlink(missing_ok=True)  # each searcher measures its own
    finalize: list[float] = []
    start = time.perf_counter()
    with timed_finalize(finalize):
        try:
            chosen, meets = run_search(out, cfg, progress=False, searcher_options=variant.options).selected, True
        except NoArchMeetsTarget as err:
            chosen, meets = err.fastest, False
    total = time.perf_counter() - start
    folder = RunFolder(out).search(variant.name)
    if variant.name != variant.searcher:  # keep both PC-DARTS runs: each in its own folder
        shutil.move(RunFolder(out).search(variant.searcher).root, folder.root)
    info = read_json(folder.search_json) or {}
    measured = int(pd.read_csv(folder.pareto_csv)["measured_ms"].notna().sum())
    return {"chosen": chosen, "meets": meets, "folder": folder, "total_s": total,
            "measure_s": sum(finalize), "front": info.get("front_size"), "measured": measured,
            "evaluations": info.get("n_evaluations"), "hypervolume": info.get("hypervolume")}


def finetune_choice(out: Path, search: dict[str, Any], epochs: int, seed: int) -> dict[str, Any]:
    """A short ``run_finetune`` of the chosen architecture (``selected:<variant>``, or the fastest IR file)."""
    folder = search["folder"]
    arch = f"selected:{folder.name}" if search["meets"] else str(folder.member_json(search["chosen"]["key"]))
    return run_finetune(out, FinetuneConfig(arch=arch, epochs=epochs, seed=seed), progress=False)


def _pcdarts_details(prov: dict[str, Any]) -> str:
    slots = prov.get("slots", [])
    ratios = ", ".join(f"{s['op_prob'] * len(s['softmax_alpha']):.4f}" for s in slots)
    text = f"{prov['mode']}; chosen op's softmax(alpha) / uniform per slot: {ratios}"
    pen = prov.get("latency_penalty")
    if pen:
        text += (f"; penalty weight {pen['weight']}: expected cost {pen['expected_cost']:.4f} ms, derived arch "
                 f"{pen['derived_cost']:.4f} ms (fixed part {pen['fixed_cost']:.4f})")
    return text


def _dsonas_details(prov: dict[str, Any]) -> str:
    slots = prov.get("slots", [])
    zeros, total = sum(s["zero_lambdas"] for s in slots), sum(s["total_lambdas"] for s in slots)
    stages = (prov.get("sparsification") or {}).get("path") or []
    decided = [s.get("decided_by", "projection") for s in slots]
    return (f"zero lambdas {zeros}/{total}, removed ops {prov['stages']['removed_ops']}, collapsed slots "
            f"{sum(bool(s['collapsed']) for s in slots)}, depths {[s['depth'] for s in slots]}, "
            f"gamma {prov['penalty']['gamma']}; {len(stages)} sparsification stages"
            + (f" (gamma {stages[0]['gamma']:g} to {stages[-1]['gamma']:g})" if stages else "")
            + f"; op decided by {decided}")


EVOLUTION = {  # per-epoch columns of a gradient searcher's history.csv worth printing
    "pc-darts": ["generation", "evaluations", "arch_frozen", "alpha_entropy", "alpha_max_over_uniform", "loss"],
    "dso-nas": ["generation", "evaluations", "stage", "gamma", "zero_lambdas", "total_lambdas", "decided_slots",
                "loss"],
}


def evolution(folder: SearchFolder, searcher: str) -> str:
    """Per epoch: PC-DARTS's alpha entropy (1 = uniform) or DSO-NAS's lambda sparsity; and the search's peak memory."""
    history = folder.history_csv
    if searcher not in EVOLUTION or not history.is_file():
        return ""
    frame = pd.read_csv(history)
    frame = frame[[c for c in EVOLUTION[searcher] if c in frame.columns]]
    if "zero_lambdas" in frame:
        frame.insert(frame.columns.get_loc("zero_lambdas"), "lambda_sparsity",
                     frame["zero_lambdas"] / frame["total_lambdas"])
    memory = ((read_json(folder.search_json) or {}).get("settings") or {}).get("memory") or {}
    text = f"{folder.name} per epoch (search steps = evaluations):\n{frame.to_string(index=False, na_rep='-')}"
    if memory:
        text += (f"\n{folder.name} memory: batch {memory.get('batch_size')} of {memory.get('requested_batch_size')}, "
                 f"budget {memory.get('budget_gb')} GB ({memory.get('budget_from')}), predicted peak "
                 f"{memory.get('predicted_peak_gb')} GB, measured peak {memory.get('peak_gb')} GB")
    return text


def gradient_details(folder: SearchFolder, key: str) -> str:
    """What a gradient searcher's provenance says about its choice (empty for the population searchers)."""
    prov = (read_json(folder.member_json(key)) or {}).get("provenance") or {}
    details = {"pc-darts": _pcdarts_details, "dso-nas": _dsonas_details}.get(prov.get("method"))
    return details(prov) if details else ""


def table_row(variant: Variant, search: dict[str, Any] | None, tuned: dict[str, Any] | None,
              error: str | None) -> dict[str, Any]:
    """One printed row: timings, front, latency against the target, predicted and finetuned accuracy."""
    row: dict[str, Any] = {"searcher": variant.name}
    if search is not None:
        chosen = search["chosen"]
        row.update({
            "search s": f"{search['total_s'] - search['measure_s']:.1f}",
            "measure+write s": f"{search['measure_s']:.1f}",
            "evals": search["evaluations"], "front": search["front"], "measured": search["measured"],
            "hypervolume": search["hypervolume"], "key": chosen.get("key"),
            "pred ms": chosen.get("predicted_ms"), "measured ms": chosen.get("measured_ms"),
            "<= target": "yes" if search["meets"] else "NO (fastest)", "pred acc": chosen.get("predicted_accuracy"),
        })
    if tuned is not None:
        row.update({"ft val": tuned["val_accuracy"], "ft test": tuned["test_accuracy"],
                    "ft measured ms": tuned["measured_ms"], "ft s": f"{tuned['train_seconds']:.1f}"})
    row["note"] = error or (gradient_details(search["folder"], search["chosen"]["key"]) if search else "")
    row["evolution"] = evolution(search["folder"], variant.searcher) if search else ""
    return row


def run_variant(out: Path, variant: Variant, args: argparse.Namespace, target_ms: float) -> dict[str, Any]:
    """Search, then finetune; a failure is reported in the row instead of stopping the benchmark."""
    population = {"pop_size": args.pop_size, "generations": args.generations}
    cfg = SearchConfig(latency_device=args.device, target_ms=target_ms, searcher=variant.searcher, seed=args.seed,
                       settings=population if variant.searcher in ("nsga2", "random") else {})
    search = tuned = error = None
    try:
        search = run_one_search(out, variant, cfg)
        tuned = finetune_choice(out, search, args.finetune_epochs, args.seed)
    except Exception as err:  # one searcher's failure is a result, not the end of the benchmark
        traceback.print_exc()
        error = f"{type(err).__name__}: {err}"[:200]
    return table_row(variant, search, tuned, error)


def variants(args: argparse.Namespace) -> list[Variant]:
    """The searchers to compare, in order, filtered by ``--only``."""
    pcdarts = {**PCDARTS_QUICK, **json.loads(args.pcdarts_options)}
    dsonas = {**DSONAS_QUICK, **json.loads(args.dsonas_options)}
    every = [
        Variant("nsga2", "nsga2"), Variant("random", "random"),
        Variant("pc-darts-faithful", "pc-darts", {**pcdarts, "latency_weight": 0.0}),
        Variant("pc-darts-latency", "pc-darts", {**pcdarts, "latency_weight": args.latency_weight}),
        Variant("dso-nas", "dso-nas", dsonas),
    ]
    return [v for v in every if not args.only or v.name in args.only]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", default="runs/demo", help="run folder with teacher, BKD library, predictor")
    parser.add_argument("--out", default=None, help="scratch run folder (default: <workdir>-bench-searchers)")
    parser.add_argument("--device", default="cpu", help="latency device profile")
    parser.add_argument("--target-ms", type=float, default=None,
                        help="latency target (default: the run's last search target, else donna run's default)")
    parser.add_argument("--pop-size", type=int, default=NSGA2Config.pop_size, help="NSGA-II / random population")
    parser.add_argument("--generations", type=int, default=NSGA2Config.generations, help="NSGA-II / random rounds")
    parser.add_argument("--pcdarts-options", default="{}", help=f"JSON over PC-DARTS's quick options {PCDARTS_QUICK}")
    parser.add_argument("--dsonas-options", default="{}", help=f"JSON over DSO-NAS's quick options {DSONAS_QUICK}")
    parser.add_argument("--latency-weight", type=float, default=1.0, help="PC-DARTS opt-in penalty weight")
    parser.add_argument("--finetune-epochs", type=int, default=3, help="finetune epochs of each selected arch")
    parser.add_argument("--seed", type=int, default=0, help="seed of every search and finetune")
    parser.add_argument("--only", nargs="+", default=None,
                        help="subset of: nsga2 random pc-darts-faithful pc-darts-latency dso-nas")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--progress", action="store_true", help="tqdm bars while preparing a missing run")
    args = parser.parse_args(argv)
    args.out = args.out or f"{args.workdir.rstrip('/')}-bench-searchers"
    return args


def main(argv: list[str] | None = None) -> None:
    """Runs every searcher and prints the table."""
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    workdir, out = Path(args.workdir), Path(args.out)
    print_header(args)
    ensure_predictor(workdir, args.device, args.progress)
    target_ms = resolve_target(workdir, args.device, args.target_ms)
    print(f"latency target {target_ms} ms on {args.device!r}")
    prepare_scratch(workdir, out, args.device)
    rows = []
    for variant in variants(args):
        print(f"-- {variant.name} {variant.options or ''}", flush=True)
        rows.append(run_variant(out, variant, args, target_ms))
    frame = pd.DataFrame(rows)
    print(f"\nTarget {target_ms} ms on {args.device!r}; latencies in ms; accuracies on the val split "
          f"(ft test: test split); outputs in {out}/search/<searcher>")
    print(frame.drop(columns=["note", "evolution"]).to_string(index=False, float_format=_fmt, na_rep="-"))
    for row in rows:
        if row["note"]:
            print(f"{row['searcher']}: {row['note']}")
    for row in rows:
        if row["evolution"]:
            print(f"\n{row['evolution']}")


def _fmt(value: float) -> str:
    return f"{value:.4f}" if abs(value) < 10 else f"{value:.1f}"


if __name__ == "__main__":
    main()
