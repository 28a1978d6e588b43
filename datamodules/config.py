"""Typed data configuration: `ImageDataConfig`, `VideoDataConfig` and the `DataConfig` union.

These are the `data:` section of a run config (training.config.TrainConfig). Unknown keys are
errors (extra="forbid"), so a typo fails at load time, not after an hour of training.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, model_validator

from datamodules.formats import FORMAT_NAMES

Split = Literal["train", "val", "test"]
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"  # Debian package dataset-fashion-mnist


@dataclass(frozen=True)
class ImageFormat:
    """One image dataset format: what its reader, the transforms and a search budget need to know."""

    channels: int
    side: int  # native side of its images (data.image_size resizes)
    mean: tuple[float, ...]  # normalisation statistics of its training split
    std: tuple[float, ...]
    # "module:function"(root: Path) -> ((train images, labels), (test images, labels), class names):
    # uint8 images (N, H, W) or (N, H, W, C), int64 labels. None: a class-folder tree (ImageFolder).
    read: str | None = None
    flip: bool = True  # horizontal flips in training augmentation (a flipped digit is another symbol)
    download: str | None = None  # the torchvision.datasets class that fetches it when data.download is set
    default_root: str | None = None  # where it is when data.root is not given; None: data.root is required


# data.dataset of `kind: image` -> its format. A new format: its reader function and one entry here.
IMAGE_FORMATS: dict[str, ImageFormat] = {
    "fashion_mnist": ImageFormat(1, 28, (0.2860,), (0.3530,), "datamodules.idx:read_fashion_mnist",
                                 download="FashionMNIST", default_root=FASHION_MNIST_DIR),
    "mnist": ImageFormat(1, 28, (0.1307,), (0.3081,), "datamodules.idx:read_mnist", flip=False, download="MNIST"),
    "cifar10": ImageFormat(3, 32, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), "datamodules.idx:read_cifar10",
                           download="CIFAR10"),
    "folder": ImageFormat(3, 224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),  # ImageNet statistics
}


class LoaderConfig(BaseModel):
    """Fields shared by every DataModule: batching, workers, quick-run subsets."""

    model_config = ConfigDict(extra="forbid")

    root: str | None = Field(None, description="Dataset folder. Image idx/CIFAR datasets: the folder holding "
                             "the files; folder datasets: root/<class>/... or root/{train,val,test}/<class>/...")
    batch_size: int = Field(32, gt=0)
    num_workers: int = Field(0, ge=0, description="DataLoader worker processes; 0 loads in the main process")
    pin_memory: bool = Field(False, description="Page-locked batches; only helps with a GPU")
    persistent_workers: bool = Field(False, description="Keep workers between epochs (needs num_workers > 0)")
    limit_train: int | None = Field(None, gt=0, description="Seeded random subset of this many training samples")
    limit_val: int | None = Field(None, gt=0, description="Seeded random subset of this many validation samples")
    limit_test: int | None = Field(None, gt=0, description="Seeded random subset of this many test samples")


class ImageDataConfig(LoaderConfig):
    """Images: Fashion-MNIST / MNIST idx files, CIFAR-10 python batches, or a class-folder tree."""

    kind: Literal["image"] = "image"
    dataset: Literal[tuple(IMAGE_FORMATS)] = "fashion_mnist"  # a key of IMAGE_FORMATS
    # fashion_mnist defaults to the Debian package's folder; the others need `root`.
    val_fraction: float = Field(0.1, ge=0.0, lt=1.0, description="Seeded share of the training set held out for "
                                "validation; 0 validates on the test set")
    test_fraction: float = Field(0.1, ge=0.0, lt=1.0, description="folder datasets without root/test: seeded "
                                 "share held out for testing")
    augment: bool = Field(True, description="Standard training augmentation of the dataset (crop/flip)")
    image_size: int | None = Field(None, gt=0, description="Side of the square input; None = native size "
                                   "(28 for idx, 32 for CIFAR, 224 for folder datasets)")
    download: bool = Field(False, description="Fetch with torchvision's downloader when files are missing "
                           "(needs internet; off by default)")

    @model_validator(mode="after")
    def _root_required(self) -> ImageDataConfig:
        if self.root is None and self.format.default_root is None:
            raise ValueError(f"data.root is required for dataset={self.dataset!r}")
        return self

    @property
    def format(self) -> ImageFormat:
        return IMAGE_FORMATS[self.dataset]

    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one sample, known without reading the data."""
        side = self.image_size or self.format.side
        return (self.format.channels, side, side)


class VideoDataConfig(LoaderConfig):
    """Video clips decoded with decord (PyAV fallback); datamodules/formats/ lists the dataset layouts."""

    # Required in a config (a `data:` section without `kind` is images); the default serves Python callers.
    model_config = ConfigDict(json_schema_extra=lambda schema: schema.setdefault("required", []).insert(0, "kind"))

    kind: Literal["video"] = "video"
    dataset: Literal[FORMAT_NAMES] = Field("auto", description="Layout of the files: folder, manifest, ucf101, "
                                           "hmdb51, kinetics, ssv2, or auto = detected from the annotation files "
                                           "present (datamodules/formats/__init__.py)")
    manifests: dict[Split, str] = Field(default_factory=dict, description="dataset=manifest: one file per split "
                                        "(CSV/TSV with path,label[,start,end] or the 'path label' text format); "
                                        "relative video paths resolve against root, else the manifest's folder")
    annotations: str | None = Field(None, description="ucf101/hmdb51/kinetics/ssv2: folder holding the layout's "
                                    "split and label files (kinetics: or one CSV file); default: root or the "
                                    "layout's usual sub-folder of root")
    split: int = Field(1, ge=1, le=3, description="ucf101/hmdb51: which of the three official splits")
    class_names: list[str] | None = Field(None, description="folder/manifest: fix the label set (and order); "
                                          "default: inferred from the training split")
    split_fractions: tuple[float, float, float] = Field((0.7, 0.15, 0.15), description="folder datasets "
                                                        "without root/train: seeded per-class train/val/test shares")
    extensions: list[str] = Field([".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v"],
                                  description="Files of a class folder that count as videos")
    backend: Literal["auto", "decord", "pyav"] = Field("auto", description="auto = decord when installed, "
                                                       "else PyAV")
    decode_threads: int = Field(1, ge=0, description="Decoder threads per reader (0 = decoder's choice); "
                                "1 lets worker processes scale across cores")
    clip_len: int = Field(8, gt=0, description="Frames per clip (Non-local: 32, fast variant 8)")
    frame_interval: int = Field(8, gt=0, description="Stride between sampled frames (Non-local: 2, fast: 8)")
    test_clips: int = Field(10, gt=0, description="Uniformly spaced clips per test video")
    test_crops: Literal[1, 3] = Field(1, description="Spatial crops per test clip: centre, or three along the "
                                      "long side")
    short_side: int = Field(128, gt=0, description="Frames are resized on decode to this short side")
    crop_size: int = Field(112, gt=0, description="Side of the square crop fed to the model")
    scale_jitter: tuple[int, int] | None = Field(None, description="Training short-side jitter range [lo, hi] "
                                                 "before the random crop; None = (short_side, 1.25*short_side)")
    horizontal_flip: bool = Field(True, description="Random horizontal flips in training; turn off when a "
                                  "label depends on left/right (e.g. motion direction)")
    pad: Literal["loop", "repeat_last", "none"] = Field("loop", description="Videos shorter than a clip: loop "
                                                        "from the start, repeat the last frame, or error")
    probe_cache: bool = Field(True, description="Keep frame counts/fps/sizes of probed files in "
                              "$ATTNLAB_HOME/cache/video-probes.sqlite; unchanged files are not probed again")
    bad_files: Literal["skip", "fail"] = Field("skip", description="skip = leave out and count bad files and "
                                              "bad segments; fail = raise naming the file (and segment)")
    max_bad_fraction: float = Field(0.05, ge=0.0, le=1.0, description="skip: fail the run when more than this "
                                    "share of the SAMPLES is bad (a bad file makes all its segments bad); missing "
                                    "files are counted but not held against it")
    mean: tuple[float, float, float] = (0.45, 0.45, 0.45)  # Kinetics statistics as in pytorchvideo/SlowFast
    std: tuple[float, float, float] = (0.225, 0.225, 0.225)

    @model_validator(mode="after")
    def _consistent(self) -> VideoDataConfig:
        if self.dataset == "folder" and self.root is None:
            raise ValueError("data.root is required for a class-folder video dataset")
        if self.dataset == "manifest" and "train" not in self.manifests:
            raise ValueError("data.manifests.train is required for dataset='manifest'")
        if self.dataset == "auto" and self.root is None and "train" not in self.manifests:
            raise ValueError("data.root (or data.manifests.train) is required for a video dataset")
        if self.dataset not in ("auto", "folder", "manifest") and self.root is None:
            raise ValueError(f"data.root (the video folder) is required for dataset={self.dataset!r}")
        if abs(sum(self.split_fractions) - 1.0) > 1e-6 or min(self.split_fractions) < 0:
            raise ValueError(f"data.split_fractions must be >= 0 and sum to 1, got {self.split_fractions}")
        low, high = self.jitter_range
        if low > high or low < self.crop_size:
            raise ValueError(f"data.scale_jitter {self.jitter_range} must satisfy crop_size ({self.crop_size}) "
                             "<= lo <= hi")
        if self.short_side < self.crop_size:
            raise ValueError(f"data.short_side ({self.short_side}) must be >= data.crop_size ({self.crop_size})")
        return self

    @property
    def jitter_range(self) -> tuple[int, int]:
        return self.scale_jitter or (self.short_side, round(self.short_side * 1.25))

    def input_shape(self) -> tuple[int, int, int, int]:
        """(C, T, H, W) of one clip, known without reading the data."""
        return (3, self.clip_len, self.crop_size, self.crop_size)

    @property
    def clip_span(self) -> int:
        """Frames covered by one clip: (clip_len - 1) * frame_interval + 1."""
        return (self.clip_len - 1) * self.frame_interval + 1


def kind(data: Any) -> Any:
    """The data kind of a raw or built section; a mapping without `kind` is images, as documented."""
    if isinstance(data, dict):
        return data.get("kind", "image")
    return getattr(data, "kind", "image")


# A callable discriminator rather than Field(discriminator="kind"): a tag field must be present, and
# `kind` is optional (default image), so the schema says so and a config without it is not refused.
DataConfig = Annotated[Annotated[ImageDataConfig, Tag("image")] | Annotated[VideoDataConfig, Tag("video")],
                       Discriminator(kind)]

# kind -> its config class: where errors and schemas need the data kinds by name.
DATA_KINDS: dict[str, type[LoaderConfig]] = {"image": ImageDataConfig, "video": VideoDataConfig}
