"""The predictor's labels: sampled architectures, assembled from BKD weights, briefly finetuned with
distillation from the teacher; their val accuracy and NSR features go to ``labels.csv``.

One job per architecture runs through the executor; every finished label is written at once
(atomically), so a killed run keeps its labels and continues with the next architecture.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from blocks import Arch, SearchSpace, build_model, count_params_macs
from blocks.fileio import atomic_path
from blocks.teachers import TeacherParts
from donna.data import DataSplits
from donna.device import pick_device
from donna.executor import Job, get_executor
from donna.nsr import arch_nsr
from donna.predictor import nsr_columns, nsr_lookup
from donna.runfolder import fingerprint
from donna.train import TrainConfig, evaluate, predict_logits, train


@dataclass
class LabelConfig:
    """How many architectures are labelled and how briefly they are finetuned."""

    num_labels: int = 24  # architectures finetuned to label the predictor (DONNA: about 20-30)
    pool_size: int = 4000  # uniform candidates the spread-out sample is drawn from
    # On digits every member of mbconv-tiny reaches 96-99% after 2 short epochs, which leaves labels that
    # are noise; one gentle epoch keeps the spread that architectures make (measured: README, issue 5).
    epochs: int = 1  # finetune epochs per label (the finetune recipe, shortened)
    lr: float = 0.005  # peak learning rate (SGD, cosine)
    batch_size: int = 64  # finetune batch size
    kd_weight: float = 0.5  # weight of distillation from the teacher's logits
    kd_temperature: float = 4.0  # distillation temperature
    seed: int = 0  # seeds the sample and the finetunes
    executor: str = "inprocess"  # executor running the per-architecture jobs (in order: labels are seeded)
    device: str = "auto"  # training device: auto (CUDA when present), cpu, cuda

    def __post_init__(self) -> None:
        if self.executor == "threads":
            raise ValueError("labels: the 'threads' executor would share the global RNG between finetunes and break "
                             "same-seed-same-labels; use 'inprocess'")

    def train_config(self) -> TrainConfig:
        """The shortened finetune recipe of one label."""
        return TrainConfig(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, kd_weight=self.kd_weight,
                           kd_temperature=self.kd_temperature, seed=self.seed)


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
    from blocks import KNOBS

    genes = space.encode(arch).reshape(space.num_slots, len(KNOBS))
    dims = [tuple(len(slot.choices[k]) for k in KNOBS) for slot in space.slots]
    return np.array([np.ravel_multi_index(tuple(g), d) for g, d in zip(genes, dims)])


def label_one(arch: Arch, cfg: LabelConfig, workdir: Path, space: SearchSpace, teacher: TeacherParts,
              data: DataSplits, teacher_logits: torch.Tensor, nsr: list[float]) -> dict:
    """Assembles ``arch`` from BKD weights, finetunes it briefly, returns its label row."""
    from donna.assemble import assemble

    device = pick_device(cfg.device)
    model = assemble(arch, workdir, teacher, space=space)
    before = evaluate(model, data.val, device=device)
    history = train(model, data.train, data.val, cfg.train_config(), teacher_logits=teacher_logits, device=device)
    params, macs = count_params_macs(build_model(arch), (arch.in_channels, arch.input_size, arch.input_size))
    return {"key": arch.key, "arch": arch.to_string(), "accuracy": history.val_accuracy[-1],
            "bkd_accuracy": before, "params": params, "macs": macs,
            **dict(zip(nsr_columns(len(nsr)), nsr))}


def make_labels(cfg: LabelConfig, space: SearchSpace, teacher: TeacherParts, data: DataSplits,
                workdir: str | Path, nsr_table: pd.DataFrame, progress: bool = True) -> pd.DataFrame:
    """Labels ``cfg.num_labels`` spread-out architectures into ``workdir/labels.csv`` (resumable)."""
    workdir = Path(workdir)
    path = workdir / "labels.csv"
    recipe = {k: v for k, v in asdict(cfg).items() if k not in ("device", "executor")}  # what changes labels
    fp = fingerprint({"labels": recipe, "nsr": fingerprint(nsr_table.to_dict("list")), "data": data.describe()})
    done = pd.read_csv(path) if path.is_file() else pd.DataFrame()
    if len(done) and (done["fingerprint"] != fp).any():
        raise ValueError(f"{path} holds labels made with other settings or another NSR table; delete it to relabel")
    archs = spread_sample(space, nsr_table, cfg.num_labels, cfg.pool_size, cfg.seed)
    todo = [a for a in archs if a.key not in set(done.get("key", []))]
    logits = predict_logits(teacher, data.train, device=pick_device(cfg.device)) if todo else None
    rows = done.to_dict("records")
    bar = tqdm(total=len(archs), initial=len(archs) - len(todo), desc="labels", disable=not progress)
    for arch in todo:
        nsr = arch_nsr(nsr_table, arch)
        job = Job(f"label {arch.key}", label_one, (arch, cfg, workdir, space, teacher, data, logits, nsr))
        rows.append({**get_executor(cfg.executor).run_one(job), "fingerprint": fp})
        with atomic_path(path) as tmp:
            pd.DataFrame(rows).to_csv(tmp, index=False)
        bar.update()
        bar.set_postfix(acc=f"{rows[-1]['accuracy']:.3f}")
    bar.close()
    return pd.DataFrame(rows)
