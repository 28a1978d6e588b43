"""LightningDataModule over video clips (decord; PyAV fallback).

Splits come from one of the dataset layouts of datamodules/formats/ (class folders, manifests,
UCF101, HMDB51, Kinetics, Something-Something v2). `setup()` scans the dataset once, in the main
process (datamodules/scan.py: every file probed once, results cached across runs while a file is
unchanged): bad files (missing, zero-byte, cut, not a video, decodable length short of its header)
and bad segments (a manifest segment with no decodable frame) are counted exactly. Under
`bad_files="skip"` they are left out, and the run fails only when more than `max_bad_fraction` of
the SAMPLES are bad — samples, not files, because a manifest of many segments from few long videos
would otherwise lose most of its data to one bad file unnoticed; missing files are counted but not
held against the fraction (downloads of public datasets are never complete), and a split whose
every listed video is missing is an error. Under `"fail"` the first bad sample raises, naming the
file (and segment, with the decodable length). Files that break later, mid-decode, are skipped at
load time and counted through a ledger shared with the workers (datamodules/video_dataset.py).
`data_summary()` is the same report `attnlab data check` prints (datamodules/check.py).

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
from collections import Counter

import lightning.pytorch as pl
from torch.utils.data import DataLoader

from datamodules.check import summarize
from datamodules.config import VideoDataConfig
from datamodules.loaders import SkippingDataLoader, SplitLoaders, make_loader, seeded_subset
from datamodules.manifest import SPLITS
from datamodules.scan import (FILE_REASONS, SEGMENT_REASONS, UNBUDGETED_REASONS, DatasetScan, TooManyBadFilesError,
                              policy_error, scan_dataset)
from datamodules.transforms import VideoEvalTransform, VideoTrainTransform
from datamodules.video_dataset import BadFileLedger, BadSampleBudget, VideoClipDataset, collate_skip_none

__all__ = ["TooManyBadFilesError", "VideoDataModule"]

log = logging.getLogger(__name__)


class VideoDataModule(SplitLoaders, pl.LightningDataModule):
    def __init__(self, cfg: VideoDataConfig, seed: int = 0):
        super().__init__()
        self.cfg, self.seed = cfg, seed
        self.num_classes: int | None = None
        self.class_names: list[str] | None = None
        self.sample_shape = (3, cfg.clip_len, cfg.crop_size, cfg.crop_size)
        self.datasets: dict[str, VideoClipDataset] = {}
        self.scan: DatasetScan | None = None
        # Created on the first bad file only, so a run with clean data (or killed) leaves nothing behind.
        ledger_path = os.path.join(tempfile.gettempdir(), f"attnlab-bad-videos-{uuid.uuid4().hex}.jsonl")
        weakref.finalize(self, _remove_quietly, ledger_path)
        self.ledger = BadFileLedger(ledger_path)

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:  # Lightning calls setup once per stage; the probe is done once
            return
        cfg = self.cfg
        self.scan = scan = scan_dataset(cfg, self.seed)
        self.class_names = scan.class_names
        self.num_classes = len(self.class_names)
        error = policy_error(scan, cfg)
        if error is not None:
            raise error
        for bad in scan.bad_files.values():
            log.warning("skipping bad video %s", bad.describe())
            self.ledger.record(bad.path, bad.reason, bad.detail)
        for rejected in scan.rejected.values():
            for bad in rejected.values():
                if bad.segment is not None:
                    log.warning("skipping bad segment %s", bad.describe())
        budget = self._budget(scan)
        for split in SPLITS:
            clips, transform = self._sampling(split)
            self.datasets[split] = VideoClipDataset(
                scan.records.get(split, []), mode=split, transform=transform, clip_len=cfg.clip_len,
                frame_interval=cfg.frame_interval, clips=clips, pad=cfg.pad, short_side=cfg.short_side,
                backend=cfg.backend, threads=cfg.decode_threads, bad_files=cfg.bad_files, ledger=self.ledger,
                budget=budget)

    def _budget(self, scan: DatasetScan) -> BadSampleBudget:
        usable: Counter[str] = Counter()
        for split, entries in scan.entries.items():
            for position, entry in enumerate(entries):
                bad = scan.rejected[split].get(position)
                if bad is None or bad.segment is None:
                    usable[entry.path] += 1
        segments = sum(bad.segment is not None for rejected in scan.rejected.values() for bad in rejected.values())
        return BadSampleBudget(math.floor(self.cfg.max_bad_fraction * scan.samples), segments, dict(usable))

    def _sampling(self, split: str):
        cfg = self.cfg
        if split == "train":
            return 1, VideoTrainTransform(cfg.crop_size, cfg.jitter_range, cfg.mean, cfg.std, cfg.horizontal_flip)
        if split == "val":
            return 1, VideoEvalTransform(cfg.crop_size, 1, cfg.mean, cfg.std)
        return cfg.test_clips, VideoEvalTransform(cfg.crop_size, cfg.test_crops, cfg.mean, cfg.std)

    def _loader(self, split: str, limit: int | None, shuffle: bool) -> DataLoader:
        dataset = seeded_subset(self.datasets[split], limit, self.seed)
        return make_loader(dataset, self.cfg, seed=self.seed, shuffle=shuffle, collate_fn=collate_skip_none,
                           loader_class=SkippingDataLoader)

    def bad_files(self) -> dict[str, dict]:
        """{path: {"reason", "detail"}} of every bad file found so far (probe and load time)."""
        return self.ledger.entries()

    def data_quality(self) -> dict[str, float]:
        """Exact counts: files and samples, bad ones in total, per reason (`bad/<reason>`: files for file
        reasons, samples for segment reasons) and per split (`<split>/files`, `<split>/bad_files`, ...);
        `bad_fraction` is what data.max_bad_fraction is compared with."""
        scan = self.scan
        if scan is None:  # before setup(): nothing read yet
            return {}
        bad = self.bad_files()
        quality: dict[str, float] = {}
        bad_samples = budgeted = 0
        for split, entries in scan.entries.items():
            rejected = scan.rejected.get(split, {})
            flagged = [position in rejected or entry.path in bad for position, entry in enumerate(entries)]
            files = {entry.path for entry in entries}
            quality[f"{split}/files"] = float(len(files))
            quality[f"{split}/bad_files"] = float(len(files & bad.keys()))
            quality[f"{split}/samples"] = float(len(entries))
            quality[f"{split}/bad_samples"] = float(sum(flagged))
            bad_samples += sum(flagged)
            budgeted += sum(is_bad and bad.get(entry.path, {}).get("reason") not in UNBUDGETED_REASONS
                            for is_bad, entry in zip(flagged, entries))
        segments = Counter(b.reason for rejected in scan.rejected.values() for b in rejected.values()
                           if b.segment is not None)
        quality |= {"files": float(len(scan.files)), "bad_files": float(len(bad)), "samples": float(scan.samples),
                    "bad_samples": float(bad_samples), "bad_segments": float(sum(segments.values())),
                    "bad_fraction": budgeted / scan.samples if scan.samples else 0.0}
        for reason in FILE_REASONS:
            quality[f"bad/{reason}"] = float(sum(item["reason"] == reason for item in bad.values()))
        for reason in SEGMENT_REASONS:
            quality[f"bad/{reason}"] = float(segments[reason])
        for split in SPLITS:  # a split the layout lacks reads as empty, so dashboards keep their keys
            for key in ("files", "bad_files", "samples", "bad_samples"):
                quality.setdefault(f"{split}/{key}", 0.0)
        return quality

    def data_summary(self) -> dict:
        """The `attnlab data check` report of this dataset as setup found it (datamodules/check.py)."""
        return summarize(self.scan, self.cfg)


def _remove_quietly(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass
