"""Executors side by side: wall time of the BKD, scoring and label stages per executor, same work, same results.

On the `mbconv-tiny` space over `digits` (a small teacher trained once, shared by every row), each executor
(``inprocess``: one job after another; ``threads``; ``processes``; ``ray``: a local Ray started for the row,
its start-up printed apart) runs BKD (5 slot jobs), scoring (5 slot jobs) and ``--labels`` labels (not on
``threads``, which labels refuse) into its own run folder. The table gives wall seconds per stage, the
speed-up over ``inprocess`` and the largest differences of the results from ``inprocess``'s: BKD weights,
NSR and label accuracy (labels repeat exactly per executor but move with the torch thread count of a job).

Run: ``.venv/bin/python benchmarks/executor.py [--executors inprocess threads processes ray] [--labels 4]``
"""

from __future__ import annotations

import argparse
import math
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
    acc = None
    seconds["labels"] = math.nan
    if executor != "threads":  # refused for labels: threads would share torch's global RNG between finetunes
        start = time.perf_counter()
        frame = make_labels(LabelConfig(num_labels=labels, epochs=1, train_samples=600, executor=executor), space,
                            teacher, data, folder, table, progress=False)
        seconds["labels"] = time.perf_counter() - start
        acc = frame["accuracy"].to_numpy()
    if executor == "ray":
        import ray

        ray.shutdown()
    weights = [library.slot_module(s).state_dict() for s in range(space.num_slots)]
    return seconds, {"weights": weights, "nsr": table["nsr"].to_numpy(), "acc": acc}


def difference(a: dict, b: dict) -> dict[str, float]:
    """Largest absolute differences between two rows' results: BKD weights, NSR, label accuracy."""
    weights = max(float((x[k].float() - y[k].float()).abs().max()) for x, y in zip(a["weights"], b["weights"])
                  for k in x if x[k].is_floating_point())
    labels = float(abs(a["acc"] - b["acc"]).max()) if a["acc"] is not None and b["acc"] is not None else math.nan
    return {"|d weights|": weights, "|d nsr|": float(abs(a["nsr"] - b["nsr"]).max()), "|d label acc|": labels}


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
    table["bkd+scoring"] = table["bkd"] + table["scoring"]
    if "inprocess" in table.index:
        table["speed-up bkd+scoring"] = table.loc["inprocess", "bkd+scoring"] / table["bkd+scoring"]
        table["speed-up labels"] = table.loc["inprocess", "labels"] / table["labels"]
        diffs = pd.DataFrame({e: difference(results[e], results["inprocess"]) for e in table.index}).T
        table = pd.concat([table, diffs], axis=1)
    print(f"\nwall seconds on {os.cpu_count()} CPUs (load average {os.getloadavg()[0]:.2f} at the end); "
          "ray's rows exclude its start-up; labels refuse the threads executor (shared RNG)")
    print(table.to_string(float_format=lambda v: f"{v:.3g}"))


if __name__ == "__main__":
    main()
