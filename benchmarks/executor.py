"""Executors side by side: wall time of the BKD, scoring and label stages per executor, same work, same results.

On the `mbconv-tiny` space over `digits` (a small teacher trained once, shared by every row), each executor
(``inprocess``: one job after another; ``threads``; ``processes``; ``ray``: a local Ray started for the row,
its start-up included and also printed alone) runs BKD (5 slot jobs), scoring (5 slot jobs) and ``--labels``
labels into its own run folder. The table gives wall seconds per stage, the speed-up over ``inprocess`` and the
largest difference of the results from ``inprocess``'s (they must agree: jobs are seeded by position).

Run: ``.venv/bin/python benchmarks/executor.py [--executors inprocess threads processes ray] [--labels 4]``
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

# Run as a script, this file's folder comes first on sys.path and benchmarks/search.py would shadow the package.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)

import pandas as pd  # noqa: E402
import torch  # noqa: E402

from blocks import get_space  # noqa: E402
from donna.bkd import run_bkd  # noqa: E402
from donna.config import BKDConfig, ScoreConfig, TeacherConfig  # noqa: E402
from donna.data import get_dataset  # noqa: E402
from donna.labels import LabelConfig, make_labels  # noqa: E402
from donna.nsr import score_library  # noqa: E402
from donna.teacher import get_teacher  # noqa: E402


def one_row(executor: str, base: Path, folder: Path, space, data, labels: int) -> tuple[dict, dict]:
    """Runs the three stages with ``executor`` in ``folder``; returns (seconds, results)."""
    folder.mkdir(parents=True)
    for name in ("teacher.pt", "teacher.json", "config.json"):
        shutil.copy(base / name, folder / name)
    teacher = get_teacher(TeacherConfig(epochs=2), space, data, folder, progress=False)
    seconds = {}
    if executor == "ray":
        import ray

        start = time.perf_counter()
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, configure_logging=False, log_to_driver=False)
        seconds["ray start"] = time.perf_counter() - start
    start = time.perf_counter()
    library = run_bkd(BKDConfig(epochs=1, executor=executor), space, teacher, data, folder, progress=False)
    seconds["bkd"] = time.perf_counter() - start
    start = time.perf_counter()
    table = score_library(ScoreConfig(executor=executor), space, teacher, data, folder, progress=False)
    seconds["scoring"] = time.perf_counter() - start
    start = time.perf_counter()
    frame = make_labels(LabelConfig(num_labels=labels, epochs=1, train_samples=600, executor=executor), space,
                        teacher, data, folder, table, progress=False)
    seconds["labels"] = time.perf_counter() - start
    if executor == "ray":
        import ray

        ray.shutdown()
    weights = [library.slot_module(s).state_dict() for s in range(space.num_slots)]
    return seconds, {"weights": weights, "nsr": table["nsr"].to_numpy(), "acc": frame["accuracy"].to_numpy()}


def difference(a: dict, b: dict) -> float:
    """Largest absolute difference between two rows' results (weights, NSR, label accuracy)."""
    worst = max(float((x[k].float() - y[k].float()).abs().max()) for x, y in zip(a["weights"], b["weights"])
                for k in x if x[k].is_floating_point())
    return max(worst, float(abs(a["nsr"] - b["nsr"]).max()), float(abs(a["acc"] - b["acc"]).max()))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--executors", nargs="+", default=["inprocess", "threads", "processes", "ray"])
    parser.add_argument("--labels", type=int, default=4, help="architectures labelled per row")
    args = parser.parse_args(argv)
    print(f"{platform.platform()}, {os.cpu_count()} CPUs, torch {torch.__version__}, load average "
          f"{os.getloadavg()[0]:.2f} at the start", flush=True)
    data = get_dataset("digits", input_size=32, seed=0)
    space = get_space("mbconv-tiny").with_classes(data.num_classes)
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "teacher"
        get_teacher(TeacherConfig(epochs=2), space, data, base, progress=False)
        rows, results = {}, {}
        for executor in args.executors:
            if executor == "ray":
                try:
                    import ray  # noqa: F401
                except ImportError:
                    print("ray is not installed (pip install -e '.[ray]'): its row is skipped")
                    continue
            rows[executor], results[executor] = one_row(executor, base, Path(tmp) / executor, space, data,
                                                        args.labels)
            print(f"{executor}: {rows[executor]}", flush=True)
    table = pd.DataFrame(rows).T
    table["total"] = table[["bkd", "scoring", "labels"]].sum(axis=1)
    if "inprocess" in table.index:
        table["speed-up"] = table.loc["inprocess", "total"] / table["total"]
        table["max |diff| vs inprocess"] = [difference(results[e], results["inprocess"]) for e in table.index]
    print(f"\nwall seconds on {os.cpu_count()} CPUs (load average {os.getloadavg()[0]:.2f} at the end); "
          "ray's total excludes its start-up")
    print(table.to_string(float_format=lambda v: f"{v:.3g}"))


if __name__ == "__main__":
    main()
