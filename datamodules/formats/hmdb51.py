"""HMDB51 (Kuehne et al., ICCV 2011) as it ships: `hmdb51/<class>/<video>.avi` plus the
`testTrainMulti_7030_splits/` folder.

One file per class and split, `<class>_test_split<N>.txt`, with `<video>.avi <id>` per line:
id 1 = train, 2 = test, 0 = not used in this split (left out, not counted). Class names may contain
underscores (`brush_hair`), so the class is the file name before `_test_split<N>.txt`; classes are
in alphabetical order (the usual index). Splits: train and test; `data.split` picks 1, 2 or 3.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from datamodules.formats.annotations import find_folder, read_lines, require_folder
from datamodules.manifest import VideoEntry

if TYPE_CHECKING:
    from datamodules.config import VideoDataConfig

SUBFOLDERS = ("testTrainMulti_7030_splits", "splits")
SPLIT_OF_ID = {"1": "train", "2": "test"}  # "0": not in this split


def detect(cfg: VideoDataConfig) -> bool:
    return find_folder(cfg, "*_test_split1.txt", SUBFOLDERS) is not None


def read(cfg: VideoDataConfig, seed: int) -> tuple[dict[str, list[VideoEntry]], list[str]]:
    suffix = f"_test_split{cfg.split}.txt"
    folder = require_folder(cfg, f"*{suffix}", SUBFOLDERS, "hmdb51")
    files = {path.name[: -len(suffix)]: path for path in folder.glob(f"*{suffix}")}
    names = sorted(files)
    root = Path(cfg.root)
    entries: dict[str, list[VideoEntry]] = {"train": [], "test": []}
    for label, name in enumerate(names):
        for number, line in read_lines(files[name]):
            video, _, split_id = line.partition(" ")
            split_id = split_id.strip()
            if split_id not in ("0", "1", "2"):
                raise ValueError(f"{files[name]}:{number}: expected '<video> 0|1|2' (0 unused, 1 train, 2 test), "
                                 f"got {line!r}")
            if split_id in SPLIT_OF_ID:
                entries[SPLIT_OF_ID[split_id]].append(VideoEntry(str(root / name / video), label))
    return entries, names
