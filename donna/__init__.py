"""The DONNA pipeline: data, teacher, blockwise distillation, NSR scoring, accuracy predictor, search, finetune.

The four calls the ``donna`` command line makes, for use from Python::

    from donna import run, build_predictor, search, finetune, SearchConfig

    metrics = run("runs/demo")                        # the whole pipeline on the embedded default
    build_predictor("runs/demo")                      # teacher -> BKD -> NSR -> labels -> predictor.json
    out = search("runs/demo", SearchConfig(latency_device="cpu", target_ms=0.1))
    metrics = finetune("runs/demo")                   # the latest selection, from its BKD weights

Every call resumes: finished stages in the run folder are skipped. ``import donna`` is light; the
stage modules (and torch) load on first use of one of these names.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

# public name -> (module, attribute); resolved on first access (PEP 562), so `import donna` stays fast
_API = {
    "build_predictor": ("donna.predictor_stage", "build_predictor"),
    "search": ("donna.search_stage", "run_search"),
    "finetune": ("donna.finetune_stage", "run_finetune"),
    "run": ("donna.pipeline", "run_pipeline"),
    "PredictorRunConfig": ("donna.predictor_stage", "PredictorRunConfig"),
    "SearchConfig": ("donna.search_stage", "SearchConfig"),
    "FinetuneConfig": ("donna.finetune_stage", "FinetuneConfig"),
    "RunFolder": ("donna.runfolder", "RunFolder"),
}

__all__ = sorted(_API)


def passive_openmp() -> None:
    """Keeps idle OpenMP threads from spinning for long, unless the user set the policy.

    It only takes effect before torch loads. With GNU OpenMP (Linux) it sets ``GOMP_SPINCOUNT=1000``:
    a thread waits briefly, then sleeps. Measured on this 2-core machine (``benchmarks/omp_policy.py``,
    ms per training image of the reference member), that is about as fast as the default spin when
    the machine is quiet and faster than ``OMP_WAIT_POLICY=PASSIVE`` both quiet and busy; the
    default spin made small training steps 4-100x slower when other work shared the cores.
    Elsewhere it sets ``OMP_WAIT_POLICY=PASSIVE``. The ``donna`` command line calls it first thing,
    and so does the first use of a name of this package's API while torch is not loaded yet.
    """
    if "torch" in sys.modules or "OMP_WAIT_POLICY" in os.environ or "GOMP_SPINCOUNT" in os.environ:
        return
    if sys.platform.startswith("linux"):
        os.environ["GOMP_SPINCOUNT"] = "1000"
    else:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'donna' has no attribute {name!r}")
    passive_openmp()
    module, attribute = _API[name]
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
