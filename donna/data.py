"""Data sets for DONNA: one registry (digits, cifar10, imagefolder:PATH), seeded stratified splits, batching.

The val split scores blocks and labels the predictor; the test split is never used for any choice.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Subset

from blocks import Registry

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


def batches(split: Dataset, batch_size: int, shuffle: bool = False, seed: int = 0,
            device: torch.device | str = "cpu", drop_last: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yields ``(images, labels)`` batches on ``device``; a shuffled order depends on ``seed`` only."""
    n = len(split)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)) if shuffle else torch.arange(n)
    stop = n - n % batch_size if drop_last and n >= batch_size else n
    if isinstance(split, TensorSplit):
        for start in range(0, stop, batch_size):
            x, y = split.get_batch(order[start:start + batch_size])
            yield x.to(device), y.to(device)
        return
    loader = DataLoader(Subset(split, order[:stop].tolist()), batch_size=batch_size, shuffle=False)
    for x, y in loader:
        yield x.to(device), torch.as_tensor(y).long().to(device)


# ---- the registry ----------------------------------------------------------------------------------

DATASETS: Registry[Callable[..., DataSplits]] = Registry("data set")


def list_datasets() -> list[str]:
    """Names accepted by ``get_dataset`` (``imagefolder:PATH`` takes any folder of class sub-folders)."""
    return [*DATASETS.names(), "imagefolder:PATH"]


def get_dataset(name: str, input_size: int = 32, seed: int = 0, data_dir: str | Path | None = None, *,
                in_channels: int = 3, val_fraction: float = 0.15, test_fraction: float = 0.15,
                download: bool = False) -> DataSplits:
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
    return DATASETS.get(name)(data_dir=data_dir, download=download, **kwargs)


def load_data(config: Any, input_size: int, in_channels: int = 3) -> DataSplits:
    """``get_dataset`` from a ``DataConfig``."""
    return get_dataset(config.name, input_size, config.seed, config.data_dir, in_channels=in_channels,
                       val_fraction=config.val_fraction, test_fraction=config.test_fraction,
                       download=config.download)


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
    """torchvision's CIFAR10 reading local files: presence is checked here, checksums only on download."""

    @staticmethod
    def load(root: Path, train: bool, download: bool):
        from torchvision.datasets import CIFAR10

        class Local(CIFAR10):
            train_list = [[name, None] for name, _ in CIFAR10.train_list]
            test_list = [[name, None] for name, _ in CIFAR10.test_list]
            meta = {**CIFAR10.meta, "md5": None}

        return (CIFAR10 if download else Local)(str(root), train=train, download=download)


def read_cifar10(data_dir: str | Path | None, download: bool = False):
    """``((train_x, train_y), (test_x, test_y), classes)`` as uint8 (N, 3, 32, 32) and long tensors.

    Raises:
        ValueError: the files are missing (saying where to put them) or unreadable.
    """
    where = "cifar-10-batches-py/ (data_batch_1..5, test_batch, batches.meta from cifar-10-python.tar.gz)"
    if data_dir is None:
        raise ValueError(f"cifar10 needs --data-dir: a folder holding {where}; add --download to fetch it")
    root = Path(data_dir)
    folder = root / "cifar-10-batches-py"
    if not download and not folder.is_dir():
        raise ValueError(f"CIFAR-10 not found: expected {folder}/ holding {where}; put the files there "
                         "or add --download (needs network)")
    try:
        sets = [_LocalCIFAR10.load(root, train, download) for train in (True, False)]
    except Exception as err:  # torchvision raises RuntimeError, OSError, pickle and URL errors
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ValueError(f"CIFAR-10 in {folder} could not be read or downloaded: {reason}") from None

    def tensors(ds) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous(), torch.tensor(ds.targets)

    return tensors(sets[0]), tensors(sets[1]), list(sets[0].classes)


def load_imagefolder(path: str, input_size: int = 32, seed: int = 0, in_channels: int = 3,
                     val_fraction: float = 0.15, test_fraction: float = 0.15) -> DataSplits:
    """Any folder of class sub-folders of images (torchvision ``ImageFolder``), resized to ``input_size``.

    Raises:
        ValueError: the folder is missing, has fewer than two classes, or a class has no images.
    """
    from torchvision import transforms
    from torchvision.datasets import ImageFolder

    root = Path(path)
    if not root.is_dir():
        raise ValueError(f"image folder {str(root)!r} does not exist; pass imagefolder:PATH with PATH a folder "
                         "of class sub-folders")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        raise ValueError(f"image folder {str(root)!r} has {len(classes)} class sub-folder(s) "
                         f"({', '.join(classes) or 'none'}); a classifier needs at least 2")
    mean, std = (IMAGENET_MEAN, IMAGENET_STD) if in_channels == 3 else ((0.449,), (0.226,))
    steps = [transforms.Grayscale(in_channels)] if in_channels == 1 else []
    transform = transforms.Compose([*steps, transforms.Resize((input_size, input_size)), transforms.ToTensor(),
                                    transforms.Normalize(mean, std)])
    try:
        full = ImageFolder(str(root), transform=transform)
    except (FileNotFoundError, OSError) as err:
        raise ValueError(f"image folder {str(root)!r}: {str(err).splitlines()[0]}") from None
    idx = stratified_split(np.asarray(full.targets), (val_fraction, test_fraction), seed)
    parts = [Subset(full, i.tolist()) for i in idx]
    return DataSplits(f"imagefolder:{root}", *parts, len(full.classes), input_size, in_channels,
                      list(full.classes), seed)
