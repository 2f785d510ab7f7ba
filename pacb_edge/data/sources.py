"""Where a dataset's images come from: the per-dataset loaders (torchvision's readers on the real file formats,
scikit-learn's bundled digits, Debian's Fashion-MNIST), the image stores they fill, and the seeded splitting.

`pacb_edge.data.datasets` turns what these loaders return into a `DataBundle` with one inference preprocessing.
Everything runs offline; a missing or corrupt file is a one-line error saying what to place where, and the only
network access is torchvision's own download, with `--download`.
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
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torchvision.transforms.functional import pil_to_tensor

from pacb_edge.core.errors import PacbEdgeError

if TYPE_CHECKING:
    from pacb_edge.data.preprocess import Preprocess

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


class ImageStore(Protocol):
    """Where a split's images come from: all images of one source (e.g. the official train set), by index."""

    labels: np.ndarray

    def __len__(self) -> int: ...

    def resized(self, indices: np.ndarray, preprocess: Preprocess) -> torch.Tensor: ...

    def fingerprint(self, indices: np.ndarray) -> str:
        """SHA-256 over what identifies the images at `indices` (and their labels) on disk."""
        ...


class TensorImages:
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


class FileImages:
    """Images read one by one by a torchvision dataset (GTSRB, ImageFolder) with `pil_to_tensor`."""

    def __init__(self, dataset: Any, labels: Sequence[int]) -> None:
        self.dataset = dataset
        self.labels = np.asarray(labels, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.labels)

    def _samples(self) -> list[tuple[str, int]]:
        """(file, label) of each image, as the torchvision dataset lists them ([] if it does not)."""
        return getattr(self.dataset, "samples", None) or getattr(self.dataset, "_samples", None) or []

    def fingerprint(self, indices: np.ndarray) -> str:
        """Class folder, file name, size and label of each image (not its pixels: reading them all is slow)."""
        samples = self._samples()
        h = hashlib.sha256()
        for i in np.asarray(indices, dtype=np.int64):
            path = Path(samples[int(i)][0]) if samples else Path(str(i))
            size = path.stat().st_size if path.is_file() else -1
            h.update(f"{path.parent.name}/{path.name}:{size}:{int(self.labels[i])}\n".encode())
        return h.hexdigest()

    def _read(self, i: int) -> torch.Tensor:
        """Image `i`'s pixels; an unreadable file is one line naming it."""
        try:
            return self.dataset[i][0]
        except (OSError, ValueError) as e:  # PIL.UnidentifiedImageError is an OSError
            samples = self._samples()
            raise _unreadable(samples[i][0] if i < len(samples) else f"image #{i}", e) from None

    def resized(self, indices: np.ndarray, preprocess: Preprocess) -> torch.Tensor:
        # Images differ in size, so each is resized on its own before stacking.
        rows = [preprocess.resize(self._read(int(i))[None]) for i in indices]
        if not rows:
            c = 3 if preprocess.to_rgb else len(preprocess.mean)
            return torch.empty(0, c, preprocess.input_size, preprocess.input_size)
        return torch.cat(rows)


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


def balanced_choice(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
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
class Splits:
    """What a dataset loader returns: the store and indices of each split, and the class names."""

    train_store: ImageStore
    train_idx: np.ndarray
    val_store: ImageStore
    val_idx: np.ndarray
    test_store: ImageStore
    test_idx: np.ndarray
    class_names: list[str]


def _official_splits(
    train_store: ImageStore, test_store: ImageStore, class_names: list[str], req: DataRequest
) -> Splits:
    """Official train split -> train/val by `val_fraction`; the official test split is the test set."""
    return _pooled_splits(train_store, class_names, req, test_store=test_store)


def _pooled_splits(
    pool: ImageStore,
    class_names: list[str],
    req: DataRequest,
    val_store: ImageStore | None = None,
    test_store: ImageStore | None = None,
) -> Splits:
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
    return Splits(pool, positions, val_store, val_idx, test_store, test_idx, class_names)


# Loaders, one per dataset


@dataclass(frozen=True)
class DataRequest:
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


def _open(req: DataRequest, files: str, required: Sequence[str], make: Callable[[bool], Any]) -> Any:
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


def load_digits_splits(req: DataRequest) -> Splits:
    """scikit-learn's bundled 8x8 digits (no download): [0, 1], upsampled once to input_size, 70/15/15."""
    digits = load_digits()
    x = torch.from_numpy(digits.images.astype(np.float32) / 16.0)[:, None]
    s = req.input_size
    if s != x.shape[-1]:
        x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False, antialias=False)
    store = TensorImages(x.contiguous(), digits.target)
    return _pooled_splits(store, [str(c) for c in digits.target_names], req)


def _cifar_splits(req: DataRequest, cls: type, folder: str, files: Sequence[str]) -> Splits:
    """CIFAR-10/100 read by torchvision (which checks each file's md5 before unpickling it)."""
    desc = f"{folder}/{{{','.join(files)}}}"
    names = [f.replace("1..5", str(i)) for f in files for i in (range(1, 6) if "1..5" in f else [0])]
    required = [f"{folder}/{n}" for n in names]
    stores = []
    for train in (True, False):
        ds = _open(req, desc, required, lambda dl, train=train: cls(str(req.root), train=train, download=dl))
        images = torch.from_numpy(np.asarray(ds.data)).permute(0, 3, 1, 2)  # NHWC uint8 -> NCHW view
        stores.append((TensorImages(images, ds.targets), list(ds.classes)))
    (train_store, class_names), (test_store, _) = stores
    return _official_splits(train_store, test_store, class_names, req)


def load_cifar10_splits(req: DataRequest) -> Splits:
    files = ["data_batch_1..5", "test_batch", "batches.meta"]
    return _cifar_splits(req, torchvision.datasets.CIFAR10, "cifar-10-batches-py", files)


def load_cifar100_splits(req: DataRequest) -> Splits:
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


def load_fashion_mnist_splits(req: DataRequest) -> Splits:
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
        stores.append(TensorImages(images[:, None].contiguous(), labels.numpy()))
    return _official_splits(stores[0], stores[1], list(torchvision.datasets.FashionMNIST.classes), req)


def load_gtsrb_splits(req: DataRequest) -> Splits:
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
        stores.append(FileImages(ds, [t for _, t in ds._samples]))
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


def _unreadable(file: str, error: Exception) -> PacbEdgeError:
    """The one line for an image file that cannot be read."""
    return PacbEdgeError(f"cannot read image {file}: {type(error).__name__}: {str(error).splitlines()[0]}")


def _check_readable(samples: list[tuple[str, int]]) -> None:
    """Open every image's header (PIL reads no pixels for it), so an unreadable file is refused before a run starts
    and writes anything, in one line that names it."""
    from PIL import Image

    for file, _ in samples:
        try:
            with Image.open(file) as im:
                im.size  # noqa: B018 - the header, parsed
        except (OSError, ValueError) as e:  # PIL.UnidentifiedImageError is an OSError
            raise _unreadable(file, e) from None


def _image_folder(path: Path, class_to_idx: dict[str, int] | None = None) -> tuple[Any, list[str]]:
    """torchvision ImageFolder (RGB) over `path`; with `class_to_idx`, labels follow that numbering."""
    try:
        ds = torchvision.datasets.ImageFolder(str(path), transform=pil_to_tensor, allow_empty=class_to_idx is not None)
    except (FileNotFoundError, OSError) as e:
        raise PacbEdgeError(f"imagefolder: {_one_line(e)} (expected {path}/<class>/<image>)") from None
    if not ds.samples:
        raise PacbEdgeError(f"imagefolder: no images in {path} (expected {path}/<class>/<image>)")
    _check_readable(ds.samples)
    if class_to_idx is not None:
        unknown = sorted(set(ds.classes) - set(class_to_idx))
        if unknown:
            raise PacbEdgeError(f"imagefolder: classes {unknown} in {path} are not in train/")
        ds.samples = [(p, class_to_idx[ds.classes[t]]) for p, t in ds.samples]
        ds.imgs = ds.samples
        ds.targets = [t for _, t in ds.samples]
    return ds, list(ds.classes)


def load_imagefolder_splits(req: DataRequest) -> Splits:
    """The user's images: PATH/<class>/*, or PATH/train/<class>/* with optional PATH/val and PATH/test."""
    if not req.arg:
        raise PacbEdgeError("imagefolder needs a path: imagefolder:PATH")
    path = Path(req.arg).expanduser().resolve()
    if not path.is_dir():
        raise PacbEdgeError(f"imagefolder: {path} is not a folder")
    if not (path / "train").is_dir():
        ds, classes = _image_folder(path)
        return _pooled_splits(FileImages(ds, ds.targets), classes, req)

    ds, classes = _image_folder(path / "train")
    held_out: dict[str, ImageStore] = {}
    for split in ("val", "test"):
        if (path / split).is_dir():
            sds, _ = _image_folder(path / split, ds.class_to_idx)
            held_out[split] = FileImages(sds, sds.targets)
    # Whatever is missing is carved out of train/ (test 15 %, val `val_fraction`).
    return _pooled_splits(
        FileImages(ds, ds.targets),
        classes,
        req,
        val_store=held_out.get("val"),
        test_store=held_out.get("test"),
    )
