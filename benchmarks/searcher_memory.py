"""Peak resident memory and step time of PC-DARTS and DSO-NAS per batch, with and without per-op checkpointing.

Each configuration (searcher, batch, checkpointing) runs in its own subprocess, which builds the
searcher's supernet and optimisers exactly as the search does (``build``), measures the budget
model of ``baselines.budget`` (the prediction the searcher would make for that batch), then runs
``--steps`` search steps on random 32x32 inputs (PC-DARTS: architecture step + weight step;
DSO-NAS: weight step + lambda step) and reports ``resource.getrusage(RUSAGE_SELF).ru_maxrss``: the
whole process's peak resident set (Python, torch, the supernet and the steps), which is what
``/usr/bin/time -v`` prints. Step time is the median over the steps after the first.
"Before" is ``checkpointing=False`` (every op's activations kept, as before issue 18); "after" is the
default ``checkpointing=True``. A configuration whose predicted peak exceeds 3/4 of the machine's
available memory is skipped, not run.

Usage: ``OMP_NUM_THREADS=1 python benchmarks/searcher_memory.py [--batches 32 64 128] [--steps 3]``
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

# Run as a script, this folder comes first on sys.path and benchmarks/search.py would shadow the package.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)

import torch  # noqa: E402

import baselines  # noqa: E402,F401  (registers the searchers)
from baselines.budget import GIB, available_bytes, limit_heap_retention, rss_bytes  # noqa: E402
from blocks import get_space  # noqa: E402
from search import create_searcher  # noqa: E402

MIB = 2 ** 20
SEARCHERS = ("pc-darts", "dso-nas")


def _batches(space, batch: int, n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(batch)
    shape = (batch, space.in_channels, space.input_size, space.input_size)
    return [(torch.randn(shape, generator=generator), torch.randint(0, space.num_classes, (batch,),
                                                                    generator=generator)) for _ in range(n)]


def child(name: str, space_name: str, batch: int, checkpointing: bool, steps: int) -> dict:
    """One configuration in this process; returns its measurements."""
    space = get_space(space_name)
    device = torch.device("cpu")
    limit_heap_retention()  # as the searchers do on a CPU
    torch.manual_seed(0)
    searcher = create_searcher(name, batch_size=batch, checkpointing=checkpointing, memory_gb=1e6, device="cpu")
    built = searcher.build(space, device)
    model = built[0]
    sample = torch.zeros(space.in_channels, space.input_size, space.input_size)
    searcher.choose_batch(model, model.phases(), sample, device)
    predicted = searcher.memory["predicted_peak_gb"] * GIB
    row = {"searcher": name, "batch": batch, "checkpointing": checkpointing, "predicted_mib": predicted / MIB,
           "held_before_mib": rss_bytes() / MIB}
    if predicted > rss_bytes() + 0.75 * available_bytes():
        return {**row, "skipped": f"predicted {predicted / GIB:.1f} GB > 3/4 of the available memory"}
    data = _batches(space, batch, 2 * steps)
    times = []
    for i in range(steps):
        start = time.perf_counter()
        if name == "pc-darts":
            searcher._arch_step(model, data[2 * i + 1], built[2], None, device)
            searcher._weight_step(model, data[2 * i], built[1], device)
        else:
            searcher._weight_step(model, data[2 * i], built[1], device)
            searcher._lambda_step(model, data[2 * i + 1], built[2], device)
        times.append(time.perf_counter() - start)
    # choose_batch reset the kernel's peak for its probes; the peak before them is in its record
    peak = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, searcher.memory["peak_before_probe_gb"] * GIB)
    return {**row, "peak_mib": peak / MIB, "step_s": statistics.median(times[1:] or times), "steps": steps}


def run_child(args: argparse.Namespace, name: str, batch: int, checkpointing: bool) -> dict:
    """Runs one configuration in a fresh interpreter; its JSON line as a dict."""
    command = [sys.executable, str(Path(__file__).resolve()), "--child", name, "--space", args.space,
               "--batch", str(batch), "--steps", str(args.steps)] + ([] if checkpointing else ["--no-checkpointing"])
    done = subprocess.run(command, capture_output=True, text=True, env=os.environ.copy(),
                          cwd=Path(__file__).resolve().parents[1])
    if done.returncode != 0:
        last = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit code {done.returncode}"
        return {"searcher": name, "batch": batch, "checkpointing": checkpointing, "skipped": f"failed: {last}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def table(rows: list[dict]) -> str:
    """Markdown table of the rows."""
    lines = ["| searcher | batch | checkpointing | peak RSS (MiB) | predicted by the budget (MiB) | step (s) |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        mode = "on (after)" if r["checkpointing"] else "off (before)"
        if "skipped" in r:
            lines.append(f"| {r['searcher']} | {r['batch']} | {mode} | skipped: {r['skipped']} | "
                         f"{r.get('predicted_mib', float('nan')):.0f} | - |")
        else:
            lines.append(f"| {r['searcher']} | {r['batch']} | {mode} | {r['peak_mib']:.0f} | "
                         f"{r['predicted_mib']:.0f} | {r['step_s']:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="mbconv-tiny", help="search space name or JSON file")
    parser.add_argument("--batches", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument("--searchers", nargs="+", default=list(SEARCHERS), choices=SEARCHERS)
    parser.add_argument("--steps", type=int, default=3, help="search steps per configuration (first is warm-up)")
    parser.add_argument("--modes", nargs="+", default=["off", "on"], choices=["off", "on"],
                        help="checkpointing off (before) and/or on (after)")
    parser.add_argument("--out", type=Path, default=None, help="also write the rows as JSON here")
    parser.add_argument("--child", choices=SEARCHERS, help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--no-checkpointing", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.space, args.batch, not args.no_checkpointing, args.steps)))
        return
    print(f"space {args.space}, {args.steps} steps per configuration, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
    rows = []
    for name in args.searchers:
        for batch in args.batches:
            for mode in args.modes:
                rows.append(run_child(args, name, batch, mode == "on"))
                print(json.dumps(rows[-1]), flush=True)
    print(table(rows))
    if args.out is not None:
        from common.fileio import atomic_write_text

        atomic_write_text(args.out, json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
