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

from __future__ import annotations

import contextlib
import hashlib
import http.client
import socket
import tarfile
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch.utils.data import Dataset
from torchvision.transforms import v2
from torchvision.transforms.functional import pil_to_tensor

from pacb_edge.errors import PacbEdgeError

DEFAULT_DATA_DIR = Path("data")
TEST_FRACTION = 0.15  # test share for datasets without an official test split (digits, imagefolder)
DOWNLOAD_SOCKET_TIMEOUT_S = 30.0

# Fixed, so the model spec does not change with the seed: the mean and std of the seed-0 digits train split
# (70/15/15), scaled to [0, 1] and upsampled to 32x32. At other sizes they are close, not exact.
DIGITS_MEAN = (0.3055,)
DIGITS_STD = (0.3239,)
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
FASHION_MNIST_MEAN, FASHION_MNIST_STD = (0.2860,), (0.3530,)
GTSRB_MEAN, GTSRB_STD = (0.3403, 0.3121, 0.3214), (0.2724, 0.2608, 0.2669)
# The user's own images: ImageNet statistics, the usual default for natural photos of unknown origin.
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

GTSRB_CLASS_NAMES = (
    "Speed limit (20km/h)",
    "Speed limit (30km/h)",
    "Speed limit (50km/h)",
    "Speed limit (60km/h)",
    "Speed limit (70km/h)",
    "Speed limit (80km/h)",
    "End of speed limit (80km/h)",
    "Speed limit (100km/h)",
    "Speed limit (120km/h)",
    "No passing",
    "No passing for vehicles over 3.5 metric tons",
    "Right-of-way at the next intersection",
    "Priority road",
    "Yield",
    "Stop",
    "No vehicles",
    "Vehicles over 3.5 metric tons prohibited",
    "No entry",
    "General caution",
    "Dangerous curve to the left",
    "Dangerous curve to the right",
    "Double curve",
    "Bumpy road",
    "Slippery road",
    "Road narrows on the right",
    "Road work",
    "Traffic signals",
    "Pedestrians",
    "Children crossing",
    "Bicycles crossing",
    "Beware of ice/snow",
    "Wild animals crossing",
    "End of all speed and passing limits",
    "Turn right ahead",
    "Turn left ahead",
    "Ahead only",
    "Go straight or right",
    "Go straight or left",
    "Keep right",
    "Keep left",
    "Roundabout mandatory",
    "End of no passing",
    "End of no passing by vehicles over 3.5 metric tons",
)

# Errors torchvision's readers and downloaders raise for missing, partial or corrupted files, or no network.
_DATA_ERRORS = (
    RuntimeError,
    OSError,  # includes FileNotFoundError, urllib's URLError and socket errors
    ValueError,
    TypeError,
    EOFError,
    AssertionError,  # torchvision's IDX reader asserts on a bad header
    http.client.HTTPException,
    tarfile.TarError,
    zipfile.BadZipFile,
)


# Preprocessing and the split datasets


@dataclass(frozen=True)
class Preprocess:
    """The inference preprocessing: to float [0, 1], optional gray -> RGB, resize to a square, normalize."""

    input_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    to_rgb: bool = False

    def resize(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) uint8 or [0, 1] float -> float (N, C', S, S) in [0, 1], not yet normalized.

        The result is rounded to 8-bit steps (k / 255): the images a model trains and is tested on are exactly the
        raw 0-255 pixels every exported artifact takes (`raw_pixels`), as a camera on the device would give them.
        """
        if x.dtype == torch.uint8:
            x = x.float().div(255.0)
            exact = True
        else:
            x, exact = x.float(), False
        if self.to_rgb and x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        s = self.input_size
        if tuple(x.shape[-2:]) != (s, s):
            x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False, antialias=True)
            exact = False
        if not exact:
            x = x.clamp(0.0, 1.0).mul(255.0).round().div(255.0)
        return x

    @staticmethod
    def raw_pixels(x: torch.Tensor) -> torch.Tensor:
        """A resized [0, 1] image as the uint8 0-255 pixels the exported artifacts take."""
        return x.mul(255.0).round().clamp(0, 255).to(torch.uint8)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """(..., C, H, W) float in [0, 1] -> `(x - mean) / std` per channel."""
        mean = torch.tensor(self.mean, dtype=x.dtype).view(-1, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype).view(-1, 1, 1)
        return (x - mean) / std


class _ImageStore(Protocol):
    """Where a split's images come from: all images of one source (e.g. the official train set), by index."""

    labels: np.ndarray

    def __len__(self) -> int: ...

    def resized(self, indices: np.ndarray, preprocess: Preprocess) -> torch.Tensor: ...

    def fingerprint(self, indices: np.ndarray) -> str:
        """SHA-256 over what identifies the images at `indices` (and their labels) on disk."""
        ...


class _TensorImages:
    """In-memory images (N, C, H, W), uint8 or float in [0, 1]; resized in batches."""

    def __init__(self, images: torch.Tensor, labels: np.ndarray) -> None:
        self.images = images
        self.labels = np.asarray(labels, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.labels)

    def resized(self, indices: np.ndarray, preprocess: Preprocess) -> torch.Tensor:
        return preprocess.resize(self.images[torch.as_tensor(indices, dtype=torch.long)])

    def fingerprint(self, indices: np.ndarray) -> str:
        """Indices, labels and the pixels themselves (a few MB even for a 10,000-image test set)."""
        idx = np.asarray(indices, dtype=np.int64)
        h = hashlib.sha256(idx.tobytes())
        h.update(self.labels[idx].astype(np.int64).tobytes())
        pixels = self.images[torch.as_tensor(idx, dtype=torch.long)].contiguous()
        if pixels.dtype != torch.uint8:
            pixels = pixels.float()
        h.update(pixels.numpy().tobytes())
        return h.hexdigest()


class _FileImages:
    """Images read one by one by a torchvision dataset (GTSRB, ImageFolder) with `pil_to_tensor`."""

    def __init__(self, dataset: Any, labels: Sequence[int]) -> None:
        self.dataset = dataset
        self.labels = np.asarray(labels, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.labels)

    def fingerprint(self, indices: np.ndarray) -> str:
        """Class folder, file name, size and label of each image (not its pixels: reading them all is slow)."""
        samples = getattr(self.dataset, "samples", None) or getattr(self.dataset, "_samples", None) or []
        h = hashlib.sha256()
        for i in np.asarray(indices, dtype=np.int64):
            path = Path(samples[int(i)][0]) if samples else Path(str(i))
            size = path.stat().st_size if path.is_file() else -1
            h.update(f"{path.parent.name}/{path.name}:{size}:{int(self.labels[i])}\n".encode())
        return h.hexdigest()

    def resized(self, indices: np.ndarray, preprocess: Preprocess) -> torch.Tensor:
        # Images differ in size, so each is resized on its own before stacking.
        rows = [preprocess.resize(self.dataset[int(i)][0][None]) for i in indices]
        if not rows:
            c = 3 if preprocess.to_rgb else len(preprocess.mean)
            return torch.empty(0, c, preprocess.input_size, preprocess.input_size)
        return torch.cat(rows)


class ImageSplit(Dataset):
    """One split: a subset of a store, the inference preprocessing and, for train only, an augmentation."""

    def __init__(
        self,
        store: _ImageStore,
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

    def calibration_images(self, n: int, seed: int = 0, raw: bool = False) -> np.ndarray:
        """`n` real train images (all of them if the split is smaller), seeded and balanced over classes.

        Returns N x C x H x W with the inference preprocessing (float32 normalized, or uint8 pixels with `raw`),
        for INT8 calibration on real data.
        """
        if n < 1:
            raise PacbEdgeError(f"calibration needs at least 1 image, got {n}")
        positions = _balanced_choice(self.train.labels, n, seed)
        return self.train.arrays_at(positions, raw=raw)[0]


# Splitting


def _carve(positions: np.ndarray, labels: np.ndarray, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split `positions` into (rest, n taken), stratified by `labels` where possible, else random."""
    if n <= 0:
        return positions, positions[:0]
    if n >= len(positions):
        raise PacbEdgeError(f"too few images ({len(positions)}) to hold out {n} for validation/test")
    try:
        rest, taken = train_test_split(positions, test_size=n, stratify=labels, random_state=seed)
    except ValueError:  # a class with < 2 images, or fewer held-out images than classes
        rest, taken = train_test_split(positions, test_size=n, random_state=seed)
    return np.asarray(rest, dtype=np.int64), np.asarray(taken, dtype=np.int64)


def _balanced_choice(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """`n` seeded positions into `labels`, round-robin over classes (classes in random order), sorted."""
    labels = np.asarray(labels)
    if n >= len(labels):
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    rank = np.empty(len(labels), dtype=np.int64)
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        rank[rng.permutation(members)] = np.arange(len(members))
    class_key = rng.permutation(int(labels.max()) + 1)[labels]
    order = np.lexsort((class_key, rank))
    return np.sort(order[:n])


@dataclass
class _Splits:
    """What a dataset loader returns: the store and indices of each split, and the class names."""

    train_store: _ImageStore
    train_idx: np.ndarray
    val_store: _ImageStore
    val_idx: np.ndarray
    test_store: _ImageStore
    test_idx: np.ndarray
    class_names: list[str]


def _official_splits(
    train_store: _ImageStore, test_store: _ImageStore, class_names: list[str], req: _Request
) -> _Splits:
    """Official train split -> train/val by `val_fraction`; the official test split is the test set."""
    return _pooled_splits(train_store, class_names, req, test_store=test_store)


def _pooled_splits(
    pool: _ImageStore,
    class_names: list[str],
    req: _Request,
    val_store: _ImageStore | None = None,
    test_store: _ImageStore | None = None,
) -> _Splits:
    """Carve the splits not given as their own store out of `pool`, seeded and stratified.

    Test takes 15 % of the pool and val `val_fraction` of it, so with neither given it is 70/15/15 by default.
    """
    n = len(pool)
    positions = np.arange(n)
    if test_store is None:
        if req.val_fraction + TEST_FRACTION >= 1.0:
            raise PacbEdgeError(f"val_fraction must be below {1 - TEST_FRACTION:.2f} here, got {req.val_fraction}")
        positions, test_idx = _carve(positions, pool.labels, round(TEST_FRACTION * n), req.seed)
        test_store = pool
    else:
        test_idx = np.arange(len(test_store))
    if val_store is None:
        positions, val_idx = _carve(positions, pool.labels[positions], round(req.val_fraction * n), req.seed)
        val_store = pool
    else:
        val_idx = np.arange(len(val_store))
    return _Splits(pool, positions, val_store, val_idx, test_store, test_idx, class_names)


# Loaders, one per dataset


@dataclass(frozen=True)
class _Request:
    name: str
    arg: str | None  # the PATH of imagefolder:PATH
    root: Path
    download: bool
    input_size: int
    val_fraction: float
    seed: int
    explicit_root: bool = False  # the user passed --data-dir (else the default ./data, plus known system folders)


@contextlib.contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    """Bound each socket operation of torchvision's download (its urlopen sets no timeout), then restore."""
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(old)


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _open(req: _Request, files: str, required: Sequence[str], make: Callable[[bool], Any]) -> Any:
    """Run a torchvision constructor `make(download)`; turn any data-file failure into a one-line error.

    `files` says what to place under `req.root`; `required` (relative paths) tells "missing" from "corrupted".
    """
    root = req.root.resolve()
    try:
        if req.download:
            with _socket_timeout(DOWNLOAD_SOCKET_TIMEOUT_S):
                return make(True)
        return make(False)
    except _DATA_ERRORS as e:
        if req.download:
            raise PacbEdgeError(
                f"{req.name}: download failed or files unusable ({_one_line(e)}); place {files} under {root}"
            ) from None
        if not all((root / p).exists() for p in required):
            raise PacbEdgeError(f"{req.name} not found: place {files} under {root} (or pass --download)") from None
        raise PacbEdgeError(
            f"{req.name} files under {root} are corrupted or incomplete ({_one_line(e)}): "
            f"replace {files} (or pass --download)"
        ) from None


def _load_digits_splits(req: _Request) -> _Splits:
    """scikit-learn's bundled 8x8 digits (no download): [0, 1], upsampled once to input_size, 70/15/15."""
    digits = load_digits()
    x = torch.from_numpy(digits.images.astype(np.float32) / 16.0)[:, None]
    s = req.input_size
    if s != x.shape[-1]:
        x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False, antialias=False)
    store = _TensorImages(x.contiguous(), digits.target)
    return _pooled_splits(store, [str(c) for c in digits.target_names], req)


def _cifar_splits(req: _Request, cls: type, folder: str, files: Sequence[str]) -> _Splits:
    """CIFAR-10/100 read by torchvision (which checks each file's md5 before unpickling it)."""
    desc = f"{folder}/{{{','.join(files)}}}"
    names = [f.replace("1..5", str(i)) for f in files for i in (range(1, 6) if "1..5" in f else [0])]
    required = [f"{folder}/{n}" for n in names]
    stores = []
    for train in (True, False):
        ds = _open(req, desc, required, lambda dl, train=train: cls(str(req.root), train=train, download=dl))
        images = torch.from_numpy(np.asarray(ds.data)).permute(0, 3, 1, 2)  # NHWC uint8 -> NCHW view
        stores.append((_TensorImages(images, ds.targets), list(ds.classes)))
    (train_store, class_names), (test_store, _) = stores
    return _official_splits(train_store, test_store, class_names, req)


def _load_cifar10_splits(req: _Request) -> _Splits:
    files = ["data_batch_1..5", "test_batch", "batches.meta"]
    return _cifar_splits(req, torchvision.datasets.CIFAR10, "cifar-10-batches-py", files)


def _load_cifar100_splits(req: _Request) -> _Splits:
    return _cifar_splits(req, torchvision.datasets.CIFAR100, "cifar-100-python", ["train", "test", "meta"])


# Debian's package dataset-fashion-mnist installs the original IDX files (gzipped) here.
FASHION_MNIST_DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_PACKAGE = "dataset-fashion-mnist"
_FASHION_MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def _idx_file(folder: Path, name: str) -> Path | None:
    """`folder/name` or `folder/name.gz`, whichever exists."""
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def fashion_mnist_folders(root: Path | None) -> list[Path]:
    """Where Fashion-MNIST's four IDX files are looked for, in order.

    With `--data-dir DIR`: DIR itself (a flat folder) and torchvision's DIR/FashionMNIST/raw. Without it: ./data's
    torchvision layout, then Debian's /usr/share/datasets/fashion-mnist.
    """
    if root is None:
        return [DEFAULT_DATA_DIR / "FashionMNIST" / "raw", FASHION_MNIST_DEBIAN_DIR]
    return [root, root / "FashionMNIST" / "raw"]


def _read_idx(path: Path, labels: bool) -> torch.Tensor:
    """An IDX file (plain or .gz) read by torchvision's own reader; a .gz is unpacked into a private temp file,
    never next to the data (Debian's folder is read-only, and a half-unpacked file must not be left behind)."""
    import gzip
    import shutil
    import tempfile

    from torchvision.datasets.mnist import read_image_file, read_label_file

    read = read_label_file if labels else read_image_file
    if path.suffix != ".gz":
        return read(str(path))
    with tempfile.NamedTemporaryFile(prefix="pacb_idx_") as tmp:
        with gzip.open(path, "rb") as src:
            shutil.copyfileobj(src, tmp)
        tmp.flush()
        return read(tmp.name)


def _load_fashion_mnist_splits(req: _Request) -> _Splits:
    """Fashion-MNIST from its original IDX files (plain or .gz), found in Debian's folder, a flat folder or
    torchvision's FashionMNIST/raw layout; `--download` lets torchvision fetch them into the latter."""
    root = req.root if req.explicit_root else None
    if req.download:
        _open(
            req,
            "FashionMNIST/raw/<4 IDX files>",
            [],
            lambda dl: torchvision.datasets.FashionMNIST(str(req.root), train=True, download=dl),
        )
        root = req.root / "FashionMNIST" / "raw"
    folders = [root] if req.download else fashion_mnist_folders(root)
    found = None
    for folder in folders:
        files = {name: _idx_file(folder, name) for name in _FASHION_MNIST_FILES}
        if all(files.values()):
            found = files
            break
    if found is None:
        where = " or ".join(str(f.resolve()) for f in folders)
        names = ", ".join(f"{n}[.gz]" for n in _FASHION_MNIST_FILES)
        raise PacbEdgeError(
            f"fashion-mnist not found in {where}: install Debian's package {FASHION_MNIST_PACKAGE} "
            f"(apt-get install {FASHION_MNIST_PACKAGE}), place {names} there, or pass --download"
        )
    arrays = {}
    for name, path in found.items():
        try:
            arrays[name] = _read_idx(path, labels="labels" in name)
        except _DATA_ERRORS + (OSError,) as e:
            raise PacbEdgeError(
                f"fashion-mnist file {path} is corrupt or incomplete ({_one_line(e)}): "
                f"reinstall {FASHION_MNIST_PACKAGE} or replace the file"
            ) from None
    stores = []
    for split in ("train", "t10k"):
        images, labels = arrays[f"{split}-images-idx3-ubyte"], arrays[f"{split}-labels-idx1-ubyte"]
        if len(images) != len(labels) or (len(labels) and int(labels.max()) > 9):
            raise PacbEdgeError(
                f"fashion-mnist {split} files disagree: {len(images)} images, {len(labels)} labels (max label "
                f"{int(labels.max()) if len(labels) else '-'}); reinstall {FASHION_MNIST_PACKAGE}"
            )
        stores.append(_TensorImages(images[:, None].contiguous(), labels.numpy()))
    return _official_splits(stores[0], stores[1], list(torchvision.datasets.FashionMNIST.classes), req)


def _load_gtsrb_splits(req: _Request) -> _Splits:
    """GTSRB read by torchvision from <root>/gtsrb (the layout of the official archives)."""
    desc = "gtsrb/GTSRB/Training/<00000..00042>/*.ppm, gtsrb/GTSRB/Final_Test/Images/*.ppm and gtsrb/GT-final_test.csv"
    required = ["gtsrb/GTSRB/Training", "gtsrb/GTSRB/Final_Test/Images", "gtsrb/GT-final_test.csv"]
    stores = []
    for split in ("train", "test"):
        ds = _open(
            req,
            desc,
            required,
            lambda dl, split=split: torchvision.datasets.GTSRB(
                str(req.root), split=split, transform=pil_to_tensor, download=dl
            ),
        )
        # torchvision keeps (path, class) pairs in `_samples`; read labels there, not by decoding every image.
        stores.append(_FileImages(ds, [t for _, t in ds._samples]))
    train_dir = req.root.resolve() / "gtsrb" / "GTSRB" / "Training"
    folders = sorted(p.name for p in train_dir.iterdir() if p.is_dir())
    k = len(folders)
    # torchvision numbers train classes by sorted folder name; the test CSV uses ClassId. They agree only if
    # the folders are exactly 00000, 00001, ... as in the official archive.
    if folders != [f"{i:05d}" for i in range(k)] or k > len(GTSRB_CLASS_NAMES):
        raise PacbEdgeError(f"gtsrb: class folders under {train_dir} must be 00000..{k - 1:05d}, found {folders[:5]}")
    if len(stores[1]) and int(stores[1].labels.max()) >= k:
        raise PacbEdgeError(f"gtsrb: GT-final_test.csv has ClassId {int(stores[1].labels.max())} >= {k} train classes")
    return _official_splits(stores[0], stores[1], list(GTSRB_CLASS_NAMES[:k]), req)


def _image_folder(path: Path, class_to_idx: dict[str, int] | None = None) -> tuple[Any, list[str]]:
    """torchvision ImageFolder (RGB) over `path`; with `class_to_idx`, labels follow that numbering."""
    try:
        ds = torchvision.datasets.ImageFolder(str(path), transform=pil_to_tensor, allow_empty=class_to_idx is not None)
    except (FileNotFoundError, OSError) as e:
        raise PacbEdgeError(f"imagefolder: {_one_line(e)} (expected {path}/<class>/<image>)") from None
    if not ds.samples:
        raise PacbEdgeError(f"imagefolder: no images in {path} (expected {path}/<class>/<image>)")
    if class_to_idx is not None:
        unknown = sorted(set(ds.classes) - set(class_to_idx))
        if unknown:
            raise PacbEdgeError(f"imagefolder: classes {unknown} in {path} are not in train/")
        ds.samples = [(p, class_to_idx[ds.classes[t]]) for p, t in ds.samples]
        ds.imgs = ds.samples
        ds.targets = [t for _, t in ds.samples]
    return ds, list(ds.classes)


def _load_imagefolder_splits(req: _Request) -> _Splits:
    """The user's images: PATH/<class>/*, or PATH/train/<class>/* with optional PATH/val and PATH/test."""
    if not req.arg:
        raise PacbEdgeError("imagefolder needs a path: imagefolder:PATH")
    path = Path(req.arg).expanduser().resolve()
    if not path.is_dir():
        raise PacbEdgeError(f"imagefolder: {path} is not a folder")
    if not (path / "train").is_dir():
        ds, classes = _image_folder(path)
        return _pooled_splits(_FileImages(ds, ds.targets), classes, req)

    ds, classes = _image_folder(path / "train")
    held_out: dict[str, _ImageStore] = {}
    for split in ("val", "test"):
        if (path / split).is_dir():
            sds, _ = _image_folder(path / split, ds.class_to_idx)
            held_out[split] = _FileImages(sds, sds.targets)
    # Whatever is missing is carved out of train/ (test 15 %, val `val_fraction`).
    return _pooled_splits(
        _FileImages(ds, ds.targets),
        classes,
        req,
        val_store=held_out.get("val"),
        test_store=held_out.get("test"),
    )


@dataclass(frozen=True)
class _DatasetInfo:
    load: Callable[[_Request], _Splits]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    in_chans: int
    # Train augmentation is a random crop with zero padding; horizontal flips only where the classes are
    # mirror-symmetric. Digits, traffic signs and text are not (a flipped "left turn" sign is "right turn").
    flip: bool


_DATASETS: dict[str, _DatasetInfo] = {
    "digits": _DatasetInfo(_load_digits_splits, DIGITS_MEAN, DIGITS_STD, 1, flip=False),
    "cifar10": _DatasetInfo(_load_cifar10_splits, CIFAR10_MEAN, CIFAR10_STD, 3, flip=True),
    "cifar100": _DatasetInfo(_load_cifar100_splits, CIFAR100_MEAN, CIFAR100_STD, 3, flip=True),
    "fashion-mnist": _DatasetInfo(_load_fashion_mnist_splits, FASHION_MNIST_MEAN, FASHION_MNIST_STD, 1, flip=False),
    "gtsrb": _DatasetInfo(_load_gtsrb_splits, GTSRB_MEAN, GTSRB_STD, 3, flip=False),
    # The user's data: no flip, since we cannot know whether its classes are mirror-symmetric.
    "imagefolder": _DatasetInfo(_load_imagefolder_splits, IMAGENET_MEAN, IMAGENET_STD, 3, flip=False),
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
    req = _Request(name, arg or None, root, download, input_size, val_fraction, seed, data_dir is not None)
    splits = info.load(req)

    to_rgb = grayscale_to_rgb and info.in_chans == 1
    in_chans = 3 if to_rgb else info.in_chans
    mean = info.mean * 3 if to_rgb else info.mean
    std = info.std * 3 if to_rgb else info.std
    preprocess = Preprocess(input_size, tuple(mean), tuple(std), to_rgb)

    def subset(store: _ImageStore, idx: np.ndarray, offset: int) -> np.ndarray:
        if limit is None or len(idx) <= limit:
            return idx
        return idx[_balanced_choice(store.labels[idx], limit, seed + offset)]

    train_idx = subset(splits.train_store, splits.train_idx, 0)
    val_idx = subset(splits.val_store, splits.val_idx, 1)
    if train_limit is not None and len(train_idx) > train_limit:
        # Validation keeps the train:val proportion of `val_fraction`, so it is not 9,000 images beside 2,000.
        val_cap = max(1, round(train_limit * val_fraction / (1 - val_fraction))) if val_fraction else 0
        train_idx = train_idx[_balanced_choice(splits.train_store.labels[train_idx], train_limit, seed + 3)]
        if len(val_idx) > val_cap:
            val_idx = val_idx[_balanced_choice(splits.val_store.labels[val_idx], val_cap, seed + 4)]
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
