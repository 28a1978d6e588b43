"""Clip sampling: the papers' dense clips, uniform multi-clip testing, padding policies."""

import numpy as np
import pytest
import torch

from datamodules.sampling import ClipTooLongError, clip_at, clip_span, train_clip, uniform_clips


def test_clip_span_counts_first_to_last_frame():
    assert clip_span(32, 2) == 63  # Non-local's 32 frames at stride 2
    assert clip_span(8, 8) == 57


def test_train_clip_has_clip_len_frames_at_the_interval_and_random_starts():
    generator = torch.Generator().manual_seed(0)
    starts = set()
    for _ in range(50):
        clip = train_clip(100, 8, 4, "none", generator)
        assert len(clip) == 8 and np.all(np.diff(clip) == 4)
        assert 0 <= clip[0] and clip[-1] < 100
        starts.add(int(clip[0]))
    assert len(starts) > 10


def test_uniform_clips_cover_the_video_from_first_to_last_frame():
    clips = uniform_clips(100, 4, 2, 10, "none")
    assert clips.shape == (10, 4)
    assert clips[0, 0] == 0 and clips[-1, -1] == 99
    assert np.all(np.abs(np.diff(clips[:, 0]) - 93 / 9) <= 1)


def test_single_eval_clip_is_centred():
    assert uniform_clips(21, 3, 5, 1, "none")[0].tolist() == [5, 10, 15]


@pytest.mark.parametrize(("pad", "expected"), [("loop", [0, 3, 6, 1]), ("repeat_last", [0, 3, 6, 7])])
def test_short_video_is_padded_by_policy(pad, expected):
    assert clip_at(0, 8, 4, 3, pad).tolist() == expected


def test_short_video_without_padding_names_the_fields():
    with pytest.raises(ClipTooLongError, match="clip_len=4.*frame_interval=3.*data.pad"):
        clip_at(0, 8, 4, 3, "none")
