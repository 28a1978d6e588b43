"""Everything known about a video dataset before a clip is decoded: its listing, probes, bad files and segments.

`scan_dataset(cfg, seed)` lists the samples of every split (datamodules/formats/), probes each distinct
file once (worker processes; answers from the probe cache where the file is unchanged) and sorts every
sample into a usable `VideoRecord` or a `BadSample` saying why not:

- bad files (every sample of the file is bad): `missing`, `not_a_file` (e.g. a directory named
  like a video), `empty`, `permission_denied`, `not_video` (no video container signature),
  `truncated` (an MP4/MOV cut before its index), `unreadable` (any other file the decoder refuses:
  no decoder for its codec, damage), `decode_error` (found later, while loading), and
  `length_mismatch` — the decodable length is short of what the header promises (a partly written
  or partly downloaded file; see datamodules/video_backend.py);
- bad segments (one manifest line): `segment_empty` (its end is not after its start) and
  `segment_past_end` (it starts at or after the last decodable frame). A segment that only runs
  past the end is cut to the decodable frames, as sampling would anyway.

Both the DataModule (which raises `policy_error` when there is one) and `attnlab data check` (which
reports it as its verdict) start here, so they see the same dataset and the same verdict. No torch here.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

from datamodules.file_kinds import content_problem
from datamodules.formats import read_splits
from datamodules.manifest import VideoEntry
from datamodules.probe_cache import ProbeCache
from datamodules.sampling import clip_span
from datamodules.video_backend import VideoInfo, VideoReadError, get_backend

log = logging.getLogger(__name__)

FILE_REASONS = ("missing", "not_a_file", "empty", "permission_denied", "not_video", "truncated", "unreadable",
                "decode_error", "length_mismatch")
SEGMENT_REASONS = ("segment_empty", "segment_past_end")
# Listed but never downloaded (Kinetics loses videos to YouTube every month): counted, but not held
# against data.max_bad_fraction, which is about files that are there and broken.
UNBUDGETED_REASONS = ("missing",)
# A probe holds the GIL for every demuxed packet, so threads take turns; processes probe in parallel
# (and, on a busy machine, each gets its own share of the CPU). Below POOL_MIN_FILES files, starting
# the workers costs more than they save, and the files are probed in this process.
PROBE_PROCESSES = min(8, 2 * (os.cpu_count() or 1))
POOL_MIN_FILES = 64


class TooManyBadFilesError(RuntimeError):
    """More than data.max_bad_fraction of the samples are bad (bad files and bad segments)."""


@dataclass(frozen=True)
class VideoRecord:
    path: str
    label: int
    info: VideoInfo
    first: int  # frame window [first, first + num_frames) from the manifest's start/end seconds
    num_frames: int


@dataclass(frozen=True)
class BadSample:
    path: str
    reason: str  # one of FILE_REASONS (the file is bad) or SEGMENT_REASONS (this segment is)
    detail: str
    segment: tuple[float | None, float | None] | None = None  # the manifest's (start, end) seconds

    def describe(self) -> str:
        """'path: reason (detail)', with 'segment a-b s, ' leading the detail for a segment."""
        detail = self.full_detail()
        return f"{self.path}: {self.reason}" + (f" ({detail})" if detail else "")

    def full_detail(self) -> str:
        return self.detail if self.segment is None else f"segment {_seconds(self.segment)}, {self.detail}"


@dataclass
class DatasetScan:
    layout: str  # the dataset layout read (after auto-detection)
    class_names: list[str]
    entries: dict[str, list[VideoEntry]]  # every listed sample, per split
    infos: dict[str, VideoInfo]  # files that probed (length mismatches included)
    bad_files: dict[str, BadSample]  # path -> why the whole file is bad
    records: dict[str, list[VideoRecord]] = field(default_factory=dict)  # usable samples per split
    rejected: dict[str, dict[int, BadSample]] = field(default_factory=dict)  # split -> {entry index: why}
    cached: int = 0  # files answered by the probe cache

    @property
    def files(self) -> list[str]:
        """Distinct files over all splits, in listing order."""
        return list(dict.fromkeys(entry.path for entries in self.entries.values() for entry in entries))

    @property
    def samples(self) -> int:
        return sum(len(entries) for entries in self.entries.values())

    def budgeted_bad_samples(self) -> int:
        """Bad samples as data.max_bad_fraction counts them (missing files left out)."""
        return sum(bad.reason not in UNBUDGETED_REASONS for rejected in self.rejected.values()
                   for bad in rejected.values())

    def first_bad(self) -> BadSample | None:
        """The first bad sample in listing order (what data.bad_files='fail' stops at)."""
        for split in self.entries:
            if self.rejected.get(split):
                return self.rejected[split][min(self.rejected[split])]
        return None


def _probe(path: str, backend_name: str, threads: int) -> VideoInfo | tuple[str, str]:
    """The file's probe, or (reason, detail) of why it is bad (a plain tuple: it crosses processes)."""
    try:
        return get_backend(backend_name, threads).probe(path)
    except VideoReadError as error:
        refined = content_problem(path) if error.reason == "unreadable" else None
        return refined or error.reason, error.detail


def probe_files(paths: list[str], backend_name: str, threads: int = 1, use_cache: bool = True,
                progress: Callable[[int], None] | None = None
                ) -> tuple[dict[str, VideoInfo], dict[str, VideoReadError], int]:
    """({path: info}, {path: error}, answered from cache) for `paths`, each probed at most once.

    `progress(n)` is called as files are done (n at a time), cached ones included."""
    backend = get_backend(backend_name, threads)
    cache = ProbeCache() if use_cache else None
    cached = cache.lookup(paths, backend.name) if cache else {}
    if progress and cached:
        progress(len(cached))
    todo = [path for path in paths if path not in cached]
    count = len(todo)
    if count >= POOL_MIN_FILES and PROBE_PROCESSES > 1:
        # fork (where there is one) starts a worker in milliseconds, spawn in a second of imports; the
        # workers only probe, as DataLoader workers forked from the same training process only decode.
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        pool = ProcessPoolExecutor(PROBE_PROCESSES, mp_context=multiprocessing.get_context(method))
        results = pool.map(_probe, todo, [backend.name] * count, [threads] * count,
                           chunksize=max(1, min(64, count // (4 * PROBE_PROCESSES))))
    else:
        pool, results = None, (_probe(path, backend.name, threads) for path in todo)
    infos: dict[str, VideoInfo] = {}
    errors: dict[str, VideoReadError] = {}
    try:
        for path, result in zip(todo, results):
            if isinstance(result, VideoInfo):
                infos[path] = result
            else:
                errors[path] = VideoReadError(path, *result)
            if progress:
                progress(1)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    if cache and infos:
        cache.store(infos, backend.name)
    return {**cached, **infos}, errors, len(cached)


def scan_dataset(cfg, seed: int = 0, progress: Callable[[int], None] | None = None,
                 on_listed: Callable[[int], None] | None = None) -> DatasetScan:
    """List, probe and sort the dataset `cfg` (a VideoDataConfig) describes; nothing is raised for bad data.

    `on_listed(files)` is called once the listing is known (before probing), e.g. to size a progress bar."""
    layout, entries, class_names = read_splits(cfg, seed)
    scan = DatasetScan(layout, class_names, entries, {}, {})
    paths = scan.files
    if on_listed:
        on_listed(len(paths))
    scan.infos, errors, scan.cached = probe_files(paths, cfg.backend, cfg.decode_threads, cfg.probe_cache, progress)
    if scan.cached:
        log.info("video probe cache: %d of %d files known", scan.cached, len(paths))
    for path in paths:
        if path in errors:
            scan.bad_files[path] = BadSample(path, errors[path].reason, errors[path].detail)
        elif (mismatch := scan.infos[path].length_mismatch()) is not None:
            scan.bad_files[path] = BadSample(path, "length_mismatch", mismatch)
    for split, split_entries in entries.items():
        scan.records[split], scan.rejected[split] = [], {}
        for position, entry in enumerate(split_entries):
            outcome = scan.bad_files.get(entry.path) or sample_window(entry, scan.infos[entry.path])
            if isinstance(outcome, BadSample):
                scan.rejected[split][position] = outcome
            else:
                scan.records[split].append(outcome)
    return scan


def policy_error(scan: DatasetScan, cfg) -> Exception | None:
    """The error training stops with at setup under `cfg`'s bad-data policy (a VideoDataConfig), or None.

    bad_files='fail': the first bad sample. Always: a split whose every listed video is missing (a wrong
    root, more likely than a dataset that vanished); more bad samples than data.max_bad_fraction allows;
    a sample shorter than one clip when data.pad='none'."""
    first = scan.first_bad()
    if first is not None and cfg.bad_files == "fail":
        return VideoReadError(first.path, first.reason, f"{first.full_detail()}; data.bad_files='fail'")
    for split, entries in scan.entries.items():
        rejected = scan.rejected.get(split, {})
        if entries and len(rejected) == len(entries) and all(bad.reason == "missing" for bad in rejected.values()):
            return ValueError(f"all {len(entries)} videos of the {split} split are missing (the first expected at "
                              f"{entries[0].path}); is data.root right?")
    bad, allowed = scan.budgeted_bad_samples(), math.floor(cfg.max_bad_fraction * scan.samples)
    if bad > allowed:
        budgeted = [b for rejected in scan.rejected.values() for b in rejected.values()
                    if b.reason not in UNBUDGETED_REASONS]
        kinds = ", ".join(f"{kind}: {count}" for kind, count in sorted(Counter(b.reason for b in budgeted).items()))
        listing = "; ".join(b.describe() for b in list({(b.path, b.segment): b for b in budgeted}.values())[:10])
        return TooManyBadFilesError(f"{bad} of {scan.samples} samples are bad ({kinds}), more than "
                                    f"data.max_bad_fraction={cfg.max_bad_fraction} allows ({allowed}): {listing}")
    span = clip_span(cfg.clip_len, cfg.frame_interval)
    short = next((r for records in scan.records.values() for r in records if r.num_frames < span), None)
    if cfg.pad == "none" and short is not None:
        return ValueError(f"{short.path}: {short.num_frames} frames, but a clip spans {span} (data.clip_len="
                          f"{cfg.clip_len}, data.frame_interval={cfg.frame_interval}) and data.pad='none'; use pad "
                          "'loop' or 'repeat_last', or a shorter clip")
    return None


def sample_window(entry: VideoEntry, info: VideoInfo) -> VideoRecord | BadSample:
    """The entry's frame window from its start/end seconds, or why its segment holds no decodable frame."""
    if entry.start is None and entry.end is None:
        return VideoRecord(entry.path, entry.label, info, 0, info.num_frames)
    segment = (entry.start, entry.end)
    if entry.start is not None and entry.end is not None and entry.end <= entry.start:
        return BadSample(entry.path, "segment_empty", f"end {entry.end:g} s is not after start {entry.start:g} s",
                         segment)
    first = 0 if entry.start is None else max(0, round(entry.start * info.fps))
    last = info.num_frames if entry.end is None else min(info.num_frames, round(entry.end * info.fps))
    if first >= info.num_frames:
        header = f", header {info.header_frames}" if info.header_frames is not None else ""
        return BadSample(entry.path, "segment_past_end", f"starts at frame {first} ({entry.start:g} s at "
                         f"{info.fps:g} fps) but {info.num_frames} frames decode{header}", segment)
    if last <= first:
        return BadSample(entry.path, "segment_empty", f"frames {first}-{last} at {info.fps:g} fps", segment)
    return VideoRecord(entry.path, entry.label, info, first, last - first)


def _seconds(segment: tuple[float | None, float | None]) -> str:
    start, end = segment
    return f"{'' if start is None else f'{start:g}'}-{'' if end is None else f'{end:g}'} s"
