"""Raw inputs -> network inputs, through the very code the test split of training ran.

A registered model carries its preprocessing as data (`preprocessing_contract(cfg, channels)`);
`raw_inputs_for(preprocessing)` turns it back into the test pipeline of training:
- images of array datasets (Fashion-MNIST, MNIST idx files; CIFAR-10): training held uint8
  (C, H, W) tensors and ran `image_transform(dataset, train=False)` on them. PNG/JPEG bytes, image
  files and uint8 arrays become that uint8 tensor (decoded with PIL: a PNG of a test image gives its
  exact pixels); another size is first resized to the training's square side.
- images of folder datasets: training read files with torchvision's ImageFolder loader (PIL, converted
  to RGB) and ran the folder pipeline (short side to 256/224 of the crop, centre crop) on the PIL image;
  so do these.
- videos: probed, then decoded by `VideoClipDataset` in test mode itself — `test_clips` uniformly
  spaced clips of `clip_len` frames every `frame_interval`, resized on decode to `short_side`, 1 or 3
  crops — so a file gives the same (K, C, T, S, S) views as in `trainer.test`.
An input the contract cannot take (a video for an image model, a wrong channel count, float pixels,
an unreadable file) raises `ContractError`, whose message says what the model takes.
"""

from __future__ import annotations

import io
import logging
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchvision.transforms.v2 import functional as F

from datamodules.config import IMAGE_FORMATS, ImageDataConfig, VideoDataConfig
from datamodules.transforms import VideoEvalTransform, image_transform

log = logging.getLogger(__name__)
# PIL image modes by channel count, for the array datasets (the folder loader converts to RGB instead).
_MODES = {1: ("L",), 3: ("RGB",)}


class ContractError(ValueError):
    """An input the model's contract cannot take; the message names the input and what the model takes."""


def preprocessing_contract(cfg: ImageDataConfig | VideoDataConfig, channels: int) -> dict[str, Any]:
    """The test-time preprocessing of a data config, as plain data to store with a model."""
    if isinstance(cfg, VideoDataConfig):
        from datamodules.video_backend import get_backend

        return {"kind": "video", "channels": channels, "clip_len": cfg.clip_len,
                "frame_interval": cfg.frame_interval, "test_clips": cfg.test_clips, "test_crops": cfg.test_crops,
                "short_side": cfg.short_side, "crop_size": cfg.crop_size, "mean": list(cfg.mean),
                "std": list(cfg.std), "pad": cfg.pad, "backend": get_backend(cfg.backend).name,
                "decode_threads": cfg.decode_threads}
    image_format = cfg.format
    return {"kind": "image", "channels": channels, "dataset": cfg.dataset, "folder": image_format.read is None,
            "size": cfg.image_size or image_format.side, "native_size": image_format.side,
            "mean": list(image_format.mean), "std": list(image_format.std)}


def preprocessing_steps(p: dict[str, Any]) -> list[str]:
    """The pipeline in words, for model cards."""
    norm = f"scale to [0, 1], normalise with mean {p['mean']} and std {p['std']}"
    if p["kind"] == "video":
        crops = "a centre crop" if p["test_crops"] == 1 else "three crops along the long side"
        return [f"decode with {p['backend']}, {p['test_clips']} clips spread uniformly over the video, each "
                f"{p['clip_len']} frames every {p['frame_interval']} frames (short videos: pad '{p['pad']}')",
                f"resize frames on decode to short side {p['short_side']}", f"{crops} of {p['crop_size']} px",
                norm, "average the clips' softmax per video"]
    if p["folder"]:
        return ["decode with PIL, convert to RGB", f"resize short side to {round(p['size'] * 256 / 224)}",
                f"centre crop {p['size']} px", norm]
    steps = [f"decode with PIL ({_channel_words(p['channels'])}), other sizes resized to "
             f"{p['native_size']}x{p['native_size']}"]
    if p["size"] != p["native_size"]:
        steps.append(f"resize to {p['size']}x{p['size']}")
    return steps + [norm]


def raw_inputs_for(preprocessing: dict[str, Any]) -> ImageInputs | VideoInputs:
    kinds = {"image": ImageInputs, "video": VideoInputs}
    if preprocessing.get("kind") not in kinds:
        raise ContractError(f"preprocessing kind {preprocessing.get('kind')!r} is not one of {', '.join(kinds)}")
    return kinds[preprocessing["kind"]](preprocessing)


def _channel_words(channels: int) -> str:
    return {1: "1 channel, grayscale", 3: "3 channels, RGB"}.get(channels, f"{channels} channels")


def _name(item: Any, index: int) -> str:
    return str(item) if isinstance(item, (str, Path)) else f"input {index}"


def is_image(data: bytes | str | Path) -> bool:
    """True when PIL recognises an image format (it reads the header only)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data):
            return True
    except (UnidentifiedImageError, OSError, ValueError):
        return False


class ImageInputs:
    """Encoded bytes, image files or uint8 arrays -> float (C, H, W) as the training's test split made them."""

    kind = "image"

    def __init__(self, preprocessing: dict[str, Any]):
        self.p = preprocessing
        self.folder = preprocessing["folder"]  # photographs read like torchvision's ImageFolder
        if preprocessing["dataset"] not in IMAGE_FORMATS:
            raise ContractError(f"the model was trained on image format {preprocessing['dataset']!r}, which this "
                                f"attnlab does not know ({', '.join(IMAGE_FORMATS)})")
        self.transform = image_transform(preprocessing["dataset"], train=False, size=preprocessing["size"])
        side = preprocessing["size"] if self.folder else preprocessing["native_size"]
        self.takes = (f"images ({_channel_words(3 if self.folder else preprocessing['channels'])}, "
                      f"{side}x{side}{' after resize and centre crop' if self.folder else ''}) as PNG/JPEG bytes, "
                      "image files or uint8 arrays (H, W[, C])")

    def tensor(self, item: Any, index: int = 0) -> torch.Tensor:
        """One raw image -> float (C, H, W)."""
        return self.transform(self.load(item, index))

    def batch(self, items: list, start: int = 0) -> torch.Tensor:
        """Raw images -> float (B, C, H, W)."""
        return torch.stack([self.tensor(item, start + i) for i, item in enumerate(items)])

    def load(self, item: Any, index: int = 0):
        """What training's dataset held: a PIL RGB image (folder datasets) or a uint8 (C, H, W) tensor."""
        name = _name(item, index)
        if isinstance(item, np.ndarray):
            array = self._checked_array(item, name)
            if self.folder:
                from PIL import Image

                return Image.fromarray(array.squeeze(-1) if array.ndim == 3 and array.shape[-1] == 1 else array
                                       ).convert("RGB")
        else:
            image = self._decode(item, name)
            if self.folder:
                return image.convert("RGB")  # torchvision's ImageFolder loader does the same
            if image.mode not in _MODES.get(self.p["channels"], ()):
                raise ContractError(f"{name}: a {image.mode} image; this model takes {self.takes}")
            array = np.asarray(image)
        return self._array_tensor(array)

    def _decode(self, item: Any, name: str):
        from PIL import Image, UnidentifiedImageError

        if isinstance(item, (str, Path)):
            try:
                item = Path(item).read_bytes()
            except OSError as error:
                raise ContractError(f"{name}: cannot read ({error.strerror or error})") from None
        if not isinstance(item, (bytes, bytearray, memoryview)):
            raise ContractError(f"{name}: a {type(item).__name__}; this model takes {self.takes}")
        try:
            image = Image.open(io.BytesIO(bytes(item)))
            image.load()
        except (UnidentifiedImageError, OSError, ValueError) as error:
            raise ContractError(f"{name}: not a readable image ({error}); this model takes {self.takes}") from None
        return image

    def _checked_array(self, array: np.ndarray, name: str) -> np.ndarray:
        if array.dtype != np.uint8:
            raise ContractError(f"{name}: a {array.dtype} array; this model takes {self.takes} with values "
                                "0-255 (it normalises them itself; the plain tensor model at runs:/<run>/model "
                                "takes preprocessed float tensors)")
        channels = 1 if array.ndim == 2 else array.shape[-1] if array.ndim == 3 else None
        allowed = (1, 3, 4) if self.folder else (self.p["channels"],)
        if channels not in allowed:
            raise ContractError(f"{name}: an array of shape {array.shape}, i.e. "
                                f"{'no single image' if channels is None else f'{channels} channels'}; "
                                f"this model takes {self.takes}")
        return array

    def _array_tensor(self, array: np.ndarray) -> torch.Tensor:
        # a copy: PIL's arrays are read-only, and the transform must not write into the caller's array
        image = torch.from_numpy(np.array(array[:, :, None] if array.ndim == 2 else array))
        image = image.permute(2, 0, 1)  # (H, W, C) -> (C, H, W), as the idx/CIFAR datasets hold it
        side = self.p["native_size"]
        if image.shape[-2:] != (side, side):
            image = F.resize(image, [side, side], antialias=True)
        return image


class VideoInputs:
    """Video files (or their bytes) -> float (K, C, T, S, S) test views, decoded as in training's test split."""

    kind = "video"

    def __init__(self, preprocessing: dict[str, Any]):
        from datamodules.video_backend import get_backend

        self.p = preprocessing
        backend = preprocessing["backend"]
        try:
            get_backend(backend)
        except ValueError:
            log.warning("video backend %r of the model's training is not installed here; decoding with %s "
                        "(frames may differ slightly)", backend, get_backend("auto").name)
            backend = "auto"
        self.backend = get_backend(backend, preprocessing["decode_threads"])
        self.transform = VideoEvalTransform(preprocessing["crop_size"], preprocessing["test_crops"],
                                            preprocessing["mean"], preprocessing["std"])
        self.takes = (f"video files or their bytes ({preprocessing['test_clips']} clips of {preprocessing['clip_len']} "
                      f"frames every {preprocessing['frame_interval']}, {preprocessing['crop_size']} px crops)")

    def dataset(self, paths: list[str], labels: list[int] | None = None, records: list | None = None):
        """`VideoClipDataset` in test mode over the files (or over given VideoRecords, e.g. manifest
        segments); items are (float (K, C, T, S, S), label). Unreadable files raise ContractError."""
        from datamodules.scan import VideoRecord
        from datamodules.video_dataset import VideoClipDataset

        if records is None:
            labels = labels or [-1] * len(paths)
            records = [VideoRecord(path, label, info, 0, info.num_frames)
                       for path, label, info in zip(paths, labels, map(self.probe, paths))]
        p = self.p
        # bad_files="fail": a file that breaks mid-decode raises (with its path) instead of being counted,
        # so neither a ledger nor a bad-sample budget is needed.
        return VideoClipDataset(records, mode="test", transform=self.transform, clip_len=p["clip_len"],
                                frame_interval=p["frame_interval"], clips=p["test_clips"], pad=p["pad"],
                                short_side=p["short_side"], backend=self.backend.name,
                                threads=p["decode_threads"], bad_files="fail", ledger=None, budget=None)

    def probe(self, path: str):
        from datamodules.video_backend import VideoReadError

        if os.path.isfile(path) and is_image(path):
            raise ContractError(f"{path}: an image; this model takes {self.takes}")
        try:
            return self.backend.probe(path)
        except VideoReadError as error:
            raise ContractError(f"{path}: not a readable video ({error.reason}: {error.detail}); this model "
                                f"takes {self.takes}") from None

    def views(self, dataset, index: int) -> torch.Tensor:
        """Item `index` of `dataset()` -> float (K, C, T, S, S); a file that fails mid-decode raises ContractError."""
        from datamodules.video_backend import VideoReadError

        try:
            return dataset[index][0]
        except VideoReadError as error:
            raise ContractError(f"{error.path}: not a readable video ({error.reason or 'decode_error'}: "
                                f"{error.detail}); this model takes {self.takes}") from None

    @contextmanager
    def files(self, items: list):
        """Paths for the items: paths stay, bytes go to temporary files removed afterwards."""
        paths, temporary = [], []
        try:
            for index, item in enumerate(items):
                if isinstance(item, (str, Path)):
                    paths.append(str(item))
                elif isinstance(item, (bytes, bytearray, memoryview)):
                    if is_image(bytes(item)):
                        raise ContractError(f"input {index}: an image; this model takes {self.takes}")
                    handle = tempfile.NamedTemporaryFile(suffix=".video", delete=False)
                    with handle:
                        handle.write(bytes(item))
                    temporary.append(handle.name)
                    paths.append(handle.name)
                else:
                    raise ContractError(f"input {index}: a {type(item).__name__}; this model takes {self.takes}")
            yield paths
        finally:
            for path in temporary:
                os.remove(path)
