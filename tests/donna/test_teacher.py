"""The teacher: trained and cached once, loadable as a checkpoint of ours, bad files fail clearly."""

from __future__ import annotations

import json

import pytest
import torch

from blocks import get_space
from donna.assemble import evaluate
from donna.config import TeacherConfig
from donna.teacher import get_teacher

from .conftest import TEACHER


def test_trained_teacher_is_cached_with_its_accuracy(built, space, digits16):
    workdir = built["workdir"]
    info = json.loads((workdir / "teacher.json").read_text())
    assert info["kind"] == "trained" and info["val_accuracy"] > 0.8  # 4 epochs on 16x16 digits
    stamp = (workdir / "teacher.pt").stat().st_mtime_ns
    again = get_teacher(TEACHER, space, digits16, workdir, progress=False)  # loads, does not retrain
    assert (workdir / "teacher.pt").stat().st_mtime_ns == stamp
    assert evaluate(again, digits16.val) == pytest.approx(info["val_accuracy"])
    assert json.loads((workdir / "config.json").read_text())["teacher"]["epochs"] == TEACHER.epochs


def test_checkpoint_of_ours_loads_in_another_run_folder(built, space, digits16, tmp_path):
    cfg = TeacherConfig(source=str(built["workdir"] / "teacher.pt"))
    teacher = get_teacher(cfg, space, digits16, tmp_path, progress=False)
    x = torch.randn(2, 3, 16, 16)
    assert torch.equal(teacher(x), built["teacher"](x))
    assert json.loads((tmp_path / "teacher.json").read_text())["kind"] == "checkpoint"


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def test_bad_teacher_files_fail_in_one_line_and_overwrite_nothing(built, space, digits16, tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    workdir = built["workdir"]
    before = _snapshot(workdir)
    with pytest.raises(ValueError, match="already holds a teacher") as err:
        get_teacher(TeacherConfig(source=str(garbage)), space, digits16, workdir, progress=False)
    assert "\n" not in str(err.value)
    fresh = tmp_path / "fresh"
    with pytest.raises(ValueError, match="could not be loaded") as err:
        get_teacher(TeacherConfig(source=str(garbage)), space, digits16, fresh, progress=False)
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="does not fit space"):  # the tiny teacher against the embedded space
        get_teacher(TeacherConfig(source=str(workdir / "teacher.pt")), get_space("mbconv-tiny"), digits16, fresh,
                    progress=False)
    with pytest.raises(ValueError, match="does not exist"):
        get_teacher(TeacherConfig(source="mobilenet_v2", weights=str(tmp_path / "none.pth")),
                    get_space("mbconv-imagenet-mbv2"), digits16, fresh, progress=False)
    assert _snapshot(workdir) == before
    assert not fresh.exists() or not any(fresh.iterdir())
