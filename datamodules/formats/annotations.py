"""Where a layout's annotation files are: `data.annotations`, else `data.root` or a conventional sub-folder.

Public datasets ship their split and label files beside the video folder under fixed names
(UCF101's `ucfTrainTestlist/` next to `UCF-101/`, HMDB51's `testTrainMulti_7030_splits/`, SSv2's
`labels/` next to `20bn-something-something-v2/`), so the lookup tries root, then those names inside
root and beside it; `data.annotations` points anywhere else (a folder, or for Kinetics one CSV file).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from datamodules.config import VideoDataConfig


def candidate_folders(cfg: VideoDataConfig, subfolders: tuple[str, ...] = ()) -> list[Path]:
    """Folders to look in, in order: data.annotations (its folder when it is a file), else root, root/<sub>
    and root/../<sub>."""
    if cfg.annotations is not None:
        given = Path(cfg.annotations)
        return [given.parent if given.is_file() else given]
    if cfg.root is None:
        return []
    root = Path(cfg.root)
    return [root, *(root / sub for sub in subfolders), *(root.parent / sub for sub in subfolders)]


def find_folder(cfg: VideoDataConfig, pattern: str, subfolders: tuple[str, ...] = ()) -> Path | None:
    """The first candidate folder holding a file matching `pattern` (a glob), or None."""
    for folder in candidate_folders(cfg, subfolders):
        if folder.is_dir() and next(folder.glob(pattern), None) is not None:
            return folder
    return None


def require_folder(cfg: VideoDataConfig, pattern: str, subfolders: tuple[str, ...], layout: str) -> Path:
    """`find_folder`, or a ValueError naming where it looked and what it looked for."""
    folder = find_folder(cfg, pattern, subfolders)
    if folder is None:
        looked = ", ".join(str(f) for f in candidate_folders(cfg, subfolders)) or "nowhere (no data.root)"
        raise ValueError(f"dataset {layout!r}: no {pattern} in {looked}; set data.annotations to the folder "
                         "holding the layout's annotation files")
    return folder


def read_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, stripped text) of the non-blank lines; CRLF endings (UCF101's lists) are fine."""
    return [(number, line.strip()) for number, line in enumerate(path.read_text().splitlines(), start=1)
            if line.strip()]
