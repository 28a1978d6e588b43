"""Synthetic data makers for tests, benchmarks and the demo.

- `make_motion_videos`: a class-folder tree of small videos whose classes differ ONLY in motion over
  time. Every video shows one bright square on a noisy background; its start position is uniform
  and it moves on a torus (wrapping at the borders), so the position of the square in any single
  frame is uniformly distributed whatever the class. Only the direction of motion tells the classes
  apart: a per-frame (2D) model is at chance, a temporal model is not.
- `write_video`: encode an array of RGB frames with PyAV (H.264 via whatever encoder PyAV's bundled
  FFmpeg has, or MPEG-4 part 2), with a fixed keyframe interval.
- `write_idx_dataset`: Fashion-MNIST-format idx files (raw or gzip) with random images.
- `write_cifar10_batches`: CIFAR-10 "python version" pickles with random images.
"""

from __future__ import annotations

import gzip
import math
import pickle
import struct
from pathlib import Path

import numpy as np

# Preference order for the H.264 encoder: FFmpeg builds differ in which ones they ship.
_H264_ENCODERS = ("libx264", "h264", "libopenh264", "h264_v4l2m2m")
_CODEC_ALIASES = {"h264": _H264_ENCODERS, "libx264": _H264_ENCODERS, "mpeg4": ("mpeg4",),
                  "vp9": ("libvpx-vp9",),  # Something-Something v2's .webm
                  "av1": ("libsvtav1", "libaom-av1")}
# Two classes move vertically: a horizontal-flip augmentation then leaves every label true.
DIRECTION_NAMES = {2: ["down", "up"], 4: ["left", "right", "up", "down"]}


def resolve_encoder(codec: str) -> str:
    """Name of an encoder available in PyAV's FFmpeg for `codec` ("h264", "mpeg4", "vp9" or "av1")."""
    import av

    if codec not in _CODEC_ALIASES:
        raise ValueError(f"codec must be one of {sorted(_CODEC_ALIASES)}, got {codec!r}")
    for name in _CODEC_ALIASES[codec]:
        if name not in av.codecs_available:
            continue
        try:
            av.codec.Codec(name, "w")
        except Exception:  # listed but not usable as an encoder in this build
            continue
        return name
    raise ValueError(f"no {codec} encoder in PyAV's FFmpeg (tried {_CODEC_ALIASES[codec]})")


def write_video(path: str | Path, frames: np.ndarray, *, codec: str = "h264", fps: int = 25,
                gop: int = 25, faststart: bool = False) -> Path:
    """Encode `frames` (T, H, W, 3) uint8 RGB into `path` (container from the suffix: .mp4, .avi, .mkv; .webm
    takes vp9).

    `gop` is the keyframe interval; scene-cut keyframes are disabled so the interval is exact.
    `faststart` puts the index (moov atom) at the front of an MP4, as streaming encoders do.
    """
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    encoder = resolve_encoder(codec)
    height, width = frames.shape[1:3]
    options = {"movflags": "+faststart"} if faststart else {}
    with av.open(str(path), mode="w", options=options) as container:
        stream = container.add_stream(encoder, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.gop_size = gop
        if encoder == "libx264":
            stream.options = {"g": str(gop), "keyint_min": str(gop), "sc_threshold": "0",
                              "preset": "veryfast"}
        else:
            stream.bit_rate = 4_000_000  # mpeg4's default bit rate smears small squares
        for array in frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def motion_frames(direction: float, *, frames: int, size: tuple[int, int], rng: np.random.Generator,
                  square: int | None = None, speed: float | None = None) -> np.ndarray:
    """Frames (T, H, W, 3) uint8 of a bright square moving at angle `direction` (radians) on a torus."""
    height, width = size
    square = square or max(4, min(height, width) // 6)
    speed = speed or max(1.0, min(height, width) / 64)
    start = rng.uniform(0, [height, width])
    velocity = speed * np.array([math.sin(direction), math.cos(direction)])  # (dy, dx); +y is down
    background = rng.integers(0, 48, size=(height, width, 3), dtype=np.uint8)
    video = np.empty((frames, height, width, 3), dtype=np.uint8)
    rows, cols = np.arange(height)[:, None], np.arange(width)[None, :]
    for t in range(frames):
        top, left = (start + t * velocity) % [height, width]
        inside = (((rows - int(top)) % height) < square) & (((cols - int(left)) % width) < square)
        video[t] = background
        video[t][inside] = 230
    return video


def make_motion_videos(root: str | Path, *, num_classes: int = 2, videos_per_class: int = 4,
                       frames: int = 32, size: tuple[int, int] = (64, 64), codec: str = "h264",
                       gop: int = 25, fps: int = 25, seed: int = 0, suffix: str = ".mp4",
                       speed: float | None = None) -> Path:
    """Write root/<class>/<video> videos whose classes differ only in direction of motion.

    Classes are directions evenly spaced on the circle (2 classes: down/up; 4: left/right/up/down
    — train those without horizontal flips (data.horizontal_flip=false), a flip swaps left and
    right; otherwise `dir000`, `dir045`, ... in degrees). `speed` is in pixels per frame (default
    side / 64, i.e. 1 px at 64x64). Keep speed × frame_interval well below half the frame side: on
    the torus a jump of half the side looks the same in both directions. Returns `root`.
    """
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    root = Path(root)
    rng = np.random.default_rng(seed)
    names = DIRECTION_NAMES.get(num_classes)
    angles = {"left": math.pi, "right": 0.0, "up": -math.pi / 2, "down": math.pi / 2}
    for index in range(num_classes):
        angle = angles[names[index]] if names else 2 * math.pi * index / num_classes
        name = names[index] if names else f"dir{round(math.degrees(angle)):03d}"
        for video in range(videos_per_class):
            array = motion_frames(angle, frames=frames, size=size, rng=rng, speed=speed)
            write_video(root / name / f"{name}_{video:03d}{suffix}", array, codec=codec, fps=fps, gop=gop)
    return root


def _idx_bytes(array: np.ndarray) -> bytes:
    # idx format: magic (0, 0, dtype 0x08 = ubyte, ndim), big-endian dims, raw data.
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def write_idx_dataset(root: str | Path, *, train: int = 64, test: int = 32, size: int = 28,
                      num_classes: int = 10, seed: int = 0, compress: bool = True) -> Path:
    """Write the four Fashion-MNIST idx files ({train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]).

    Images are noise plus a class-dependent bright bar, so a model can learn something. Returns root.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for prefix, count in (("train", train), ("t10k", test)):
        labels = rng.integers(0, num_classes, size=count, dtype=np.uint8)
        images = rng.integers(0, 64, size=(count, size, size), dtype=np.uint8)
        for image, label in zip(images, labels):
            row = int(label) * size // num_classes
            image[row:row + max(1, size // num_classes)] = 255
        for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
            name = f"{prefix}-{kind}-ubyte"
            data = _idx_bytes(array)
            if compress:
                (root / f"{name}.gz").write_bytes(gzip.compress(data))
            else:
                (root / name).write_bytes(data)
    return root


def write_cifar10_batches(root: str | Path, *, per_batch: int = 20, test: int = 20, seed: int = 0) -> Path:
    """Write CIFAR-10 python-format pickles (data_batch_1..5, test_batch, batches.meta). Returns root."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    files = [(f"data_batch_{i}", per_batch) for i in range(1, 6)] + [("test_batch", test)]
    for name, count in files:
        batch = {b"data": rng.integers(0, 256, size=(count, 3 * 32 * 32), dtype=np.uint8),
                 b"labels": rng.integers(0, 10, size=count).tolist(), b"batch_label": name.encode()}
        (root / name).write_bytes(pickle.dumps(batch))
    (root / "batches.meta").write_bytes(pickle.dumps({b"label_names": [n.encode() for n in names]}))
    return root
