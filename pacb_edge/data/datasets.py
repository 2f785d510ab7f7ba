"""Datasets by name: train/val/test splits with one fixed inference preprocessing (resize + normalize).

`load_dataset(name)` returns a `DataBundle`. Its splits are torch Datasets that yield a normalized float
C x H x W tensor and an int label. Only the train split is augmented. `DataBundle.arrays()` and
`calibration_images()` give numpy arrays with exactly the inference preprocessing: the export layer calibrates
on them and the bench layer measures test accuracy on them.

The preprocessing for every dataset is: pixels to float in [0, 1], grayscale to 3 channels (optional), a
bilinear resize of the whole image to input_size x input_size (no aspect-preserving crop, so an edge device
can copy it with one resize call), then `(x - mean) / std` per channel.

Everything runs offline. When a dataset's files are missing, the error says which files to place where. The
only network access is torchvision's own download, and only when `download=True`.
"""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision.transforms import v2

from pacb_edge.core.errors import PacbEdgeError
from pacb_edge.data.preprocess import Preprocess
from pacb_edge.data.sources import (  # noqa: F401 - the dataset facts are part of this module's interface
    CIFAR10_MEAN,
    CIFAR10_STD,
    CIFAR100_MEAN,
    CIFAR100_STD,
    DEFAULT_DATA_DIR,
    DIGITS_MEAN,
    DIGITS_STD,
    FASHION_MNIST_DEBIAN_DIR,
    FASHION_MNIST_MEAN,
    FASHION_MNIST_PACKAGE,
    FASHION_MNIST_STD,
    GTSRB_CLASS_NAMES,
    GTSRB_MEAN,
    GTSRB_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    TEST_FRACTION,
    DataRequest,
    ImageStore,
    Splits,
    balanced_choice,
    fashion_mnist_folders,
    load_cifar10_splits,
    load_cifar100_splits,
    load_digits_splits,
    load_fashion_mnist_splits,
    load_gtsrb_splits,
    load_imagefolder_splits,
)

# INT8 calibration images by default: enough per class for stable activation ranges (30 per class at 10 classes).
CALIBRATION_IMAGES = 300

# The split datasets


class ImageSplit(Dataset):
    """One split: a subset of a store, the inference preprocessing and, for train only, an augmentation."""

    def __init__(
        self,
        store: ImageStore,
        indices: np.ndarray,
        preprocess: Preprocess,
        augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        self.store = store
        self.indices = np.asarray(indices, dtype=np.int64)
        self.preprocess = preprocess
        self.augment = augment

    @property
    def labels(self) -> np.ndarray:
        """Labels of this split's items, in item order."""
        return self.store.labels[self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        idx = self.indices[i]
        x = self.store.resized(np.asarray([idx]), self.preprocess)[0]
        if self.augment is not None:
            x = self.augment(x)
        return self.preprocess.normalize(x), int(self.store.labels[idx])

    def arrays_at(
        self, positions: np.ndarray, batch_size: int = 512, raw: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """Items at `positions` with the inference preprocessing (never augmented) and their int64 labels.

        Images are float32 NCHW normalized for the PyTorch model, or with `raw` the uint8 NCHW 0-255 pixels that
        every exported artifact takes (its graph normalizes them itself).
        """
        positions = np.asarray(positions, dtype=np.int64)
        finish = Preprocess.raw_pixels if raw else self.preprocess.normalize
        chunks = [
            finish(self.store.resized(self.indices[positions[s : s + batch_size]], self.preprocess))
            for s in range(0, len(positions), batch_size)
        ]
        dtype = np.uint8 if raw else np.float32
        if chunks:
            x = torch.cat(chunks).numpy().astype(dtype, copy=False)
        else:
            c = 3 if self.preprocess.to_rgb else len(self.preprocess.mean)
            x = np.empty((0, c, self.preprocess.input_size, self.preprocess.input_size), dtype=dtype)
        return np.ascontiguousarray(x), self.labels[positions].astype(np.int64)

    def fingerprint(self) -> str:
        """SHA-256 identifying this split's images on disk (see the stores' `fingerprint`)."""
        return self.store.fingerprint(self.indices)


# The bundle


@dataclass
class DataBundle:
    """The three splits of one dataset plus the facts a `ModelSpec` needs (classes, mean/std, size)."""

    name: str
    train: ImageSplit
    val: ImageSplit
    test: ImageSplit
    class_names: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    in_chans: int
    input_size: int
    seed: int = 0
    val_fraction: float = 0.15
    limit: int | None = None
    train_limit: int | None = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def split_record(self) -> dict[str, Any]:
        """How the splits were made, for the `ModelSpec`: seed, fractions, limits, sizes and the test set's hash.

        `rebuild_dataset` makes exactly these splits again and refuses data whose test hash differs.
        """
        return {
            "seed": int(self.seed),
            "val_fraction": float(self.val_fraction),
            "limit": self.limit,
            "train_limit": self.train_limit,
            "n_train": len(self.train),
            "n_val": len(self.val),
            "n_test": len(self.test),
            "test_sha256": self.test.fingerprint(),
        }

    def split(self, split: str) -> ImageSplit:
        """The `train`, `val` or `test` split."""
        splits = {"train": self.train, "val": self.val, "test": self.test}
        if split not in splits:
            raise PacbEdgeError(f"unknown split {split!r}; use one of: {', '.join(splits)}")
        return splits[split]

    def arrays(self, split: str, limit: int | None = None, raw: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """The first `limit` items (all if None) of a split, preprocessed for inference with no augmentation.

        Returns (x float32 N x C x H x W normalized, or uint8 raw pixels with `raw`; y int64 N).
        """
        ds = self.split(split)
        n = len(ds) if limit is None else min(max(int(limit), 0), len(ds))
        return ds.arrays_at(np.arange(n), raw=raw)

    def calibration_positions(self, n: int = CALIBRATION_IMAGES, seed: int = 0) -> np.ndarray:
        """Positions in the train split of `n` calibration images (all of them if the split is smaller), seeded
        and drawn evenly over the classes: round-robin, so class counts differ by at most one where every class
        has enough images."""
        if n < 1:
            raise PacbEdgeError(f"calibration needs at least 1 image, got {n}")
        return balanced_choice(self.train.labels, n, seed)

    def calibration_images(self, n: int = CALIBRATION_IMAGES, seed: int = 0, raw: bool = False) -> np.ndarray:
        """`n` real train images at `calibration_positions(n, seed)` (all of them if the split is smaller).

        Returns N x C x H x W with the inference preprocessing (float32 normalized, or uint8 pixels with `raw`),
        for INT8 calibration on real data.
        """
        return self.train.arrays_at(self.calibration_positions(n, seed), raw=raw)[0]


@dataclass(frozen=True)
class _DatasetInfo:
    load: Callable[[DataRequest], Splits]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    in_chans: int
    # Train augmentation is a random crop with zero padding; horizontal flips only where the classes are
    # mirror-symmetric. Digits, traffic signs and text are not (a flipped "left turn" sign is "right turn").
    flip: bool


_DATASETS: dict[str, _DatasetInfo] = {
    "digits": _DatasetInfo(load_digits_splits, DIGITS_MEAN, DIGITS_STD, 1, flip=False),
    "cifar10": _DatasetInfo(load_cifar10_splits, CIFAR10_MEAN, CIFAR10_STD, 3, flip=True),
    "cifar100": _DatasetInfo(load_cifar100_splits, CIFAR100_MEAN, CIFAR100_STD, 3, flip=True),
    "fashion-mnist": _DatasetInfo(load_fashion_mnist_splits, FASHION_MNIST_MEAN, FASHION_MNIST_STD, 1, flip=False),
    "gtsrb": _DatasetInfo(load_gtsrb_splits, GTSRB_MEAN, GTSRB_STD, 3, flip=False),
    # The user's data: no flip, since we cannot know whether its classes are mirror-symmetric.
    "imagefolder": _DatasetInfo(load_imagefolder_splits, IMAGENET_MEAN, IMAGENET_STD, 3, flip=False),
}


def list_datasets() -> list[str]:
    """The dataset names `load_dataset` accepts (`imagefolder` takes a path: `imagefolder:PATH`)."""
    return [n if n != "imagefolder" else "imagefolder:PATH" for n in _DATASETS]


def train_augmentation(input_size: int, flip: bool) -> v2.Compose:
    """Random crop with zero padding of input_size / 8 (4 px at 32), plus a horizontal flip if `flip`."""
    ops: list[Any] = [v2.RandomCrop(input_size, padding=max(1, round(input_size / 8)))]
    if flip:
        ops.append(v2.RandomHorizontalFlip())
    return v2.Compose(ops)


def load_dataset(
    name: str = "digits",
    data_dir: str | Path | None = None,
    download: bool = False,
    input_size: int = 32,
    grayscale_to_rgb: bool = False,
    val_fraction: float = 0.15,
    seed: int = 0,
    limit: int | None = None,
    train_limit: int | None = None,
) -> DataBundle:
    """Load a dataset by name and split it into train/val/test, deterministically for a given `seed`.

    `data_dir` (default ./data) holds the torchvision datasets; `download` lets torchvision fetch them.
    `limit` caps each split's size (a seeded, class-balanced subset) for quick runs; `train_limit` caps the training
    images only, so a quick run still measures on the whole test split (validation, carved from the training images,
    keeps the `val_fraction` proportion to the capped training split).
    """
    key, _, arg = name.partition(":")
    key = key.strip().lower()
    if key not in _DATASETS or (arg and key != "imagefolder"):
        raise PacbEdgeError(f"unknown dataset {name!r}; known: {', '.join(list_datasets())}")
    if input_size < 1:
        raise PacbEdgeError(f"input_size must be positive, got {input_size}")
    if not 0.0 <= val_fraction < 1.0:
        raise PacbEdgeError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if limit is not None and limit < 1:
        raise PacbEdgeError(f"limit must be at least 1, got {limit}")
    if train_limit is not None and train_limit < 1:
        raise PacbEdgeError(f"train_limit must be at least 1, got {train_limit}")

    info = _DATASETS[key]
    root = Path(data_dir).expanduser() if data_dir is not None else DEFAULT_DATA_DIR
    req = DataRequest(name, arg or None, root, download, input_size, val_fraction, seed, data_dir is not None)
    splits = info.load(req)

    to_rgb = grayscale_to_rgb and info.in_chans == 1
    in_chans = 3 if to_rgb else info.in_chans
    mean = info.mean * 3 if to_rgb else info.mean
    std = info.std * 3 if to_rgb else info.std
    preprocess = Preprocess(input_size, tuple(mean), tuple(std), to_rgb)

    def subset(store: ImageStore, idx: np.ndarray, offset: int) -> np.ndarray:
        if limit is None or len(idx) <= limit:
            return idx
        return idx[balanced_choice(store.labels[idx], limit, seed + offset)]

    train_idx = subset(splits.train_store, splits.train_idx, 0)
    val_idx = subset(splits.val_store, splits.val_idx, 1)
    if train_limit is not None and len(train_idx) > train_limit:
        # Validation keeps the train:val proportion of `val_fraction`, so it is not 9,000 images beside 2,000.
        val_cap = max(1, round(train_limit * val_fraction / (1 - val_fraction))) if val_fraction else 0
        train_idx = train_idx[balanced_choice(splits.train_store.labels[train_idx], train_limit, seed + 3)]
        if len(val_idx) > val_cap:
            val_idx = val_idx[balanced_choice(splits.val_store.labels[val_idx], val_cap, seed + 4)]
    test_idx = subset(splits.test_store, splits.test_idx, 2)
    if len(train_idx) == 0:
        raise PacbEdgeError(f"{name}: the train split is empty")
    return DataBundle(
        name=name,
        train=ImageSplit(splits.train_store, train_idx, preprocess, train_augmentation(input_size, info.flip)),
        val=ImageSplit(splits.val_store, val_idx, preprocess),
        test=ImageSplit(splits.test_store, test_idx, preprocess),
        class_names=list(splits.class_names),
        mean=tuple(mean),
        std=tuple(std),
        in_chans=in_chans,
        input_size=input_size,
        seed=seed,
        val_fraction=val_fraction,
        limit=limit,
        train_limit=train_limit,
    )


def _native_channels(name: str) -> int | None:
    info = _DATASETS.get(name.partition(":")[0].strip().lower())
    return info.in_chans if info else None


def rebuild_dataset(spec: Any, data_dir: str | Path | None = None, download: bool = False) -> DataBundle:
    """The dataset exactly as `spec` (a `ModelSpec` or its dict) was trained on: same seed, fractions and limits.

    Export, bench and reproduce evaluate with this, never with a default split that may hold training images.
    If the test images on disk no longer hash to the recorded value, a one-line `PacbEdgeError` stops the run
    instead of measuring other images. Specs written before splits were recorded rebuild the seed-0 defaults.
    """
    d = spec if isinstance(spec, dict) else spec.to_dict()
    name = d.get("dataset")
    if not name:
        raise PacbEdgeError("the model's spec names no dataset; cannot rebuild its test split")
    split = d.get("split") or {}
    in_chans = int(d.get("in_chans", 3))
    bundle = load_dataset(
        name,
        data_dir=data_dir,
        download=download,
        input_size=int(d.get("input_size", 32)),
        grayscale_to_rgb=in_chans == 3 and _native_channels(name) == 1,
        val_fraction=float(split.get("val_fraction", 0.15)),
        seed=int(split.get("seed", 0)),
        limit=split.get("limit"),
        train_limit=split.get("train_limit"),
    )
    if len(bundle.class_names) != int(d.get("num_classes", len(bundle.class_names))):
        raise PacbEdgeError(f"dataset {name} has {len(bundle.class_names)} classes, the model {d.get('num_classes')}")
    if bundle.in_chans != in_chans:
        raise PacbEdgeError(f"dataset {name} gives {bundle.in_chans}-channel images, the model takes {in_chans}")
    want = split.get("test_sha256")
    if want and bundle.test.fingerprint() != want:
        raise PacbEdgeError(
            f"the {name} test split on disk ({len(bundle.test)} images) is not the one this model was trained "
            f"with (test hash {want[:12]}...); point --data-dir at the original data"
        )
    return bundle
