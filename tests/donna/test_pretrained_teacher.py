"""Shipped teachers (``donna.pretrained``): used only for exactly the run's settings, checked, recorded."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

import donna.pretrained as pretrained
import donna.teacher as teacher_module
from blocks import get_space
from donna.config import DonnaConfig
from donna.data import load_data
from donna.pretrained.ship import ship_run
from donna.teacher import get_teacher

from .conftest import TEACHER


class Trained(Exception):
    """Raised in place of training: the test expected a shipped teacher to be used."""


def _no_training(*args, **kwargs):
    raise Trained


def test_a_shipped_teacher_is_copied_in_only_for_its_own_settings(built, space, digits16, tmp_path, monkeypatch):
    shelf = tmp_path / "shipped"
    shelf.mkdir()
    monkeypatch.setattr(pretrained, "HERE", shelf)
    weights = ship_run(built["workdir"], TEACHER, "digits", "test")
    record = json.loads(weights.with_suffix(".json").read_text())
    trained_here = json.loads((built["workdir"] / "teacher.json").read_text())
    assert record["fingerprint"] == trained_here["fingerprint"] and record["recipe"]["epochs"] == TEACHER.epochs
    monkeypatch.setattr(teacher_module, "train_classifier", _no_training)

    run = tmp_path / "run"
    teacher = get_teacher(TEACHER, space, digits16, run, progress=False)
    assert (run / "teacher.pt").read_bytes() == (built["workdir"] / "teacher.pt").read_bytes()
    x = torch.randn(2, 3, 16, 16)
    assert torch.equal(teacher(x), built["teacher"](x))
    info = json.loads((run / "teacher.json").read_text())
    assert info["pretrained"]["file"] == weights.name and info["pretrained"]["sha256"] == record["sha256"]
    assert info["fingerprint"] == trained_here["fingerprint"]
    assert info["val_accuracy"] == pytest.approx(trained_here["val_accuracy"])
    get_teacher(TEACHER, space, digits16, run, progress=False)  # a resumed run keeps it and its record
    assert json.loads((run / "teacher.json").read_text()) == info

    for other in (dataclasses.replace(TEACHER, epochs=TEACHER.epochs + 1),  # another recipe
                  dataclasses.replace(TEACHER, seed=1),  # another seed
                  dataclasses.replace(TEACHER, pretrained=False)):  # the user asks for a teacher trained here
        with pytest.raises(Trained):
            get_teacher(other, space, digits16, tmp_path / f"other-{other.epochs}-{other.seed}", progress=False)

    weights.write_bytes(weights.read_bytes()[:-16])  # a damaged install is named, not used
    with pytest.raises(ValueError, match="does not match its record.*pretrained=false"):
        get_teacher(TEACHER, space, digits16, tmp_path / "damaged", progress=False)
    assert torch.equal(get_teacher(TEACHER, space, digits16, run, progress=False)(x), teacher(x))  # a run that
    # copied it in before keeps working


def test_the_default_run_uses_its_shipped_teacher_at_the_recorded_accuracy(tmp_path, monkeypatch):
    """Fails when the default recipe, data or space changes without re-shipping (python -m donna.pretrained.ship)."""
    monkeypatch.setattr(teacher_module, "train_classifier", _no_training)
    cfg = DonnaConfig()
    base = get_space(cfg.space)
    data = load_data(cfg.data, base.input_size, base.in_channels)
    get_teacher(cfg.teacher, base.with_classes(data.num_classes), data, tmp_path, progress=False)
    info = json.loads((tmp_path / "teacher.json").read_text())
    assert info["val_accuracy"] == pytest.approx(info["pretrained"]["val_accuracy"], abs=2e-3)
    assert info["pretrained"]["val_accuracy"] >= 0.9
