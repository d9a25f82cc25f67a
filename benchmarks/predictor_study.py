"""Predictor study: does the ridge predictor rank architectures it never saw better than the naive rankers?

A fixed held-out set of architectures is drawn independently of the features: uniformly over the space (a
seed the labels never use) plus members spread along the searched front when the run has one. Each is
assembled from its BKD blocks, recalibrated and finetuned with a recipe (by default the run's label recipe,
the finetune recipe shortened; ``--epochs`` / ``--train-samples`` lengthen it). The predictor is the run's
own ``predictor.json`` (fitted on the run's ``labels.csv``, none of which are held out here). The table gives
Kendall tau against the held-out accuracies with a 90% bootstrap interval for the ridge and every naive
ranker (sum of NSR as DNA, MACs, params, recalibrated accuracy before finetuning), the paired interval of
ridge minus the best naive ranker, and a noise ceiling from architectures labelled with a second seed.

Labelling is resumable (``RUN/study/heldout.csv``, one row per architecture, written as each finishes) and can
be split over processes with ``--shard K/N`` (each writes its own file); ``--report`` only prints.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/predictor_study.py --workdir runs/demo [--heldout 60]
[--near-front 10] [--repeats 4] [--shard 0/2]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

# Run as a script, this file's folder comes first on sys.path and benchmarks/search.py would shadow the package.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from blocks import Arch, SearchSpace  # noqa: E402
from common.fileio import atomic_path  # noqa: E402
from donna.config import DataConfig, TeacherConfig, section_from_dict  # noqa: E402
from donna.data import load_data  # noqa: E402
from donna.labels import LabelConfig, label_one  # noqa: E402
from donna.nsr import arch_nsr, load_nsr_table  # noqa: E402
from donna.predictor import AccuracyPredictor, fit_predictor, naive_scores, nsr_columns  # noqa: E402
from donna.rankstats import bootstrap_taus, noise_ceiling, paired_difference  # noqa: E402
from donna.runfolder import RunFolder, write_json  # noqa: E402
from donna.search_stage import run_space  # noqa: E402
from donna.train import predict_logits  # noqa: E402

HELDOUT_SEED = 1_000_003  # the labels' sample never uses this seed
COMBINED = "ridge on NSR + accuracy before finetuning"  # fitted on the run's labels, as predictor.json


def heldout_archs(workdir: Path, space: SearchSpace, n_uniform: int, n_front: int,
                  seed: int = HELDOUT_SEED) -> list[tuple[str, Arch]]:
    """The fixed held-out set: uniform members (drawn with ``seed``), then members spread along the first searched
    front."""
    run = RunFolder(workdir)
    taken = set(pd.read_csv(run.labels_csv)["key"]) if run.labels_csv.is_file() else set()
    chosen: dict[str, tuple[str, Arch]] = {}
    for arch in space.sample_many(4 * n_uniform, seed=seed):
        if arch.key not in taken and len(chosen) < n_uniform:
            chosen.setdefault(arch.key, ("uniform", arch))
    fronts = run.searches()
    if fronts and n_front > 0:
        front = pd.read_csv(fronts[0].pareto_csv)
        front = front.sort_values("predicted_ms") if "predicted_ms" in front else front
        keys = [k for k in front["key"] if k not in taken and k not in chosen]
        for k in [keys[int(i)] for i in np.linspace(0, len(keys) - 1, min(n_front, len(keys)))]:
            chosen[k] = ("front", Arch.from_json(fronts[0].member_json(k)))
    return list(chosen.values())


def plan(workdir: Path, space: SearchSpace, args: argparse.Namespace) -> list[tuple[str, Arch, int]]:
    """Every (origin, arch, seed) to label: the held-out set with the label seed, then repeats with another."""
    archs = heldout_archs(workdir, space, args.heldout, args.near_front, args.heldout_seed)
    jobs = [(origin, arch, args.seed) for origin, arch in archs]
    jobs += [("repeat", arch, args.seed + 1) for _, arch in archs[:args.repeats]]
    return jobs


def label_config(workdir: Path, args: argparse.Namespace, seed: int) -> LabelConfig:
    """The run's label recipe with the study's overrides and ``seed``."""
    saved = RunFolder(workdir).read_config().get("labels", {})
    known = {k: v for k, v in saved.items() if k in LabelConfig.__dataclass_fields__}
    cfg = replace(LabelConfig(**known), seed=seed, executor="inprocess")
    if args.epochs is not None:
        cfg = replace(cfg, epochs=args.epochs)
    if args.train_samples is not None:
        cfg = replace(cfg, train_samples=None if args.train_samples <= 0 else args.train_samples)
    return cfg


def run_labels(workdir: Path, args: argparse.Namespace) -> None:
    """Labels this shard's part of the plan into its resumable CSV."""
    config = RunFolder(workdir).read_config()
    space = run_space(workdir)
    data = load_data(section_from_dict(DataConfig, config["data"]), space.input_size, space.in_channels)
    from donna.teacher import get_teacher

    teacher = get_teacher(section_from_dict(TeacherConfig, config["teacher"]), space, data, workdir, progress=False)
    table = load_nsr_table(workdir)
    shard, shards = (int(v) for v in args.shard.split("/"))
    jobs = plan(workdir, space, args)[shard::shards]
    path = RunFolder(workdir).study_labels(shard, shards)
    done = pd.read_csv(path).to_dict("records") if path.is_file() else []
    have = {(r["key"], r["seed"]) for r in done}
    logits: dict[tuple, torch.Tensor] = {}
    for i, (origin, arch, seed) in enumerate(jobs):
        if (arch.key, seed) in have:
            continue
        cfg = label_config(workdir, args, seed)
        from donna.labels import train_subset

        subset_key = (cfg.train_samples, cfg.seed)
        if subset_key not in logits:
            logits[subset_key] = predict_logits(teacher, train_subset(data, cfg.train_samples, cfg.seed)[0])
        start = time.perf_counter()
        row = label_one(arch, cfg, workdir, space, teacher, data, logits[subset_key], arch_nsr(table, arch))
        done.append({**row, "origin": origin, "seed": seed, "seconds": time.perf_counter() - start,
                     "recipe": json.dumps({k: v for k, v in asdict(cfg).items() if k not in ("device", "executor")})})
        with atomic_path(path) as tmp:
            pd.DataFrame(done).to_csv(tmp, index=False)
        print(f"[{shard}/{shards}] {i + 1}/{len(jobs)} {origin:7s} {arch.key} seed {seed}: acc {row['accuracy']:.4f} "
              f"(before {row['bkd_accuracy']:.4f}) in {done[-1]['seconds']:.0f} s", flush=True)


def report(workdir: Path, args: argparse.Namespace) -> dict:
    """Reads every shard's labels and prints the study's tables; returns them (also written to study/)."""
    frames = [pd.read_csv(p) for p in RunFolder(workdir).study_label_files()]
    if not frames:
        raise SystemExit(f"no held-out labels in {workdir}/study; run without --report first")
    rows = pd.concat(frames, ignore_index=True)
    main = rows[rows["origin"] != "repeat"].drop_duplicates("key").reset_index(drop=True)
    space = run_space(workdir)
    predictor = AccuracyPredictor.load(RunFolder(workdir).predictor_json)
    features = nsr_columns(space.num_slots)
    y = main["accuracy"].to_numpy(float)
    scores = {"ridge (predictor.json)": predictor.predict_frame(main), **naive_scores(main, features)}
    labels = pd.read_csv(RunFolder(workdir).labels_csv)
    if "bkd_accuracy" in labels and labels["bkd_accuracy"].notna().all():  # the same labels, one more feature
        combined = fit_predictor(labels, [*features, "bkd_accuracy"])
        scores[COMBINED] = combined.predict_frame(main)
    taus = bootstrap_taus(y, scores, n_boot=args.boot, seed=0)
    table = pd.DataFrame(taus).T[["kendall_tau", "tau_low", "tau_high"]]
    table.index.name = "ranker"
    naive = {k: v["kendall_tau"] for k, v in taus.items()
             if not k.startswith("ridge") and k != COMBINED and np.isfinite(v["kendall_tau"])}
    best = max(naive, key=naive.get)
    paired = paired_difference(y, scores["ridge (predictor.json)"], scores[best], n_boot=args.boot, seed=0)
    paired_combined = (paired_difference(y, scores[COMBINED], scores[best], n_boot=args.boot, seed=0)
                       if COMBINED in scores else None)
    rep = rows[rows["origin"] == "repeat"].set_index("key")["accuracy"]
    first = main.set_index("key")["accuracy"].reindex(rep.index)
    ceiling = noise_ceiling(y, first.to_numpy(float), rep.to_numpy(float)) if len(rep) else {}
    out = {"n": len(main), "origins": main["origin"].value_counts().to_dict(), "accuracy_min": float(y.min()),
           "accuracy_max": float(y.max()), "rankers": taus, "best_naive": best, "ridge_minus_best_naive": paired,
           "combined_minus_best_naive": paired_combined, "heldout_seed": args.heldout_seed,
           "noise": ceiling, "labels_used_by_predictor": predictor.n_labels,
           "seconds_per_label": float(rows["seconds"].mean()), "recipe": json.loads(main["recipe"].iloc[0])}
    print(f"held-out architectures: {len(main)} ({out['origins']}), accuracy {y.min():.4f} to {y.max():.4f} "
          f"(spread {100 * (y.max() - y.min()):.1f} points); predictor fitted on {predictor.n_labels} other labels")
    print(f"recipe: {out['recipe']}")
    print("\nKendall tau against held-out finetuned accuracy (90% bootstrap interval over architectures)")
    print(table.to_string(float_format=lambda v: f"{v:.3f}"))
    print(f"\nridge minus best naive ranker ({best}): {paired['difference']:+.3f}, 90% paired interval "
          f"[{paired['low']:+.3f}, {paired['high']:+.3f}]")
    if paired_combined is not None:
        print(f"{COMBINED} minus {best}: {paired_combined['difference']:+.3f}, 90% paired interval "
              f"[{paired_combined['low']:+.3f}, {paired_combined['high']:+.3f}]")
    if ceiling:
        print(f"noise ceiling: label noise sd {ceiling['label_noise_sd']:.4f} from {ceiling['repeats']} repeats "
              f"-> a perfect predictor would reach tau about {ceiling['ceiling_tau']:.3f}")
    goal = taus["ridge (predictor.json)"]["kendall_tau"] >= 0.75 and paired["high"] >= 0
    print(f"goal (ridge tau >= 0.75 and not below any naive ranker): {'MET' if goal else 'NOT MET'}")
    write_json(RunFolder(workdir).study_report, json.loads(json.dumps(out, default=float)))
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", default="runs/demo", help="run folder after donna build-predictor")
    parser.add_argument("--heldout", type=int, default=60, help="uniformly drawn held-out architectures")
    parser.add_argument("--near-front", type=int, default=10, help="held-out members spread along the front")
    parser.add_argument("--repeats", type=int, default=4, help="architectures labelled again with another seed")
    parser.add_argument("--heldout-seed", type=int, default=HELDOUT_SEED,
                        help="seed of the uniform held-out draw (another seed: a set nobody has looked at)")
    parser.add_argument("--seed", type=int, default=0, help="label seed (repeats use seed + 1)")
    parser.add_argument("--epochs", type=int, default=None, help="override the label recipe's epochs")
    parser.add_argument("--train-samples", type=int, default=None, help="override its train subset (0: all)")
    parser.add_argument("--shard", default="0/1", help="K/N: label every N-th job starting at K (parallel runs)")
    parser.add_argument("--boot", type=int, default=2000, help="bootstrap resamples")
    parser.add_argument("--report", action="store_true", help="only print the report from the labels so far")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Labels the held-out set (unless --report), then prints the study."""
    args = parse_args(argv)
    workdir = Path(args.workdir)
    print(f"Predictor study on {workdir}: {platform.platform()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}", flush=True)
    if not args.report:
        run_labels(workdir, args)
    report(workdir, args)


if __name__ == "__main__":
    main()
