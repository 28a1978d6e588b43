"""Real decoding of generated H.264 and MPEG-4 files through both backends and the DataModule.

Every frame's grey level encodes its index (conftest), so a decoded clip tells exactly which frames
were sampled.
"""

import shutil

import numpy as np
import pytest
import torch

from datamodules import VideoDataConfig, build_datamodule
from datamodules.video_backend import VideoInfo, get_backend

CODECS = ["h264", "mpeg4"]
BACKENDS = ["decord", "pyav"]


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_backend_reads_requested_frames_resized_on_decode(backend, codec, index_videos, frame_index):
    reader = get_backend(backend)
    path = str(index_videos[codec])
    assert reader.probe(path) == VideoInfo(num_frames=32, fps=25.0, width=64, height=64, codec=codec, header_frames=32)
    wanted = [30, 2, 9, 9, 17, 0, 31]  # unsorted, repeated, across several keyframe intervals
    frames = reader.read(path, wanted, (48, 40))
    assert frames.shape == (7, 48, 40, 3) and frames.dtype == np.uint8
    assert frame_index(frames).tolist() == wanted


def _index_tree(tmp_path, video):
    for split in ("train", "val", "test"):
        for name in ("a", "b"):
            (tmp_path / split / name).mkdir(parents=True)
            shutil.copy(video, tmp_path / split / name / "clip.mp4")
    return tmp_path


def _indices_of(x: torch.Tensor) -> np.ndarray:
    """Frame indices of normalised clips (mean 0, std 1 => x = grey / 255): x (..., C, T, H, W)."""
    grey = x.mean(dim=(-4, -2, -1)) * 255  # (..., T)
    return np.round(grey.numpy() / 8).astype(int)


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_datamodule_samples_clip_len_frames_at_frame_interval(backend, codec, index_videos, tmp_path):
    root = _index_tree(tmp_path, index_videos[codec])
    cfg = VideoDataConfig(root=str(root), backend=backend, clip_len=4, frame_interval=3, test_clips=5,
                          test_crops=3, short_side=64, crop_size=56, batch_size=2, mean=(0, 0, 0), std=(1, 1, 1))
    dm = build_datamodule(cfg, seed=0)
    dm.setup("fit")
    assert dm.num_classes == 2 and dm.class_names == ["a", "b"] and dm.sample_shape == (3, 4, 56, 56)

    starts = set()
    for _ in range(4):
        x, y = next(iter(dm.train_dataloader()))
        assert x.shape == (2, 3, 4, 56, 56) and x.dtype == torch.float32 and y.dtype == torch.int64
        for clip in _indices_of(x):
            assert np.all(np.diff(clip) == 3) and 0 <= clip[0] and clip[-1] <= 31
            starts.add(int(clip[0]))
    assert len(starts) > 1  # random start for training

    x, _ = next(iter(dm.val_dataloader()))
    assert x.shape == (2, 3, 4, 56, 56)
    assert _indices_of(x)[0].tolist() == [11, 14, 17, 20]  # one centred clip: (32 - 10) // 2 = 11

    x, y = next(iter(dm.test_dataloader()))
    assert x.shape == (2, 15, 3, 4, 56, 56) and y.tolist() == [0, 1]  # K = 5 clips x 3 crops
    clips = _indices_of(x[0])[::3]  # crops of one clip share frames
    assert clips[:, 0].tolist() == [0, 6, 11, 16, 22]  # starts spread uniformly over 0..22
    assert clips[-1, -1] == 31 and np.all(np.diff(clips, axis=1) == 3)


@pytest.mark.parametrize("codec", ["h264", "mpeg4"])
def test_pyav_resize_equals_pyav_own_frame_conversion(codec, index_videos):
    # The backend reuses one single-threaded swscale context; its pixels must be PyAV's per-frame ones.
    import av

    wanted = [3, 9, 20]
    ours = get_backend("pyav").read(str(index_videos[codec]), wanted, (48, 40))
    with av.open(str(index_videos[codec])) as container:
        frames = [frame.to_ndarray(format="rgb24", width=40, height=48)
                  for index, frame in enumerate(container.decode(video=0)) if index in wanted]
    assert ours.shape == (3, 48, 40, 3)
    np.testing.assert_array_equal(ours, np.stack(frames))


def test_pyav_backend_reads_in_forked_workers_after_the_parent_read(index_videos):
    # The parent's swscale context is per process: forked DataLoader workers build their own
    # (an inherited thread pool would hang them).
    backend = get_backend("pyav")
    path = str(index_videos["h264"])
    expected = backend.read(path, [1, 2], (32, 32))
    loader = torch.utils.data.DataLoader([path] * 4, batch_size=1, num_workers=2, timeout=60,
                                         multiprocessing_context="fork",
                                         collate_fn=lambda paths: backend.read(paths[0], [1, 2], (32, 32)))
    for clip in loader:
        np.testing.assert_array_equal(clip, expected)


def test_probe_reports_codec_and_decord_refuses_a_codec_it_cannot_open_by_name(tmp_path):
    from datamodules.synthetic import motion_frames, write_video
    from datamodules.video_backend import VideoReadError

    frames = motion_frames(0.0, frames=8, size=(64, 64), rng=np.random.default_rng(0))
    path = str(write_video(tmp_path / "clip.mp4", frames, codec="av1"))
    assert get_backend("pyav").probe(path) == VideoInfo(8, 25.0, 64, 64, codec="av1", header_frames=8)
    with pytest.raises(VideoReadError, match=r"clip\.mp4: unreadable \(decord cannot open this av1 file"):
        get_backend("decord").probe(path)
