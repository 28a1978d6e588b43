"""Something-Something v2 (Goyal et al., ICCV 2017, arXiv:1706.04261) as it ships: `<id>.webm` videos
(`20bn-something-something-v2/`) and the `labels/` folder.

- `labels.json`: {"Putting something on a surface": "122", ...} — class name -> index (a string).
- `train.json`, `validation.json`: [{"id": "78687", "label": "putting a pen on a table",
  "template": "Putting [something] on a surface", "placeholders": [...]}, ...].
The class of an item is its `template` with the square brackets removed: templates write the
placeholders as "[something]", labels.json as "something" (the dataset's own quirk). The item's
`label` is the filled-in sentence, not a class. `test.json` carries no labels, so the test split is
the validation split (the papers report SSv2 validation accuracy).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from datamodules.formats.annotations import find_folder, require_folder
from datamodules.manifest import VideoEntry

if TYPE_CHECKING:
    from datamodules.config import VideoDataConfig

SUBFOLDERS = ("labels", "annotations")
SPLIT_FILES = {"train": "train.json", "val": "validation.json"}


def detect(cfg: VideoDataConfig) -> bool:
    folder = find_folder(cfg, "labels.json", SUBFOLDERS)
    return folder is not None and (folder / "train.json").is_file()


def template_class(template: str) -> str:
    """'Putting [something] on a surface' -> 'Putting something on a surface'."""
    return template.replace("[", "").replace("]", "")


def _load(path: Path):
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None


def read(cfg: VideoDataConfig, seed: int) -> tuple[dict[str, list[VideoEntry]], list[str]]:
    folder = require_folder(cfg, "labels.json", SUBFOLDERS, "ssv2")
    labels = _load(folder / "labels.json")
    if not isinstance(labels, dict) or not labels:
        raise ValueError(f"{folder / 'labels.json'}: expected an object {{class name: index}}")
    by_index = sorted((int(index), name) for name, index in labels.items())
    if [index for index, _ in by_index] != list(range(len(by_index))):
        raise ValueError(f"{folder / 'labels.json'}: indices must run 0..{len(by_index) - 1}")
    names = [name for _, name in by_index]
    index = {name: i for i, name in enumerate(names)}
    root = Path(cfg.root)
    entries: dict[str, list[VideoEntry]] = {}
    for split, file_name in SPLIT_FILES.items():
        path = folder / file_name
        if not path.is_file():
            if split == "train":
                raise ValueError(f"dataset 'ssv2': {path} not found")
            continue
        entries[split] = []
        for position, item in enumerate(_load(path)):
            if not isinstance(item, dict) or "id" not in item or "template" not in item:
                raise ValueError(f"{path}: item {position} needs 'id' and 'template', got {str(item)[:80]}")
            name = template_class(item["template"])
            if name not in index:
                raise ValueError(f"{path}: item {position} (id {item['id']}): template {item['template']!r} "
                                 f"is not a class of labels.json (looked up as {name!r})")
            entries[split].append(VideoEntry(str(root / f"{item['id']}.webm"), index[name]))
    entries["test"] = list(entries.get("val", []))
    return entries, names
