"""Class folders: `root/<class>/<video>`, or `root/{train,val,test}/<class>/<video>` (see datamodules/manifest.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from datamodules.manifest import VideoEntry, folder_splits

if TYPE_CHECKING:
    from datamodules.config import VideoDataConfig


def read(cfg: VideoDataConfig, seed: int) -> tuple[dict[str, list[VideoEntry]], list[str]]:
    return folder_splits(cfg.root, cfg.extensions, cfg.split_fractions, seed, cfg.class_names)
