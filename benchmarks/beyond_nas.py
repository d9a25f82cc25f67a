"""DONNA beyond one search: hardware-aware compression of the embedded default's teacher.

Compresses the teacher shipped for the default run (``donna/pretrained``, the reference member of
``mbconv-tiny`` trained 20 epochs on ``glyphs``) to shares of its own latency on a device (default ``cpu``:
50% and 75%), with ``donna compress``'s defaults: blockwise distillation from the teacher into the space of its
cheaper versions, NSR, 30 labels, the device's latency table, then one search and one finetune per target.
Prints the teacher and each compressed model side by side: measured latency (fresh process), speed-up, test
accuracy, params and MACs, and whether each met its target.

Search-space extension (``donna extend``) is not built yet; this benchmark says so instead of a figure.

Run: ``.venv/bin/python benchmarks/beyond_nas.py [--workdir runs/compress-demo] [--device cpu]
[--fractions 0.5 0.75]`` (about 10 minutes on the 2-core development machine; resumes when interrupted).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

# Run as a script, this file's folder comes first on sys.path and benchmarks/search.py would shadow the package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("runs/compress-demo"))
    parser.add_argument("--device", default="cpu", help="latency device profile (default: cpu)")
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.5, 0.75])
    args = parser.parse_args(argv)

    from donna import pretrained
    from donna.compress_stage import render, run_compress
    from donna.config import FinetuneConfig, SearchConfig
    from donna.predictor_stage import PredictorRunConfig

    shipped = sorted(Path(pretrained.__file__).parent.glob("teacher-*.pt"))
    if not shipped:
        print("no shipped teacher in donna/pretrained: nothing to compress", file=sys.stderr)
        return 1
    start = time.perf_counter()
    table = run_compress(args.workdir, shipped[0], args.fractions, PredictorRunConfig(),
                         SearchConfig(target_ms=None, latency_device=args.device),
                         FinetuneConfig(latency_device=args.device), progress=sys.stderr.isatty())
    seconds = time.perf_counter() - start
    print(f"\nmachine: {platform.machine()}, {os.cpu_count()} cores, load average "
          f"{', '.join(f'{v:.2f}' for v in os.getloadavg())} at the end; {seconds / 60:.1f} min for this call "
          f"(finished stages are skipped on a rerun)")
    print(render(table, args.device))
    print("search-space extension (donna extend): not built yet, no figure")
    return 0


if __name__ == "__main__":
    sys.exit(main())
