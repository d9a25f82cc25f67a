"""Executors side by side: wall time of the BKD, scoring and label stages per executor, same work, same results.

On the `mbconv-tiny` space over `digits` (a small teacher trained once, shared by every row), each executor
(``inprocess``: one job after another; ``threads``; ``processes``; ``ray``: a local Ray started for the row,
its start-up printed apart) runs BKD (5 slot jobs), scoring (5 slot jobs) and ``--labels`` labels (not on
``threads``, which labels refuse) into its own run folder. The table gives wall seconds per stage, the
speed-up over ``inprocess`` and the largest differences of the results from ``inprocess``'s: BKD weights,
NSR and label accuracy (labels repeat exactly per executor but move with the torch thread count of a job).

Before the rows: Ray's own costs (start-up, empty jobs per second, the object-store round trip of one slot's BKD
weights of ``mbconv-imagenet``) and an estimate of BKD's wall time on ``mbconv-imagenet`` for 1, 8 and 64 workers from
per-slot step times measured here.

Run: ``.venv/bin/python benchmarks/executor.py [--executors inprocess threads processes ray] [--labels 4]
[--only-costs]``
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


def _empty() -> None:
    return None


def _touch(weights: dict) -> int:
    return sum(t.numel() for t in weights.values())


def ray_costs(jobs: int = 200) -> dict[str, float]:
    """Ray's own costs on this machine: start-up, empty jobs per second through ``RayExecutor``, and the object-store
    round trip of one slot's BKD weights (the largest slot supernet of ``mbconv-imagenet``, put once, read by a task).
    """
    import ray

    from blocks import get_space as space_of
    from common.executor import Job, RayExecutor
    from donna.nested_supernet import make_slot_module

    start = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    started = time.perf_counter() - start
    executor = RayExecutor()
    executor.map([Job("warm", _empty) for _ in range(4)])  # workers started before timing
    start = time.perf_counter()
    executor.map([Job(f"empty {i}", _empty) for i in range(jobs)])
    per_second = jobs / (time.perf_counter() - start)
    space = space_of("mbconv-imagenet")
    slot = max(range(space.num_slots), key=lambda i: len(space.options(i)) * space.slot_output_shape(i)[0])
    weights = {k: v.detach().clone() for k, v in make_slot_module("supernet", space, slot).state_dict().items()}
    megabytes = sum(t.numel() * t.element_size() for t in weights.values()) / 2**20
    touch = ray.remote(_touch)
    ray.get(touch.remote({"x": torch.zeros(1)}))
    start = time.perf_counter()
    ref = ray.put(weights)
    put = time.perf_counter() - start
    ray.get(touch.remote(ref))
    round_trip = time.perf_counter() - start
    ray.shutdown()
    return {"start_s": started, "empty_jobs_per_s": per_second, "slot": slot, "slot_weights_mb": megabytes,
            "put_s": put, "put_and_task_read_s": round_trip}


def imagenet_estimate(batch: int = 8, steps: int = 3, images: int = 1_281_167, epochs: int = 2,
                      batch_size: int = 64, sampled: int = 4) -> pd.DataFrame:
    """BKD wall time on ``mbconv-imagenet`` for 1, 8 and 64 workers, from per-slot step times measured here.

    A BKD step of a slot trains ``sampled`` options (sandwich: largest, smallest, two random) forward and
    backward at the slot's input shape; its time here is scaled from ``batch`` to ``batch_size`` images and
    multiplied by the steps of ``epochs`` over ``images``. BKD is one job per slot, so workers beyond the slot
    count add nothing: the wall time is the longest slot's once every slot has a worker.
    """
    from blocks import build_block
    from blocks import get_space as space_of

    space = space_of("mbconv-imagenet")
    rng = torch.Generator().manual_seed(0)
    per_slot = []
    for i in range(space.num_slots):
        options = space.options(i)
        picks = [options[-1], options[0], *(options[int(j)] for j in torch.randint(len(options), (sampled - 2,),
                                                                                       generator=rng))]
        c, h, w = space.slot_input_shape(i)
        x = torch.randn(batch, c, h, w)
        seconds = 0.0
        for spec in picks:
            block = build_block(spec, c)
            block(x).sum().backward()  # warm-up
            start = time.perf_counter()
            for _ in range(steps):
                block(x).sum().backward()
            seconds += (time.perf_counter() - start) / steps
        per_slot.append(seconds * batch_size / batch * math.ceil(images / batch_size) * epochs)
    rows = {}
    for workers in (1, 8, 64):
        lanes = [0.0] * min(workers, len(per_slot))
        for t in sorted(per_slot, reverse=True):  # longest first onto the least loaded worker
            lanes[lanes.index(min(lanes))] += t
        rows[workers] = {"wall_h": max(lanes) / 3600, "speed-up": sum(per_slot) / max(lanes)}
    return pd.DataFrame(rows).T.rename_axis("workers")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--executors", nargs="+", default=["inprocess", "threads", "processes", "ray"])
    parser.add_argument("--labels", type=int, default=4, help="architectures labelled per row")
    parser.add_argument("--only-costs", action="store_true", help="only Ray's costs and the ImageNet estimate")
    args = parser.parse_args(argv)
    print(f"{platform.platform()}, {os.cpu_count()} CPUs, torch {torch.__version__}, load average "
          f"{os.getloadavg()[0]:.2f} at the start", flush=True)
    try:
        import ray  # noqa: F401

        costs = ray_costs()
        print(f"\nRay on this machine: start {costs['start_s']:.1f} s; {costs['empty_jobs_per_s']:.0f} empty jobs/s "
              f"through RayExecutor; slot {costs['slot']} of mbconv-imagenet's BKD weights "
              f"({costs['slot_weights_mb']:.1f} MiB): ray.put {costs['put_s'] * 1000:.1f} ms, put and read by a task "
              f"{costs['put_and_task_read_s'] * 1000:.1f} ms")
    except ImportError:
        print("ray is not installed (pip install -e '.[ray]'): its costs are skipped")
    estimate = imagenet_estimate()
    print("\nBKD on mbconv-imagenet (ImageNet, 2 epochs, batch 64, sandwich: 4 options a step), from per-slot step "
          "times measured on this CPU; one job per slot, so more workers than slots add nothing:")
    print(estimate.to_string(float_format=lambda v: f"{v:.1f}"))
    if args.only_costs:
        return
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
