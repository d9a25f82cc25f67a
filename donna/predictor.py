"""DONNA's accuracy predictor: ridge regression from per-slot NSR to finetuned accuracy.

The quality report puts the predictor's leave-one-out ranking next to the naive rankers a user
would otherwise reach for (sum of NSR as in DNA, MACs, params), on the same labels.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.linear_model import RidgeCV
from sklearn.model_selection import LeaveOneOut, cross_val_predict

from blocks import Arch, SearchSpace
from blocks.fileio import atomic_write_text

ALPHAS = tuple(np.logspace(-4, 3, 29))  # ridge strengths tried by (leave-one-out) cross-validation
PREDICTOR_VERSION = 1


def nsr_columns(num_slots: int) -> list[str]:
    """Names of the per-slot NSR feature columns in ``labels.csv``."""
    return [f"nsr_{i}" for i in range(num_slots)]


def rank_quality(truth: np.ndarray, score: np.ndarray) -> dict[str, float]:
    """Kendall tau and Spearman rho of ``score`` against ``truth`` (higher score = better)."""
    tau = stats.kendalltau(truth, score).statistic
    rho = stats.spearmanr(truth, score).statistic
    return {"kendall_tau": float(np.nan_to_num(tau)), "spearman": float(np.nan_to_num(rho))}


@dataclass
class AccuracyPredictor:
    """A fitted linear model ``accuracy ~ intercept + sum_i coef_i * feature_i``."""

    features: list[str]  # feature column names, in coefficient order
    coef: list[float]  # one weight per feature
    intercept: float
    alpha: float  # ridge strength chosen by cross-validation
    space: str | None = None  # search space the features belong to
    quality: dict[str, Any] = field(default_factory=dict)  # held-out fit quality and naive rankers
    n_labels: int = 0

    def predict_frame(self, frame: pd.DataFrame) -> np.ndarray:
        """Predicted accuracy of every row of ``frame`` (must hold the feature columns)."""
        missing = [f for f in self.features if f not in frame.columns]
        if missing:
            raise ValueError(f"cannot predict: column {missing[0]!r} is missing; features: {self.features}")
        return frame[self.features].to_numpy(float) @ np.asarray(self.coef) + self.intercept

    def nsr_lookup(self, nsr_table: pd.DataFrame, space: SearchSpace) -> list[np.ndarray]:
        """Per slot, the predictor's contribution of every option in ``space.options(i)`` order."""
        lookup = nsr_lookup(nsr_table, space)
        weights = dict(zip(self.features, self.coef))
        return [lookup[i] * weights.get(f"nsr_{i}", 0.0) for i in range(space.num_slots)]

    def genome_predictor(self, nsr_table: pd.DataFrame, space: SearchSpace):
        """A vectorised ``fn(G) -> accuracy`` over integer genomes (thousands per millisecond)."""
        if set(self.features) - set(nsr_columns(space.num_slots)):
            raise ValueError("genome prediction needs a predictor fitted on NSR features only")
        contrib, dims = self.nsr_lookup(nsr_table, space), _option_dims(space)

        def predict(genomes: np.ndarray) -> np.ndarray:
            genomes = np.atleast_2d(genomes).astype(np.int64)
            total = np.full(len(genomes), self.intercept)
            for i, (table, shape) in enumerate(zip(contrib, dims)):
                genes = genomes[:, i * len(shape):(i + 1) * len(shape)]
                total += table[np.ravel_multi_index(genes.T, shape)]
            return total

        return predict

    def predict_archs(self, archs: list[Arch], nsr_table: pd.DataFrame, space: SearchSpace) -> np.ndarray:
        """Predicted accuracy of architectures of ``space``."""
        return self.genome_predictor(nsr_table, space)(np.stack([space.encode(a) for a in archs]))

    def to_json(self, path: str | Path | None = None) -> str:
        """JSON text of the predictor, written atomically to ``path`` when given."""
        text = json.dumps({"version": PREDICTOR_VERSION, **self.__dict__}, indent=2, default=float) + "\n"
        if path is not None:
            atomic_write_text(path, text)
        return text

    @classmethod
    def load(cls, path: str | Path) -> AccuracyPredictor:
        """Reads ``predictor.json``; a missing file says which command makes it."""
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"no accuracy predictor at {path}; run `donna build-predictor "
                             f"--workdir {path.parent}` first")
        data = json.loads(path.read_text())
        if data.pop("version", None) != PREDICTOR_VERSION:
            raise ValueError(f"{path}: predictor format version is not {PREDICTOR_VERSION}; rebuild it")
        return cls(**data)


def _option_dims(space: SearchSpace) -> list[tuple[int, ...]]:
    from blocks import KNOBS

    return [tuple(len(slot.choices[k]) for k in KNOBS) for slot in space.slots]


def nsr_lookup(nsr_table: pd.DataFrame, space: SearchSpace) -> list[np.ndarray]:
    """NSR of every option of every slot, in ``space.options(i)`` order, from ``nsr.csv`` rows."""
    lookup = []
    for i in range(space.num_slots):
        rows = nsr_table[nsr_table["slot"] == i].set_index("option")["nsr"]
        names = [str(o) for o in space.options(i)]
        missing = [n for n in names if n not in rows.index]
        if missing:
            raise ValueError(f"nsr table has no score for slot {i} option {missing[0]!r}; "
                             "rerun `donna build-predictor` to finish scoring")
        lookup.append(rows.loc[names].to_numpy(float))
    return lookup


def fit_predictor(labels: pd.DataFrame, features: list[str], target: str = "accuracy",
                  space: str | None = None) -> AccuracyPredictor:
    """Fits ridge regression with the ridge strength chosen by leave-one-out cross-validation.

    The quality report uses nested leave-one-out: every label is predicted by a model (its alpha
    chosen again) that never saw it.
    """
    if len(labels) < 4:
        raise ValueError(f"need at least 4 labelled architectures to fit a predictor, got {len(labels)}")
    x, y = labels[features].to_numpy(float), labels[target].to_numpy(float)
    model = RidgeCV(alphas=ALPHAS).fit(x, y)
    held_out = cross_val_predict(RidgeCV(alphas=ALPHAS), x, y, cv=LeaveOneOut())
    quality = {"predictor": {**rank_quality(y, held_out), "mae": float(np.mean(np.abs(held_out - y)))},
               **naive_rankers(labels, features, target)}
    return AccuracyPredictor(features=list(features), coef=[float(c) for c in model.coef_],
                             intercept=float(model.intercept_), alpha=float(model.alpha_), space=space,
                             quality=quality, n_labels=len(labels))


def naive_rankers(labels: pd.DataFrame, features: list[str], target: str = "accuracy") -> dict[str, dict]:
    """Rank quality of the cheap alternatives: -sum of NSR (DNA), MACs, params."""
    y = labels[target].to_numpy(float)
    nsr = [f for f in features if f.startswith("nsr_")]
    scores = {"sum_nsr (DNA)": -labels[nsr].sum(axis=1).to_numpy(float)} if nsr else {}
    for column in ("macs", "params"):
        if column in labels.columns:
            scores[column] = labels[column].to_numpy(float)
    return {name: {**rank_quality(y, s), "mae": float("nan")} for name, s in scores.items()}


def quality_table(predictor: AccuracyPredictor) -> pd.DataFrame:
    """The quality report as a table: one row per ranker, held-out Kendall tau, Spearman, MAE."""
    frame = pd.DataFrame(predictor.quality).T
    frame.index.name = "ranker"
    return frame[["kendall_tau", "spearman", "mae"]]
