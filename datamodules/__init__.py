"""LightningDataModules for images and decord video clips, their typed configs and synthetic data.

`build_datamodule(cfg, seed)` is the one entry point `training.fit` uses; the DataModules are
imported lazily so that loading a config does not import Lightning or the video decoders.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from datamodules.config import DataConfig, ImageDataConfig, VideoDataConfig

if TYPE_CHECKING:
    import lightning.pytorch as pl

__all__ = ["DataConfig", "ImageDataConfig", "VideoDataConfig", "build_datamodule"]


def build_datamodule(cfg: ImageDataConfig | VideoDataConfig, seed: int = 0) -> pl.LightningDataModule:
    """The DataModule for `cfg` (call `setup()` before reading num_classes/class_names/sample_shape)."""
    if isinstance(cfg, VideoDataConfig):
        from datamodules.video import VideoDataModule

        return VideoDataModule(cfg, seed=seed)
    if isinstance(cfg, ImageDataConfig):
        from datamodules.image import ImageDataModule

        return ImageDataModule(cfg, seed=seed)
    raise ValueError(f"data config must be an ImageDataConfig or VideoDataConfig, got {type(cfg).__name__}")
