"""Training-step speed of the reference member under OpenMP wait policies and memory layouts, quiet and busy.

Each setting runs in a fresh process (the policy is read when OpenMP starts). "busy" starts one
``yes > /dev/null`` per core for the duration of the measurement. Prints a table; the figures move with
the machine, so compare the rows of one run, not runs.

    python benchmarks/omp_policy.py [--threads 2] [--batch 64]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

SETTINGS = {"PASSIVE (what `donna` set before)": {"OMP_WAIT_POLICY": "PASSIVE"},
            "PASSIVE, channels-first weights": {"OMP_WAIT_POLICY": "PASSIVE", "LAYOUT": "contiguous_format"},
            "unset, channels-first weights": {"LAYOUT": "contiguous_format"},
            "unset (libgomp default spin)": {},
            "GOMP_SPINCOUNT=1000 (what `donna` sets)": {"GOMP_SPINCOUNT": "1000"},
            "GOMP_SPINCOUNT=10000": {"GOMP_SPINCOUNT": "10000"},
            "ACTIVE": {"OMP_WAIT_POLICY": "ACTIVE"},
            "GOMP_SPINCOUNT=1000, AdamW per-tensor": {"GOMP_SPINCOUNT": "1000", "OPT": "adamw"},
            "GOMP_SPINCOUNT=1000, AdamW fused": {"GOMP_SPINCOUNT": "1000", "OPT": "adamw-fused"}}

STEP = """
import sys, time, torch
from blocks import build_model, get_space
torch.set_num_threads({threads})
import os
layout = getattr(torch, os.environ.get("LAYOUT", "channels_last"))  # blocks build channels-last; the old layout
m = build_model(get_space("mbconv-tiny").with_classes(36).reference()).to(memory_format=layout)
kind = os.environ.get("OPT", "sgd")  # the teacher trains with AdamW; the optimiser's own cost shows here
if kind == "sgd":
    opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)
else:
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3, fused=kind == "adamw-fused")
x, y = torch.randn({batch}, 3, 32, 32), torch.randint(0, 36, ({batch},))
if layout is torch.contiguous_format:  # the blocks' forward makes inputs channels-last; undo it for the old layout
    import blocks.layers
    blocks.layers.to_channels_last = lambda t: t
def step():
    loss = torch.nn.functional.cross_entropy(m(x), y); opt.zero_grad(); loss.backward(); opt.step()
for _ in range(3): step()
n = max(4, 2048 // {batch}); t = time.perf_counter()
for _ in range(n): step()
print((time.perf_counter() - t) / (n * {batch}) * 1000)
"""


def measure(env: dict[str, str], threads: int, batch: int) -> float:
    """Milliseconds per training image in a fresh process with ``env`` added to the environment."""
    clean = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    out = subprocess.run([sys.executable, "-c", STEP.format(threads=threads, batch=batch)], check=True,
                         capture_output=True, text=True, env={**clean, **env, "OMP_NUM_THREADS": str(threads)})
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    quiet = {name: measure(env, args.threads, args.batch) for name, env in SETTINGS.items()}
    hogs = [subprocess.Popen(["yes"], stdout=subprocess.DEVNULL) for _ in range(os.cpu_count() or 1)]
    try:
        busy = {name: measure(env, args.threads, args.batch) for name, env in SETTINGS.items()}
    finally:
        for hog in hogs:
            hog.kill()
    print(f"ms per training image, reference member of mbconv-tiny, batch {args.batch}, {args.threads} threads")
    print(f"{'setting (SGD unless named)':40s} {'quiet':>8s} {'busy':>8s}")
    for name in SETTINGS:
        print(f"{name:40s} {quiet[name]:8.2f} {busy[name]:8.2f}")


if __name__ == "__main__":
    main()
