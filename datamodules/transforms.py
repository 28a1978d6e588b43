"""torchvision transforms v2 pipelines for images and video clips.

Video clips arrive as uint8 (T, C, H, W) already resized on decode to `short_side`. Training
(Non-local / SlowFast recipe, scaled down): short-side scale jitter, random square crop, horizontal
flip. Evaluation: resize the short side to the crop size, then a centre crop or three crops along the
long side (the papers' three-crop testing). Both end float32, normalised, and permuted to the
model's (C, T, H, W).
"""

from __future__ import annotations

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from datamodules.config import IMAGE_FORMATS


def _normalise(mean, std) -> list:
    return [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]


def image_transform(dataset: str, *, train: bool, augment: bool = True, size: int | None = None) -> v2.Compose:
    """Standard per-dataset pipeline on uint8 (C, H, W) tensors or PIL images -> float (C, H, W).

    Training augmentation: Fashion-MNIST and CIFAR-10 random crop with 4-pixel padding + flip;
    MNIST crop only (a flipped digit is another symbol); folder datasets random-resized crop + flip.
    Statistics, native size and flipping come from the dataset's `IMAGE_FORMATS` entry.
    """
    image_format = IMAGE_FORMATS[dataset]
    mean, std, native = image_format.mean, image_format.std, image_format.side
    size = size or native
    steps: list = [v2.ToImage()]
    if image_format.read is None:  # photographs in class folders: ImageNet's pipeline
        if train and augment:
            steps += [v2.RandomResizedCrop(size, antialias=True), v2.RandomHorizontalFlip()]
        else:
            steps += [v2.Resize(round(size * 256 / 224), antialias=True), v2.CenterCrop(size)]
        return v2.Compose(steps + _normalise(mean, std))
    if size != native:
        steps.append(v2.Resize(size, antialias=True))
    if train and augment:
        steps.append(v2.RandomCrop(size, padding=size // 7))  # 4 px at 28-32 px
        if image_format.flip:
            steps.append(v2.RandomHorizontalFlip())
    return v2.Compose(steps + _normalise(mean, std))


class ScaleJitterCrop(v2.Transform):
    """Short-side scale jitter to a side drawn from [lo, hi], then a random square crop — in one resample.

    Resizing by f and cropping `crop` pixels equals cropping `crop / f` pixels and resizing those by
    f (what v2.RandomResizedCrop does internally), which resamples ~3x fewer pixels than resizing
    the whole frame first. The same window applies to every frame of the clip.
    """

    def __init__(self, crop_size: int, jitter: tuple[int, int]):
        super().__init__()
        self.crop_size, self.jitter = crop_size, jitter

    def make_params(self, flat_inputs: list) -> dict:
        height, width = v2.query_size(flat_inputs)
        side = int(torch.randint(self.jitter[0], self.jitter[1] + 1, ()))
        window = min(height, width, max(1, round(self.crop_size * min(height, width) / side)))
        top = int(torch.randint(0, height - window + 1, ()))
        left = int(torch.randint(0, width - window + 1, ()))
        return {"top": top, "left": left, "window": window}

    def transform(self, inpt, params: dict):
        return F.resized_crop(inpt, params["top"], params["left"], params["window"], params["window"],
                              [self.crop_size, self.crop_size], antialias=True)


class NormaliseVideo:
    """uint8 -> float32 (x / 255 - mean) / std as one multiply-add per element (v2's ToDtype +
    Normalize allocate and pass over the clip three times)."""

    def __init__(self, mean, std):
        std = torch.tensor(std, dtype=torch.float32)
        self.scale = (1 / (255 * std)).view(1, -1, 1, 1)  # (1, C, 1, 1) for (T, C, H, W)
        self.shift = (-torch.tensor(mean, dtype=torch.float32) / std).view(1, -1, 1, 1)

    def __call__(self, clip: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.shift, clip.as_subclass(torch.Tensor).float(), self.scale)


class VideoTrainTransform:
    """uint8 (T, C, H, W) -> float (C, T, crop, crop): scale jitter + random crop, flip, normalise."""

    def __init__(self, crop_size: int, jitter: tuple[int, int], mean, std, flip: bool = True):
        flips = [v2.RandomHorizontalFlip()] if flip else []
        self.augment = v2.Compose([ScaleJitterCrop(crop_size, jitter), *flips])
        self.normalise = NormaliseVideo(mean, std)

    def __call__(self, clip: torch.Tensor) -> torch.Tensor:
        out = self.normalise(self.augment(tv_tensors.Video(clip)))
        return out.permute(1, 0, 2, 3)  # (T, C, H, W) -> (C, T, H, W)


class VideoEvalTransform:
    """uint8 (T, C, H, W) -> float (crops, C, T, crop, crop): short side to crop size, 1 or 3 crops."""

    def __init__(self, crop_size: int, crops: int, mean, std):
        self.crop_size, self.crops = crop_size, crops
        self.normalise = NormaliseVideo(mean, std)

    def __call__(self, clip: torch.Tensor) -> torch.Tensor:
        clip = F.resize(tv_tensors.Video(clip), [self.crop_size], antialias=True)
        height, width = clip.shape[-2:]
        size = self.crop_size
        if self.crops == 1:
            offsets = [((height - size) // 2, (width - size) // 2)]
        elif width >= height:  # three crops along the long side: left, centre, right
            offsets = [((height - size) // 2, left) for left in (0, (width - size) // 2, width - size)]
        else:  # portrait: top, centre, bottom
            offsets = [(top, (width - size) // 2) for top in (0, (height - size) // 2, height - size)]
        views = [self.normalise(F.crop(clip, top, left, size, size)) for top, left in offsets]
        return torch.stack([v.permute(1, 0, 2, 3) for v in views])
