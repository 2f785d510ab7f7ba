"""Datasets: splits, preprocessing, augmentation, and the offline errors.

The torchvision datasets are tested on tiny files written here in their real on-disk formats and read by
torchvision's real readers.
"""

from __future__ import annotations

import ast
import gzip
import hashlib
import pickle
import socket
import struct
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torchvision.transforms import v2

import pacb_edge.data.datasets as data
import pacb_edge.data.sources as data_sources
from pacb_edge.core.errors import PacbEdgeError
from pacb_edge.data.datasets import load_dataset

# ---- helpers


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _row_index(rows: np.ndarray, row: np.ndarray) -> int:
    """Index of the row of `rows` equal to `row` (-1 if none)."""
    hits = np.flatnonzero((rows.reshape(len(rows), -1) == row.reshape(1, -1)).all(axis=1))
    return int(hits[0]) if len(hits) else -1


def _write_pickle(path: Path, obj: object) -> None:
    # The official CIFAR batches are Python 2 pickles with str keys; torchvision loads them with
    # encoding="latin1" and indexes entry["data"], so str keys are the faithful equivalent here.
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def _make_cifar10(root: Path, n_per_batch: int = 4, n_test: int = 6) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    written = {}
    for i in range(1, 6):
        x = rng.integers(0, 256, size=(n_per_batch, 3072), dtype=np.uint8)
        labels = [(n_per_batch * (i - 1) + j) % 10 for j in range(n_per_batch)]
        _write_pickle(folder / f"data_batch_{i}", {"data": x, "labels": labels, "batch_label": f"batch {i}"})
        written[f"data_batch_{i}"] = x
    x = rng.integers(0, 256, size=(n_test, 3072), dtype=np.uint8)
    _write_pickle(folder / "test_batch", {"data": x, "labels": [j % 10 for j in range(n_test)]})
    written["test_batch"] = x
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    _write_pickle(folder / "batches.meta", {"label_names": names, "num_vis": 3072})
    return written


def _accept_cifar_md5(monkeypatch: pytest.MonkeyPatch, cls: type, root: Path) -> None:
    """Register the md5 of our tiny files in place of the official ones.

    torchvision checks every CIFAR file against the md5 of the official release before unpickling it, which
    no tiny file can pass. Only the expected checksums change: the check itself and torchvision's reader run.
    """
    folder = root / cls.base_folder
    monkeypatch.setattr(cls, "train_list", [[n, _md5(folder / n)] for n, _ in cls.train_list])
    monkeypatch.setattr(cls, "test_list", [[n, _md5(folder / n)] for n, _ in cls.test_list])
    monkeypatch.setattr(cls, "meta", {**cls.meta, "md5": _md5(folder / cls.meta["filename"])})


def _write_idx(path: Path, array: np.ndarray) -> None:
    """An IDX file as in the MNIST/Fashion-MNIST release: big-endian magic (0x0803 images, 0x0801 labels)."""
    magic = 2051 if array.ndim == 3 else 2049
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def _make_fashion_mnist(root: Path, flat: bool = False) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    raw = root if flat else root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, size=(20, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": np.arange(20) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, size=(5, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": np.array([3, 1, 4, 1, 5]),
    }
    for name, a in arrays.items():
        _write_idx(raw / f"{name}.gz", a)
    return arrays


_GTSRB_COLORS = [(200, 30, 30), (30, 200, 30), (30, 30, 200)]
_GT_HEADER = "Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId\n"


def _make_gtsrb(root: Path, per_class: int = 4) -> list[int]:
    """Three classes of solid-colored .ppm signs of varying size; returns the test labels in CSV order."""
    base = root / "gtsrb"
    for c, color in enumerate(_GTSRB_COLORS):
        folder = base / "GTSRB" / "Training" / f"{c:05d}"
        folder.mkdir(parents=True)
        rows = []
        for j in range(per_class):
            w, h = 29 + 7 * j, 31 + 5 * c
            name = f"{j // 2:05d}_{j % 2:05d}.ppm"
            Image.new("RGB", (w, h), color).save(folder / name)
            rows.append(f"{name};{w};{h};5;5;{w - 5};{h - 5};{c}\n")
        (folder / f"GT-{c:05d}.csv").write_text(_GT_HEADER + "".join(rows))
    images = base / "GTSRB" / "Final_Test" / "Images"
    images.mkdir(parents=True)
    test_labels = [2, 0, 1, 2, 1]
    rows = []
    for i, c in enumerate(test_labels):
        name = f"{i:05d}.ppm"
        Image.new("RGB", (40 + i, 36), _GTSRB_COLORS[c]).save(images / name)
        rows.append(f"{name};{40 + i};36;5;5;{35 + i};31;{c}\n")
    (base / "GT-final_test.csv").write_text(_GT_HEADER + "".join(rows))
    return test_labels


def _make_image_tree(root: Path, classes: dict[str, int], mode: str = "RGB") -> None:
    for k, (cls, n) in enumerate(classes.items()):
        (root / cls).mkdir(parents=True)
        for j in range(n):
            color = (40 * k + 20, 10 * j, 100) if mode == "RGB" else 40 * k + 20
            Image.new(mode, (20 + j, 24), color).save(root / cls / f"{j}.png")


# ---- digits


def test_digits_split_is_stratified_complete_and_deterministic():
    b = load_dataset("digits")
    assert (len(b.train), len(b.val), len(b.test)) == (1257, 270, 270)
    assert b.class_names == [str(i) for i in range(10)]
    assert (b.in_chans, b.input_size) == (1, 32)
    for split in (b.train, b.val, b.test):
        assert set(split.labels.tolist()) == set(range(10))
    # Stratified: each class's share of val/test is within one image of its share of the whole set.
    counts = np.bincount(np.concatenate([b.train.labels, b.val.labels, b.test.labels]))
    assert counts.sum() == 1797
    assert np.all(np.abs(np.bincount(b.test.labels) - counts * 270 / 1797) <= 1)

    again = load_dataset("digits")
    x1, y1 = b.arrays("train")
    x2, y2 = again.arrays("train")
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(y1, y2)
    other = load_dataset("digits", seed=1)
    assert not np.array_equal(other.train.indices, b.train.indices)
    # No image is in two splits.
    all_idx = np.concatenate([b.train.indices, b.val.indices, b.test.indices])
    assert len(np.unique(all_idx)) == 1797


def test_digits_shapes_and_normalization():
    b = load_dataset("digits")
    x, y = b.train[0]
    assert x.shape == (1, 32, 32) and x.dtype == torch.float32 and isinstance(y, int)
    xs, ys = b.arrays("train")
    assert xs.shape == (1257, 1, 32, 32) and xs.dtype == np.float32 and ys.dtype == np.int64
    # The fixed mean/std are the train statistics at 32x32.
    assert abs(float(xs.mean())) < 0.01 and abs(float(xs.std()) - 1) < 0.01

    rgb = load_dataset("digits", grayscale_to_rgb=True, input_size=24)
    assert rgb.train[0][0].shape == (3, 24, 24) and rgb.in_chans == 3 and len(rgb.mean) == 3
    xr, _ = rgb.arrays("test", limit=5)
    assert xr.shape == (5, 3, 24, 24)
    np.testing.assert_array_equal(xr[:, 0], xr[:, 2])


def test_digits_arrays_are_unaugmented_and_train_items_are_augmented():
    b = load_dataset("digits")
    x1, _ = b.arrays("train", limit=10)
    x2, _ = b.arrays("train", limit=10)
    np.testing.assert_array_equal(x1, x2)
    # Val/test items equal the arrays exactly: one preprocessing path.
    xv, yv = b.arrays("val", limit=3)
    for i in range(3):
        np.testing.assert_array_equal(b.val[i][0].numpy(), xv[i])
        assert b.val[i][1] == yv[i]

    epochs = []
    for seed in range(4):
        torch.manual_seed(seed)
        epochs.append(b.train[0][0].numpy())
    assert any(not np.array_equal(epochs[0], e) for e in epochs[1:])
    assert any(not np.array_equal(e, x1[0]) for e in epochs)
    torch.manual_seed(0)
    a = b.train[0][0]
    torch.manual_seed(0)
    np.testing.assert_array_equal(a.numpy(), b.train[0][0].numpy())
    # Digits are not mirror-symmetric: crop only, no flip.
    assert not any(isinstance(t, v2.RandomHorizontalFlip) for t in b.train.augment.transforms)


def test_digits_calibration_images_are_real_balanced_train_images():
    b = load_dataset("digits")
    xs, ys = b.arrays("train")
    calib = b.calibration_images(20, seed=3)
    assert calib.shape == (20, 1, 32, 32) and calib.dtype == np.float32
    rows = [_row_index(xs, c) for c in calib]
    assert all(r >= 0 for r in rows)
    assert len(set(rows)) == 20
    assert set(ys[rows].tolist()) == set(range(10))  # 2 per class
    np.testing.assert_array_equal(calib, b.calibration_images(20, seed=3))
    assert not np.array_equal(calib, b.calibration_images(20, seed=4))
    assert len(b.calibration_images(5000)) == 1257
    with pytest.raises(PacbEdgeError):
        b.calibration_images(0)


def test_digits_limit_and_dataloader():
    b = load_dataset("digits", limit=30, seed=2)
    assert (len(b.train), len(b.val), len(b.test)) == (30, 30, 30)
    assert set(b.train.labels.tolist()) == set(range(10))
    again = load_dataset("digits", limit=30, seed=2)
    np.testing.assert_array_equal(b.arrays("test")[0], again.arrays("test")[0])
    x, y = next(iter(torch.utils.data.DataLoader(b.train, batch_size=8, shuffle=True)))
    assert x.shape == (8, 1, 32, 32) and y.dtype == torch.int64


def test_unknown_dataset_and_bad_arguments():
    with pytest.raises(PacbEdgeError) as e:
        load_dataset("mnist-ish")
    for known in ("digits", "cifar10", "cifar100", "fashion-mnist", "gtsrb", "imagefolder:PATH"):
        assert known in str(e.value)
    with pytest.raises(PacbEdgeError):
        load_dataset("cifar10:/some/path")
    with pytest.raises(PacbEdgeError):
        load_dataset("digits", val_fraction=1.0)
    b = load_dataset("digits", limit=10)
    with pytest.raises(PacbEdgeError):
        b.arrays("training")


@pytest.mark.parametrize("module", [data, data_sources])
def test_data_modules_never_unpickle(module):
    tree = ast.parse(Path(module.__file__).read_text())
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    imports = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom) for a in n.names}
    modules = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert "pickle" not in names | imports | modules


# ---- torchvision datasets on real-format files


def test_cifar10_reads_real_batches(tmp_path, monkeypatch):
    written = _make_cifar10(tmp_path)
    _accept_cifar_md5(monkeypatch, torchvision.datasets.CIFAR10, tmp_path)
    b = load_dataset("cifar10", data_dir=tmp_path, val_fraction=0.2)
    assert (len(b.train), len(b.val), len(b.test)) == (16, 4, 6)
    assert b.class_names[:3] == ["airplane", "automobile", "bird"] and b.in_chans == 3
    assert b.mean == data.CIFAR10_MEAN

    x, y = b.arrays("test")
    assert x.shape == (6, 3, 32, 32)
    np.testing.assert_array_equal(y, np.arange(6) % 10)
    mean = np.array(data.CIFAR10_MEAN, dtype=np.float32).reshape(3, 1, 1)
    std = np.array(data.CIFAR10_STD, dtype=np.float32).reshape(3, 1, 1)
    expected = (written["test_batch"].reshape(6, 3, 32, 32).astype(np.float32) / 255 - mean) / std
    np.testing.assert_allclose(x, expected, atol=1e-5)

    # Train + val together are exactly the five train batches.
    train_rows = np.concatenate([written[f"data_batch_{i}"] for i in range(1, 6)]).reshape(20, 3, 32, 32)
    expected_train = (train_rows.astype(np.float32) / 255 - mean) / std
    both = np.concatenate([b.arrays("train")[0], b.arrays("val")[0]])
    assert sorted(_row_index(expected_train.round(4), r.round(4)) for r in both) == list(range(20))
    assert any(isinstance(t, v2.RandomHorizontalFlip) for t in b.train.augment.transforms)

    b2 = load_dataset("cifar10", data_dir=tmp_path, val_fraction=0.2)
    np.testing.assert_array_equal(b.train.indices, b2.train.indices)


def test_cifar10_md5_mismatch_is_reported_as_corrupted(tmp_path):
    _make_cifar10(tmp_path)
    with pytest.raises(PacbEdgeError) as e:
        load_dataset("cifar10", data_dir=tmp_path)
    msg = str(e.value)
    assert "corrupted" in msg and "cifar-10-batches-py" in msg and "\n" not in msg
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(PacbEdgeError, match=r"cifar10 not found: .*data_batch_1\.\.5"):
        load_dataset("cifar10", data_dir=tmp_path)


def test_cifar100_reads_real_files(tmp_path, monkeypatch):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    rng = np.random.default_rng(2)
    for split, n in (("train", 12), ("test", 4)):
        labels = [i % 3 for i in range(n)]
        x = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        _write_pickle(folder / split, {"data": x, "fine_labels": labels, "coarse_labels": [0] * n})
    _write_pickle(folder / "meta", {"fine_label_names": ["apple", "aquarium_fish", "baby"], "coarse_label_names": []})
    _accept_cifar_md5(monkeypatch, torchvision.datasets.CIFAR100, tmp_path)
    b = load_dataset("cifar100", data_dir=tmp_path, val_fraction=0.25)
    assert (len(b.train), len(b.val), len(b.test)) == (9, 3, 4)
    assert set(b.val.labels.tolist()) == {0, 1, 2}  # stratified
    assert b.class_names == ["apple", "aquarium_fish", "baby"] and b.std == data.CIFAR100_STD


def test_fashion_mnist_reads_gzipped_idx(tmp_path):
    arrays = _make_fashion_mnist(tmp_path)
    b = load_dataset("fashion-mnist", data_dir=tmp_path, input_size=28, val_fraction=0.25)
    assert (len(b.train), len(b.val), len(b.test)) == (15, 5, 5)
    assert b.class_names[0] == "T-shirt/top" and b.in_chans == 1
    x, y = b.arrays("test")
    np.testing.assert_array_equal(y, [3, 1, 4, 1, 5])
    expected = (arrays["t10k-images-idx3-ubyte"][:, None].astype(np.float32) / 255 - 0.2860) / 0.3530
    np.testing.assert_allclose(x, expected, atol=1e-5)

    b32 = load_dataset("fashion-mnist", data_dir=tmp_path, grayscale_to_rgb=True)
    x32, _ = b32.arrays("test")
    assert x32.shape == (5, 3, 32, 32) and b32.train[0][0].shape == (3, 32, 32)
    for i in range(5):  # the resize of one item equals the batched resize
        np.testing.assert_allclose(b32.test[i][0].numpy(), x32[i], atol=1e-6)
    assert not any(isinstance(t, v2.RandomHorizontalFlip) for t in b32.train.augment.transforms)


def test_fashion_mnist_found_in_debian_folder_without_data_dir(tmp_path, monkeypatch):
    debian = tmp_path / "usr" / "share" / "datasets" / "fashion-mnist"
    arrays = _make_fashion_mnist(debian, flat=True)
    monkeypatch.setattr(data_sources, "FASHION_MNIST_DEBIAN_DIR", debian)
    monkeypatch.setattr(data_sources, "DEFAULT_DATA_DIR", tmp_path / "nothing_here")
    debian.chmod(0o555)  # read-only, as /usr/share is: the .gz files are read without unpacking next to them
    try:
        b = load_dataset("fashion-mnist", input_size=28, val_fraction=0.25)
    finally:
        debian.chmod(0o755)
    assert (len(b.train), len(b.val), len(b.test)) == (15, 5, 5)
    np.testing.assert_array_equal(b.arrays("test", raw=True)[0][:, 0], arrays["t10k-images-idx3-ubyte"])
    assert sorted(p.name for p in debian.iterdir()) == sorted(f"{n}.gz" for n in arrays)


def test_fashion_mnist_flat_folder_plain_or_gz_and_missing(tmp_path, monkeypatch):
    arrays = _make_fashion_mnist(tmp_path / "flat", flat=True)
    b = load_dataset("fashion-mnist", data_dir=tmp_path / "flat", input_size=28)
    np.testing.assert_array_equal(b.test.labels, arrays["t10k-labels-idx1-ubyte"])
    monkeypatch.setattr(data_sources, "FASHION_MNIST_DEBIAN_DIR", tmp_path / "absent")
    monkeypatch.setattr(data_sources, "DEFAULT_DATA_DIR", tmp_path / "absent2")
    with pytest.raises(PacbEdgeError) as e:
        load_dataset("fashion-mnist")
    msg = str(e.value)
    assert "dataset-fashion-mnist" in msg and "t10k-images-idx3-ubyte" in msg and "\n" not in msg


def test_fashion_mnist_corrupt_file_is_one_line_and_writes_nothing(tmp_path):
    _make_fashion_mnist(tmp_path, flat=True)
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b not really gzip")
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(PacbEdgeError) as e:
        load_dataset("fashion-mnist", data_dir=tmp_path)
    assert "corrupt or incomplete" in str(e.value) and "dataset-fashion-mnist" in str(e.value)
    assert "\n" not in str(e.value) and sorted(p.name for p in tmp_path.iterdir()) == before


def test_train_limit_caps_training_images_only(tmp_path):
    full = load_dataset("digits", seed=1)
    capped = load_dataset("digits", seed=1, train_limit=100)
    assert len(capped.train) == 100 and set(capped.train.indices) <= set(full.train.indices)
    np.testing.assert_array_equal(capped.test.indices, full.test.indices)  # the test split stays whole
    assert len(capped.val) == round(100 * 0.15 / 0.85) and set(capped.val.indices) <= set(full.val.indices)
    assert np.bincount(capped.train.labels, minlength=10).min() >= 9  # balanced over the classes
    assert capped.split_record()["train_limit"] == 100 and capped.split_record()["n_test"] == len(full.test)
    with pytest.raises(PacbEdgeError, match="train_limit must be at least 1"):
        load_dataset("digits", train_limit=0)


def test_gtsrb_reads_ppm_tree_and_csv(tmp_path):
    test_labels = _make_gtsrb(tmp_path)
    b = load_dataset("gtsrb", data_dir=tmp_path, val_fraction=0.25)
    assert (len(b.train), len(b.val), len(b.test)) == (9, 3, 5)
    assert b.class_names == list(data.GTSRB_CLASS_NAMES[:3])
    x, y = b.arrays("test")
    assert x.shape == (5, 3, 32, 32)
    np.testing.assert_array_equal(y, test_labels)
    mean = np.array(data.GTSRB_MEAN).reshape(3, 1, 1)
    std = np.array(data.GTSRB_STD).reshape(3, 1, 1)
    for xi, c in zip(x, test_labels, strict=True):  # solid colors survive the resize
        expected = (np.array(_GTSRB_COLORS[c]).reshape(3, 1, 1) / 255 - mean) / std
        np.testing.assert_allclose(xi, np.broadcast_to(expected, xi.shape), atol=1e-4)
    xt, yt = b.arrays("train")
    for xi, c in zip(xt, yt, strict=True):
        assert np.allclose(xi[:, 0, 0], ((np.array(_GTSRB_COLORS[c]) / 255 - mean[:, 0, 0]) / std[:, 0, 0]), atol=1e-4)
    assert b.train[0][0].shape == (3, 32, 32)


def test_imagefolder_flat_tree_is_split_70_15_15(tmp_path):
    _make_image_tree(tmp_path / "pics", {"cat": 7, "dog": 7, "owl": 6}, mode="L")
    b = load_dataset(f"imagefolder:{tmp_path / 'pics'}")
    assert (len(b.train), len(b.val), len(b.test)) == (14, 3, 3)
    assert b.class_names == ["cat", "dog", "owl"] and b.in_chans == 3 and b.mean == data.IMAGENET_MEAN
    x, y = b.arrays("train")
    assert x.shape == (14, 3, 32, 32)
    mean = np.array(data.IMAGENET_MEAN, dtype=np.float32).reshape(3, 1, 1)
    std = np.array(data.IMAGENET_STD, dtype=np.float32).reshape(3, 1, 1)
    pixels = x * std + mean
    np.testing.assert_allclose(pixels[:, 0], pixels[:, 1], atol=1e-6)  # grayscale PNGs are read as RGB
    again = load_dataset(f"imagefolder:{tmp_path / 'pics'}")
    np.testing.assert_array_equal(b.test.indices, again.test.indices)


def test_imagefolder_split_folders_keep_train_class_numbering(tmp_path):
    _make_image_tree(tmp_path / "ds" / "train", {"a": 3, "b": 3, "c": 3})
    _make_image_tree(tmp_path / "ds" / "val", {"a": 1, "b": 1, "c": 1})
    _make_image_tree(tmp_path / "ds" / "test", {"c": 2})  # test/ holds only the last class
    b = load_dataset(f"imagefolder:{tmp_path / 'ds'}")
    assert (len(b.train), len(b.val), len(b.test)) == (9, 3, 2)
    assert b.class_names == ["a", "b", "c"]
    assert b.arrays("test")[1].tolist() == [2, 2]  # "c" is class 2 of train/, not class 0 of test/

    _make_image_tree(tmp_path / "ds2" / "train", {"a": 10, "b": 10})
    b2 = load_dataset(f"imagefolder:{tmp_path / 'ds2'}", val_fraction=0.2)
    assert (len(b2.train), len(b2.val), len(b2.test)) == (13, 4, 3)


@pytest.mark.parametrize("layout", ["missing", "empty", "class_folders_without_images", "no_path"])
def test_imagefolder_errors(tmp_path, layout):
    path = tmp_path / "pics"
    if layout == "empty":
        path.mkdir()
    elif layout == "class_folders_without_images":
        (path / "cat").mkdir(parents=True)
        (path / "cat" / "notes.txt").write_text("not an image")
    name = "imagefolder:" if layout == "no_path" else f"imagefolder:{path}"
    with pytest.raises(PacbEdgeError) as e:
        load_dataset(name)
    assert "\n" not in str(e.value)


# ---- offline errors

_EXPECTED_FILES = {
    "cifar10": ["cifar-10-batches-py", "data_batch_1", "test_batch", "batches.meta"],
    "cifar100": ["cifar-100-python", "train", "test", "meta"],
    "fashion-mnist": ["FashionMNIST/raw", "train-images-idx3-ubyte", "t10k-labels-idx1-ubyte"],
    "gtsrb": ["gtsrb/GTSRB/Training", "Final_Test/Images", "GT-final_test.csv"],
}


@pytest.mark.parametrize("name", list(_EXPECTED_FILES))
def test_missing_files_say_what_to_place_where(tmp_path, name):
    with pytest.raises(PacbEdgeError) as e:
        load_dataset(name, data_dir=tmp_path)
    msg = str(e.value)
    assert "\n" not in msg and "not found" in msg and "--download" in msg
    assert str(tmp_path.resolve()) in msg
    for part in _EXPECTED_FILES[name]:
        assert part in msg


@pytest.fixture
def no_network(monkeypatch):
    """Every connection attempt fails at once, as on an offline machine (and no test can download)."""

    def refuse(*args, **kwargs):
        raise OSError("network is unreachable (test)")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.mark.parametrize("name", list(_EXPECTED_FILES))
def test_download_offline_fails_fast_with_one_line(tmp_path, no_network, name):
    timeout_before = socket.getdefaulttimeout()
    start = time.monotonic()
    with pytest.raises(PacbEdgeError) as e:
        load_dataset(name, data_dir=tmp_path, download=True)
    assert time.monotonic() - start < 30
    msg = str(e.value)
    assert "download failed" in msg and "\n" not in msg and _EXPECTED_FILES[name][0] in msg
    assert socket.getdefaulttimeout() == timeout_before
