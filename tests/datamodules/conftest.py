"""Small generated videos shared by the datamodule tests (generated once per session: encoding costs)."""

from pathlib import Path

import numpy as np
import pytest

from datamodules.synthetic import make_motion_videos, motion_frames, write_video

INTENSITY_STEP = 8  # frame i is filled with grey level i * 8, so a decoded frame tells its index


def index_frames(count: int, size: tuple[int, int] = (64, 64)) -> np.ndarray:
    """(count, H, W, 3) uint8 frames whose uniform grey level encodes the frame index."""
    return np.stack([np.full((*size, 3), i * INTENSITY_STEP, np.uint8) for i in range(count)])


def decoded_index(frames: np.ndarray) -> np.ndarray:
    """Frame indices from decoded (N, H, W, 3) frames (codec error is far below half a step)."""
    return np.round(frames.reshape(len(frames), -1).mean(axis=1) / INTENSITY_STEP).astype(int)


@pytest.fixture
def frame_index():
    """The decoder of the index encoding, for tests (conftest helpers are not importable by name)."""
    return decoded_index


@pytest.fixture(scope="session")
def index_videos(tmp_path_factory) -> dict[str, Path]:
    """32-frame 64x64 index-encoded videos per codec, keyframe every 8 frames."""
    root = tmp_path_factory.mktemp("index-videos")
    return {codec: write_video(root / f"index_{codec}.mp4", index_frames(32), codec=codec, gop=8)
            for codec in ("h264", "mpeg4")}


@pytest.fixture(scope="session")
def motion_root(tmp_path_factory) -> Path:
    """Class-folder tree: 2 classes (down/up) × 3 videos, 16 frames of 64x64 H.264."""
    return make_motion_videos(tmp_path_factory.mktemp("motion"), num_classes=2, videos_per_class=3, frames=16)


@pytest.fixture(scope="session")
def clips(tmp_path_factory) -> dict[str, Path]:
    """One tiny clip per container the dataset layouts use (tests copy them into each layout):
    mp4 (H.264, 16 frames 32x32), avi (MPEG-4 part 2, as UCF101/HMDB51), webm (VP9, as SSv2), a 48x32
    mp4, and cut_mkv: 120 frames promised by its header, the file cut after ~32 (a partial download)."""
    root = tmp_path_factory.mktemp("clips")
    rng = np.random.default_rng(0)
    frames = motion_frames(0.0, frames=16, size=(32, 32), rng=rng)
    made = {"mp4": write_video(root / "clip.mp4", frames),
            "avi": write_video(root / "clip.avi", frames, codec="mpeg4"),
            "webm": write_video(root / "clip.webm", frames, codec="vp9"),
            "wide_mp4": write_video(root / "wide.mp4", motion_frames(0.0, frames=16, size=(32, 48), rng=rng))}
    whole = write_video(root / "whole.mkv", motion_frames(0.0, frames=120, size=(32, 32), rng=rng)).read_bytes()
    made["cut_mkv"] = root / "cut.mkv"
    made["cut_mkv"].write_bytes(whole[: len(whole) * 2 // 5])
    return made
