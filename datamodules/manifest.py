"""Where the videos of each split are, and their labels: manifests or a class-folder tree.

Manifests (one file per split):
- CSV (`.csv`) or TSV (`.tsv`): columns path, label, optional start, end (seconds). A header row
  naming the columns is optional; without one the columns are positional.
- the Kinetics/mmaction text format (any other suffix): `path label` per line, whitespace-separated.
Labels are class names or integer indices. Relative paths resolve against `root` when given, else
against the manifest's folder.

Class folders: `root/<class>/<video>`. If `root/train` exists, the splits are `root/train`,
`root/val` and `root/test` (each optional but train), with the classes of `root/train`. Otherwise
every class's videos are shuffled with the seed and cut into train/val/test by `fractions`
(rounded per class, at least one training video per class) — stratified and reproducible.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SPLITS = ("train", "val", "test")
_HEADER_PATH_NAMES = {"path", "video", "file", "filename", "video_path"}


@dataclass(frozen=True)
class VideoEntry:
    path: str
    label: int
    start: float | None = None  # seconds into the video where the labelled segment starts
    end: float | None = None


@dataclass(frozen=True)
class _Row:
    path: str
    label: str
    start: float | None
    end: float | None
    where: str  # "file:line" for error messages


def _parse_time(value: str | None, where: str, field: str) -> float | None:
    if value is None or value.strip() == "":
        return None
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"{where}: {field} must be a number of seconds, got {value!r}") from None


def read_manifest(manifest: str | Path, root: str | Path | None = None) -> list[_Row]:
    """Rows of one manifest file with absolute paths; raises ValueError naming file:line on bad rows."""
    manifest = Path(manifest)
    if not manifest.is_file():
        raise ValueError(f"manifest {manifest} does not exist")
    base = Path(root) if root is not None else manifest.parent
    text = manifest.read_text().splitlines()
    if manifest.suffix.lower() in (".csv", ".tsv"):
        cells = list(csv.reader(text, delimiter="," if manifest.suffix.lower() == ".csv" else "\t"))
    else:
        cells = [line.split() for line in text]
    columns = {"path": 0, "label": 1, "start": 2, "end": 3}
    first_data = 0
    if cells and cells[0] and cells[0][0].strip().lower() in _HEADER_PATH_NAMES:
        header = [c.strip().lower() for c in cells[0]]
        if "label" not in header:
            raise ValueError(f"{manifest}:1: header {header} has no 'label' column")
        columns = {name: header.index(name) for name in ("label", "start", "end") if name in header}
        columns["path"] = 0
        first_data = 1
    rows = []
    for number, row in enumerate(cells[first_data:], start=first_data + 1):
        if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
            continue
        where = f"{manifest}:{number}"
        if len(row) <= columns["label"]:
            raise ValueError(f"{where}: expected 'path label[ start end]', got {row}")
        get = lambda name: row[columns[name]] if name in columns and columns[name] < len(row) else None  # noqa: E731
        path = Path(row[0].strip())
        rows.append(_Row(str(path if path.is_absolute() else base / path), row[columns["label"]].strip(),
                         _parse_time(get("start"), where, "start"), _parse_time(get("end"), where, "end"), where))
    if not rows:
        raise ValueError(f"manifest {manifest} lists no videos")
    return rows


def label_rows(rows_by_split: dict[str, list[_Row]], class_names: list[str] | None
               ) -> tuple[dict[str, list[VideoEntry]], list[str]]:
    """Map raw labels to indices. Without `class_names`, the label set comes from the train split."""
    if class_names is None:
        labels = {row.label for row in rows_by_split["train"]}
        if all(label.isdigit() for label in labels):
            class_names = [str(i) for i in range(max(int(label) for label in labels) + 1)]
        else:
            class_names = sorted(labels)
    index = {name: i for i, name in enumerate(class_names)}
    entries: dict[str, list[VideoEntry]] = {}
    for split, rows in rows_by_split.items():
        entries[split] = []
        for row in rows:
            if row.label in index:
                label = index[row.label]
            elif row.label.isdigit() and int(row.label) < len(class_names):
                label = int(row.label)
            else:
                known = ", ".join(class_names[:10]) + (", ..." if len(class_names) > 10 else "")
                raise ValueError(f"{row.where}: unknown label {row.label!r} (known: {known}; "
                                 f"{len(class_names)} classes)")
            entries[split].append(VideoEntry(row.path, label, row.start, row.end))
    return entries, list(class_names)


def manifest_splits(manifests: dict[str, str], root: str | None, class_names: list[str] | None
                    ) -> tuple[dict[str, list[VideoEntry]], list[str]]:
    rows = {split: read_manifest(manifests[split], root) for split in SPLITS if split in manifests}
    return label_rows(rows, class_names)


def scan_class_folders(root: Path, extensions: list[str], class_names: list[str] | None = None
                       ) -> dict[str, list[str]]:
    """{class: sorted video paths} of root/<class>/*; ValueError for a missing root or empty class."""
    if not root.is_dir():
        raise ValueError(f"video folder {root} does not exist")
    suffixes = {e.lower() for e in extensions}
    classes = class_names or sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise ValueError(f"video folder {root} has no class sub-folders (expected root/<class>/<video>)")
    videos = {}
    for name in classes:
        folder = root / name
        files = sorted(str(p) for p in folder.glob("*") if p.is_file() and p.suffix.lower() in suffixes) \
            if folder.is_dir() else []
        if not files:
            raise ValueError(f"class folder {folder} has no videos with extensions {sorted(suffixes)}")
        videos[name] = files
    return videos


def folder_splits(root: str | Path, extensions: list[str], fractions: tuple[float, float, float], seed: int,
                  class_names: list[str] | None = None) -> tuple[dict[str, list[VideoEntry]], list[str]]:
    """Splits of a class-folder tree (see the module docstring for the two layouts)."""
    root = Path(root)
    if (root / "train").is_dir():
        train = scan_class_folders(root / "train", extensions, class_names)
        names = list(train)
        splits = {"train": train}
        for split in ("val", "test"):
            if (root / split).is_dir():
                present = sorted(p.name for p in (root / split).iterdir() if p.is_dir())
                unknown = sorted(set(present) - set(names))
                if unknown:
                    raise ValueError(f"{root / split} has class folders {unknown} that {root / 'train'} lacks")
                splits[split] = scan_class_folders(root / split, extensions, present) if present else {}
        index = {name: i for i, name in enumerate(names)}
        return {split: [VideoEntry(p, index[c]) for c, paths in videos.items() for p in paths]
                for split, videos in splits.items()}, names
    videos = scan_class_folders(root, extensions, class_names)
    rng = np.random.default_rng(seed)
    entries: dict[str, list[VideoEntry]] = {split: [] for split in SPLITS}
    for label, (name, paths) in enumerate(videos.items()):
        order = rng.permutation(len(paths))
        n_val, n_test = (int(len(paths) * f + 0.5) for f in fractions[1:])  # half rounds up
        n_val, n_test = min(n_val, len(paths) - 1), min(n_test, max(0, len(paths) - 1 - n_val))
        cut = {"val": order[:n_val], "test": order[n_val:n_val + n_test], "train": order[n_val + n_test:]}
        for split, picks in cut.items():
            entries[split] += [VideoEntry(paths[i], label) for i in sorted(picks)]
    return entries, list(videos)
