"""LightningDataModule over video clips (decord; PyAV fallback).

Splits come from manifests or a class-folder tree (datamodules/manifest.py documents both).
`setup()` probes every file once, in the main process (results cached across runs while a file is
unchanged: datamodules/probe_cache.py): bad files (missing, zero-byte, truncated,
not a video, unreadable metadata) are counted exactly and, under `bad_files="skip"`, left out —
the run fails only if more than `max_bad_fraction` of the files are bad; under `"fail"` the first
bad file raises, naming it. Files that break later, mid-decode, are skipped at load time and
counted through a ledger shared with the workers (datamodules/video_dataset.py).

Batches: train `(x, y)` with x float32 (B, C, T, S, S) (random clip, scale jitter, crop, flip);
val the same from one centred clip and centre crop; test x (B, K, C, T, S, S) with
K = test_clips × test_crops uniformly spaced clips and crops of every video — the model averages
its predictions over K to score the video.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import uuid
import weakref
from concurrent.futures import ThreadPoolExecutor

import lightning.pytorch as pl
from torch.utils.data import DataLoader

from datamodules.config import VideoDataConfig
from datamodules.loaders import SkippingDataLoader, SplitLoaders, make_loader, seeded_subset
from datamodules.manifest import SPLITS, VideoEntry, folder_splits, manifest_splits
from datamodules.probe_cache import ProbeCache
from datamodules.sampling import clip_span
from datamodules.transforms import VideoEvalTransform, VideoTrainTransform
from datamodules.video_backend import VideoInfo, VideoReadError, get_backend
from datamodules.video_dataset import (BadFileLedger, TooManyBadFilesError, VideoClipDataset, VideoRecord,
                                       collate_skip_none)

__all__ = ["TooManyBadFilesError", "VideoDataModule"]

log = logging.getLogger(__name__)
BAD_REASONS = ("missing", "empty", "unreadable", "decode_error")


class VideoDataModule(SplitLoaders, pl.LightningDataModule):
    def __init__(self, cfg: VideoDataConfig, seed: int = 0):
        super().__init__()
        self.cfg, self.seed = cfg, seed
        self.num_classes: int | None = None
        self.class_names: list[str] | None = None
        self.sample_shape = (3, cfg.clip_len, cfg.crop_size, cfg.crop_size)
        self.datasets: dict[str, VideoClipDataset] = {}
        self._split_of: dict[str, str] = {}  # path -> split, for per-split counts
        # Created on the first bad file only, so a run with clean data (or killed) leaves nothing behind.
        ledger_path = os.path.join(tempfile.gettempdir(), f"attnlab-bad-videos-{uuid.uuid4().hex}.jsonl")
        weakref.finalize(self, _remove_quietly, ledger_path)
        self.ledger = BadFileLedger(ledger_path)

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:  # Lightning calls setup once per stage; the probe is done once
            return
        cfg = self.cfg
        if cfg.dataset == "manifest":
            entries, self.class_names = manifest_splits(cfg.manifests, cfg.root, cfg.class_names)
        else:
            entries, self.class_names = folder_splits(cfg.root, cfg.extensions, cfg.split_fractions, self.seed,
                                                      cfg.class_names)
        self.num_classes = len(self.class_names)
        self._split_of = {e.path: split for split, items in entries.items() for e in items}
        infos = self._probe_all(list(self._split_of))
        max_bad = math.floor(cfg.max_bad_fraction * len(self._split_of))
        self._check_bad_fraction(max_bad)
        for split in SPLITS:
            records = [self._record(e, infos[e.path]) for e in entries.get(split, []) if e.path in infos]
            clips, transform = self._sampling(split)
            dataset = VideoClipDataset(records, mode=split, transform=transform, clip_len=cfg.clip_len,
                                       frame_interval=cfg.frame_interval, clips=clips, pad=cfg.pad,
                                       short_side=cfg.short_side, backend=cfg.backend,
                                       threads=cfg.decode_threads, bad_files=cfg.bad_files, ledger=self.ledger,
                                       max_bad=max_bad)
            self.datasets[split] = dataset

    def _sampling(self, split: str):
        cfg = self.cfg
        if split == "train":
            return 1, VideoTrainTransform(cfg.crop_size, cfg.jitter_range, cfg.mean, cfg.std, cfg.horizontal_flip)
        if split == "val":
            return 1, VideoEvalTransform(cfg.crop_size, 1, cfg.mean, cfg.std)
        return cfg.test_clips, VideoEvalTransform(cfg.crop_size, cfg.test_crops, cfg.mean, cfg.std)

    def _probe_all(self, paths: list[str]) -> dict[str, VideoInfo]:
        """Probe each file not in the probe cache (threads: decoders release the GIL); record or raise on bad files."""
        backend = get_backend(self.cfg.backend, self.cfg.decode_threads)
        cache = ProbeCache() if self.cfg.probe_cache else None
        cached = cache.lookup(paths, backend.name) if cache else {}
        if cached:
            log.info("video probe cache %s: %d of %d files known", cache.path, len(cached), len(paths))
        paths = [path for path in paths if path not in cached]

        def probe(path: str) -> VideoInfo | VideoReadError:
            try:
                return backend.probe(path)
            except VideoReadError as error:
                return error

        with ThreadPoolExecutor(max_workers=max(2, min(8, self.cfg.num_workers))) as pool:
            results = dict(zip(paths, pool.map(probe, paths)))
        infos = {}
        for path, result in results.items():
            if isinstance(result, VideoInfo):
                infos[path] = result
            elif self.cfg.bad_files == "fail":
                raise VideoReadError(path, result.reason, f"{result.detail}; data.bad_files='fail'")
            else:
                log.warning("skipping bad video %s: %s %s", path, result.reason, result.detail)
                self.ledger.record(path, result.reason, result.detail)
        if cache:
            cache.store(infos, backend.name)
        return {**cached, **infos}

    def _check_bad_fraction(self, max_bad: int) -> None:
        bad = self.bad_files()
        if len(bad) > max_bad:
            listing = "; ".join(f"{p} ({item['reason']})" for p, item in list(bad.items())[:10])
            raise TooManyBadFilesError(f"{len(bad)} of {len(self._split_of)} video files are bad, more than "
                                       f"data.max_bad_fraction={self.cfg.max_bad_fraction} allows: {listing}")

    def _record(self, entry: VideoEntry, info: VideoInfo) -> VideoRecord:
        """The entry's frame window from its start/end seconds; a clip that cannot fit is a config error."""
        first = 0 if entry.start is None else max(0, round(entry.start * info.fps))
        last = info.num_frames if entry.end is None else min(info.num_frames, round(entry.end * info.fps))
        if last <= first:
            raise ValueError(f"{entry.path}: segment start={entry.start}s end={entry.end}s holds no frames "
                             f"(video has {info.num_frames} frames at {info.fps:g} fps)")
        span = clip_span(self.cfg.clip_len, self.cfg.frame_interval)
        if self.cfg.pad == "none" and last - first < span:
            raise ValueError(f"{entry.path}: {last - first} frames, but a clip spans {span} (data.clip_len="
                             f"{self.cfg.clip_len}, data.frame_interval={self.cfg.frame_interval}) and data.pad="
                             "'none'; use pad 'loop' or 'repeat_last', or a shorter clip")
        return VideoRecord(entry.path, entry.label, info, first, last - first)

    def _loader(self, split: str, limit: int | None, shuffle: bool) -> DataLoader:
        dataset = seeded_subset(self.datasets[split], limit, self.seed)
        return make_loader(dataset, self.cfg, seed=self.seed, shuffle=shuffle, collate_fn=collate_skip_none,
                           loader_class=SkippingDataLoader)

    def bad_files(self) -> dict[str, dict]:
        """{path: {"reason", "detail"}} of every bad file found so far (probe and load time)."""
        return self.ledger.entries()

    def data_quality(self) -> dict[str, float]:
        """Exact bad-file counts: totals, per reason (`bad/<reason>`) and per split (`<split>/bad_files`)."""
        bad = self.bad_files()
        files = len(self._split_of)
        quality = {"files": float(files), "bad_files": float(len(bad)),
                   "bad_fraction": len(bad) / files if files else 0.0}
        for reason in BAD_REASONS:
            quality[f"bad/{reason}"] = float(sum(item["reason"] == reason for item in bad.values()))
        for split in SPLITS:
            in_split = [p for p, s in self._split_of.items() if s == split]
            quality[f"{split}/files"] = float(len(in_split))
            quality[f"{split}/bad_files"] = float(sum(p in bad for p in in_split))
        return quality


def _remove_quietly(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass
