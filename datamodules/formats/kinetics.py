"""Kinetics-400/600/700 (Kay et al. 2017, arXiv:1705.06950) as the official CSVs describe it.

CSV columns (header row): `label,youtube_id,time_start,time_end,split` (Kinetics-400 adds `is_cc`);
one file per split (`train.csv`, `validate.csv`/`val.csv`, `test.csv`) or one file for all, the
`split` column deciding (train | val | validate | test). The clips are the local files the common
downloaders write, `<youtube_id>_<time_start:06d>_<time_end:06d>.mp4` (any of data.extensions),
found by name anywhere under `data.root` — flat, per split, or per label folder alike. YouTube
videos disappear, so a download is never complete: a listed clip with no file is counted as a bad
file of kind `missing` and left out; it does not count against `data.max_bad_fraction`.
Classes are the labels in alphabetical order (the usual index). The first Kinetics-400 `test.csv`
has no `label` column: a CSV without labels is skipped with a warning, and when no labelled test
split exists the test split is the validation split (the papers report Kinetics validation accuracy).
"""

from __future__ import annotations

import csv
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from datamodules.formats.annotations import candidate_folders
from datamodules.manifest import VideoEntry

if TYPE_CHECKING:
    from datamodules.config import VideoDataConfig

log = logging.getLogger(__name__)
SUBFOLDERS = ("annotations",)
SPLIT_NAMES = {"train": "train", "val": "val", "validate": "val", "validation": "val", "test": "test"}
REQUIRED = ("youtube_id", "time_start", "time_end", "split")


def _header(path: Path) -> list[str]:
    with open(path, newline="") as handle:
        return [name.strip().lower() for name in next(csv.reader(handle), [])]


def csv_files(cfg: VideoDataConfig) -> list[Path]:
    """data.annotations when it is a CSV file, else every Kinetics CSV in the first folder that has one."""
    if cfg.annotations is not None and Path(cfg.annotations).is_file():
        return [Path(cfg.annotations)]
    for folder in candidate_folders(cfg, SUBFOLDERS):
        found = sorted(p for p in folder.glob("*.csv") if "youtube_id" in _header(p)) if folder.is_dir() else []
        if found:
            return found
    return []


def detect(cfg: VideoDataConfig) -> bool:
    return bool(csv_files(cfg))


def clip_name(youtube_id: str, start: str, end: str) -> str:
    """The downloaders' file stem: `<id>_<start:06d>_<end:06d>` (times are whole seconds)."""
    return f"{youtube_id}_{int(float(start)):06d}_{int(float(end)):06d}"


def index_files(root: Path, extensions: list[str]) -> dict[str, str]:
    """{file stem: path} of every video under root (one walk; the first of duplicate names wins)."""
    suffixes = {e.lower() for e in extensions}
    found: dict[str, str] = {}
    for folder, subfolders, files in os.walk(root):
        subfolders.sort()
        for name in sorted(files):
            stem, suffix = os.path.splitext(name)
            if suffix.lower() in suffixes:
                found.setdefault(stem, os.path.join(folder, name))
    return found


def read(cfg: VideoDataConfig, seed: int) -> tuple[dict[str, list[VideoEntry]], list[str]]:
    files = csv_files(cfg)
    if not files:
        looked = ", ".join(str(f) for f in candidate_folders(cfg, SUBFOLDERS))
        raise ValueError(f"dataset 'kinetics': no CSV with a youtube_id column in {looked}; set data.annotations "
                         "to the CSV file or its folder")
    rows: list[tuple[str, str, str, str]] = []  # (split, label, stem, where)
    for path in files:
        with open(path, newline="") as handle:
            reader = csv.DictReader(handle)
            header = [name.strip().lower() for name in reader.fieldnames or []]
            absent = [name for name in REQUIRED if name not in header]
            if absent:
                raise ValueError(f"{path}:1: Kinetics CSV without column(s) {absent}; expected "
                                 "label,youtube_id,time_start,time_end,split")
            if "label" not in header:
                log.warning("%s has no label column (the first Kinetics-400 test set): skipped", path)
                continue
            for number, row in enumerate(reader, start=2):
                row = {key.strip().lower(): (value or "").strip() for key, value in row.items() if key}
                where = f"{path}:{number}"
                split = SPLIT_NAMES.get(row["split"].lower())
                if split is None:
                    raise ValueError(f"{where}: split {row['split']!r} is not one of {sorted(SPLIT_NAMES)}")
                if not row["label"]:
                    raise ValueError(f"{where}: empty label")
                try:
                    stem = clip_name(row["youtube_id"], row["time_start"], row["time_end"])
                except ValueError:
                    raise ValueError(f"{where}: time_start/time_end must be seconds, got "
                                     f"{row['time_start']!r}, {row['time_end']!r}") from None
                rows.append((split, row["label"], stem, where))
    names = sorted({label for _, label, _, _ in rows})
    index = {name: i for i, name in enumerate(names)}
    local = index_files(Path(cfg.root), cfg.extensions)
    entries: dict[str, list[VideoEntry]] = {"train": [], "val": [], "test": []}
    for split, label, stem, _ in rows:
        path = local.get(stem) or str(Path(cfg.root) / f"{stem}{cfg.extensions[0]}")  # absent: counted as missing
        entries[split].append(VideoEntry(path, index[label]))
    if not entries["test"]:
        entries["test"] = list(entries["val"])
    return entries, names
