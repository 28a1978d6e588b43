"""Readers for the two classic offline image formats: MNIST-style idx files and CIFAR-10 pickles.

`read_fashion_mnist`, `read_mnist` and `read_cifar10` are the readers `datamodules.config.IMAGE_FORMATS`
names: root -> ((train images, labels), (test images, labels), class names)."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
# Where the four files may sit below root: flat (Debian's dataset-fashion-mnist, the original
# distribution) or torchvision's download layout.
_IDX_SUBDIRS = ("", "raw", "FashionMNIST/raw", "MNIST/raw")
CIFAR10_SUBDIRS = ("", "cifar-10-batches-py")
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                         "Bag", "Ankle boot"]


def read_idx(path: str | Path) -> np.ndarray:
    """An idx file (raw or .gz) as a numpy array; ValueError naming the file when it is malformed."""
    path = Path(path)
    data = path.read_bytes()
    if path.suffix == ".gz":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as error:
            raise ValueError(f"{path}: not a valid gzip file ({error})") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise ValueError(f"{path}: not an idx file (bad magic number {data[:4]!r})")
    ndim = data[3]
    shape = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    body = data[4 + 4 * ndim:]
    if len(body) != expected:
        raise ValueError(f"{path}: idx header says shape {shape} ({expected} bytes) but the file holds {len(body)}")
    return np.frombuffer(body, dtype=dtype).reshape(shape).copy()  # writable, detached from the bytes


def find_idx_file(root: Path, stem: str) -> Path | None:
    """root/<subdir>/<stem> or <stem>.gz, e.g. stem 'train-images-idx3-ubyte'."""
    for subdir in _IDX_SUBDIRS:
        for name in (stem, f"{stem}.gz"):
            candidate = root / subdir / name
            if candidate.is_file():
                return candidate
    return None


def load_idx_split(root: Path, prefix: str) -> tuple[np.ndarray, np.ndarray]:
    """(images (N, H, W) uint8, labels (N,) int64) for prefix 'train' or 't10k'."""
    paths = {kind: find_idx_file(root, f"{prefix}-{kind}-ubyte") for kind in ("images-idx3", "labels-idx1")}
    missing = [f"{prefix}-{kind}-ubyte[.gz]" for kind, path in paths.items() if path is None]
    if missing:
        raise ValueError(f"{root}: missing idx files {missing} (looked in {[s or '.' for s in _IDX_SUBDIRS]})")
    images, labels = read_idx(paths["images-idx3"]), read_idx(paths["labels-idx1"])
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(f"{paths['images-idx3']}: {images.shape} images do not match {labels.shape} labels "
                         f"in {paths['labels-idx1']}")
    return np.asarray(images, dtype=np.uint8), labels.astype(np.int64)


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as handle:
            return pickle.load(handle, encoding="bytes")
    except (pickle.UnpicklingError, EOFError) as error:
        raise ValueError(f"{path}: not a CIFAR-10 python batch ({error})") from None


def load_cifar10(root: Path, train: bool) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(images (N, 32, 32, 3) uint8, labels (N,) int64, class names) from the python-version batches."""
    folder = next((root / s for s in CIFAR10_SUBDIRS if (root / s / "batches.meta").is_file()), None)
    if folder is None:
        raise ValueError(f"{root}: no CIFAR-10 python batches (batches.meta) here or in cifar-10-batches-py/")
    names = [n.decode() for n in _unpickle(folder / "batches.meta")[b"label_names"]]
    files = [f"data_batch_{i}" for i in range(1, 6)] if train else ["test_batch"]
    images, labels = [], []
    for name in files:
        if not (folder / name).is_file():
            raise ValueError(f"{folder}: missing CIFAR-10 batch {name}")
        batch = _unpickle(folder / name)
        images.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.append(np.asarray(batch[b"labels"], dtype=np.int64))
    return np.concatenate(images), np.concatenate(labels), names


Split = tuple[np.ndarray, np.ndarray]


def read_fashion_mnist(root: Path) -> tuple[Split, Split, list[str]]:
    return load_idx_split(root, "train"), load_idx_split(root, "t10k"), FASHION_MNIST_CLASSES


def read_mnist(root: Path) -> tuple[Split, Split, list[str]]:
    return load_idx_split(root, "train"), load_idx_split(root, "t10k"), [str(digit) for digit in range(10)]


def read_cifar10(root: Path) -> tuple[Split, Split, list[str]]:
    train_x, train_y, names = load_cifar10(root, train=True)
    test_x, test_y, _ = load_cifar10(root, train=False)
    return (train_x, train_y), (test_x, test_y), names
