"""A loaded teacher with another class count gets a new classifier and a short finetune, cached and recorded."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
import torchvision

from blocks import SearchSpace, get_space
from donna.config import TeacherConfig
from donna.data import DataSplits, split_labels, subset
from donna.teacher import get_teacher, load_teacher_checkpoint


def _small(data: DataSplits, sizes: tuple[int, int, int], classes: int) -> DataSplits:
    """The first ``sizes`` examples of each split whose label is below ``classes``."""
    def part(split, n):
        return subset(split, np.flatnonzero(split_labels(split) < classes)[:n])

    train, val, test = (part(s, n) for s, n in zip((data.train, data.val, data.test), sizes))
    return DataSplits(f"{data.name}<{classes}", train, val, test, classes, data.input_size, data.in_channels,
                      list(data.classes[:classes]), data.seed)


def _mbv2_space(input_size: int) -> SearchSpace:
    """The MobileNetV2-skeleton space at a small input, so a full-width mobilenet_v2 trains in seconds."""
    space = get_space("mbconv-imagenet-mbv2")
    return replace(space, name="mbv2-small", input_size=input_size)


def _read(path):
    return json.loads(path.read_text())


def test_torchvision_teacher_of_other_classes_is_adapted_once(digits16, tmp_path):
    data, space = _small(digits16, (160, 64, 32), 10), _mbv2_space(16)
    torch.manual_seed(0)
    source = torchvision.models.mobilenet_v2(weights=None, num_classes=5)
    torch.save(source.state_dict(), tmp_path / "mbv2-5.pth")
    cfg = TeacherConfig(source="mobilenet_v2", weights=str(tmp_path / "mbv2-5.pth"), adapt_epochs=1, batch_size=32,
                        train_device="cpu")
    workdir = tmp_path / "run"
    teacher = get_teacher(cfg, space, data, workdir, progress=False)
    x = torch.randn(2, 3, 16, 16)
    assert teacher(x).shape == (2, 10)

    adapted = _read(workdir / "teacher.json")["adapted"]
    assert (adapted["kind"], adapted["from_classes"], adapted["to_classes"]) == ("torchvision", 5, 10)
    assert adapted["epochs"] == 1 and adapted["classes"] == list(data.classes)
    assert adapted["classifier"] == "classifier.1" and len(adapted["val_accuracy_history"]) == 1
    assert 0.0 <= adapted["val_accuracy_before"] <= 1.0 and 0.0 <= adapted["val_accuracy_after"] <= 1.0
    saved = torch.load(workdir / "teacher.pt", map_location="cpu", weights_only=True)
    assert saved["torchvision"] == "mobilenet_v2" and saved["state_dict"]["classifier.1.weight"].shape == (10, 1280)
    trained = saved["state_dict"]["features.1.conv.0.0.weight"]  # a loaded layer, trained at a tenth of the lr
    assert not torch.equal(trained, source.state_dict()["features.1.conv.0.0.weight"])
    assert not list((workdir).glob("teacher.ckpt-*.pt"))  # the resume point goes once the finetune is done

    stamp = (workdir / "teacher.pt").stat().st_mtime_ns
    again = get_teacher(cfg, space, data, workdir, progress=False)  # loads the adapted teacher, trains nothing
    assert (workdir / "teacher.pt").stat().st_mtime_ns == stamp
    with torch.no_grad():
        torch.testing.assert_close(again(x), teacher(x))

    other = get_teacher(TeacherConfig(source=str(workdir / "teacher.pt")), space, data, tmp_path / "b", progress=False)
    with torch.no_grad():  # the adapted teacher.pt is a teacher of its own in another run folder
        torch.testing.assert_close(other(x), teacher(x))

    with pytest.raises(ValueError, match="already holds a teacher made with other settings"):
        get_teacher(replace(cfg, adapt_epochs=2), space, data, workdir, progress=False)
    torch.save(torchvision.models.mobilenet_v2(weights=None, num_classes=5).state_dict(), tmp_path / "mbv2-5.pth")
    with pytest.raises(ValueError, match="already holds a teacher made with other settings"):  # same path, new file
        get_teacher(cfg, space, data, workdir, progress=False)
    assert (workdir / "teacher.pt").stat().st_mtime_ns == stamp


def test_checkpoint_of_ours_with_other_classes_is_adapted(built, space, digits16, tmp_path):
    data = _small(digits16, (200, 80, 40), 5)
    source = built["workdir"] / "teacher.pt"
    with pytest.raises(ValueError, match="has 10 classes; the data set has 5"):
        load_teacher_checkpoint(source, space.with_classes(5))
    cfg = TeacherConfig(source=str(source), adapt_epochs=1, batch_size=32, train_device="cpu")
    teacher = get_teacher(cfg, space, data, tmp_path, progress=False)
    assert teacher(torch.randn(2, 3, 16, 16)).shape == (2, 5) and teacher.arch.num_classes == 5
    info = _read(tmp_path / "teacher.json")
    assert info["kind"] == "checkpoint" and info["adapted"]["from_classes"] == 10
    assert info["adapted"]["classifier"] == "head.classifier"
    before = torch.load(source, map_location="cpu", weights_only=True)["state_dict"]
    after = torch.load(tmp_path / "teacher.pt", map_location="cpu", weights_only=True)
    assert after["arch"]["num_classes"] == 5 and after["state_dict"]["head.classifier.weight"].shape[0] == 5
    assert not torch.equal(after["state_dict"]["stem.0.0.0.weight"], before["stem.0.0.0.weight"])
    assert load_teacher_checkpoint(tmp_path / "teacher.pt", space.with_classes(5)).arch.num_classes == 5


def test_frozen_backbone_trains_only_the_new_classifier(built, space, digits16, tmp_path):
    data = _small(digits16, (96, 40, 20), 5)
    source = built["workdir"] / "teacher.pt"
    cfg = TeacherConfig(source=str(source), adapt_epochs=1, adapt_backbone_lr_scale=0.0, batch_size=32,
                        weight_decay=0.0, train_device="cpu")
    get_teacher(cfg, space, data, tmp_path, progress=False)
    before = torch.load(source, map_location="cpu", weights_only=True)["state_dict"]
    after = torch.load(tmp_path / "teacher.pt", map_location="cpu", weights_only=True)["state_dict"]
    weights = [k for k in before if k.endswith("weight") and "classifier" not in k and before[k].ndim > 1]
    assert weights and all(torch.equal(before[k], after[k]) for k in weights)
