"""The Python API: ``from donna import build_predictor, search, finetune, run`` are the calls the CLI makes,
and ``import donna`` loads nothing heavy and changes no environment variable."""

import subprocess
import sys

import pytest

import donna

PROBE = ("import os, sys; [os.environ.pop(k, None) for k in ('OMP_WAIT_POLICY', 'GOMP_SPINCOUNT')]; import donna; "
         "print('torch' in sys.modules, 'OMP_WAIT_POLICY' in os.environ or 'GOMP_SPINCOUNT' in os.environ, "
         "sorted(donna.__all__))")


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


POLICY = ("import os, sys; [os.environ.pop(k, None) for k in ('OMP_WAIT_POLICY', 'GOMP_SPINCOUNT')]; {set}"
          "import donna; donna.run; print(os.environ.get('OMP_WAIT_POLICY'), os.environ.get('GOMP_SPINCOUNT'))")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="GNU OpenMP's spin count is the Linux policy")
def test_the_first_api_use_sets_a_short_openmp_spin_unless_the_user_chose():
    def policy(preset: str = "") -> list[str]:
        code = POLICY.format(set=preset)
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()

    assert policy() == ["None", "1000"]
    assert policy("os.environ['OMP_WAIT_POLICY'] = 'ACTIVE'; ") == ["ACTIVE", "None"]
    assert policy("os.environ['GOMP_SPINCOUNT'] = '5'; ") == ["None", "5"]
