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
from common.fileio import atomic_write_text
from donna.rankstats import bootstrap_taus, kendall, paired_difference

ALPHAS = tuple(np.logspace(-4, 3, 29))  # ridge strengths tried by (leave-one-out) cross-validation
PREDICTOR_VERSION = 1


def nsr_columns(num_slots: int) -> list[str]:
    """Names of the per-slot NSR feature columns in ``labels.csv``."""
    return [f"nsr_{i}" for i in range(num_slots)]


def rank_quality(truth: np.ndarray, score: np.ndarray) -> dict[str, float]:
    """Kendall tau and Spearman rho of ``score`` against ``truth`` (higher score = better); NaN when undefined."""
    if len(truth) < 2 or np.ptp(truth) == 0 or np.ptp(score) == 0:
        return {"kendall_tau": float("nan"), "spearman": float("nan")}
    return {"kendall_tau": kendall(truth, score), "spearman": float(stats.spearmanr(truth, score).statistic)}


PREDICTS = "the labels' accuracy: val accuracy after the shortened finetune recipe (labels.epochs)"


def predicted_text(value: float | None, digits: int = 4) -> str:
    """A predicted accuracy as text. The linear fit extrapolates beyond the labels' range (above 1 for networks
    much closer to the teacher than any label): such a value still ranks networks, and says so, but is not an
    accuracy, so it shows as the bound it passed with the raw value."""
    if value is None or not np.isfinite(value):
        return "n/a"
    if value > 1.0:
        return f"1.00+ (extrapolated {value:.{digits}f}: ranks, not an accuracy)"
    if value < 0.0:
        return f"0.00- (extrapolated {value:.{digits}f}: ranks, not an accuracy)"
    return f"{value:.{digits}f}"


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
        """A vectorised ``fn(G) -> accuracy`` over integer genomes (thousands per millisecond).

        Predictions are the linear fit's, not clipped: beyond the labels' range (above 1 for networks much
        closer to the teacher than any label) they still rank networks, which is all the search needs from
        them; clipping to [0, 1] made every network past the bound a tie that the search broke towards the
        fastest, so a looser latency target could not buy a network the predictor ranks higher. Reports show
        such values as ``1.00+`` with the raw value (``predicted_text``).
        """
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
    return [tuple(len(slot.choices[k]) for k in space.knobs) for slot in space.slots]


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
    return AccuracyPredictor(features=list(features), coef=[float(c) for c in model.coef_],
                             intercept=float(model.intercept_), alpha=float(model.alpha_), space=space,
                             quality=ranking_report(labels, held_out, features, target), n_labels=len(labels))


def ranking_report(labels: pd.DataFrame, held_out: np.ndarray, features: list[str], target: str = "accuracy",
                   n_boot: int = 2000, seed: int = 0) -> dict[str, dict]:
    """Held-out rank quality of the predictor and every naive ranker, with 90% bootstrap intervals of tau.

    The predictor's entry also holds the paired bootstrap interval of tau(predictor) - tau(best naive ranker).
    """
    y = labels[target].to_numpy(float)
    scores = {"predictor": np.asarray(held_out, float), **naive_scores(labels, features)}
    taus = bootstrap_taus(y, scores, n_boot=n_boot, seed=seed)
    report = {name: {**rank_quality(y, s), **taus[name], "mae": float("nan")} for name, s in scores.items()}
    report["predictor"]["mae"] = float(np.mean(np.abs(scores["predictor"] - y)))
    naive = {k: v["kendall_tau"] for k, v in report.items() if k != "predictor" and np.isfinite(v["kendall_tau"])}
    if naive:
        best = max(naive, key=naive.get)
        report["predictor"]["best_naive"] = best
        report["predictor"]["vs_best_naive"] = paired_difference(y, scores["predictor"], scores[best],
                                                                 n_boot=n_boot, seed=seed)
    return report


def naive_scores(labels: pd.DataFrame, features: list[str]) -> dict[str, np.ndarray]:
    """The cheap alternatives a user would reach for: -sum of NSR (DNA), MACs, params, accuracy before finetuning."""
    nsr = [f for f in features if f.startswith("nsr_")]
    scores = {"sum_nsr (DNA)": -labels[nsr].sum(axis=1).to_numpy(float)} if nsr else {}
    for column, name in (("macs", "macs"), ("params", "params"), ("bkd_accuracy", "pre-finetune accuracy")):
        if column in labels.columns:
            scores[name] = labels[column].to_numpy(float)
    return scores


def quality_table(predictor: AccuracyPredictor) -> pd.DataFrame:
    """The quality report as a table: one row per ranker, held-out Kendall tau, Spearman, MAE."""
    rows = {name: {k: q.get(k, float("nan")) for k in QUALITY_COLUMNS} for name, q in predictor.quality.items()}
    frame = pd.DataFrame(rows).T.astype(float)
    frame.index.name = "ranker"
    return frame[list(QUALITY_COLUMNS)]


QUALITY_COLUMNS = ("kendall_tau", "tau_low", "tau_high", "spearman", "mae")


def paired_summary(predictor: AccuracyPredictor) -> str:
    """One line: the predictor's tau minus the best naive ranker's, with its 90% paired bootstrap interval."""
    q = predictor.quality.get("predictor", {})
    if "vs_best_naive" not in q:
        return "no naive ranker to compare with"
    d = q["vs_best_naive"]
    verdict = ("better" if d["low"] > 0 else "worse" if d["high"] < 0 else "not distinguishable")
    return (f"predictor minus best naive ranker ({q['best_naive']}): tau {d['difference']:+.3f}, "
            f"90% paired bootstrap interval [{d['low']:+.3f}, {d['high']:+.3f}] -> {verdict}")
