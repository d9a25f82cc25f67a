"""An independent latency check of an ONNX model: plain ONNX Runtime, none of ``latency``'s protocol code.

Usage::

    python benchmarks/ort_check.py runs/demo/finetune/<key>/model.onnx [--target-ms T] [--sessions 3] [--runs 3000]

Each session is created fresh (1 intra-op and 1 inter-op thread, CPU provider), warmed up with 300 runs,
then timed over ``--runs`` runs with ``perf_counter_ns``. Input and output are bound once (IOBinding), as
the tool's CPU backend does, so the figure is the model's and not the copy of its output into Python; the
plain ``session.run`` median is printed beside it. Prints one row per session and the median over sessions,
against ``--target-ms`` when given.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np


def time_session(path: str, runs: int, warmup: int = 300) -> tuple[float, float]:
    """``(IOBinding median ms, session.run median ms)`` of one fresh session."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    spec = session.get_inputs()[0]
    x = np.random.default_rng(0).random([d if isinstance(d, int) else 1 for d in spec.shape], dtype=np.float32)
    binding = session.io_binding()
    binding.bind_cpu_input(spec.name, x)
    binding.bind_output(session.get_outputs()[0].name)

    def median_ms(call) -> float:
        for _ in range(warmup):
            call()
        times = np.empty(runs)
        for k in range(runs):
            start = time.perf_counter_ns()
            call()
            times[k] = time.perf_counter_ns() - start
        return float(np.median(times) / 1e6)

    bound = median_ms(lambda: session.run_with_iobinding(binding))
    plain = median_ms(lambda: session.run(None, {spec.name: x}))
    return bound, plain


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", help="an .onnx file")
    p.add_argument("--target-ms", type=float, default=None)
    p.add_argument("--sessions", type=int, default=3)
    p.add_argument("--runs", type=int, default=3000)
    args = p.parse_args(argv)
    print(f"{'session':>8} {'IOBinding ms':>13} {'session.run ms':>15}")
    bound = []
    for k in range(args.sessions):
        b, plain = time_session(args.model, args.runs)
        bound.append(b)
        print(f"{k + 1:>8} {b:>13.4f} {plain:>15.4f}")
    median = float(np.median(bound))
    verdict = "" if args.target_ms is None else (
        f" against the target {args.target_ms:g} ms: {'at most the target' if median <= args.target_ms else 'OVER'}")
    print(f"median over {args.sessions} sessions (IOBinding): {median:.4f} ms{verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
