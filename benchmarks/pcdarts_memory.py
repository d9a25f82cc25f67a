"""PC-DARTS partial channels: activation memory kept for backward at K vs K = 1, and the largest batch in a budget.

Method: the bytes of the tensors autograd saves for backward, counted with
``torch.autograd.graph.saved_tensors_hooks`` (distinct storages, parameters excluded; see
``baselines.memory``), during the forward of one search step's loss on the same batch. Works on
a CPU; on a GPU the same count applies (it is not the allocator's peak).

The largest batch that fits a fixed budget: the step's memory is modelled as
``static + a + b * batch`` with ``static`` = weights, their gradients and SGD momentum plus alpha
and beta, and ``a + b * batch`` the saved activations fitted on two batch sizes; the batch found
is then checked by measuring it (and the next one) again.

Usage: ``python benchmarks/pcdarts_memory.py [--space mbconv-tiny] [--batch 8] [--k 4] [--budget-mib 2048]``
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

# Run as a script, this folder comes first on sys.path and benchmarks/search.py would shadow the package.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)

import torch  # noqa: E402

from baselines.memory import SavedBytes, saved_bytes  # noqa: E402
from baselines.pcdarts import PCDartsNet  # noqa: E402
from blocks import get_space  # noqa: E402
from common.fileio import atomic_write_text  # noqa: E402

MIB = 2 ** 20


def measure(model: PCDartsNet, batch: int, input_shape: tuple[int, int, int], classes: int) -> SavedBytes:
    """Saved-tensor bytes of one forward of the search loss at ``batch``."""
    generator = torch.Generator().manual_seed(batch)
    x = torch.randn((batch, *input_shape), generator=generator)
    y = torch.randint(0, classes, (batch,), generator=generator)
    return saved_bytes(model, model.net, x, y)


def static_bytes(model: PCDartsNet) -> int:
    """Weights x 3 (values, gradients, SGD momentum) + alpha and beta x 4 (values, gradients, Adam moments)."""
    weights = sum(p.numel() * p.element_size() for p in model.weight_parameters())
    arch = sum(p.numel() * p.element_size() for p in model.arch_parameters())
    return 3 * weights + 4 * arch


def largest_batch(model: PCDartsNet, budget: int, probe: int, input_shape, classes: int) -> dict:
    """The largest batch whose step memory fits ``budget`` bytes, from a linear fit checked by measurement."""
    low, high = measure(model, probe, input_shape, classes).total, measure(model, 2 * probe, input_shape, classes).total
    slope = (high - low) / probe
    intercept = low - slope * probe
    fixed = static_bytes(model)
    per_sample_input = 4 * int(torch.tensor(input_shape).prod())
    batch = max(int((budget - fixed - intercept) // (slope + per_sample_input)), 0)

    def used(b: int) -> int:
        return fixed + measure(model, b, input_shape, classes).total + b * per_sample_input if b else fixed

    while batch > 0 and used(batch) > budget:  # the fit was optimistic: step down
        batch -= 1
    while used(batch + 1) <= budget:  # the fit was pessimistic: step up
        batch += 1
    return {"batch": batch, "bytes_per_sample": slope, "static_bytes": fixed, "used_bytes": used(batch)}


def run(space_name: str, batch: int, k: int, budget_mib: float, seed: int) -> dict:
    """Both measurements for K = 1 and K = ``k``; returns a JSON-ready report."""
    space = get_space(space_name)
    shape, classes = (space.in_channels, space.input_size, space.input_size), space.num_classes
    report = {"space": space_name, "batch": batch, "k": k, "budget_mib": budget_mib, "seed": seed,
              "method": "bytes of distinct storages saved for backward (torch.autograd.graph.saved_tensors_hooks)",
              "torch": torch.__version__, "rows": {}}
    for kk in (1, k):
        torch.manual_seed(seed)
        model = PCDartsNet(space, kk, 1e-3).train()
        start = time.perf_counter()
        same = measure(model, batch, shape, classes)
        fit = largest_batch(model, int(budget_mib * MIB), max(batch // 2, 1), shape, classes)
        report["rows"][kk] = {"partial_layers_bytes": same.partial_layers, "total_bytes": same.total, **fit,
                              "seconds": round(time.perf_counter() - start, 2)}
    one, many = report["rows"][1], report["rows"][k]
    report["partial_layers_ratio"] = many["partial_layers_bytes"] / one["partial_layers_bytes"]
    report["total_ratio"] = many["total_bytes"] / one["total_bytes"]
    report["batch_gain"] = many["batch"] / max(one["batch"], 1)
    return report


def table(report: dict) -> str:
    """The report as a Markdown table."""
    k = report["k"]
    lines = [f"space {report['space']}, batch {report['batch']}, budget {report['budget_mib']} MiB; "
             f"{report['method']}", "",
             "| K | partial-channel layers (MiB) | whole search step (MiB) | largest batch in budget |",
             "| --- | --- | --- | --- |"]
    for kk, row in report["rows"].items():
        lines.append(f"| {kk} | {row['partial_layers_bytes'] / MIB:.1f} | {row['total_bytes'] / MIB:.1f} | "
                     f"{row['batch']} |")
    lines.append(f"| K={k} / K=1 | {report['partial_layers_ratio']:.3f} | {report['total_ratio']:.3f} | "
                 f"x{report['batch_gain']:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="mbconv-tiny", help="search space name or JSON file")
    parser.add_argument("--batch", type=int, default=8, help="batch for the same-batch comparison")
    parser.add_argument("--k", type=int, default=4, help="K of partial channels to compare with K = 1")
    parser.add_argument("--budget-mib", type=float, default=1024.0, help="memory budget for the largest batch")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="write the report as JSON here")
    args = parser.parse_args()
    report = run(args.space, args.batch, args.k, args.budget_mib, args.seed)
    print(table(report))
    if args.out is not None:
        atomic_write_text(args.out, json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
