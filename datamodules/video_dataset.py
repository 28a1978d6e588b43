"""Clip dataset over probed videos, with bad-file bookkeeping that works across worker processes.

`VideoDataModule.setup()` probes every file once in the main process (exact counts); this dataset
only sees samples that passed (datamodules/scan.py). A file can still fail while decoding (corrupt
inside, deleted or rewritten after setup): under `skip` the item becomes None, `collate_skip_none`
drops it from the batch, and the failure is appended to a `BadFileLedger` — a small append-only
file shared by the main process and every worker (fork or spawn alike), so the counts stay exact
and each file is counted once however many epochs hit it. Under `fail` the error propagates with
the file's path. `data.max_bad_fraction` counts samples: a file that breaks takes all its usable
samples with it.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate

from datamodules.sampling import train_clip, uniform_clips
from datamodules.scan import UNBUDGETED_REASONS, TooManyBadFilesError, VideoRecord
from datamodules.video_backend import VideoInfo, VideoReadError, get_backend

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BadSampleBudget:
    """What the load-time check counts: `allowed` bad samples in all; `bad_segments` of them were spent at
    setup; a bad file costs its `usable_samples` (samples not already bad by their segment)."""

    allowed: int
    bad_segments: int
    usable_samples: dict[str, int]

    def spent(self, bad_files: dict[str, dict]) -> int:
        return self.bad_segments + sum(self.usable_samples.get(path, 1) for path, item in bad_files.items()
                                       if item["reason"] not in UNBUDGETED_REASONS)


class BadFileLedger:
    """Append-only JSON-lines file of bad videos; `entries()` is {path: reason}, first reason wins."""

    def __init__(self, path: str):
        self.path = path

    def record(self, path: str, reason: str, detail: str = "") -> None:
        line = json.dumps({"path": path, "reason": reason, "detail": detail}) + "\n"
        # One O_APPEND write per line: concurrent writers never interleave short lines.
        descriptor = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(descriptor, line.encode())
        finally:
            os.close(descriptor)

    def entries(self) -> dict[str, dict]:
        if not os.path.exists(self.path):
            return {}
        found: dict[str, dict] = {}
        with open(self.path) as handle:
            for line in handle:
                if line.strip():
                    item = json.loads(line)
                    found.setdefault(item["path"], item)
        return found


class VideoClipDataset(Dataset):
    """Items: train -> (float (C, T, S, S), label); val -> same from one centred clip;
    test -> (float (K, C, T, S, S), label) with K = clips × crops. None when a file fails under skip."""

    def __init__(self, records: list[VideoRecord], *, mode: str, transform, clip_len: int, frame_interval: int,
                 clips: int, pad: str, short_side: int, backend: str, threads: int, bad_files: str,
                 ledger: BadFileLedger, budget: BadSampleBudget):
        self.records, self.mode, self.transform = records, mode, transform
        self.clip_len, self.frame_interval, self.clips, self.pad = clip_len, frame_interval, clips, pad
        self.short_side, self.backend_name, self.threads = short_side, backend, threads
        self.bad_files, self.ledger, self.budget = bad_files, ledger, budget
        self._backend = None  # created lazily in whichever process reads

    def __len__(self) -> int:
        return len(self.records)

    def frame_indices(self, record: VideoRecord) -> np.ndarray:
        """Absolute frame indices: (clip_len,) for training, (clips, clip_len) otherwise."""
        if self.mode == "train":
            relative = train_clip(record.num_frames, self.clip_len, self.frame_interval, self.pad)
        else:
            relative = uniform_clips(record.num_frames, self.clip_len, self.frame_interval, self.clips, self.pad)
        return record.first + relative

    def decode_size(self, info: VideoInfo) -> tuple[int, int]:
        """(height, width) with the short side at `short_side`, aspect ratio kept."""
        scale = self.short_side / min(info.width, info.height)
        return max(1, round(info.height * scale)), max(1, round(info.width * scale))

    def __getitem__(self, index: int):
        record = self.records[index]
        if self._backend is None:
            self._backend = get_backend(self.backend_name, self.threads)
        indices = self.frame_indices(record)
        try:
            frames = self._backend.read(record.path, indices.reshape(-1), self.decode_size(record.info))
        except VideoReadError as error:
            if self.bad_files == "fail":
                raise VideoReadError(record.path, error.reason, f"{error.detail}; data.bad_files='fail'") from error
            self._count_bad(error)
            return None
        clip = torch.from_numpy(frames).permute(0, 3, 1, 2)  # (N, H, W, C) -> (N, C, H, W)
        if self.mode == "train":
            return self.transform(clip), record.label
        clips = clip.reshape(len(indices), self.clip_len, *clip.shape[1:])  # (clips, T, C, H, W)
        views = torch.cat([self.transform(c) for c in clips])  # (clips * crops, C, T, S, S)
        return (views[0] if self.mode == "val" else views), record.label

    def _count_bad(self, error: VideoReadError) -> None:
        log.warning("skipping bad video %s: %s %s", error.path, error.reason, error.detail)
        self.ledger.record(error.path, error.reason, error.detail)
        bad = self.budget.spent(self.ledger.entries())
        if bad > self.budget.allowed:
            raise TooManyBadFilesError(f"{bad} bad samples exceed data.max_bad_fraction (at most "
                                       f"{self.budget.allowed} allowed); see the warnings for which files and why")


def collate_skip_none(batch: list):
    """default_collate over the items that loaded; None when every item failed (SkippingDataLoader
    then leaves the batch out)."""
    kept = [item for item in batch if item is not None]
    return default_collate(kept) if kept else None
