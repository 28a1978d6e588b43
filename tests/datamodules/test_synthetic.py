"""The synthetic motion dataset: classes differ only in motion over time, never in a single frame."""

import numpy as np
import pytest
import torch

from datamodules import VideoDataConfig, build_datamodule
from datamodules.synthetic import make_motion_videos, motion_frames
from datamodules.video_backend import get_backend


def _square_centres(frames: np.ndarray) -> np.ndarray:
    """(T, 2) row/column of the bright square (first pixel of the bright block, torus-aware)."""
    return np.array([np.argwhere(frame[..., 0] > 200).min(axis=0) for frame in frames])


@pytest.mark.parametrize(("angle", "step"), [(0.0, (0, 1)), (np.pi, (0, -1)), (np.pi / 2, (1, 0))])
def test_square_moves_in_the_class_direction(angle, step):
    frames = motion_frames(angle, frames=6, size=(64, 64), rng=np.random.default_rng(0), speed=2.0)
    # The square wraps around the borders, so compare positions modulo the frame size.
    moves = np.diff(_square_centres(frames), axis=0) % 64
    expected = np.array(step) * 2 % 64
    assert np.all(np.abs(moves - expected) <= 1)


def test_single_frames_have_the_same_appearance_statistics_in_every_class():
    rng = np.random.default_rng(0)
    bright = {angle: [(motion_frames(angle, frames=4, size=(32, 32), rng=rng)[..., 0] > 200).sum(axis=(1, 2))
                      for _ in range(3)] for angle in (0.0, np.pi, np.pi / 2, -np.pi / 2)}
    counts = {int(c) for per_class in bright.values() for video in per_class for c in video}
    assert counts == {25}  # one 5x5 square in every frame of every class: no per-frame cue


def test_motion_videos_form_a_class_folder_tree_that_decodes(tmp_path):
    root = make_motion_videos(tmp_path / "motion", num_classes=4, videos_per_class=2, frames=12, size=(32, 48),
                              codec="mpeg4")
    assert sorted(p.name for p in root.iterdir()) == ["down", "left", "right", "up"]
    videos = sorted(root.rglob("*.mp4"))
    assert len(videos) == 8
    info = get_backend("pyav").probe(str(videos[0]))
    assert (info.num_frames, info.width, info.height) == (12, 48, 32)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_same_seed_gives_the_same_training_batches(motion_root, num_workers):
    cfg = VideoDataConfig(root=str(motion_root), clip_len=4, frame_interval=2, short_side=64, crop_size=48,
                          batch_size=3, num_workers=num_workers, split_fractions=(1.0, 0.0, 0.0))

    def first_epoch():
        torch.manual_seed(0)  # the main-process RNG (num_workers=0); Lightning's seed_everything does this
        dm = build_datamodule(cfg, seed=7)
        dm.setup("fit")
        return [batch for batch in dm.train_dataloader()]

    first, second = first_epoch(), first_epoch()
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, second))
