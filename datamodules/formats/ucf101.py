"""UCF101 (Soomro, Zamir, Shah 2012, arXiv:1212.0402) as it ships: `UCF-101/<Class>/v_<Class>_gXX_cYY.avi`
plus the `ucfTrainTestlist/` folder of the official three splits.

- `classInd.txt`: `1 ApplyEyeMakeup` per line — 1-based class indices; the class order.
- `trainlist0N.txt`: `ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1` — path and the 1-based label.
- `testlist0N.txt`: `ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi` — no label: the class is the folder.
The official files end lines with CRLF. A train label that disagrees with its folder is an error
naming the line (a list converted to 0-based labels shows up here). Splits: train and test (the
protocol has no validation set); `data.split` picks list 1, 2 or 3.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from datamodules.formats.annotations import find_folder, read_lines, require_folder
from datamodules.manifest import VideoEntry

if TYPE_CHECKING:
    from datamodules.config import VideoDataConfig

SUBFOLDERS = ("ucfTrainTestlist",)


def detect(cfg: VideoDataConfig) -> bool:
    return find_folder(cfg, "classInd.txt", SUBFOLDERS) is not None


def read_class_index(path: Path) -> list[str]:
    """Class names in classInd.txt order; its indices must run 1..N."""
    names = []
    for number, line in read_lines(path):
        index, _, name = line.partition(" ")
        if not index.isdigit() or int(index) != len(names) + 1 or not name.strip():
            raise ValueError(f"{path}:{number}: expected '{len(names) + 1} <ClassName>', got {line!r}")
        names.append(name.strip())
    if not names:
        raise ValueError(f"{path} lists no classes")
    return names


def read(cfg: VideoDataConfig, seed: int) -> tuple[dict[str, list[VideoEntry]], list[str]]:
    folder = require_folder(cfg, "classInd.txt", SUBFOLDERS, "ucf101")
    names = read_class_index(folder / "classInd.txt")
    index = {name: i for i, name in enumerate(names)}
    root = Path(cfg.root)
    entries: dict[str, list[VideoEntry]] = {"train": [], "test": []}
    for split, stem in (("train", "trainlist"), ("test", "testlist")):
        path = folder / f"{stem}{cfg.split:02d}.txt"
        if not path.is_file():
            present = sorted(p.name for p in folder.glob(f"{stem}*.txt"))
            raise ValueError(f"dataset 'ucf101': {path} not found for data.split={cfg.split}; found {present}")
        for number, line in read_lines(path):
            where = f"{path}:{number}"
            video, _, label = line.partition(" ")
            folder_class = video.split("/")[0]
            if folder_class not in index:
                raise ValueError(f"{where}: folder {folder_class!r} of {video!r} is not a class of classInd.txt")
            if label.strip():
                if not label.strip().isdigit() or not 1 <= int(label) <= len(names):
                    raise ValueError(f"{where}: label {label.strip()!r} is not a 1-based class index 1..{len(names)}")
                if names[int(label) - 1] != folder_class:
                    raise ValueError(f"{where}: label {label.strip()} is {names[int(label) - 1]!r} (1-based, "
                                     f"classInd.txt) but the video is in folder {folder_class!r}")
            entries[split].append(VideoEntry(str(root / video), index[folder_class]))
    return entries, names
