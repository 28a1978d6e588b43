"""LightningDataModules for images and decord video clips, their typed configs and synthetic data.

`build_datamodule(cfg, seed)` is the one entry point `training.fit` uses. Everything here loads lazily:
loading a config does not import Lightning or the video decoders, and `datamodules.home` (where
attnlab keeps local state, which `modules` reads for its measured-kernel cache) imports nothing but
the standard library — so the GPU check runs in a stock PyTorch image without pydantic.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import lightning.pytorch as pl

    from datamodules.config import DataConfig, ImageDataConfig, VideoDataConfig

__all__ = ["DataConfig", "ImageDataConfig", "VideoDataConfig", "build_datamodule"]
_CONFIG_NAMES = ("DataConfig", "ImageDataConfig", "VideoDataConfig")


def __getattr__(name: str):
    # PEP 562: `from datamodules import DataConfig` imports pydantic only when a config is wanted.
    if name in _CONFIG_NAMES:
        from datamodules import config

        return getattr(config, name)
    raise AttributeError(f"module 'datamodules' has no attribute {name!r}")


def build_datamodule(cfg: ImageDataConfig | VideoDataConfig, seed: int = 0) -> pl.LightningDataModule:
    """The DataModule for `cfg` (call `setup()` before reading num_classes/class_names/sample_shape)."""
    from datamodules.config import ImageDataConfig, VideoDataConfig

    if isinstance(cfg, VideoDataConfig):
        from datamodules.video import VideoDataModule

        return VideoDataModule(cfg, seed=seed)
    if isinstance(cfg, ImageDataConfig):
        from datamodules.image import ImageDataModule

        return ImageDataModule(cfg, seed=seed)
    raise ValueError(f"data config must be an ImageDataConfig or VideoDataConfig, got {type(cfg).__name__}")
