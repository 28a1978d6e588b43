"""The raw samples of a split, for evaluating a registered model with its own preprocessing.

`attnlab evaluate` scores a model on data through the model's contract (datamodules/raw_inputs.py),
not through the data config's transforms, so it needs each sample before any transform:
- `split_samples(datamodule, "test")`: the exact samples the DataModule's test loader yields (the
  seeded `limit_test` subset included) — uint8 (H, W[, C]) arrays for idx/CIFAR, file paths for
  image folders, `VideoRecord`s (file, label and manifest segment) for videos;
- `folder_samples(root, kind, class_names)`: every file of a class-folder tree root/<class>/<file>.
Labels are indices into the DataModule's (or the given) class names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch.utils.data import Subset

from datamodules.config import IMAGE_SUFFIXES, VideoDataConfig

VIDEO_SUFFIXES = tuple(VideoDataConfig.model_fields["extensions"].default)


def split_samples(datamodule, split: str = "test") -> tuple[list[Any], list[int]]:
    """(raw samples, labels) of the split's loader, in loader order; call after `setup()`."""
    loader = {"train": datamodule.train_dataloader, "val": datamodule.val_dataloader,
              "test": datamodule.test_dataloader}[split]()
    dataset, indices = _unwrap(loader.dataset)
    samples = [_raw(dataset, index) for index in indices]
    return [sample for sample, _ in samples], [label for _, label in samples]


def _unwrap(dataset) -> tuple[Any, list[int]]:
    """The innermost dataset and the indices into it that a chain of Subsets selects."""
    indices = list(range(len(dataset)))
    while isinstance(dataset, Subset):
        indices = [dataset.indices[i] for i in indices]
        dataset = dataset.dataset
    return dataset, indices


def _raw(dataset, index: int) -> tuple[Any, int]:
    from datamodules.image import ArrayImageDataset
    from datamodules.video_dataset import VideoClipDataset

    if isinstance(dataset, ArrayImageDataset):
        image = dataset.images[index].permute(1, 2, 0).numpy()  # (C, H, W) -> (H, W, C) uint8
        return (image[:, :, 0] if image.shape[-1] == 1 else image), int(dataset.labels[index])
    if isinstance(dataset, VideoClipDataset):
        record = dataset.records[index]
        return record, record.label
    if hasattr(dataset, "samples"):  # torchvision ImageFolder: (path, label) pairs
        path, label = dataset.samples[index]
        return path, int(label)
    raise ValueError(f"cannot take raw samples from a {type(dataset).__name__}")


def folder_samples(root: str | Path, kind: str, class_names: list[str]) -> tuple[list[str], list[int]]:
    """Every image (or video) file of root/<class>/, labelled by its folder's index in `class_names`."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"data.root {root} is not a folder")
    suffixes = IMAGE_SUFFIXES if kind == "image" else VIDEO_SUFFIXES
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    unknown = [p.name for p in folders if p.name not in class_names]
    if not folders or unknown:
        listed = ", ".join(class_names[:20]) + (", ..." if len(class_names) > 20 else "")
        problem = f"class folders {unknown} are not classes of the model" if unknown else "no class folders"
        raise ValueError(f"data.root {root}: {problem}; expected root/<class>/<{kind} file> with classes: {listed}")
    paths, labels = [], []
    for folder in folders:
        for path in sorted(folder.rglob("*")):
            if path.is_file() and path.suffix.lower() in suffixes:
                paths.append(str(path))
                labels.append(class_names.index(folder.name))
    if not paths:
        raise ValueError(f"data.root {root}: no {kind} files ({', '.join(suffixes)}) in its class folders")
    return paths, labels
