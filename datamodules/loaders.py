"""DataLoader construction shared by the image and video DataModules: seeding and worker setup."""

from __future__ import annotations

import random

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from datamodules.batch import CollateBatch
from datamodules.config import LoaderConfig


def worker_init(worker_id: int) -> None:
    """Seed numpy/random from the per-worker torch seed; one intra-op thread per worker.

    The DataLoader already gives each worker torch seed = base_seed + worker_id, with base_seed drawn
    from the loader's seeded generator, so augmentation is reproducible. One thread per worker keeps
    N workers on N cores from oversubscribing (torch would otherwise start a full thread pool in each).
    """
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)
    torch.set_num_threads(1)


def seeded_subset(dataset: Dataset, limit: int | None, seed: int) -> Dataset:
    """A reproducible random subset of `limit` items (the whole dataset when limit is None or larger)."""
    if limit is None or limit >= len(dataset):
        return dataset
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))
    return Subset(dataset, sorted(order[:limit].tolist()))


class SplitLoaders:
    """train/val/test_dataloader of a DataModule that defines `_loader(split, limit, shuffle)` and whose
    `cfg` has `limit_train`, `limit_val`, `limit_test` (seeded subsets for quick runs)."""

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", self.cfg.limit_train, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", self.cfg.limit_val, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self.cfg.limit_test, shuffle=False)


class SkippingDataLoader(DataLoader):
    """Leaves out batches that collate to None (every item failed to load), so steps never see None."""

    def __iter__(self):
        return (batch for batch in super().__iter__() if batch is not None)


def make_loader(dataset: Dataset, cfg: LoaderConfig, *, seed: int, shuffle: bool, collate_fn=None,
                drop_last: bool = False, loader_class: type[DataLoader] = DataLoader) -> DataLoader:
    """A DataLoader with a seeded generator (shuffle order and worker seeds) and the config's workers,
    yielding `datamodules.batch.Batch`es."""
    return loader_class(
        dataset,
        batch_size=cfg.batch_size,
        shuffle=shuffle,
        num_workers=cfg.num_workers,
        pin_memory=cfg.pin_memory,
        persistent_workers=cfg.persistent_workers and cfg.num_workers > 0,
        worker_init_fn=worker_init if cfg.num_workers > 0 else None,
        generator=torch.Generator().manual_seed(seed),
        collate_fn=CollateBatch(collate_fn),
        drop_last=drop_last,
    )
