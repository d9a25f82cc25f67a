"""The predictor's labels: sampled architectures, assembled from BKD weights, briefly finetuned with
distillation from the teacher; their val accuracy and NSR features go to ``labels.csv``.

One job per architecture runs through the executor: jobs on this machine read the block library from the run
folder, Ray's get it loaded in memory (no remote job reads the run folder); the driver writes every finished
label at once (atomically), so a killed run keeps its labels and continues with the next architecture.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from blocks import Arch, SearchSpace, build_model, count_params_macs
from blocks.teachers import TeacherParts
from common.device import torch_device
from common.executor import Job, executor_for
from common.fileio import atomic_path
from donna.bkd import BlockLibrary
from donna.config import SAMPLINGS, LabelConfig  # noqa: F401  (LabelConfig: imported from here by callers)
from donna.data import DataSplits, subset
from donna.nsr import arch_nsr
from donna.predictor import nsr_columns, nsr_lookup
from donna.runfolder import RunFolder, fingerprint
from donna.train import evaluate, predict_logits, train


def sample_archs(space: SearchSpace, nsr_table: pd.DataFrame, cfg: LabelConfig) -> list[Arch]:
    """The architectures to label: a uniform sample (default, independent of the features) or a spread one."""
    if cfg.sampling == "spread":
        return spread_sample(space, nsr_table, cfg.num_labels, cfg.pool_size, cfg.seed)
    unique = {a.key: a for a in space.sample_many(cfg.num_labels * 2, seed=cfg.seed)}
    return list(unique.values())[:cfg.num_labels]


def train_subset(data: DataSplits, samples: int | None, seed: int) -> tuple[Dataset, torch.Tensor | None]:
    """The seeded subset of the train split labels train on, and its indices (None: the whole split)."""
    if samples is None or samples >= len(data.train):
        return data.train, None
    index = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(seed))[:samples].sort().values
    return subset(data.train, index), index


def spread_sample(space: SearchSpace, nsr_table: pd.DataFrame, n: int, pool_size: int, seed: int) -> list[Arch]:
    """``n`` architectures spread over the range of summed NSR and MACs (farthest-point sampling).

    A uniform sample clusters in the middle of both ranges; labels spread to the extremes tell the
    regression more per finetune.
    """
    lookup = nsr_lookup(nsr_table, space)
    macs = [nsr_table[nsr_table["slot"] == i].set_index("option").loc[[str(o) for o in space.options(i)], "macs"]
            .to_numpy(float) for i in range(space.num_slots)]
    pool = space.sample_many(pool_size, seed=seed)
    index = np.stack([_option_indices(space, a) for a in pool])
    points = np.stack([sum(lookup[i][index[:, i]] for i in range(space.num_slots)),
                       np.log(sum(macs[i][index[:, i]] for i in range(space.num_slots)))], axis=1)
    points = (points - points.min(0)) / np.maximum(np.ptp(points, 0), 1e-12)
    chosen = [int(np.random.default_rng(seed).integers(pool_size))]
    distance = np.linalg.norm(points - points[chosen[0]], axis=1)
    while len(chosen) < min(n, pool_size):
        chosen.append(int(np.argmax(distance)))
        distance = np.minimum(distance, np.linalg.norm(points - points[chosen[-1]], axis=1))
    return [pool[i] for i in chosen]


def _option_indices(space: SearchSpace, arch: Arch) -> np.ndarray:
    genes = space.encode(arch).reshape(space.num_slots, len(space.knobs))
    dims = [tuple(len(slot.choices[k]) for k in space.knobs) for slot in space.slots]
    return np.array([np.ravel_multi_index(tuple(g), d) for g, d in zip(genes, dims)])


def label_one(arch: Arch, cfg: LabelConfig, library: BlockLibrary | Path, space: SearchSpace, teacher: TeacherParts,
              data: DataSplits, teacher_logits: torch.Tensor, nsr: list[float]) -> dict:
    """Job: assembles ``arch`` from BKD weights (a loaded ``BlockLibrary``, or the run folder holding one),
    recalibrates it, finetunes it briefly, returns its label row."""
    from donna.assemble import assemble_recalibrated

    device = torch_device(cfg.train_device)
    train_set, _ = train_subset(data, cfg.train_samples, cfg.seed)
    model = assemble_recalibrated(arch, library, teacher, data.train, space=space, mode=cfg.recalibrate,
                                  num_batches=cfg.recal_batches, seed=cfg.seed)
    before = evaluate(model, data.val, device=device)
    history = train(model, train_set, data.val, cfg.train_config(), teacher_logits=teacher_logits, device=device)
    params, macs = count_params_macs(build_model(arch), (arch.in_channels, arch.input_size, arch.input_size))
    return {"key": arch.key, "arch": arch.to_string(), "accuracy": history.val_accuracy[-1],
            "bkd_accuracy": before, "params": params, "macs": macs,
            **dict(zip(nsr_columns(len(nsr)), nsr))}


def make_labels(cfg: LabelConfig, space: SearchSpace, teacher: TeacherParts, data: DataSplits,
                workdir: str | Path, nsr_table: pd.DataFrame, progress: bool = True) -> pd.DataFrame:
    """Labels ``cfg.num_labels`` spread-out architectures into ``workdir/labels.csv`` (resumable)."""
    fp = fingerprint({"labels": cfg.fingerprint(), "nsr": fingerprint(nsr_table.to_dict("list")),
                      "data": data.describe()})
    return label_archs(sample_archs(space, nsr_table, cfg), cfg, space, teacher, data, workdir, nsr_table,
                       RunFolder(workdir).labels_csv, fp, progress)


def label_archs(archs: list[Arch], cfg: LabelConfig, space: SearchSpace, teacher: TeacherParts, data: DataSplits,
                workdir: str | Path, nsr_table: pd.DataFrame, path: Path, fp: str,
                progress: bool = True) -> pd.DataFrame:
    """Labels ``archs`` with the blocks of the library in ``workdir`` into ``path`` (resumable: labels already in
    the file are kept; each finished label is written at once, atomically). ``fp`` names the settings; a file
    made with others is refused."""
    workdir = Path(workdir)
    done = pd.read_csv(path) if path.is_file() else pd.DataFrame()
    if len(done) and ({"key", "accuracy", "fingerprint"} - set(done.columns)
                      or done[["key", "accuracy", "fingerprint"]].isna().any().any()):
        raise ValueError(f"{path} is damaged (a column or a value is missing); delete it to relabel")
    if len(done) and (done["fingerprint"] != fp).any():
        raise ValueError(f"{path} holds labels made with other settings or another NSR table; delete it to relabel")
    todo = [a for a in archs if a.key not in set(done.get("key", []))]
    train_set, _ = train_subset(data, cfg.train_samples, cfg.seed)
    logits = predict_logits(teacher, train_set, device=torch_device(cfg.train_device)) if todo else None
    rows = done.to_dict("records")
    order = {a.key: i for i, a in enumerate(archs)}
    bar = tqdm(total=len(archs), initial=len(archs) - len(todo), desc="labels", disable=not progress)
    executor = executor_for(cfg)
    # jobs on this machine read the library from the run folder; elsewhere (Ray) they get the weights. Sending the
    # loaded library to local worker processes would share every tensor through a file descriptor of its own
    # ("Too many open files" at 30 labels).
    library = BlockLibrary(workdir, space).load() if todo and not executor.shares_files else workdir
    jobs = [Job(f"label {a.key}", label_one, (a, cfg, library, space, teacher, data, logits, arch_nsr(nsr_table, a)))
            for a in todo]
    for _, row in executor.completed(jobs):
        rows.append({**row, "fingerprint": fp})
        rows.sort(key=lambda r: order.get(r["key"], len(order)))  # the file lists labels in sample order
        with atomic_path(path) as tmp:
            pd.DataFrame(rows).to_csv(tmp, index=False)
        bar.update()
        bar.set_postfix(acc=f"{row['accuracy']:.3f}")
    bar.close()
    return pd.DataFrame(rows)
