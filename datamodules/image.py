"""LightningDataModule over images: Fashion-MNIST / MNIST idx files, CIFAR-10 python batches, folders.

Everything reads local files (this project's machines are offline); `download=True` fetches with
torchvision's downloaders into `root` first, where the network allows. Splits:
- idx and CIFAR-10: test = the official test set; val = a seeded `val_fraction` of the official
  training set (the rest trains), or the test set when `val_fraction` is 0.
- folder (torchvision ImageFolder): root/train, root/val, root/test when root/train exists;
  otherwise a seeded split of root/<class>/* by val_fraction and test_fraction.
`limit_train`/`limit_val`/`limit_test` take seeded subsets for quick CPU runs.
Batches: x float32 (B, C, H, W) normalised with the dataset's mean/std, y int64 (B,).
"""

from __future__ import annotations

from pathlib import Path
from pkgutil import resolve_name

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from datamodules.config import ImageDataConfig
from datamodules.idx import FASHION_MNIST_CLASSES  # noqa: F401  (re-exported: it lived here)
from datamodules.loaders import SplitLoaders, make_loader, seeded_subset
from datamodules.transforms import image_transform
_IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp"}


class ArrayImageDataset(Dataset):
    """uint8 images (N, C, H, W) in memory + int64 labels; `transform` maps (C, H, W) uint8 -> float."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        return self.transform(self.images[index]), int(self.labels[index])


class ImageDataModule(SplitLoaders, pl.LightningDataModule):
    def __init__(self, cfg: ImageDataConfig, seed: int = 0):
        super().__init__()
        self.cfg, self.seed = cfg, seed
        self.root = Path(cfg.root or cfg.format.default_root)
        self.num_classes: int | None = None
        self.class_names: list[str] | None = None
        self.sample_shape: tuple[int, int, int] | None = None
        self.datasets: dict[str, Dataset] = {}

    def prepare_data(self) -> None:
        if not self.cfg.download:
            return
        from torchvision import datasets  # downloaders only; reading goes through datamodules.idx

        downloader = getattr(datasets, self.cfg.format.download) if self.cfg.format.download else None
        if downloader is not None:
            for train in (True, False):
                downloader(str(self.root), train=train, download=True)

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        if self.cfg.format.read is None:
            self._setup_folder()
        else:
            self._setup_arrays()

    def _transforms(self):
        cfg = self.cfg
        return (image_transform(cfg.dataset, train=True, augment=cfg.augment, size=cfg.image_size),
                image_transform(cfg.dataset, train=False, size=cfg.image_size))

    def _setup_arrays(self) -> None:
        if not self.root.is_dir():
            raise ValueError(f"data.root {self.root} does not exist" + (
                " (install Debian's dataset-fashion-mnist or point data.root at the idx files)"
                if self.cfg.dataset == "fashion_mnist" else ""))
        (train_x, train_y), (test_x, test_y), names = resolve_name(self.cfg.format.read)(self.root)
        self.num_classes = int(max(train_y.max(), test_y.max())) + 1
        self.class_names = names[:self.num_classes] if self.num_classes <= len(names) else \
            [str(i) for i in range(self.num_classes)]
        train_t, eval_t = self._transforms()
        train_x, test_x = _channels_first(train_x), _channels_first(test_x)
        train_y, test_y = torch.from_numpy(train_y), torch.from_numpy(test_y)
        fit_idx, val_idx = self._holdout(len(train_y), self.cfg.val_fraction)
        self.datasets["train"] = Subset(ArrayImageDataset(train_x, train_y, train_t), fit_idx)
        self.datasets["test"] = ArrayImageDataset(test_x, test_y, eval_t)
        self.datasets["val"] = Subset(ArrayImageDataset(train_x, train_y, eval_t), val_idx) if len(val_idx) \
            else self.datasets["test"]
        side = self.cfg.image_size or self.cfg.format.side
        self.sample_shape = (int(train_x.shape[1]), side, side)

    def _holdout(self, count: int, fraction: float) -> tuple[list[int], list[int]]:
        order = torch.randperm(count, generator=torch.Generator().manual_seed(self.seed)).tolist()
        held = round(count * fraction)
        return sorted(order[held:]), sorted(order[:held])

    def _setup_folder(self) -> None:
        from torchvision.datasets import ImageFolder

        train_t, eval_t = self._transforms()
        split_roots = {s: self.root / s for s in ("train", "val", "test") if (self.root / s).is_dir()}
        base = split_roots.get("train", self.root)
        names = _check_class_folders(base)
        if "train" in split_roots:
            for split, folder in split_roots.items():
                unknown = sorted(set(_check_class_folders(folder)) - set(names))
                if unknown:
                    raise ValueError(f"{folder} has class folders {unknown} that {base} lacks")
            make = lambda split, t: _remap(ImageFolder(str(split_roots[split]), transform=t), names)  # noqa: E731
            self.datasets["train"] = make("train", train_t)
            for split in ("val", "test"):
                if split in split_roots:
                    self.datasets[split] = make(split, eval_t)
        else:
            train_view, eval_view = ImageFolder(str(base), transform=train_t), ImageFolder(str(base), transform=eval_t)
            rest, test_idx = self._holdout(len(train_view), self.cfg.test_fraction)
            order = np.random.default_rng(self.seed + 1).permutation(rest).tolist()
            held = round(len(order) * self.cfg.val_fraction)
            self.datasets["train"] = Subset(train_view, sorted(order[held:]))
            self.datasets["val"] = Subset(eval_view, sorted(order[:held]))
            self.datasets["test"] = Subset(eval_view, test_idx)
        self.class_names, self.num_classes = names, len(names)
        side = self.cfg.image_size or self.cfg.format.side
        self.sample_shape = (3, side, side)

    def _loader(self, split: str, limit: int | None, shuffle: bool) -> DataLoader:
        fallback = {"val": "test", "test": "val"}.get(split)  # folder trees may lack root/val or root/test
        dataset = self.datasets[split] if split in self.datasets else self.datasets.get(fallback, [])
        return make_loader(seeded_subset(dataset, limit, self.seed), self.cfg, seed=self.seed, shuffle=shuffle)

    def data_quality(self) -> dict[str, float]:
        return {}


def _channels_first(images: np.ndarray) -> torch.Tensor:
    """(N, H, W) or (N, H, W, C) uint8 -> (N, C, H, W) uint8 tensor."""
    if images.ndim == 3:
        return torch.from_numpy(images[:, None])
    return torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))


def _check_class_folders(root: Path) -> list[str]:
    """Sorted class names of root/<class>/; ValueError for a missing root or an empty class folder."""
    if not root.is_dir():
        raise ValueError(f"image folder {root} does not exist")
    names = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not names:
        raise ValueError(f"image folder {root} has no class sub-folders (expected root/<class>/<image>)")
    for name in names:
        if not any(p.suffix.lower() in _IMAGE_SUFFIXES for p in (root / name).iterdir()):
            raise ValueError(f"class folder {root / name} has no images ({sorted(_IMAGE_SUFFIXES)})")
    return names


def _remap(folder, names: list[str]):
    """Give a val/test ImageFolder the train split's label indices (it may lack some classes)."""
    index = {name: i for i, name in enumerate(names)}
    folder.samples = [(path, index[folder.classes[label]]) for path, label in folder.samples]
    folder.targets = [label for _, label in folder.samples]
    folder.class_to_idx = {name: index[name] for name in folder.classes}
    return folder
