"""GPU check (under 5 minutes on a machine with a CUDA GPU); prints PASS / FAIL / SKIP per check.

    python benchmarks/gpu_check.py [--out DIR]

Checks (docs/latency.md, "GPU check"):
  1. tensorrt-version   TensorRT version, its typing mode (10: weak + FP16 flag, 11: strongly typed), the GPU
  2. engine-fp32        an fp32 engine of one mbconv-tiny member builds and runs (CUDA-event timing)
  3. engine-fp16        an fp16 engine builds (TensorRT 11: refused clearly unless the ONNX is fp16 -> SKIP)
  4. vs-trtexec         our median within 10% of TensorRT's own timing (trtexec when on PATH, else Polygraphy)
  5. ort-cuda           ONNX Runtime's CUDA provider loads and measures (not silently on the CPU)
  6. ort-tensorrt       ONNX Runtime's TensorRT provider (CUDA fallback) loads and measures
  7. table-on-gpu       a mini latency table (2 options per slot) builds on the GPU
  8. table-cuda-hidden  that table loads and predicts in a process with CUDA_VISIBLE_DEVICES= (as on a laptop)

Without a GPU it prints one SKIP line and exits 0. Exit status 1 when any check FAILs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
FAST = {"min_time_s": 0.3, "max_time_s": 3.0, "target_ci": 0.02, "warmup_max_s": 1.0, "max_cov": None}
PROFILE = "gpu-check"


def report(name: str, status: str, detail: str) -> bool:
    print(f"{status:<4}  {name:<18} {detail}", flush=True)
    return status != "FAIL"


def write_profile(folder: Path, precision: str) -> Path:
    """A user devices file with a TensorRT profile for whatever GPU this is (no GPU-model match)."""
    path = folder / f"devices-{precision}.json"
    entry = {"backend": "tensorrt", "description": "gpu_check: this GPU, TensorRT",
             "options": {"precision": precision}, "protocol": FAST}
    path.write_text(json.dumps({"profiles": {f"{PROFILE}-{precision}": entry}}))
    return path


def mini_space():
    from blocks import get_space
    from blocks.spaces import SlotSpace

    space = get_space("mbconv-tiny")
    narrow = {"kernel": (3, 5), "expansion": (2,), "depth": (1,), "se": (0.0,), "act": ("relu",)}
    slots = tuple(SlotSpace(s.stride, s.out_channels, {**s.choices, **narrow}) for s in space.slots)
    return dataclasses.replace(space, name="mini-gpu-check", slots=slots)


def reference_ms(onnx_path: Path, fp16: bool) -> tuple[str, float] | None:
    """TensorRT's own median GPU compute time: trtexec when on PATH, else Polygraphy; None when neither."""
    if shutil.which("trtexec"):
        cmd = ["trtexec", f"--onnx={onnx_path}", "--duration=3", "--useSpinWait", *(["--fp16"] if fp16 else [])]
        text = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300).stdout
        match = re.search(r"GPU Compute Time:.*?median = ([0-9.]+) ms", text)
        return ("trtexec", float(match.group(1))) if match else None
    try:
        from polygraphy.backend.trt import CreateConfig, EngineFromNetwork, NetworkFromOnnxPath, TrtRunner
    except ImportError:
        return None
    import time

    import numpy as np

    with TrtRunner(EngineFromNetwork(NetworkFromOnnxPath(str(onnx_path)), config=CreateConfig(fp16=fp16))) as runner:
        meta = runner.get_input_metadata()
        feed = {name: np.random.default_rng(0).standard_normal(tuple(m.shape)).astype(m.dtype)
                for name, m in meta.items()}
        for _ in range(20):
            runner.infer(feed)
        times = []
        for _ in range(200):
            t0 = time.perf_counter()
            runner.infer(feed)
            times.append((time.perf_counter() - t0) * 1000)  # host timing incl. copies: an upper bound
    return "polygraphy (host timing, includes copies)", float(np.median(times))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="folder for the ONNX file and the mini table")
    args = parser.parse_args(argv)
    from latency.backends.cuda_rt import gpu_count, gpu_info

    if gpu_count() == 0:
        print("SKIP  gpu_check: no CUDA GPU visible here (nothing to check)")
        return 0
    out = args.out or Path(tempfile.mkdtemp(prefix="gpu-check-"))
    out.mkdir(parents=True, exist_ok=True)
    ok = True
    from latency import build_latency_table, export_onnx, measure_model
    from latency.backends.tensorrt import TensorRTBackend, import_tensorrt, typing_mode

    info = gpu_info(0)
    reason = TensorRTBackend.unavailable_reason({})
    if reason:
        ok &= report("tensorrt-version", "FAIL", reason)
    else:
        version = import_tensorrt().__version__
        ok &= report("tensorrt-version", "PASS", f"TensorRT {version} ({typing_mode(version)}), {info['name']} "
                     f"sm_{''.join(map(str, info['compute_capability']))}")
    space = mini_space()
    arch = space.sample(0)
    from blocks import build_model

    onnx_path = export_onnx(build_model(arch), (space.in_channels, space.input_size, space.input_size),
                            path=out / "member.onnx", cache_dir=out / "exports")
    medians = {}
    for precision in ("fp32", "fp16"):
        os.environ["LATENCY_DEVICES"] = str(write_profile(out, precision))
        try:
            r = measure_model(onnx_path, f"{PROFILE}-{precision}")
            medians[precision] = r.median_ms
            ok &= report(f"engine-{precision}", "PASS", f"median {r.median_ms:.4f} ms, CoV {r.cov:.1%}, n {r.n}, "
                         f"clock {r.env['clock']}, plan {r.env['plan']}")
        except ValueError as err:
            strong = "strongly typed" in str(err)
            ok &= report(f"engine-{precision}", "SKIP" if strong else "FAIL", str(err).splitlines()[0])
    for precision, ours in medians.items():
        ref = reference_ms(onnx_path, precision == "fp16")
        if ref is None:
            report("vs-trtexec", "SKIP", "neither trtexec nor polygraphy is installed")
            break
        tool, theirs = ref
        within = abs(ours - theirs) / theirs <= 0.10
        ok &= report(f"vs-trtexec-{precision}", "PASS" if within else "FAIL",
                     f"ours {ours:.4f} ms, {tool} {theirs:.4f} ms ({ours / theirs - 1:+.1%}, limit 10%)")
    from latency import Profile

    for provider in ("cuda", "tensorrt"):
        prof = Profile(name=f"ort-{provider}", backend="onnxruntime", options={"provider": provider}, protocol=FAST)
        try:
            r = measure_model(onnx_path, prof)
            ok &= report(f"ort-{provider}", "PASS", f"median {r.median_ms:.4f} ms on {r.env['session_providers'][0]}")
        except ValueError as err:
            ok &= report(f"ort-{provider}", "FAIL", str(err).splitlines()[0])
    os.environ["LATENCY_DEVICES"] = str(write_profile(out, "fp32"))
    table_dir = out / "table"
    try:
        table = build_latency_table(space, f"{PROFILE}-fp32", table_dir, n_calibration=3, n_validation=3,
                                    n_repeat=1, progress=False, cache_dir=out / "exports")
        ok &= report("table-on-gpu", "PASS", f"{table.path}, held-out RMSPE {table.validation['rmspe']:.2%}")
    except ValueError as err:
        ok &= report("table-on-gpu", "FAIL", str(err).splitlines()[0])
        table = None
    if table is not None:
        arch.to_json(out / "member.json")
        ok &= hidden_check(table_dir, out / "member.json", table.predict(arch))
    return 0 if ok else 1


def hidden_check(table_dir: Path, arch_file: Path, expected_ms: float) -> bool:
    """Load the table and predict in a child process that sees no GPU (CUDA_VISIBLE_DEVICES empty)."""
    code = ("import json; from latency import LatencyTable; from blocks import Arch; "
            f"t = LatencyTable.load({str(table_dir)!r}, device='{PROFILE}-fp32'); "
            f"print(json.dumps([t.measurable, t.note, t.predict(Arch.from_json({str(arch_file)!r}))]))")
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          stdin=subprocess.DEVNULL, timeout=300)
    if proc.returncode != 0:
        return report("table-cuda-hidden", "FAIL", (proc.stderr.strip().splitlines() or ["no output"])[-1])
    measurable, note, predicted = json.loads(proc.stdout.strip().splitlines()[-1])
    good = not measurable and note and abs(predicted - expected_ms) < 1e-9
    return report("table-cuda-hidden", "PASS" if good else "FAIL",
                  f"accepted as recorded, predicts {predicted:.4f} ms (GPU process: {expected_ms:.4f} ms)")


if __name__ == "__main__":
    sys.exit(main())
