"""The generated embedded default: deterministic per seed, different across seeds, cached, balanced, split."""

from __future__ import annotations

import pytest
import torch

from donna.data import get_dataset
from donna.glyphs import CHARACTERS, GlyphConfig, cached_generate, generate, render_atlas


def test_same_seed_same_images_other_seed_other_images():
    a_x, a_y = generate(72, seed=3)
    b_x, b_y = generate(72, seed=3)
    c_x, c_y = generate(72, seed=4)
    assert a_x.dtype == torch.uint8 and a_x.shape == (72, 3, 32, 32)
    assert torch.equal(a_x, b_x) and torch.equal(a_y, b_y)
    assert not torch.equal(a_x, c_x)
    assert torch.bincount(a_y, minlength=len(CHARACTERS)).tolist() == [2] * len(CHARACTERS)  # balanced


def test_difficulty_settings_change_the_images():
    plain = GlyphConfig(distractors=0, blur=(0.0, 0.0), noise=(0.0, 0.0))
    assert not torch.equal(generate(36, 0, plain)[0], generate(36, 0)[0])


def test_atlas_draws_every_character_distinctly_in_several_fonts():
    atlas, fonts = render_atlas()
    assert atlas.shape[1] == len(CHARACTERS) and len(fonts) >= 4
    flat = atlas.flatten(2)
    assert (flat.sum(-1) > 20).all()  # no empty glyph
    assert all(len({g.numpy().tobytes() for g in flat[f]}) == len(CHARACTERS) for f in range(len(fonts)))


def test_cache_returns_the_generated_tensors(tmp_path, monkeypatch):
    monkeypatch.setenv("DONNA_CACHE", str(tmp_path))
    x, y = cached_generate(72, seed=1)
    assert len(list(tmp_path.glob("glyphs-*.npz"))) == 1
    x2, y2 = cached_generate(72, seed=1)  # from the file
    assert torch.equal(x, x2) and torch.equal(y, y2) and torch.equal(x, generate(72, seed=1)[0])
    next(tmp_path.glob("glyphs-*.npz")).write_bytes(b"damaged")
    assert torch.equal(cached_generate(72, seed=1)[0], x)  # a damaged cache is regenerated


def test_registry_splits_and_refuses_bad_sizes(tmp_path, monkeypatch):
    monkeypatch.setenv("DONNA_CACHE", str(tmp_path))
    data = get_dataset("glyphs", samples=720, seed=0)
    assert (len(data.train), len(data.val), len(data.test)) == (504, 108, 108)
    assert data.num_classes == len(CHARACTERS) and data.classes[10] == "A"
    x, y = data.train[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and 0 <= int(y) < len(CHARACTERS)
    with pytest.raises(ValueError, match="too few"):
        get_dataset("glyphs", samples=100)
    with pytest.raises(ValueError, match="fixed size"):
        get_dataset("digits", samples=500)
