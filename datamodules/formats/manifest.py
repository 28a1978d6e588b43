"""Manifests: one CSV/TSV (`path,label[,start,end]`) or `path label` text file per split (datamodules/manifest.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from datamodules.manifest import VideoEntry, manifest_splits

if TYPE_CHECKING:
    from datamodules.config import VideoDataConfig


def read(cfg: VideoDataConfig, seed: int) -> tuple[dict[str, list[VideoEntry]], list[str]]:
    return manifest_splits(cfg.manifests, cfg.root, cfg.class_names)
