"""Bad video files: skipped and counted exactly under `skip` (with and without workers), named under `fail`."""

import shutil

import pytest
import torch

from datamodules import VideoDataConfig, build_datamodule
from datamodules.video import TooManyBadFilesError
from datamodules.video_backend import VideoReadError


def _dataset_with_bad_files(root, motion_root):
    """root/train/{down,up}: 6 good videos + zero-byte, truncated, text-as-mp4; root/val: 1 good."""
    shutil.copytree(motion_root, root / "train")
    (root / "val" / "down").mkdir(parents=True)
    shutil.copy(next((motion_root / "down").iterdir()), root / "val" / "down" / "good.mp4")
    (root / "train" / "down" / "zero.mp4").write_bytes(b"")
    good = (motion_root / "up" / "up_000.mp4").read_bytes()
    (root / "train" / "up" / "truncated.mp4").write_bytes(good[: len(good) // 2])
    (root / "train" / "up" / "notes.mp4").write_text("this is a text file renamed as mp4\n" * 20)
    return root


def _config(root, **overrides):
    fields = dict(root=str(root), clip_len=4, frame_interval=2, short_side=64, crop_size=56, batch_size=4,
                  max_bad_fraction=0.5)
    return VideoDataConfig(**(fields | overrides))


@pytest.mark.parametrize("num_workers", [0, 2])
def test_skip_counts_bad_files_exactly_and_yields_every_good_sample(tmp_path, motion_root, num_workers):
    dm = build_datamodule(_config(_dataset_with_bad_files(tmp_path, motion_root), num_workers=num_workers))
    dm.setup("fit")
    labels = torch.cat([y for _, y in dm.train_dataloader()])
    assert sorted(labels.tolist()) == [0, 0, 0, 1, 1, 1]  # all six good videos, nothing else
    quality = dm.data_quality()
    assert quality["files"] == 10 and quality["bad_files"] == 3 and quality["bad_fraction"] == pytest.approx(0.3)
    assert quality["bad/empty"] == 1 and quality["bad/truncated"] == 1 and quality["bad/not_video"] == 1
    assert quality["train/bad_files"] == 3 and quality["val/bad_files"] == 0
    reasons = {path.rsplit("/", 1)[-1]: item["reason"] for path, item in dm.bad_files().items()}
    assert reasons == {"zero.mp4": "empty", "truncated.mp4": "truncated", "notes.mp4": "not_video"}


def test_file_that_breaks_after_setup_is_skipped_and_counted_once_across_workers(tmp_path, motion_root):
    dm = build_datamodule(_config(_dataset_with_bad_files(tmp_path, motion_root), num_workers=2))
    dm.setup("fit")
    (tmp_path / "train" / "down" / "down_001.mp4").write_bytes(b"")  # goes bad mid-run
    for _ in range(2):  # two epochs: the file fails twice, is counted once
        labels = torch.cat([y for _, y in dm.train_dataloader()])
        assert sorted(labels.tolist()) == [0, 0, 1, 1, 1]
    quality = dm.data_quality()
    assert quality["bad_files"] == 4 and quality["bad/empty"] == 2


def test_fail_policy_raises_naming_the_file(tmp_path, motion_root):
    dm = build_datamodule(_config(_dataset_with_bad_files(tmp_path, motion_root), bad_files="fail"))
    with pytest.raises(VideoReadError, match=r"(zero|truncated|notes)\.mp4.*bad_files='fail'"):
        dm.setup("fit")


def test_too_many_bad_files_fail_the_run_listing_them(tmp_path, motion_root):
    dm = build_datamodule(_config(_dataset_with_bad_files(tmp_path, motion_root), max_bad_fraction=0.2))
    with pytest.raises(TooManyBadFilesError, match=r"3 of 10 samples are bad \(empty: 1, not_video: 1, truncated: 1\).*zero\.mp4: empty"):
        dm.setup("fit")


def test_batch_whose_every_item_broke_is_left_out(tmp_path, motion_root):
    root = _dataset_with_bad_files(tmp_path, motion_root)
    dm = build_datamodule(_config(root, batch_size=1, max_bad_fraction=0.6))
    dm.setup("fit")
    for video in (root / "train" / "down").glob("down_*.mp4"):
        video.write_bytes(b"")
    batches = list(dm.train_dataloader())
    assert all(batch is not None for batch in batches) and sorted(int(y) for _, y in batches) == [1, 1, 1]
    assert dm.data_quality()["bad_files"] == 6


def test_files_breaking_mid_run_beyond_the_allowed_fraction_stop_the_run(tmp_path, motion_root):
    root = _dataset_with_bad_files(tmp_path, motion_root)
    dm = build_datamodule(_config(root, max_bad_fraction=0.4, num_workers=2))
    dm.setup("fit")
    for video in (root / "train" / "down").glob("down_*.mp4"):
        video.write_bytes(b"")
    with pytest.raises(TooManyBadFilesError, match="exceed data.max_bad_fraction"):
        list(dm.train_dataloader())


def test_fail_policy_names_a_file_that_breaks_inside_a_worker(tmp_path, motion_root):
    shutil.copytree(motion_root, tmp_path / "clips")
    dm = build_datamodule(_config(tmp_path / "clips", num_workers=2, bad_files="fail",
                                  split_fractions=(1.0, 0.0, 0.0)))
    dm.setup("fit")
    (tmp_path / "clips" / "up" / "up_002.mp4").write_bytes(b"")
    with pytest.raises(VideoReadError, match=r"up_002\.mp4: empty.*bad_files='fail'"):
        list(dm.train_dataloader())
