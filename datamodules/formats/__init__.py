"""Video dataset layouts: how each lists its videos, splits and labels. `data.dataset` picks one.

| dataset    | what is on disk                                                                      |
|------------|--------------------------------------------------------------------------------------|
| `folder`   | `root/<class>/<video>`, or `root/{train,val,test}/<class>/<video>`                    |
| `manifest` | `data.manifests`: CSV/TSV `path,label[,start,end]` or `path label` text, per split    |
| `ucf101`   | `classInd.txt` + `trainlist0N.txt`/`testlist0N.txt`; `data.split` = N                  |
| `hmdb51`   | `<class>_test_split<N>.txt` (1 train, 2 test, 0 unused); `data.split` = N             |
| `kinetics` | the official CSV `label,youtube_id,time_start,time_end,split` -> `<id>_<s>_<e>.mp4`   |
| `ssv2`     | `labels.json` + `train.json`/`validation.json` (template -> class), `<id>.webm`        |
| `auto`     | (default) manifests when `data.manifests` is set; else the first layout whose marker  |
|            | files are in `data.annotations` or `data.root` (or the layout's usual sub-folder), in |
|            | the order ucf101, hmdb51, ssv2, kinetics; else `folder`                                |

Each layout is one module with `read(cfg, seed) -> ({split: [VideoEntry]}, class names)` and, when it
has marker files, `detect(cfg) -> bool`. A new layout is its module plus one line in `FORMATS`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from datamodules.formats import folder, hmdb51, kinetics, manifest, ssv2, ucf101
from datamodules.manifest import VideoEntry

if TYPE_CHECKING:
    from datamodules.config import VideoDataConfig

log = logging.getLogger(__name__)

Splits = tuple[dict[str, list[VideoEntry]], list[str]]


@dataclass(frozen=True)
class Layout:
    read: Callable[[VideoDataConfig, int], Splits]
    detect: Callable[[VideoDataConfig], bool] | None = None  # None: never auto-detected
    numbered_splits: bool = False  # takes data.split (the dataset's official split 1, 2, 3)
    own_classes: bool = False  # the annotation files fix the classes: data.class_names does not apply


# Detection tries the layouts with markers in this order (UCF101's classInd.txt is the most specific).
FORMATS: dict[str, Layout] = {
    "folder": Layout(folder.read),
    "manifest": Layout(manifest.read),
    "ucf101": Layout(ucf101.read, ucf101.detect, numbered_splits=True, own_classes=True),
    "hmdb51": Layout(hmdb51.read, hmdb51.detect, numbered_splits=True, own_classes=True),
    "ssv2": Layout(ssv2.read, ssv2.detect, own_classes=True),
    "kinetics": Layout(kinetics.read, kinetics.detect, own_classes=True),
}
FORMAT_NAMES = ("auto", *FORMATS)


def resolve_format(cfg: VideoDataConfig) -> str:
    """The layout `cfg.dataset` names, or for `auto` the detected one (see the module docstring)."""
    if cfg.dataset != "auto":
        return cfg.dataset
    if cfg.manifests:
        return "manifest"
    for name, layout in FORMATS.items():
        if layout.detect is not None and layout.detect(cfg):
            return name
    return "folder"


def read_splits(cfg: VideoDataConfig, seed: int) -> tuple[str, dict[str, list[VideoEntry]], list[str]]:
    """(layout name, {split: entries}, class names) of the dataset `cfg` describes."""
    name = resolve_format(cfg)
    layout = FORMATS[name]
    if cfg.dataset == "auto":
        log.info("data.dataset auto: %s layout detected", name)
    if cfg.split != 1 and not layout.numbered_splits:
        numbered = [key for key, value in FORMATS.items() if value.numbered_splits]
        raise ValueError(f"data.split={cfg.split}: dataset {name!r} has one official split; data.split applies "
                         f"to {', '.join(numbered)}")
    if cfg.class_names is not None and layout.own_classes:
        raise ValueError(f"data.class_names: dataset {name!r} takes its classes from its annotation files; "
                         "leave data.class_names unset")
    entries, class_names = layout.read(cfg, seed)
    return name, entries, class_names
