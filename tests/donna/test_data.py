"""Data sets: seeded stratified splits, the CIFAR-10 and image-folder paths on generated files, bad input."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from common.batching import batches
from donna.data import get_dataset, list_datasets, split_labels


def test_digits_splits_are_seeded_stratified_and_disjoint():
    a = get_dataset("digits", input_size=16, seed=0)
    b = get_dataset("digits", input_size=16, seed=0)
    c = get_dataset("digits", input_size=16, seed=1)
    assert (len(a.train), len(a.val), len(a.test)) == (1257, 270, 270)
    assert torch.equal(a.val.images, b.val.images) and not torch.equal(a.val.images, c.val.images)
    x, y = next(batches(a.train, 32))
    assert x.shape == (32, 3, 16, 16) and y.dtype == torch.long
    assert abs(float(a.train.get_batch(slice(None))[0].mean())) < 1e-4  # normalised with train statistics
    for split in (a.train, a.val, a.test):
        counts = np.bincount(split_labels(split), minlength=10) / len(split)
        assert np.all(np.abs(counts - 0.1) < 0.02)  # stratified: every class near 10%
    rows = {tuple(r) for r in a.test.images.flatten(1).numpy().round(4).tolist()}
    assert not rows & {tuple(r) for r in a.val.images.flatten(1).numpy().round(4).tolist()}


def test_shuffled_batches_depend_on_the_seed_only():
    data = get_dataset("digits", input_size=8)
    first = [y for _, y in batches(data.val, 50, shuffle=True, seed=3)]
    again = [y for _, y in batches(data.val, 50, shuffle=True, seed=3)]
    other = [y for _, y in batches(data.val, 50, shuffle=True, seed=4)]
    assert all(torch.equal(p, q) for p, q in zip(first, again))
    assert not all(torch.equal(p, q) for p, q in zip(first, other))


def _write_fake_cifar(root, per_batch=12):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        labels = [i % 10 for i in range(per_batch)]
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        with open(folder / name, "wb") as f:
            pickle.dump({"data": data, "labels": labels}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)]}, f)


def test_cifar10_reads_the_torchvision_layout(tmp_path):
    _write_fake_cifar(tmp_path)
    data = get_dataset("cifar10", input_size=32, data_dir=tmp_path, val_fraction=0.2)
    assert len(data.test) == 12 and len(data.train) + len(data.val) == 60 and len(data.val) == 12
    assert data.classes[3] == "class3" and data.num_classes == 10
    x, y = next(batches(data.train, 8))
    assert x.shape == (8, 3, 32, 32) and x.dtype == torch.float32
    small = get_dataset("cifar10", input_size=16, data_dir=tmp_path, val_fraction=0.2)
    assert next(batches(small.test, 4))[0].shape == (4, 3, 16, 16)


def test_cifar10_missing_files_say_where_to_put_them(tmp_path):
    with pytest.raises(ValueError, match="cifar-10-batches-py"):
        get_dataset("cifar10", data_dir=tmp_path / "nowhere")
    with pytest.raises(ValueError, match="--data-dir"):
        get_dataset("cifar10")
    (tmp_path / "cifar-10-batches-py").mkdir()
    with pytest.raises(ValueError, match="could not be read"):
        get_dataset("cifar10", data_dir=tmp_path)


def _write_image_folder(root, classes=("cat", "dog", "fox"), per_class=10):
    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / c / f"{i}.png")


def test_image_folder_loads_resizes_and_splits(tmp_path):
    _write_image_folder(tmp_path / "imgs")
    data = get_dataset(f"imagefolder:{tmp_path / 'imgs'}", input_size=16, val_fraction=0.2, test_fraction=0.2)
    assert data.classes == ["cat", "dog", "fox"] and data.num_classes == 3
    assert (len(data.train), len(data.val), len(data.test)) == (18, 6, 6)
    assert sorted(np.bincount(split_labels(data.val))) == [2, 2, 2]
    x, y = next(batches(data.train, 5, shuffle=True))
    assert x.shape == (5, 3, 16, 16) and y.shape == (5,)


def test_image_folder_bad_input(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        get_dataset(f"imagefolder:{tmp_path / 'missing'}")
    _write_image_folder(tmp_path / "one", classes=("only",))
    with pytest.raises(ValueError, match="1 class sub-folder"):
        get_dataset(f"imagefolder:{tmp_path / 'one'}")


def test_unknown_data_set_lists_the_known_ones():
    with pytest.raises(ValueError, match="known data sets: cifar10, digits, glyphs, imagefolder:PATH"):
        get_dataset("mnist")
    assert list_datasets() == ["cifar10", "digits", "glyphs", "imagefolder:PATH"]


def test_unreadable_images_are_named_before_any_training(tmp_path):
    root = tmp_path / "imgs"
    _write_image_folder(root, per_class=6)
    good = (root / "dog" / "0.png").read_bytes()
    (root / "dog" / "0.png").write_bytes(good[: len(good) // 2])  # truncated PNG
    (root / "cat" / "notes.jpg").write_text("not an image")  # accepted by its extension
    Image.fromarray(np.zeros((64, 64, 3), np.uint8) + 90).save(root / "fox" / "big.jpg", quality=90)
    jpeg = (root / "fox" / "big.jpg").read_bytes()
    (root / "fox" / "big.jpg").write_bytes(jpeg[: len(jpeg) * 2 // 3])  # truncated JPEG (decoded at reduced scale)
    with pytest.raises(ValueError, match=r"3 of 20 image files cannot be read: cat/notes.jpg \(not an image\); "
                                         r"dog/0.png \(.+\); fox/big.jpg \(.+\); delete or replace them") as err:
        get_dataset(f"imagefolder:{root}", input_size=16)
    assert "\n" not in str(err.value)
    for name in ("dog/0.png", "cat/notes.jpg", "fox/big.jpg"):
        (root / name).unlink()
    data = get_dataset(f"imagefolder:{root}", input_size=16)
    assert len(data.train) + len(data.val) + len(data.test) == 17


def test_image_folder_layout_mistakes_get_the_fix(tmp_path):
    _write_image_folder(tmp_path / "splits" / "train", per_class=3)
    _write_image_folder(tmp_path / "splits" / "val", per_class=2)
    with pytest.raises(ValueError, match=r"holds splits \(train, val\), not classes; pass imagefolder:.*splits/train"):
        get_dataset(f"imagefolder:{tmp_path / 'splits'}")
    _write_image_folder(tmp_path / "gap", classes=("cat", "dog"), per_class=3)
    (tmp_path / "gap" / "empty").mkdir()
    (tmp_path / "gap" / "empty" / "readme.txt").write_text("no images here")
    with pytest.raises(ValueError, match="class sub-folder.s. empty hold no image file .*add images or remove"):
        get_dataset(f"imagefolder:{tmp_path / 'gap'}")
