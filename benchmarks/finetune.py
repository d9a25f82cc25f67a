"""Finetune benchmark: BKD initialisation + distillation against the same architecture from scratch.

Measures val accuracy after every epoch for (a) the architecture assembled from its BKD block weights,
recalibrated and finetuned with distillation from the teacher (``FinetuneConfig(init="bkd")``, DONNA step 6)
for ``--bkd-epochs`` (default a third of ``--epochs``) and (b) the same architecture from fresh weights with
the same recipe and seeds for ``--epochs`` (``init="scratch"``, three times the epochs). Goal: (a) reaches
(b)'s final val accuracy within its own epochs, i.e. in at most a third of scratch's; the answer is the first
epoch at which (a) >= (b)'s final, per seed.

The run folder must hold a predictor and a selected architecture; when it does not, the script runs
``donna.predictor_stage.build_predictor`` and ``donna.search_stage.run_search`` with their defaults first
(the search target is ``donna run``'s default: the 30th latency percentile of the space) and says so.
Checkpoints go to a temporary folder, so the run folder's ``finetune/`` is left alone.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/finetune.py [--workdir runs/demo] [--epochs 10]
[--seeds 0 1 2]``
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

# Run as a script, this file's folder comes first on sys.path and benchmarks/search.py would shadow the package.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)

import pandas as pd  # noqa: E402
import torch  # noqa: E402

from blocks import Arch, SearchSpace  # noqa: E402
from blocks.teachers import TeacherParts  # noqa: E402
from donna.config import DataConfig, TeacherConfig, section_from_dict  # noqa: E402
from donna.data import DataSplits, load_data  # noqa: E402
from donna.finetune_stage import FinetuneConfig, finetune_model, resolve_run_arch  # noqa: E402
from donna.runfolder import RunFolder  # noqa: E402
from donna.search_stage import run_space  # noqa: E402
from donna.train import evaluate  # noqa: E402

INITS = ("bkd", "scratch")  # (a) and (b)


@dataclass
class Curve:
    """One finetune: val accuracy after every epoch, final test accuracy, wall time."""

    init: str
    seed: int
    val_accuracy: list[float]
    test_accuracy: float
    seconds: float


def print_header(args: argparse.Namespace) -> None:
    """What is measured, and on which machine."""
    print("Finetune benchmark: (a) BKD init + distillation vs (b) same architecture from scratch, same recipe")
    print(f"machine: {platform.platform()}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} torch threads, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
    print(f"workdir {args.workdir}, arch {args.arch!r}, scratch {args.epochs} epochs, BKD "
          f"{args.bkd_epochs or max(1, args.epochs // 3)} epochs, seeds {args.seeds}, lr {args.lr}, "
          f"kd_weight {args.kd_weight}")


def ensure_run(workdir: Path, arch_ref: str, progress: bool) -> None:
    """Builds the predictor, and runs a default search for ``selected``, when the run folder lacks them."""
    if not RunFolder(workdir).predictor_json.is_file():
        from donna.predictor_stage import build_predictor

        print(f"{workdir} has no predictor.json: running donna.predictor_stage.build_predictor with defaults first")
        build_predictor(workdir, progress=progress)
    if arch_ref == "selected" and not any(f.selected_json.is_file() for f in RunFolder(workdir).searches()):
        from donna.pipeline import default_target_ms
        from donna.search_stage import SearchConfig, run_search

        target = default_target_ms(workdir, "cpu")
        print(f"{workdir} has no selected architecture: running donna.search_stage.run_search (NSGA-II, "
              f"defaults, target {target} ms on cpu) first")
        run_search(workdir, SearchConfig(target_ms=target), progress=progress)


def load_inputs(workdir: Path, arch_ref: str) -> tuple[DataSplits, TeacherParts, SearchSpace, Arch]:
    """Data splits, teacher, space and the architecture to finetune, as ``donna finetune`` resolves them."""
    from donna.teacher import get_teacher

    config = RunFolder(workdir).read_config()
    space = run_space(workdir)
    data = load_data(section_from_dict(DataConfig, config["data"]), space.input_size, space.in_channels)
    teacher = get_teacher(section_from_dict(TeacherConfig, config["teacher"]), space, data, workdir, progress=False)
    return data, teacher, space, resolve_run_arch(workdir, arch_ref, space)


def run_curve(arch: Arch, cfg: FinetuneConfig, workdir: Path, inputs: tuple, scratch_dir: Path) -> Curve:
    """Finetunes ``arch`` once with ``cfg`` (fresh checkpoint folder) and returns its curve."""
    data, teacher, space = inputs
    out = scratch_dir / f"{cfg.init}-seed{cfg.seed}"
    start = time.perf_counter()
    model, history = finetune_model(arch, cfg, workdir, data, teacher, space, out, progress=False)
    seconds = time.perf_counter() - start
    return Curve(cfg.init, cfg.seed, history.val_accuracy, evaluate(model, data.test), seconds)


def first_epoch_reaching(curve: list[float], level: float) -> int | None:
    """The first epoch (1-based) whose accuracy is at least ``level`` (float32 accuracies: 1e-6 slack), or None."""
    return next((i + 1 for i, acc in enumerate(curve) if acc >= level - 1e-6), None)


def curves_table(curves: dict[tuple[str, int], Curve], seeds: list[int], epochs: int) -> pd.DataFrame:
    """Epoch by epoch: val accuracy of (a) and (b) per seed (empty where (a)'s shorter run has ended)."""
    rows = []
    for epoch in range(epochs):
        row: dict[str, float | int | None] = {"epoch": epoch + 1}
        for seed in seeds:
            row[f"(a) bkd s{seed}"] = _at(curves["bkd", seed].val_accuracy, epoch)
            row[f"(b) scratch s{seed}"] = _at(curves["scratch", seed].val_accuracy, epoch)
        rows.append(row)
    return pd.DataFrame(rows)


def _at(curve: list[float], epoch: int) -> float | None:
    return curve[epoch] if epoch < len(curve) else None


def goal_row(label: str, a: list[float], b: list[float], epochs: int, val_size: int) -> dict[str, object]:
    """(b)'s final accuracy, the first epoch (a) reaches it (exactly, and within one val image), the verdict."""
    reached = first_epoch_reaching(a, b[-1])
    return {"seed": label, "(b) final": b[-1], "(a) final": a[-1], "(a) epoch 1": a[0],
            "(a) reaches (b) final at epoch": reached or "never",
            "limit": f"<= {epochs / 3:.2f}", "goal met": reached is not None and reached <= epochs / 3}


def goal_table(curves: dict[tuple[str, int], Curve], seeds: list[int], epochs: int, val_size: int) -> pd.DataFrame:
    """The goal per seed (and on the mean curves), with test accuracy and wall time of each finetune."""
    rows = []
    for seed in seeds:
        a, b = curves["bkd", seed], curves["scratch", seed]
        rows.append({**goal_row(str(seed), a.val_accuracy, b.val_accuracy, epochs, val_size),
                     "(a) test": a.test_accuracy, "(b) test": b.test_accuracy,
                     "(a) s": f"{a.seconds:.0f}", "(b) s": f"{b.seconds:.0f}"})
    met = sum(bool(r["goal met"]) for r in rows)
    rows.append({"seed": f"goal met on {met} of {len(seeds)} seeds"})
    return pd.DataFrame(rows)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", default="runs/demo", help="run folder with a predictor and a search")
    parser.add_argument("--arch", default="selected", help="selected, selected:SEARCHER, a front key or IR .json")
    parser.add_argument("--epochs", type=int, default=3 * FinetuneConfig.epochs, help="epochs of (b), from scratch")
    parser.add_argument("--bkd-epochs", type=int, default=None, help="epochs of (a) (default: a third of --epochs)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds (data order; scratch init)")
    parser.add_argument("--lr", type=float, default=FinetuneConfig.lr, help="peak learning rate of both")
    parser.add_argument("--kd-weight", type=float, default=FinetuneConfig.kd_weight, help="distillation weight")
    parser.add_argument("--device", default="auto", help="training device: auto, cpu, cuda")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--progress", action="store_true", help="tqdm bars while preparing a missing run")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Runs (a) and (b) for every seed and prints both tables."""
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    workdir = Path(args.workdir)
    print_header(args)
    ensure_run(workdir, args.arch, args.progress)
    data, teacher, space, arch = load_inputs(workdir, args.arch)
    print(f"architecture {arch.key}: {arch.to_string()}")
    curves: dict[tuple[str, int], Curve] = {}
    with tempfile.TemporaryDirectory(prefix="bench-finetune-") as scratch:
        for seed in args.seeds:
            for init in INITS:
                epochs = args.epochs if init == "scratch" else (args.bkd_epochs or max(1, args.epochs // 3))
                cfg = FinetuneConfig(arch=args.arch, epochs=epochs, lr=args.lr, kd_weight=args.kd_weight,
                                     seed=seed, init=init, train_device=args.device)
                curves[init, seed] = curve = run_curve(arch, cfg, workdir, (data, teacher, space), Path(scratch))
                print(f"  seed {seed} {init:7s}: final val {curve.val_accuracy[-1]:.4f} in {curve.seconds:.0f} s",
                      flush=True)
    print(f"\nVal accuracy per epoch ({len(data.val)} val images)")
    print(curves_table(curves, args.seeds, args.epochs).to_string(index=False, float_format="%.4f"))
    print("\nGoal: (a) reaches (b)'s final val accuracy in at most a third of the epochs")
    print(goal_table(curves, args.seeds, args.epochs, len(data.val)).to_string(index=False, float_format="%.4f",
                                                                           na_rep=""))


if __name__ == "__main__":
    main()
