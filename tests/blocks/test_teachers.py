"""Teacher adapters: torchvision models and our own ArchNet cut into stem / slots / head."""

from dataclasses import replace

import pytest
import torch
import torchvision

from blocks import build_model, get_space
from blocks.teachers import classifier_of, cut_teacher, load_torchvision_model, replace_classifier, torchvision_teacher


def test_efficientnet_b0_aligns_with_imagenet_space_and_keeps_its_output():
    space = get_space("mbconv-imagenet")
    model = torchvision.models.efficientnet_b0(weights=None).eval()
    parts = cut_teacher(model, space, "efficientnet_b0").eval()
    assert parts.shapes == [space.stem_output_shape()] + [space.slot_output_shape(i) for i in range(5)]
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(parts(x), model(x))


def test_mobilenet_v2_against_effnet_widths_names_slot_and_both_shapes():
    with pytest.raises(ValueError, match="slot 1: the space expects output 40x28x28 but the teacher gives 32x28x28"):
        torchvision_teacher("mobilenet_v2", get_space("mbconv-imagenet"))


def test_mobilenet_v2_aligns_with_its_own_skeleton():
    space = get_space("mbconv-imagenet-mbv2")
    parts = torchvision_teacher("mobilenet_v2", space)
    assert [len(b) for b in parts.blocks] == [2, 3, 7, 3, 1]


def test_weights_come_from_a_local_file(tmp_path):
    source = torchvision.models.mobilenet_v2(weights=None, num_classes=7)
    path = tmp_path / "mbv2.pth"
    torch.save({"state_dict": source.state_dict()}, path)
    loaded = load_torchvision_model("mobilenet_v2", path).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), source.eval()(x))
    with pytest.raises(ValueError, match="does not exist"):
        load_torchvision_model("mobilenet_v2", tmp_path / "missing.pth")
    torch.save({"foo": torch.zeros(1)}, path)
    with pytest.raises(ValueError, match="not a state_dict of torchvision mobilenet_v2"):
        load_torchvision_model("mobilenet_v2", path)
    with pytest.raises(ValueError, match="no teacher adapter for torchvision model 'resnet18'"):
        load_torchvision_model("resnet18")


def test_our_archnet_cuts_one_module_per_slot():
    space = get_space("mbconv-tiny")
    model = build_model(space.reference()).eval()
    parts = cut_teacher(model, space).eval()
    assert len(parts.blocks) == space.num_slots
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        for ours, theirs in zip(parts.features(x), model.features(x)):
            torch.testing.assert_close(ours, theirs)


def test_archnet_of_another_space_is_refused_with_the_slot():
    tiny = get_space("mbconv-tiny")
    other = replace(tiny.slots[2], out_channels=48)
    wrong = replace(tiny, slots=(*tiny.slots[:2], other, *tiny.slots[3:]))
    with pytest.raises(ValueError, match="slot 2: the space expects output 40x4x4 but the teacher gives 48x4x4"):
        cut_teacher(build_model(wrong.reference()), tiny)


def test_new_classifier_comes_from_the_seed_alone():
    heads = []
    for seed in (3, 3, 4):
        model = torchvision.models.mobilenet_v2(weights=None, num_classes=5)
        torch.manual_seed(seed + 100)  # the global generator plays no part
        assert replace_classifier(model, 12, seed) == "classifier.1"
        heads.append(classifier_of(model)[1])
    assert heads[0].out_features == 12 and heads[0].in_features == 1280
    assert torch.equal(heads[0].weight, heads[1].weight) and not torch.equal(heads[0].weight, heads[2].weight)
    with pytest.raises(ValueError, match="no nn.Linear classifier"):
        replace_classifier(torch.nn.Conv2d(3, 3, 1), 4, 0)
