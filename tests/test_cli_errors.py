"""The shared top-level handler: which line and status each kind of failure gets, and --debug."""

from __future__ import annotations

import errno
import json

import pytest
import torch

from blocks.cli_errors import describe, finite_float, int_at_least, run_guarded


def _raise(err: BaseException):
    def command() -> int:
        raise err
    return command


@pytest.mark.parametrize("err,fragment", [
    (OSError(errno.ENOSPC, "No space left on device", "/runs/demo/nsr.csv"),
     "No space left on device: /runs/demo/nsr.csv; free some disk space"),
    (PermissionError(errno.EACCES, "Permission denied", "/runs/demo/config.json"),
     "Permission denied: /runs/demo/config.json; make it writable"),
    (OSError(errno.EROFS, "Read-only file system", "/mnt/ro/run"), "/mnt/ro/run; the file system is read-only"),
    (ValueError("kernel 4 not in [3, 5]"), "kernel 4 not in [3, 5]"),
])
def test_each_failure_is_one_line_with_status_2(err, fragment, capsys):
    assert run_guarded("donna", _raise(err)) == 2
    out = capsys.readouterr().err
    assert out.count("\n") == 1 and out.startswith("donna: error: ") and fragment in out, out


def test_a_corrupt_file_is_named_with_what_to_do(tmp_path, capsys):
    path = tmp_path / "slot0.pt"
    path.write_bytes(b"PK\x03\x04 not a zip")

    def command() -> int:
        torch.load(path, weights_only=True)
        return 0

    assert run_guarded("donna", command) == 2
    line = capsys.readouterr().err
    assert f"{path} is corrupt, truncated or not the expected kind of file" in line and "delete or replace" in line
    bad = tmp_path / "predictor.json"
    bad.write_text('{"alpha": ')
    with pytest.raises(json.JSONDecodeError) as info:
        json.loads(bad.read_text())
    assert describe(info.value)[1] == 2  # a JSON error is bad input, not a bug


def test_ctrl_c_is_one_line_and_status_130(capsys):
    assert run_guarded("latency", _raise(KeyboardInterrupt())) == 130
    assert capsys.readouterr().err == "latency: interrupted; run the same command to resume\n"


def test_a_bug_says_debug_and_debug_shows_the_traceback(capsys):
    assert run_guarded("donna", _raise(ZeroDivisionError("division by zero"))) == 1
    line = capsys.readouterr().err
    assert "unexpected ZeroDivisionError: division by zero" in line and "--debug" in line
    with pytest.raises(ZeroDivisionError):
        run_guarded("donna", _raise(ZeroDivisionError("division by zero")), debug=True)


@pytest.mark.parametrize("text", ["0", "-1", "nan", "inf", "-inf", "abc"])
def test_positive_finite_numbers_refuse(text):
    import argparse

    with pytest.raises(argparse.ArgumentTypeError):
        finite_float(0.0)(text)


def test_argument_types_accept_their_range():
    assert finite_float(0.0)("0.5") == 0.5 and finite_float(0.0, 1.0, low_open=False)("0") == 0.0
    assert int_at_least(2)("2") == 2 and int_at_least(0, 5)("5") == 5
