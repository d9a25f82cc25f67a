"""Search benchmark: candidates per second; NSGA-II's and random search's hypervolume as a share of the exact front's.

Both objectives are additive over slots, so ``exact`` computes the true front of the whole space
(dynamic programming over slots); each searcher's hypervolume is reported as a share of it, with times.

Run: ``.venv/bin/python benchmarks/search.py --workdir runs/demo [--seeds 5]`` to use a run folder's
real accuracy predictor (predictor.json + nsr.csv) and device latency table (latency/cpu), as
``donna search`` does. Without ``--workdir`` both objectives are stand-ins (printed in the header):
a per-(slot, option) latency lookup table built from an analytic MAC count of each option times
seeded log-normal noise, and an accuracy model linear in the one-hot (slot, option) features whose
weights grow with log MACs.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

# Run as a script, this file's folder comes first on sys.path and its name would shadow the package.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)

import numpy as np  # noqa: E402

from blocks import BlockSpec, SearchSpace, get_space  # noqa: E402
from search import Additive, Objective, SearchResult, SlotTable, create_searcher, resolve_reference  # noqa: E402
from search.objectives import GenomeProblem  # noqa: E402

LATENCY_MS_PER_MMAC = 0.01  # stand-in device: 100 MMAC per ms
LATENCY_MS_PER_LAYER = 0.02  # fixed cost per layer (kernel launches)
NOISE_SD = 0.15  # log-normal noise on each table entry and accuracy weight


def option_macs(spec: BlockSpec, in_shape: tuple[int, int, int]) -> float:
    """Analytic MACs of one MBConv slot option (expand 1x1, depthwise kxk, SE, project 1x1) per layer."""
    channels, height, width = in_shape
    total, stride = 0.0, spec.stride
    for _ in range(spec.depth):
        hidden = channels * spec.expansion
        out_h, out_w = -(-height // stride), -(-width // stride)
        total += channels * hidden * height * width if spec.expansion != 1 else 0.0
        total += hidden * spec.kernel**2 * out_h * out_w
        total += 2 * hidden * max(1, int(hidden * spec.se)) if spec.se else 0.0
        total += hidden * spec.out_channels * out_h * out_w
        channels, height, width, stride = spec.out_channels, out_h, out_w, 1
    return total


@dataclass
class Tables:
    """Per-(slot, option) lookup tables, options in genome order (the last knob fastest)."""

    latency_ms: list[np.ndarray]  # per slot: latency of each option
    accuracy_gain: list[np.ndarray]  # per slot: linear-model weight of each option
    radix: np.ndarray  # per gene in a slot: stride of the mixed-radix option index


def build_tables(space: SearchSpace, seed: int = 0) -> Tables:
    """Stand-in latency table and linear accuracy weights from analytic MACs plus seeded noise."""
    rng = np.random.default_rng(seed)
    latency, gain = [], []
    for i in range(space.num_slots):
        options = space.options(i)
        macs = np.array([option_macs(o, space.slot_input_shape(i)) for o in options])
        layers = np.array([o.depth for o in options])
        noise = rng.lognormal(0.0, NOISE_SD, size=(2, len(options)))
        latency.append((macs / 1e6 * LATENCY_MS_PER_MMAC + layers * LATENCY_MS_PER_LAYER) * noise[0])
        gain.append(np.log1p(macs / 1e4) * noise[1])
    _, upper = space.genome_bounds()
    sizes = upper[: len(space.knobs)] + 1
    radix = np.concatenate([np.cumprod(sizes[::-1])[::-1][1:], [1]])
    return Tables(latency, gain, radix)


def make_objectives(space: SearchSpace, tables: Tables) -> list[Objective]:
    """Vectorised accuracy (up) and latency (down) over genomes, via the (slot, option) index.

    Each also carries its per-slot tables (``Objective.additive``) for the exact searcher.
    """
    n_knobs = len(space.knobs)
    sizes = space.genome_bounds()[1][:n_knobs] + 1
    codes = np.stack(np.unravel_index(np.arange(int(np.prod(sizes))), sizes), axis=1)  # option j -> knob genes
    genes = [tuple(range(s * n_knobs, (s + 1) * n_knobs)) for s in range(space.num_slots)]

    def option_index(G: np.ndarray, slot: int) -> np.ndarray:
        return G[:, slot * n_knobs:(slot + 1) * n_knobs] @ tables.radix

    def latency_ms(G: np.ndarray) -> np.ndarray:
        return 0.05 + sum(tables.latency_ms[s][option_index(G, s)] for s in range(space.num_slots))

    def accuracy(G: np.ndarray) -> np.ndarray:
        return 40.0 + sum(tables.accuracy_gain[s][option_index(G, s)] for s in range(space.num_slots))

    def additive(values: list[np.ndarray], constant: float) -> Additive:
        return Additive(tuple(SlotTable(g, codes, v) for g, v in zip(genes, values)), constant)

    return [Objective("accuracy", accuracy, maximize=True, additive=additive(tables.accuracy_gain, 40.0)),
            Objective("latency_ms", latency_ms, additive=additive(tables.latency_ms, 0.05))]


def check_option_order(space: SearchSpace, tables: Tables) -> None:
    """The mixed-radix index must pick the same option as ``space.options`` (genome order)."""
    genome = space.encode(space.sample(1))
    for s in range(space.num_slots):
        index = int(genome[s * len(space.knobs):(s + 1) * len(space.knobs)] @ tables.radix)
        if space.options(s)[index] != space.decode(genome).blocks[s]:
            raise RuntimeError(f"option index mismatch in slot {s}; the genome order changed")


def candidates_per_second(problem: GenomeProblem, n: int) -> float:
    """Objective evaluations per second on batches of ``n`` random genomes (best of 3)."""
    genomes = problem.sample_genomes(n, np.random.default_rng(0))
    best = np.inf
    for _ in range(3):
        start = time.perf_counter()
        problem.evaluate_genomes(genomes)
        best = min(best, time.perf_counter() - start)
    return n / best


def timed_search(name: str, space, objectives, reference, **settings) -> tuple[SearchResult, float]:
    """One search and its wall time in seconds."""
    start = time.perf_counter()
    result = create_searcher(name, **settings).search(space, objectives, progress=False, hv_reference=reference)
    return result, time.perf_counter() - start


def found(result: SearchResult, exact: SearchResult) -> int:
    """How many points of the exact front the result holds (same objective values to 1e-9)."""
    points = {tuple(np.round(row, 9)) for row in result.objectives}
    return sum(tuple(np.round(row, 9)) in points for row in exact.objectives)


def compare(space, objectives, reference, exact: SearchResult, args) -> list[dict[str, float]]:
    """Per seed: hypervolume, exact points found and seconds of NSGA-II and random search; NSGA-II's evaluations."""
    rows = []
    for seed in range(args.seeds):
        settings = {"pop_size": args.pop_size, "generations": args.generations, "seed": seed}
        ga, ga_s = timed_search("nsga2", space, objectives, reference, operators=args.operators, **settings)
        rnd, rnd_s = timed_search("random", space, objectives, reference, **settings)
        rows.append({"seed": seed, "hv_nsga2": ga.hypervolume, "hv_random": rnd.hypervolume, "s_nsga2": ga_s,
                     "s_random": rnd_s, "evals": ga.n_evaluations, "found_nsga2": found(ga, exact),
                     "found_random": found(rnd, exact)})
    return rows


def run_objectives(workdir: Path, device: str) -> tuple[SearchSpace, list[Objective]]:
    """The objectives ``donna search`` uses in ``workdir``: predicted accuracy and table latency, with the
    per-slot tables the exact searcher needs."""
    import pandas as pd

    from donna.predictor import AccuracyPredictor
    from donna.runfolder import RunFolder
    from donna.search_stage import SearchConfig, additive_forms, run_space
    from latency import LatencyTable

    space = run_space(workdir)
    run = RunFolder(workdir)
    predictor = AccuracyPredictor.load(run.predictor_json)
    table = LatencyTable.load(run.latency(device).root, device=device, force=True)
    nsr = pd.read_csv(run.nsr_csv)
    acc_tables, lat_tables = additive_forms(SearchConfig(searcher="exact"), space, predictor, nsr, table)
    accuracy = predictor.genome_predictor(nsr, space)
    return space, [Objective("accuracy", accuracy, maximize=True, additive=acc_tables),
                   Objective("latency_ms", lambda g: table.predict_genomes(g, space), additive=lat_tables)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="mbconv-tiny")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--pop-size", type=int, default=100)
    parser.add_argument("--generations", type=int, default=50)
    parser.add_argument("--operators", default="sbx-pm", choices=["ux-reset", "sbx-pm"])
    parser.add_argument("--batch", type=int, default=100_000, help="genomes per throughput batch")
    parser.add_argument("--workdir", default=None, help="run folder: use its real predictor and latency table")
    parser.add_argument("--device", default="cpu", help="with --workdir: the latency table's device")
    args = parser.parse_args(argv)

    if args.workdir:
        space, objectives = run_objectives(Path(args.workdir), args.device)
        print(f"# search benchmark, run folder {args.workdir}, space {space.name} ({space.size:.3g} architectures)")
        print(f"# objectives: the run's ridge predictor over NSR and its '{args.device}' latency table")
    else:
        space = get_space(args.space)
        tables = build_tables(space)
        check_option_order(space, tables)
        objectives = make_objectives(space, tables)
        print(f"# search benchmark, space {args.space} ({space.size:.3g} architectures)")
        print("# objectives: STAND-INS, not the real predictor or device table:")
        print("#   latency  = per-(slot, option) lookup table: analytic MACs * "
              f"{LATENCY_MS_PER_MMAC} ms/MMAC + {LATENCY_MS_PER_LAYER} ms/layer, x lognormal(0, {NOISE_SD}) noise")
        print("#   accuracy = linear model on one-hot (slot, option) features, weight log1p(MACs/1e4) x noise")
    problem = GenomeProblem(space, objectives)
    reference = resolve_reference(problem)
    print(f"# hypervolume: accuracy negated, normalised by ideal/nadir {reference.to_dict()}, "
          f"ref point {reference.ref_point} per objective")
    rate = candidates_per_second(problem, args.batch)
    print(f"\ncandidates/s (vectorised predictor + latency table, batch {args.batch}): {rate:,.0f} "
          f"(goal >= 10,000: {'met' if rate >= 10_000 else 'NOT met'})")
    exact, exact_s = timed_search("exact", space, objectives, reference)
    hv_exact = exact.hypervolume
    print(f"\nexact front (dynamic programming over {space.num_slots} slots): "
          f"{len(exact.archs)} points, hypervolume {hv_exact:.4f}, {exact_s:.2f} s "
          f"({exact.history[0]['partial_sums']:,} partial sums formed, {space.size:.3g} architectures)")
    print(f"\nNSGA-II ({args.operators}) and random, pop {args.pop_size} x {args.generations} generations; "
          "hypervolume as a share of the exact front's")
    print(f"(found: how many of the exact front's {len(exact.archs)} points the searcher's front holds)")
    print("| seed | HV nsga2 | share | found | s | HV random | share | found | s | nsga2 better | "
          "nsga2 evals/s (end to end) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    rows = compare(space, objectives, reference, exact, args)
    for r in rows:
        print(f"| {r['seed']} | {r['hv_nsga2']:.4f} | {r['hv_nsga2'] / hv_exact:.2%} | {r['found_nsga2']} | "
              f"{r['s_nsga2']:.2f} | {r['hv_random']:.4f} | {r['hv_random'] / hv_exact:.2%} | {r['found_random']} | "
              f"{r['s_random']:.2f} | {'yes' if r['hv_nsga2'] > r['hv_random'] else 'NO'} | "
              f"{r['evals'] / r['s_nsga2']:,.0f} |")
    for name in ("nsga2", "random"):
        shares = np.array([r[f"hv_{name}"] / hv_exact for r in rows])
        print(f"{name}: mean share of the exact hypervolume {shares.mean():.2%} (min {shares.min():.2%}), "
              f"mean time {np.mean([r[f's_{name}'] for r in rows]):.2f} s; exact {exact_s:.2f} s")
    wins = sum(r["hv_nsga2"] > r["hv_random"] for r in rows)
    print(f"\nNSGA-II higher on {wins}/{len(rows)} seeds")
    return 0 if wins == len(rows) and rate >= 10_000 else 1


if __name__ == "__main__":
    sys.exit(main())
