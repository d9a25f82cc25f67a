"""Scoring the block library: NSR of every (slot, option) on the val split, after BatchNorm recalibration.

Each option is extracted from its slot's supernet, its BatchNorm statistics are recalibrated on a few
training batches of teacher features, and its NSR against the teacher's slot output is measured on the val
split. One executor job per slot gets the slot's supernet and returns its rows and the recalibrated statistics,
which the driver writes as each job lands; ``nsr.csv`` (slot, option, nsr, params, macs) merges them. A rerun
skips slots already scored with the same library and settings.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from blocks import Arch, SearchSpace, count_macs
from blocks.teachers import TeacherParts
from common.device import set_threads, torch_device, torch_threads
from common.executor import Job, bar_position, executor_for
from common.fileio import atomic_path, atomic_save
from donna.assemble import recalibrate_bn
from donna.bkd import BlockLibrary, compute_features, read_bn_file
from donna.config import ScoreConfig
from donna.data import DataSplits, subset
from donna.runfolder import RunFolder, fingerprint, read_json, save_config, write_json

COLUMNS = ["slot", "option", "nsr", "params", "macs"]


@torch.no_grad()
def nsr(module: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, batch_size: int = 512) -> float:
    """NSR = mean((Y - Y_hat)^2) / Var(Y) of ``module`` over all of ``inputs`` (variance over every element)."""
    sse = total = total_sq = 0.0
    for start in range(0, len(inputs), batch_size):
        y = targets[start:start + batch_size].double()
        sse += float(((module(inputs[start:start + batch_size]).double() - y) ** 2).sum())
        total += float(y.sum())
        total_sq += float((y ** 2).sum())
    n = targets.numel()
    var = total_sq / n - (total / n) ** 2
    return (sse / n) / max(var, 1e-12)


def _bn_buffers(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()
            if k.endswith(("running_mean", "running_var", "num_batches_tracked"))}


def score_slot(cfg: ScoreConfig, space: SearchSpace, slot: int, supernet: nn.Module, recal_inputs: torch.Tensor,
               val_inputs: torch.Tensor, val_targets: torch.Tensor, progress: bool = True) -> dict:
    """Job: scores every option of ``slot`` from its trained supernet (or option bank); returns the rows and every
    option's recalibrated BatchNorm buffers (``{"slot", "rows", "stats"}``), which the driver writes."""
    set_threads(cfg.threads)
    device = torch_device(cfg.train_device)
    supernet = supernet.to(device)
    recal = list(recal_inputs.to(device).split(cfg.batch_size))
    val_in, val_out = val_inputs.to(device), val_targets.to(device)
    rows, stats = [], {}
    for spec in tqdm(space.options(slot), desc=f"score slot {slot}", disable=not progress, leave=False,
                     position=bar_position()):
        block = recalibrate_bn(supernet.extract(spec).to(device), recal)
        rows.append({"slot": slot, "option": str(spec), "nsr": nsr(block, val_in, val_out, cfg.eval_batch_size),
                     "params": sum(p.numel() for p in block.parameters()),
                     "macs": count_macs(block, tuple(val_inputs.shape[1:]))})
        stats[str(spec)] = _bn_buffers(block)
    return {"slot": slot, "rows": rows, "stats": stats}


def write_slot_scores(run: RunFolder, library: BlockLibrary, scored: dict, fp: str) -> None:
    """Driver: writes a scored slot's recalibrated BatchNorm buffers, then its rows (the done marker)."""
    slot = scored["slot"]
    lib_fp = library.manifest(slot)["fingerprint"]
    atomic_save(run.slot_bn(slot), lambda p: torch.save({"fingerprint": lib_fp, "stats": scored["stats"]}, p))
    write_json(run.slot_scores(slot), {"fingerprint": fp, "rows": scored["rows"]})


def _scoring_features(cfg: ScoreConfig, teacher: TeacherParts, data: DataSplits,
                      device: torch.device) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    n_recal = min(len(data.train), cfg.recal_batches * cfg.batch_size)
    order = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(cfg.seed))[:n_recal]
    val = data.val if cfg.val_samples is None else subset(data.val, np.arange(min(cfg.val_samples, len(data.val))))
    teacher = teacher.to(device)
    return (compute_features(teacher, subset(data.train, order.sort().values), device),
            compute_features(teacher, val, device))


def score_library(cfg: ScoreConfig, space: SearchSpace, teacher: TeacherParts, data: DataSplits,
                  workdir: str | Path, progress: bool = True, slots: list[int] | None = None) -> pd.DataFrame:
    """Scores every (slot, option) of the library in ``workdir`` and writes ``nsr.csv`` atomically.

    Args:
        cfg: scoring settings (recalibration batches, val samples).
        space: the search space of the library.
        teacher: the teacher the library was distilled from.
        data: the data splits (train for recalibration, val for NSR; never test).
        workdir: the run folder.
        progress: show tqdm progress bars.
        slots: the slots to score (default: every slot; ``donna extend`` scores only the slots it trained).

    Returns:
        The NSR table (columns slot, option, nsr, params, macs), also in ``workdir/nsr.csv``.

    Raises:
        ValueError: a slot has no BKD weights yet.
    """
    run, device = RunFolder(workdir), torch_device(cfg.train_device)
    library = BlockLibrary(workdir, space)
    wanted = list(range(space.num_slots)) if slots is None else list(slots)
    fps = {s: fingerprint({"score": cfg.fingerprint(), "library": _library_fp(library, s)}) for s in wanted}
    pending = [s for s in wanted if (read_json(run.slot_scores(s)) or {}).get("fingerprint") != fps[s]
               or not _bn_readable(run.slot_bn(s))]  # a deleted or damaged bn_slotN.pt is rebuilt, not skipped
    save_config(workdir, "score", cfg)
    if pending:
        with torch_threads(None):  # features use every core; each job then sets cfg.threads
            recal, val = _scoring_features(cfg, teacher, data, device)
            jobs = [Job(f"score slot {s}", score_slot, (cfg, space, s, library.slot_module(s), recal[s], val[s],
                                                         val[s + 1], progress)) for s in pending]
            for _, scored in executor_for(cfg).completed(jobs):
                write_slot_scores(run, library, scored, fps[scored["slot"]])
    rows = [row for s in wanted for row in read_json(run.slot_scores(s))["rows"]]
    table = pd.DataFrame(rows, columns=COLUMNS)
    with atomic_path(run.nsr_csv) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6g")
    return table


def _bn_readable(path: Path) -> bool:
    try:
        read_bn_file(path)
    except ValueError:  # missing, truncated or damaged
        return False
    return True


def _library_fp(library: BlockLibrary, slot: int) -> str:
    manifest = library.manifest(slot)
    if manifest is None or not library.has_slot(slot):
        raise ValueError(f"slot {slot} has no BKD weights in {library.run.library}; run BKD before scoring")
    return manifest["fingerprint"]


def load_nsr_table(workdir: str | Path) -> pd.DataFrame:
    """The NSR table of a run folder (columns slot, option, nsr, params, macs).

    Raises:
        ValueError: the run folder has no ``nsr.csv`` yet.
    """
    path = RunFolder(workdir).nsr_csv
    if not path.is_file():
        raise ValueError(f"no NSR table in {workdir} ({path.name} missing); run scoring first "
                         "(donna build-predictor)")
    return pd.read_csv(path)


def arch_nsr(table: pd.DataFrame, arch: Arch) -> list[float]:
    """The NSR of each of ``arch``'s options, slot by slot (the accuracy predictor's features).

    Raises:
        ValueError: an option of ``arch`` is not in the table (naming the slot).
    """
    lookup = {(int(s), o): float(v) for s, o, v in zip(table["slot"], table["option"], table["nsr"])}
    values = []
    for i, spec in enumerate(arch.blocks):
        if (i, str(spec)) not in lookup:
            raise ValueError(f"slot {i}: option {spec} has no NSR in the table; is the arch from this space?")
        values.append(lookup[(i, str(spec))])
    return values


CONVERGENCE_NSR = 0.05  # the teacher-identical option of every slot must score below this (METHODS.md, DONNA 2)


def convergence_check(table: pd.DataFrame, teacher_arch: Arch | None,
                      threshold: float = CONVERGENCE_NSR) -> dict:
    """NSR of the teacher-identical option of every slot against ``threshold`` (is the library trained enough?).

    The option identical to the teacher's block can reach NSR near 0; if it does not, the library is
    under-trained. Teachers that are not members of the space (torchvision) have no such option: the check
    then reports ``available: false``.
    """
    if teacher_arch is None:
        return {"available": False, "threshold": threshold, "slots": [], "passed": None,
                "why": "the teacher is not a member of the space"}
    lookup = {(int(s), o): float(v) for s, o, v in zip(table["slot"], table["option"], table["nsr"])}
    slots = []
    for i, spec in enumerate(teacher_arch.blocks):
        value = lookup.get((i, str(spec)))
        slots.append({"slot": i, "option": str(spec), "nsr": value,
                      "passed": value is not None and value < threshold})
    found = [s for s in slots if s["nsr"] is not None]
    return {"available": bool(found), "threshold": threshold, "slots": slots,
            "passed": bool(found) and all(s["passed"] for s in found),
            "worst_nsr": max((s["nsr"] for s in found), default=None)}


def write_convergence(workdir: str | Path, check: dict) -> Path:
    """Writes the check to ``library/convergence.json`` (beside the slot manifests)."""
    return write_json(RunFolder(workdir).convergence_json, check)
