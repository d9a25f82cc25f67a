"""The Python API: ``from donna import build_predictor, search, finetune, run`` are the calls the CLI makes,
and ``import donna`` loads nothing heavy and changes no environment variable."""

import subprocess
import sys

import pytest

import donna

PROBE = ("import os, sys; os.environ.pop('OMP_WAIT_POLICY', None); import donna; "
         "print('torch' in sys.modules, 'OMP_WAIT_POLICY' in os.environ, sorted(donna.__all__))")


def test_import_donna_is_light_and_has_no_side_effect():
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True).stdout.split()
    assert out[:2] == ["False", "False"]  # torch not loaded, the environment untouched


def test_the_api_names_are_the_functions_the_cli_calls():
    from donna import build_predictor, finetune, run, search
    from donna.finetune_stage import run_finetune
    from donna.pipeline import run_pipeline
    from donna.predictor_stage import build_predictor as stage_build_predictor
    from donna.search_stage import run_search

    assert (build_predictor, search, finetune, run) == (stage_build_predictor, run_search, run_finetune, run_pipeline)
    for function in (build_predictor, search, finetune, run):
        assert "Args:" in function.__doc__ or "``cfg``" in function.__doc__, function.__name__
    assert set(donna.__all__) <= set(dir(donna))


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        donna.nope  # noqa: B018
