"""``glyphs``: the embedded default data set, synthetic characters in clutter generated offline from a seed.

In the spirit of SynDigits: the 36 characters 0-9 and A-Z are rendered with the TrueType fonts matplotlib
ships (DejaVu, STIX and Computer Modern families), scaled, rotated, sheared, shifted and coloured at random,
pasted on random crops of the sample photos matplotlib and scikit-learn ship, with fragments of other
characters as distractors, blur and pixel noise, at 32x32 RGB. Everything is drawn from one seeded
generator in batched torch operations (a few seconds for tens of thousands of images), so the same seed
gives the same images on every machine, and the result is cached as ``.npz``.

Unlike scikit-learn's ``digits``, where every member of ``mbconv-tiny`` reaches 96-99%, the clutter and
the font variety leave room between small and large architectures.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from common.fileio import atomic_save

GLYPH_FORMAT = 4  # bump when the generator changes: the cache key includes it
CHARACTERS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
FONT_FILES = ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf", "DejaVuSerif.ttf",
              "DejaVuSerif-Bold.ttf", "DejaVuSerif-Italic.ttf", "DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf",
              "STIXGeneral.ttf", "STIXGeneralBol.ttf", "STIXGeneralItalic.ttf", "cmr10.ttf", "cmss10.ttf",
              "cmtt10.ttf", "cmb10.ttf", "cmti10.ttf")
ATLAS = 64  # side of the canvas every glyph is rendered on before the random affine map


@dataclass(frozen=True)
class GlyphConfig:
    """How hard the generated images are (the defaults are the embedded default; see the module docstring)."""

    size: int = 32  # output side in pixels
    scale: tuple[float, float] = (0.5, 0.85)  # glyph (cap) height as a share of the image
    rotation: float = 15.0  # maximum rotation in degrees (either way)
    shear: float = 0.25  # maximum horizontal shear
    shift: float = 0.12  # maximum centre shift as a share of the image side
    contrast: tuple[float, float] = (0.3, 0.9)  # luminance difference between glyph and background
    clutter: tuple[float, float] = (0.1, 0.7)  # background photo contrast kept (0: flat colour, 1: the photo)
    distractors: int = 1  # fragments of other glyphs per image (0..distractors, each present with chance 0.6)
    distractor_scale: tuple[float, float] = (0.3, 0.6)  # their height as a share of the image
    blur: tuple[float, float] = (0.0, 0.7)  # gaussian blur sigma in pixels
    noise: tuple[float, float] = (0.0, 0.05)  # gaussian pixel noise sigma (images in [0, 1])


def _font_dir() -> Path:
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf"


def _photo_files() -> list[Path]:
    import matplotlib
    import sklearn.datasets

    mpl = Path(matplotlib.get_data_path()) / "sample_data"
    skl = Path(sklearn.datasets.__file__).parent / "images"
    found = [p for p in (skl / "china.jpg", skl / "flower.jpg", mpl / "grace_hopper.jpg") if p.is_file()]
    if not found:
        raise ValueError("the glyphs data set needs the sample photos of scikit-learn or matplotlib "
                         f"(looked in {skl} and {mpl}); reinstall them")
    return found


def render_atlas(characters: str = CHARACTERS) -> tuple[torch.Tensor, list[str]]:
    """Alpha masks ``(fonts, classes, ATLAS, ATLAS)`` in [0, 1] of every character in every usable font.

    A font is kept only when it draws every character (Computer Modern's math fonts draw symbols instead).
    """
    from PIL import Image, ImageDraw, ImageFont

    masks, names = [], []
    for name in FONT_FILES:
        path = _font_dir() / name
        if not path.is_file():
            continue
        probe = ImageFont.truetype(str(path), size=ATLAS)
        cap = probe.getbbox("H")[3] - probe.getbbox("H")[1]  # scale every font to one cap height: 0.8 of the canvas
        font = ImageFont.truetype(str(path), size=max(8, int(round(ATLAS * 0.8 * ATLAS / max(cap, 1)))))
        glyphs = []
        for ch in characters:
            left, top, right, bottom = font.getbbox(ch)
            canvas = Image.new("L", (ATLAS, ATLAS), 0)
            ImageDraw.Draw(canvas).text(((ATLAS - (right - left)) / 2 - left, (ATLAS - (bottom - top)) / 2 - top),
                                        ch, fill=255, font=font)
            glyphs.append(np.asarray(canvas, dtype=np.float32) / 255.0)
        stack = np.stack(glyphs)
        if (stack.reshape(len(characters), -1).sum(1) > 20).all() and len({g.tobytes() for g in glyphs}) == len(glyphs):
            masks.append(stack)
            names.append(name)
    if len(masks) < 2:
        raise ValueError(f"found {len(masks)} usable fonts in {_font_dir()}; the glyphs data set needs matplotlib's "
                         "bundled TrueType fonts")
    return torch.from_numpy(np.stack(masks)), names


def _photos() -> list[torch.Tensor]:
    from PIL import Image

    return [torch.from_numpy(np.asarray(Image.open(p).convert("RGB"), dtype=np.float32) / 255.0).permute(2, 0, 1)
            for p in _photo_files()]


def _uniform(gen: torch.Generator, n: int, low: float, high: float) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=gen)


def _glyph_grid(gen: torch.Generator, n: int, cfg: GlyphConfig, far: bool = False) -> torch.Tensor:
    """Sampling grids mapping the output image into the atlas: a random scale, rotation, shear and shift."""
    scale = _uniform(gen, n, *(cfg.distractor_scale if far else cfg.scale))
    angle = _uniform(gen, n, -cfg.rotation, cfg.rotation) * math.pi / 180
    shear = _uniform(gen, n, -cfg.shear, cfg.shear)
    reach = 1.1 if far else 2 * cfg.shift
    shift = torch.stack([_uniform(gen, n, -reach, reach), _uniform(gen, n, -reach, reach)], 1)
    if far:  # distractors sit off centre so that only a fragment shows
        shift = shift.sign() * shift.abs().clamp_min(0.6)
    cos, sin = torch.cos(angle), torch.sin(angle)
    inv = 0.8 / scale  # the atlas glyph's cap height is 0.8 of its canvas; on the image it is ``scale``
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = inv * cos, inv * (-sin + shear * cos)
    theta[:, 1, 0], theta[:, 1, 1] = inv * sin, inv * (cos + shear * sin)
    theta[:, :, 2] = -(theta[:, :, :2] @ shift.unsqueeze(-1)).squeeze(-1)
    return F.affine_grid(theta, [n, 1, cfg.size, cfg.size], align_corners=False)


def _backgrounds(gen: torch.Generator, n: int, size: int, photos: list[torch.Tensor]) -> torch.Tensor:
    """Random square crops (8% to 40% of the shorter side) of random photos, resized to ``size``."""
    which = torch.randint(len(photos), (n,), generator=gen)
    out = torch.empty(n, 3, size, size)
    for p, photo in enumerate(photos):
        idx = (which == p).nonzero().flatten()
        if len(idx) == 0:
            continue
        h, w = photo.shape[1:]
        side = _uniform(gen, len(idx), 0.08, 0.4) * min(h, w)
        cx = _uniform(gen, len(idx), 0, 1) * (w - side) + side / 2
        cy = _uniform(gen, len(idx), 0, 1) * (h - side) + side / 2
        theta = torch.zeros(len(idx), 2, 3)
        theta[:, 0, 0], theta[:, 1, 1] = side / w, side / h
        theta[:, 0, 2], theta[:, 1, 2] = 2 * cx / w - 1, 2 * cy / h - 1
        flip = torch.rand(len(idx), generator=gen) < 0.5
        theta[flip, 0, 0] *= -1
        grid = F.affine_grid(theta, [len(idx), 3, size, size], align_corners=False)
        out[idx] = F.grid_sample(photo.expand(len(idx), -1, -1, -1), grid, align_corners=False)
    return out


def _luminance(x: torch.Tensor) -> torch.Tensor:
    return 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]


def _colours(gen: torch.Generator, background: torch.Tensor, cfg: GlyphConfig) -> torch.Tensor:
    """A random colour per image whose luminance differs from the background's mean by the chosen contrast."""
    n = len(background)
    colour = torch.rand(n, 3, generator=gen)
    bg = _luminance(background.mean((2, 3), keepdim=True)).flatten()
    want = _uniform(gen, n, *cfg.contrast)
    sign = torch.where(bg > 0.5, -1.0, 1.0)
    sign = torch.where(torch.rand(n, generator=gen) < 0.25, -sign, sign)  # sometimes the harder direction
    target = (bg + sign * want).clamp(0.0, 1.0)
    colour = colour + (target - _luminance(colour.view(n, 3, 1, 1)).flatten()).unsqueeze(1)
    return colour.clamp(0.0, 1.0).view(n, 3, 1, 1)


def _blur(images: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Gaussian blur with a per-image sigma (images grouped into a few sigma levels)."""
    levels = torch.round(sigma * 4) / 4
    out = images.clone()
    for level in levels.unique():
        if level <= 0:
            continue
        idx = (levels == level).nonzero().flatten()
        radius = max(1, int(math.ceil(2.5 * float(level))))
        t = torch.arange(-radius, radius + 1, dtype=torch.float32)
        k = torch.exp(-0.5 * (t / float(level)) ** 2)
        k = (k / k.sum()).view(1, 1, 1, -1).expand(3, 1, 1, -1)
        x = F.conv2d(F.pad(images[idx], (radius, radius, 0, 0), mode="replicate"), k, groups=3)
        out[idx] = F.conv2d(F.pad(x, (0, 0, radius, radius), mode="replicate"), k.transpose(2, 3), groups=3)
    return out


def generate(n: int, seed: int, cfg: GlyphConfig | None = None, characters: str = CHARACTERS,
             chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` images ``(n, 3, size, size)`` as uint8 and their labels (index into ``characters``).

    Classes are balanced (every class ``n // classes`` or one more times, in a seeded order); the same
    ``(n, seed, cfg)`` gives the same tensors.
    """
    cfg = cfg or GlyphConfig()
    atlas, _ = render_atlas(characters)
    photos = _photos()
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % len(characters)
    labels = labels[torch.randperm(n, generator=gen)]
    images = torch.empty(n, 3, cfg.size, cfg.size, dtype=torch.uint8)
    for start in range(0, n, chunk):
        images[start:start + chunk] = _render(gen, labels[start:start + chunk], atlas, photos, cfg)
    return images, labels


def _render(gen: torch.Generator, labels: torch.Tensor, atlas: torch.Tensor, photos: list[torch.Tensor],
            cfg: GlyphConfig) -> torch.Tensor:
    n, fonts, classes = len(labels), atlas.shape[0], atlas.shape[1]
    image = _backgrounds(gen, n, cfg.size, photos)
    mean = image.mean((2, 3), keepdim=True)
    image = mean + (image - mean) * _uniform(gen, n, *cfg.clutter).view(n, 1, 1, 1)
    for _ in range(cfg.distractors):  # fragments of other characters, partly outside the frame
        keep = (torch.rand(n, generator=gen) < 0.6).float().view(n, 1, 1, 1)
        other = atlas[torch.randint(fonts, (n,), generator=gen), torch.randint(classes, (n,), generator=gen)]
        mask = F.grid_sample(other.unsqueeze(1), _glyph_grid(gen, n, cfg, far=True), align_corners=False)
        alpha = keep * mask * _uniform(gen, n, 0.5, 1.0).view(n, 1, 1, 1)
        image = image * (1 - alpha) + _colours(gen, image, cfg) * alpha
    glyph = atlas[torch.randint(fonts, (n,), generator=gen), labels]
    mask = F.grid_sample(glyph.unsqueeze(1), _glyph_grid(gen, n, cfg), align_corners=False)
    image = image * (1 - mask) + _colours(gen, image, cfg) * mask
    image = _blur(image, _uniform(gen, n, *cfg.blur))
    image = image + torch.randn(image.shape, generator=gen) * _uniform(gen, n, *cfg.noise).view(n, 1, 1, 1)
    return (image.clamp(0, 1) * 255).round().to(torch.uint8)


def cache_dir() -> Path:
    """Where generated data sets are cached: ``$DONNA_CACHE``, else ``$XDG_CACHE_HOME/donna``, else ``~/.cache``."""
    if os.environ.get("DONNA_CACHE"):
        return Path(os.environ["DONNA_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "donna"


def cached_generate(n: int, seed: int, cfg: GlyphConfig | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``generate`` through an ``.npz`` cache keyed by the generator version, ``n``, ``seed`` and ``cfg``."""
    cfg = cfg or GlyphConfig()
    key = hashlib.sha256(json.dumps([GLYPH_FORMAT, n, seed, asdict(cfg), CHARACTERS]).encode()).hexdigest()[:16]
    path = cache_dir() / f"glyphs-{key}.npz"
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as data:
                return torch.from_numpy(data["images"]), torch.from_numpy(data["labels"])
        except (OSError, ValueError, KeyError):
            path.unlink(missing_ok=True)  # a damaged cache file is regenerated
    images, labels = generate(n, seed, cfg)
    with contextlib.suppress(OSError):  # a read-only cache only costs the regeneration next time
        atomic_save(path, lambda p: _save_npz(p, images, labels))
    return images, labels


def _save_npz(path: Path, images: torch.Tensor, labels: torch.Tensor) -> None:
    with open(path, "wb") as handle:  # a file object: np.savez would append ".npz" to a temporary name
        np.savez(handle, images=images.numpy(), labels=labels.numpy())
