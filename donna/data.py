"""Data sets for DONNA: one registry (digits, cifar10, imagefolder:PATH), seeded stratified splits.

The val split scores blocks and labels the predictor; the test split is never used for any choice.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, Subset

from common.registry import Registry

CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class TensorSplit(Dataset):
    """A split held in memory: ``images`` (N, C, H, W, float or uint8) normalised on access.

    Args:
        images: the images; uint8 images are scaled by 1/255 before normalising.
        labels: integer class labels (N,).
        mean: per-channel mean subtracted after scaling.
        std: per-channel standard deviation divided by after scaling.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, mean: tuple[float, ...],
                 std: tuple[float, ...]) -> None:
        self.images, self.labels = images, labels.long()
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)

    def __len__(self) -> int:
        return len(self.labels)

    def get_batch(self, index: torch.Tensor | slice) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised images and labels at ``index`` (fast path for whole batches)."""
        x = self.images[index]
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
        return (x - self.mean) / self.std, self.labels[index]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.get_batch(slice(i, i + 1))
        return x[0], y[0]


@dataclass
class DataSplits:
    """The three splits of one data set, all at ``input_size`` with ``in_channels`` channels."""

    name: str  # registry name the splits came from
    train: Dataset  # fits weights
    val: Dataset  # scores blocks, labels the predictor, picks checkpoints
    test: Dataset  # the final report only; never used for a choice
    num_classes: int
    input_size: int
    in_channels: int = 3
    classes: list[str] = field(default_factory=list)  # class names, index = label
    seed: int = 0  # seed of the split

    def describe(self) -> dict[str, Any]:
        """A JSON-able summary (name, split seed and sizes, classes): what a stage's outputs depend on."""
        return {"name": self.name, "seed": self.seed, "train": len(self.train), "val": len(self.val),
                "test": len(self.test), "num_classes": self.num_classes, "input_size": self.input_size,
                "in_channels": self.in_channels}

    def preprocessing(self) -> dict[str, Any]:
        """What a deployed model expects of an image: size, channels, scaling, per-channel mean and std."""
        split = self.train
        while isinstance(split, Subset):
            split = split.dataset
        mean, std = (getattr(split, name, None) for name in ("mean", "std"))
        return {"input_size": self.input_size, "in_channels": self.in_channels, "layout": "NCHW",
                "resize": f"{self.input_size}x{self.input_size}", "scale": "pixel / 255",
                "mean": None if mean is None else [round(float(v), 6) for v in mean.flatten()],
                "std": None if std is None else [round(float(v), 6) for v in std.flatten()],
                "formula": "(pixel / 255 - mean) / std, per channel"}


def split_labels(split: Dataset) -> np.ndarray:
    """The integer labels of a split, in order."""
    if isinstance(split, TensorSplit):
        return split.labels.numpy()
    if isinstance(split, Subset):
        return np.asarray(split_labels(split.dataset))[np.asarray(split.indices)]
    if hasattr(split, "targets"):
        return np.asarray(split.targets)
    return np.asarray([int(split[i][1]) for i in range(len(split))])


def subset(split: Dataset, indices: np.ndarray | list[int] | torch.Tensor) -> Dataset:
    """The samples of ``split`` at ``indices`` (an in-memory split stays in memory)."""
    index = torch.as_tensor(np.asarray(indices), dtype=torch.long)
    if isinstance(split, TensorSplit):
        sub = TensorSplit(split.images[index], split.labels[index], (0.0,), (1.0,))
        sub.mean, sub.std = split.mean, split.std
        return sub
    return Subset(split, index.tolist())


def shifted_copy(split: TensorSplit, seed: int, max_shift: int = 3) -> TensorSplit:
    """A copy of an in-memory split with every image shifted by up to ``max_shift`` pixels (edges replicated)."""
    gen = torch.Generator().manual_seed(seed)
    images = split.images
    n, _, h, w = images.shape
    padded = F.pad(images.float(), (max_shift,) * 4, mode="replicate").to(images.dtype)
    dy, dx = (torch.randint(0, 2 * max_shift + 1, (n,), generator=gen) for _ in range(2))
    rows = (dy.view(n, 1) + torch.arange(h)).view(n, 1, h, 1).expand(n, images.shape[1], h, w + 2 * max_shift)
    out = padded.gather(2, rows)
    cols = (dx.view(n, 1) + torch.arange(w)).view(n, 1, 1, w).expand(n, images.shape[1], h, w)
    copy = TensorSplit(out.gather(3, cols).contiguous(), split.labels, (0.0,), (1.0,))
    copy.mean, copy.std = split.mean, split.std
    return copy


def stratified_split(labels: np.ndarray, fractions: tuple[float, ...], seed: int) -> list[np.ndarray]:
    """Indices of a seeded stratified split: the first part keeps the rest, then one part per fraction.

    Raises:
        ValueError: a class has too few samples to appear in every part.
    """
    from sklearn.model_selection import train_test_split

    rest, parts = np.arange(len(labels)), []
    remaining = 1.0
    for frac in fractions:
        if frac <= 0:
            parts.append(np.zeros(0, dtype=np.int64))
            continue
        try:
            rest, part = train_test_split(rest, test_size=frac / remaining, random_state=seed,
                                          stratify=labels[rest])
        except ValueError as err:
            counts = np.bincount(labels)
            raise ValueError(f"cannot split {len(labels)} samples stratified (smallest class has "
                             f"{counts[counts > 0].min()} samples): {err}") from None
        remaining -= frac
        parts.append(np.sort(part))
    return [np.sort(rest), *parts]


# ---- the registry ----------------------------------------------------------------------------------

DATASETS: Registry[Callable[..., DataSplits]] = Registry("data set")


GLYPH_SAMPLES = 16000  # default size of the generated glyphs pool: 2400 val and 2400 test images at 0.15 each


def list_datasets() -> list[str]:
    """Names accepted by ``get_dataset`` (``imagefolder:PATH`` takes any folder of class sub-folders)."""
    return [*DATASETS.names(), "imagefolder:PATH"]


def get_dataset(name: str, input_size: int = 32, seed: int = 0, data_dir: str | Path | None = None, *,
                in_channels: int = 3, val_fraction: float = 0.15, test_fraction: float = 0.15,
                download: bool = False, samples: int | None = None) -> DataSplits:
    """Loads data set ``name`` split into train / val / test.

    Args:
        name: ``digits``, ``cifar10`` or ``imagefolder:PATH``.
        input_size: square image size of every split (the space's input size).
        seed: seed of the stratified split (same seed, same split).
        data_dir: folder with the files of file-based data sets (cifar10).
        in_channels: image channels (the space's input channels).
        val_fraction: share of the labelled pool put into val.
        test_fraction: share put into test (when the data set ships no test set).
        download: cifar10 only: download into ``data_dir`` when missing.
        samples: generated data sets only (glyphs): how many images to generate.

    Returns:
        The ``DataSplits``.

    Raises:
        ValueError: unknown name, missing files, a folder with fewer than two classes.
    """
    if not 0 < val_fraction < 1 or not 0 <= test_fraction < 1 or val_fraction + test_fraction >= 1:
        raise ValueError(f"val_fraction {val_fraction} and test_fraction {test_fraction} must lie in [0, 1) "
                         "with val_fraction > 0 and a sum below 1")
    kwargs = dict(input_size=input_size, seed=seed, in_channels=in_channels, val_fraction=val_fraction,
                  test_fraction=test_fraction)
    if name.startswith("imagefolder:"):
        return load_imagefolder(name.removeprefix("imagefolder:"), **kwargs)
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; known data sets: {', '.join(list_datasets())}")
    if samples is not None:
        if name not in GENERATED:
            raise ValueError(f"data set {name!r} has a fixed size; samples applies to generated data sets "
                             f"({', '.join(GENERATED)})")
        kwargs["samples"] = samples
    return DATASETS.get(name)(data_dir=data_dir, download=download, **kwargs)


def load_data(config: Any, input_size: int, in_channels: int = 3) -> DataSplits:
    """``get_dataset`` from a ``DataConfig``."""
    return get_dataset(config.name, input_size, config.seed, config.data_dir, in_channels=in_channels,
                       val_fraction=config.val_fraction, test_fraction=config.test_fraction,
                       download=config.download, samples=getattr(config, "samples", None))


def resize_images(images: torch.Tensor, input_size: int, in_channels: int) -> torch.Tensor:
    """Float images (N, C, H, W) resized bilinearly to ``input_size`` and given ``in_channels`` channels."""
    if images.shape[-1] != input_size or images.shape[-2] != input_size:
        images = F.interpolate(images, size=(input_size, input_size), mode="bilinear", align_corners=False)
    if images.shape[1] == in_channels:
        return images
    if images.shape[1] == 1:
        return images.expand(-1, in_channels, -1, -1).contiguous()
    if in_channels == 1:
        return images.mean(1, keepdim=True)
    raise ValueError(f"cannot turn {images.shape[1]}-channel images into {in_channels} channels")


GENERATED = ("glyphs",)  # data sets generated here: their size is a setting


@DATASETS.register("glyphs")
def load_glyphs(input_size: int = 32, seed: int = 0, in_channels: int = 3, val_fraction: float = 0.15,
                test_fraction: float = 0.15, data_dir: Any = None, download: bool = False,
                samples: int = GLYPH_SAMPLES) -> DataSplits:
    """Synthetic characters in clutter (``donna.glyphs``): 36 classes at 32x32 RGB, generated offline and cached.

    The images depend on ``seed`` and ``samples`` only (the split seed also seeds the generator).
    """
    from donna.glyphs import CHARACTERS, cached_generate

    if samples < 10 * len(CHARACTERS):
        raise ValueError(f"glyphs: samples {samples} is too few for {len(CHARACTERS)} classes in three splits; "
                         f"use at least {10 * len(CHARACTERS)}")
    images, labels = cached_generate(samples, seed)
    if input_size != images.shape[-1] or in_channels != images.shape[1]:  # resized in chunks, kept as uint8
        images = torch.cat([(resize_images(chunk.float() / 255.0, input_size, in_channels) * 255).round()
                            .clamp(0, 255).to(torch.uint8) for chunk in images.split(1024)])
    idx = stratified_split(labels.numpy(), (val_fraction, test_fraction), seed)
    train = images[idx[0]].float() / 255.0
    mean, std = tuple(train.mean((0, 2, 3)).tolist()), tuple(train.std((0, 2, 3)).tolist())
    del train

    def part(i: int) -> TensorSplit:
        return TensorSplit(images[idx[i]], labels[idx[i]], mean, std)

    return DataSplits("glyphs", part(0), part(1), part(2), len(CHARACTERS), input_size, in_channels,
                      list(CHARACTERS), seed)


@DATASETS.register("digits")
def load_digits(input_size: int = 32, seed: int = 0, in_channels: int = 3, val_fraction: float = 0.15,
                test_fraction: float = 0.15, data_dir: Any = None, download: bool = False) -> DataSplits:
    """scikit-learn's 8x8 digits (1797 images, 10 classes, shipped offline), resized and normalised."""
    from sklearn.datasets import load_digits as sk_digits

    raw = sk_digits()
    images = torch.tensor(raw.images, dtype=torch.float32).unsqueeze(1) / 16.0
    images = resize_images(images, input_size, in_channels)
    labels = torch.tensor(raw.target, dtype=torch.long)
    idx = stratified_split(raw.target, (val_fraction, test_fraction), seed)
    train = images[idx[0]]
    mean, std = float(train.mean()), float(train.std())

    def part(i: int) -> TensorSplit:
        return TensorSplit(images[idx[i]], labels[idx[i]], (mean,) * in_channels, (std,) * in_channels)

    return DataSplits("digits", part(0), part(1), part(2), 10, input_size, in_channels,
                      [str(c) for c in raw.target_names], seed)


@DATASETS.register("cifar10")
def load_cifar10(input_size: int = 32, seed: int = 0, in_channels: int = 3, val_fraction: float = 0.15,
                 test_fraction: float = 0.15, data_dir: str | Path | None = None,
                 download: bool = False) -> DataSplits:
    """CIFAR-10 from ``data_dir`` (torchvision layout); val is split from the train set, test is the official one."""
    (train_x, train_y), (test_x, test_y), classes = read_cifar10(data_dir, download)
    if in_channels != 3 or input_size != 32:
        train_x = (resize_images(train_x.float() / 255, input_size, in_channels) * 255).round().to(torch.uint8)
        test_x = (resize_images(test_x.float() / 255, input_size, in_channels) * 255).round().to(torch.uint8)
    idx = stratified_split(train_y.numpy(), (val_fraction,), seed)
    mean, std = (CIFAR_MEAN, CIFAR_STD) if in_channels == 3 else ((0.4734,), (0.2516,))
    return DataSplits("cifar10", TensorSplit(train_x[idx[0]], train_y[idx[0]], mean, std),
                      TensorSplit(train_x[idx[1]], train_y[idx[1]], mean, std),
                      TensorSplit(test_x, test_y, mean, std), 10, input_size, in_channels, classes, seed)


class _LocalCIFAR10:
    """CIFAR-10 batch files read without running code from them.

    The python batches are pickles; ``pickle.load`` (what torchvision does) runs whatever a crafted file
    asks for. ``_BatchUnpickler`` admits only what the format holds: dicts, lists, strings, bytes, numbers
    and numpy arrays rebuilt through numpy's own reconstruct functions. Anything else is refused.
    """

    files = (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta")
    url = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    archive_md5 = "c58f30108f718f92721af3b95e74349a"
    max_bytes = 256 << 20  # an official batch is 31 MB; a larger file is refused before reading

    @staticmethod
    def download(root: Path) -> None:
        """Downloads and unpacks the official archive into ``root`` (its MD5 checked by torchvision)."""
        from torchvision.datasets.utils import download_and_extract_archive

        download_and_extract_archive(_LocalCIFAR10.url, str(root), filename="cifar-10-python.tar.gz",
                                     md5=_LocalCIFAR10.archive_md5)

    @staticmethod
    def read(path: Path) -> dict:
        """The dict stored in one batch file.

        Raises:
            ValueError: the file is too large, not a pickle of plain data, or asks to run code.
        """
        if path.stat().st_size > _LocalCIFAR10.max_bytes:
            raise ValueError(f"{path} is {path.stat().st_size >> 20} MB, larger than any CIFAR-10 batch; "
                             "replace it with the file from cifar-10-python.tar.gz")
        try:
            with open(path, "rb") as f:
                entry = _BatchUnpickler(f, encoding="latin1").load()
        except _Refused as err:
            raise ValueError(f"{path} refused: {err}; replace it with the file from cifar-10-python.tar.gz") from None
        except (pickle.UnpicklingError, EOFError, TypeError, AttributeError, IndexError, KeyError, ValueError) as err:
            raise ValueError(f"{path} is not a CIFAR-10 batch ({type(err).__name__}: {err}); replace it with the "
                             "file from cifar-10-python.tar.gz") from None
        if not isinstance(entry, dict):
            raise ValueError(f"{path} holds a {type(entry).__name__}, not the dict of a CIFAR-10 batch")
        return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in entry.items()}

    @staticmethod
    def batch(path: Path) -> tuple[np.ndarray, list[int]]:
        """``(images (N, 3, 32, 32) uint8, labels)`` of one data batch, checked against the format."""
        entry = _LocalCIFAR10.read(path)
        data, labels = entry.get("data"), entry.get("labels")
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
            raise ValueError(f"{path}: 'data' must be a uint8 array of shape (N, 3072), got "
                             f"{getattr(data, 'dtype', type(data).__name__)} {getattr(data, 'shape', '')}")
        if (not isinstance(labels, list) or len(labels) != len(data)
                or not all(isinstance(v, (int, np.integer)) and 0 <= v < 10 for v in labels)):
            raise ValueError(f"{path}: 'labels' must be a list of {len(data)} integers in 0..9")
        return data.reshape(-1, 3, 32, 32), [int(v) for v in labels]


def _latin1_encode(text: str, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """``_codecs.encode`` as Python 3 pickles bytes at protocol 2, restricted to the latin-1 codec."""
    if encoding.replace("-", "").replace("_", "").lower() not in ("latin1", "iso88591") or not isinstance(text, str):
        raise _Refused(f"codec {encoding!r} is not allowed in a CIFAR-10 batch")
    return text.encode("latin1", errors)


class _Refused(pickle.UnpicklingError):
    """A batch file asked for something the format never holds."""


class _BatchUnpickler(pickle.Unpickler):
    """An unpickler that resolves only numpy's array reconstructors (and latin-1 bytes); nothing else."""

    @staticmethod
    def _allowed() -> dict[tuple[str, str], Any]:
        core = getattr(np, "_core", None) or np.core
        allowed = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
                   ("_codecs", "encode"): _latin1_encode}
        for package in ("numpy.core", "numpy._core"):
            allowed[(f"{package}.multiarray", "_reconstruct")] = core.multiarray._reconstruct
            allowed[(f"{package}.multiarray", "scalar")] = core.multiarray.scalar
            allowed[(f"{package}.numeric", "_frombuffer")] = core.numeric._frombuffer
        return allowed

    def find_class(self, module: str, name: str) -> Any:
        found = self._allowed().get((module, name))
        if found is None:
            raise _Refused(f"it asks for {module}.{name}, which a CIFAR-10 batch never holds "
                                         "(a crafted file may run code that way)")
        return found

    def persistent_load(self, pid: Any) -> Any:
        raise _Refused("persistent references are not allowed in a CIFAR-10 batch")


def read_cifar10(data_dir: str | Path | None, download: bool = False):
    """``((train_x, train_y), (test_x, test_y), classes)`` as uint8 (N, 3, 32, 32) and long tensors.

    The batch files are read by a restricted unpickler (``_LocalCIFAR10``): no code in them runs.

    Raises:
        ValueError: the files are missing (saying where to put them), unreadable, or refused.
    """
    where = "cifar-10-batches-py/ (data_batch_1..5, test_batch, batches.meta from cifar-10-python.tar.gz)"
    if data_dir is None:
        raise ValueError(f"cifar10 needs --data-dir: a folder holding {where}; add --download to fetch it")
    root = Path(data_dir)
    folder = root / "cifar-10-batches-py"
    missing = [name for name in _LocalCIFAR10.files if not (folder / name).is_file()]
    if missing and download:
        try:
            _LocalCIFAR10.download(root)
        except Exception as err:  # URL, checksum and archive errors
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise ValueError(f"CIFAR-10 could not be downloaded into {root}: {reason}") from None
        missing = [name for name in _LocalCIFAR10.files if not (folder / name).is_file()]
    if not folder.is_dir():
        raise ValueError(f"CIFAR-10 not found: expected {folder}/ holding {where}; put the files there "
                         "or add --download (needs network)")
    if missing:
        raise ValueError(f"CIFAR-10 in {folder} could not be read: missing {', '.join(missing)}; "
                         f"expected {where}")

    def tensors(names: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        parts = [_LocalCIFAR10.batch(folder / name) for name in names]
        images = np.concatenate([p[0] for p in parts])
        return torch.from_numpy(images).contiguous(), torch.tensor([y for p in parts for y in p[1]])

    meta = _LocalCIFAR10.read(folder / "batches.meta").get("label_names")
    if not isinstance(meta, list) or len(meta) != 10 or not all(isinstance(c, str) for c in meta):
        raise ValueError(f"{folder / 'batches.meta'}: 'label_names' must be a list of 10 class names")
    return tensors([f"data_batch_{i}" for i in range(1, 6)]), tensors(["test_batch"]), meta


SPLIT_NAMES = {"train", "val", "valid", "validation", "test"}  # sub-folders that hold splits, not classes
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")  # ImageFolder's


def load_imagefolder(path: str, input_size: int = 32, seed: int = 0, in_channels: int = 3,
                     val_fraction: float = 0.15, test_fraction: float = 0.15) -> DataSplits:
    """Any folder of class sub-folders of images (torchvision ``ImageFolder``), resized to ``input_size``.

    The splits are made here (seeded, stratified), so ``PATH`` holds one sub-folder per class, not
    ``train/`` and ``val/``. Every image is opened and decoded once before any training
    (:func:`check_images`); an unreadable one stops the run, naming the file.

    Raises:
        ValueError: the folder is missing, holds splits instead of classes, has fewer than two classes, a
            class has no images, or an image cannot be read.
    """
    from torchvision import transforms
    from torchvision.datasets import ImageFolder

    root = Path(path)
    if not root.is_dir():
        raise ValueError(f"image folder {str(root)!r} does not exist; pass imagefolder:PATH with PATH a folder "
                         "of class sub-folders")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    _check_not_splits(root, classes)
    if len(classes) < 2:
        raise ValueError(f"image folder {str(root)!r} has {len(classes)} class sub-folder(s) "
                         f"({', '.join(classes) or 'none'}); a classifier needs at least 2")
    mean, std = (IMAGENET_MEAN, IMAGENET_STD) if in_channels == 3 else ((0.449,), (0.226,))
    steps = [transforms.Grayscale(in_channels)] if in_channels == 1 else []
    transform = transforms.Compose([*steps, transforms.Resize((input_size, input_size)), transforms.ToTensor(),
                                    transforms.Normalize(mean, std)])
    try:
        full = ImageFolder(str(root), transform=transform)
    except FileNotFoundError as err:  # a class sub-folder without one file of an image extension
        named = re.search(r"for the classes (.*?)\. Supported", str(err))
        raise ValueError(f"image folder {str(root)!r}: class sub-folder(s) {named[1] if named else '?'} hold no "
                         f"image file ({', '.join(IMAGE_EXTENSIONS)}); add images or remove the sub-folder") from None
    except OSError as err:
        raise ValueError(f"image folder {str(root)!r}: {str(err).splitlines()[0]}") from None
    check_images(root, [p for p, _ in full.samples], input_size)
    idx = stratified_split(np.asarray(full.targets), (val_fraction, test_fraction), seed)
    parts = [Subset(full, i.tolist()) for i in idx]
    return DataSplits(f"imagefolder:{root}", *parts, len(full.classes), input_size, in_channels,
                      list(full.classes), seed)


def _check_not_splits(root: Path, classes: list[str]) -> None:
    """Refuses a folder of ``train/``, ``val/`` (each of class sub-folders): it would train a train-vs-val model."""
    splits = [c for c in classes if c.lower() in SPLIT_NAMES]
    if splits and len(splits) == len(classes) and all(any(p.is_dir() for p in (root / c).iterdir()) for c in splits):
        raise ValueError(f"image folder {str(root)!r} holds splits ({', '.join(splits)}), not classes; pass "
                         f"imagefolder:{root / splits[0]} (one sub-folder per class: the val and test splits are "
                         "drawn from it, seeded and stratified)")


def check_images(root: Path, files: list[str], input_size: int = 32, threads: int = 8) -> None:
    """Opens and decodes every image file once (a JPEG at reduced scale), in parallel threads.

    A corrupt file stops the run here, before any training, rather than mid-epoch: skipping it would
    silently change the data set and its splits, so the fix is left to the user. This reads the
    whole folder once (minutes for ImageNet-sized folders).

    Raises:
        ValueError: naming the unreadable files (the first five and how many in all) and the fix.
    """
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=max(1, min(threads, len(files)))) as pool:
        reasons = list(pool.map(lambda f: _unreadable(f, input_size), files))
    bad = [(Path(f), why) for f, why in zip(files, reasons) if why]
    if bad:
        shown = "; ".join(f"{_relative(f, root)} ({why})" for f, why in bad[:5])
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        raise ValueError(f"image folder {str(root)!r}: {len(bad)} of {len(files)} image files cannot be read: "
                         f"{shown}{more}; delete or replace them, or move them out of the class sub-folders")


def _unreadable(path: str, input_size: int) -> str | None:
    """Why PIL cannot decode ``path`` (None when it can)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.draft("RGB", (input_size, input_size))  # JPEG: decode at 1/2..1/8 scale, still every byte
            image.load()
    except UnidentifiedImageError:
        return "not an image"
    except Exception as err:  # noqa: BLE001 - PIL raises OSError, SyntaxError, ValueError, ... for damaged files
        return str(err).splitlines()[0] if str(err) else type(err).__name__
    return None


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)
