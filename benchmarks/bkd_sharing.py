"""Weight-sharing bias of BKD on one slot: the nested (Once-for-All style) supernet against independent options.

``BKDConfig.mode='supernet'`` nests every option of a slot in one set of weights (centre-cropped kernels,
channel prefixes, weights shared across SE on/off and activations), trained with the sandwich rule; DNA keeps
separate weights per option, which is ``mode='independent'``. This script trains one slot both ways from
the run's teacher for the same epochs, scores every option the way ``donna build-predictor`` does (BatchNorm
recalibration, then NSR on val samples) and prints how far the shared NSR strays from the independent one:
rank agreement, the mean offset per knob value (does sharing favour small or large options?) and the
teacher-identical option's NSR under both.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bkd_sharing.py --workdir runs/demo --slot 3 [--epochs 6]``
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

# Run as a script, this file's folder comes first on sys.path and benchmarks/search.py would shadow the package.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from donna.assemble import recalibrate_bn  # noqa: E402
from donna.bkd import compute_features, train_slot_cached, view_features  # noqa: E402
from donna.config import BKDConfig, DataConfig, TeacherConfig, section_from_dict  # noqa: E402
from donna.data import load_data, subset  # noqa: E402
from donna.nested_supernet import make_slot_module  # noqa: E402
from donna.nsr import nsr  # noqa: E402
from donna.rankstats import bootstrap_taus  # noqa: E402
from donna.runfolder import RunFolder  # noqa: E402
from donna.search_stage import run_space  # noqa: E402

KNOBS = ("kernel", "expansion", "depth", "se", "act")


def train_and_score(mode: str, cfg: BKDConfig, space, slot: int, views, recal, val_in, val_out) -> tuple[dict, float]:
    """Trains the slot in ``mode`` in a scratch folder; NSR of every option after BatchNorm recalibration."""
    with tempfile.TemporaryDirectory(prefix=f"bkd-{mode}-") as tmp:
        start = time.perf_counter()
        trained = train_slot_cached(dataclasses.replace(cfg, mode=mode), space, slot, views, tmp, "bench",
                                    progress=False)
        seconds = time.perf_counter() - start
    ckpt = trained["weights"]
    module = make_slot_module(mode, space, slot)
    module.load_state_dict(ckpt["state_dict"])
    scores = {}
    for spec in space.options(slot):
        block = recalibrate_bn(module.extract(spec), recal.split(64))
        scores[spec] = nsr(block, val_in, val_out)
    return scores, seconds


def main(argv: list[str] | None = None) -> None:
    """Trains both ways and prints the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", default="runs/demo", help="run folder with a teacher (after build-predictor)")
    parser.add_argument("--slot", type=int, default=3, help="the slot to train both ways")
    parser.add_argument("--epochs", type=int, default=None, help="BKD epochs (default: the run's)")
    parser.add_argument("--val-samples", type=int, default=1000, help="val samples NSR is measured on")
    args = parser.parse_args(argv)
    workdir = Path(args.workdir)
    config = RunFolder(workdir).read_config()
    space = run_space(workdir)
    data = load_data(section_from_dict(DataConfig, config["data"]), space.input_size, space.in_channels)
    from donna.teacher import get_teacher

    teacher = get_teacher(section_from_dict(TeacherConfig, config["teacher"]), space, data, workdir, progress=False)
    cfg = BKDConfig(**{k: v for k, v in config.get("bkd", {}).items() if k in BKDConfig.__dataclass_fields__})
    cfg = dataclasses.replace(cfg, epochs=args.epochs or cfg.epochs, threads=1)
    print(f"BKD weight-sharing bias, slot {args.slot} of {space.name}: {platform.platform()}, {os.cpu_count()} CPUs, "
          f"torch {torch.__version__}; {cfg.epochs} epochs, sampling {cfg.sampling}, {len(data.train)} train images",
          flush=True)
    device = torch.device("cpu")
    views = [(v[args.slot], v[args.slot + 1]) for v in view_features(cfg, teacher, data.train, device)]
    recal_idx = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(0))[:256].sort().values
    recal = compute_features(teacher, subset(data.train, recal_idx), device)[args.slot]
    val = compute_features(teacher, subset(data.val, np.arange(min(args.val_samples, len(data.val)))), device)
    results, seconds = {}, {}
    for mode in ("supernet", "independent"):
        results[mode], seconds[mode] = train_and_score(mode, cfg, space, args.slot, views, recal, val[args.slot],
                                                       val[args.slot + 1])
        print(f"  {mode}: trained and scored in {seconds[mode]:.0f} s", flush=True)
    options = space.options(args.slot)
    frame = pd.DataFrame({"shared": [results["supernet"][o] for o in options],
                          "independent": [results["independent"][o] for o in options],
                          **{k: [getattr(o, k) for o in options] for k in KNOBS}})
    frame["offset"] = frame["shared"] - frame["independent"]
    tau = bootstrap_taus(-frame["independent"].to_numpy(), {"shared": -frame["shared"].to_numpy()}, n_boot=1000)
    ref = space.reference().blocks[args.slot]
    print(f"\n{len(options)} options. Kendall tau of the shared NSR against the independent NSR: "
          f"{tau['shared']['kendall_tau']:.3f} (90% interval {tau['shared']['tau_low']:.3f} to "
          f"{tau['shared']['tau_high']:.3f})")
    print(f"mean NSR: shared {frame['shared'].mean():.4f}, independent {frame['independent'].mean():.4f}; "
          f"teacher-identical option {ref}: shared {results['supernet'][ref]:.4f}, "
          f"independent {results['independent'][ref]:.4f}")
    print("\nmean offset (shared - independent NSR) by knob value: > 0 means sharing hurts those options")
    for knob in KNOBS:
        by = frame.groupby(knob)["offset"].mean()
        print(f"  {knob:9s} " + "  ".join(f"{value}: {off:+.4f}" for value, off in by.items()))


if __name__ == "__main__":
    main()
