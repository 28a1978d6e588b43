"""Bad segments are bad samples: a manifest segment with no decodable frame, and a file that decodes less than its
header promises, are skipped and counted under `skip`, and named (file, segment, decodable length) under `fail`;
data.max_bad_fraction counts samples."""

import shutil

import pytest

from datamodules import VideoDataConfig, build_datamodule
from datamodules.video import TooManyBadFilesError
from datamodules.video_backend import VideoReadError

SMALL = dict(clip_len=4, frame_interval=2, short_side=32, crop_size=32, batch_size=2)


def _manifest(tmp_path, lines, **fields):
    (tmp_path / "train.tsv").write_text("".join("\t".join(map(str, line)) + "\n" for line in lines))
    return build_datamodule(VideoDataConfig(dataset="manifest", manifests={"train": str(tmp_path / "train.tsv")},
                                            **(SMALL | fields)))


def _defects(tmp_path, clips):
    """good.mp4: 16 frames (0.64 s at 25 fps); cut.mkv: header 120 frames, about 32 decodable."""
    good, cut = tmp_path / "good.mp4", tmp_path / "cut.mkv"
    shutil.copy(clips["mp4"], good)
    shutil.copy(clips["cut_mkv"], cut)
    return [(good, "a", 2.0, 3.0),    # starts past the decodable end
            (good, "a", 0.0, 0.3),
            (good, "b", 0.2, 0.6),
            (good, "b", 0.5, 0.4),    # ends before it starts
            (cut, "b", 2.0, 3.0)]     # within the header's 4.8 s, past the ~1.3 s that decode


def test_segment_past_the_decodable_end_is_skipped_and_counted(tmp_path, clips):
    dm = _manifest(tmp_path, _defects(tmp_path, clips), max_bad_fraction=0.8)
    dm.setup("fit")
    windows = sorted((r.first, r.num_frames) for r in dm.datasets["train"].records)
    assert windows == [(0, 8), (5, 10)]  # 0.0-0.3 s and 0.2-0.6 s at 25 fps
    quality = dm.data_quality()
    assert (quality["bad/segment_past_end"], quality["bad/segment_empty"], quality["bad/length_mismatch"]) == (1, 1, 1)
    assert (quality["samples"], quality["bad_samples"], quality["bad_segments"]) == (5, 3, 2)
    assert (quality["files"], quality["bad_files"]) == (2, 1) and quality["bad_fraction"] == pytest.approx(0.6)
    assert len(list(dm.train_dataloader())) == 1  # the two good segments, one batch


def test_fail_names_the_file_the_segment_and_the_decodable_length(tmp_path, clips):
    dm = _manifest(tmp_path, _defects(tmp_path, clips), bad_files="fail")
    with pytest.raises(VideoReadError, match=r"good\.mp4: segment_past_end \(segment 2-3 s, starts at frame 50 "
                                             r"\(2 s at 25 fps\) but 16 frames decode, header 16; "
                                             r"data\.bad_files='fail'\)"):
        dm.setup("fit")


def test_fail_names_a_file_that_decodes_less_than_its_header(tmp_path, clips):
    lines = _defects(tmp_path, clips)[-1:]
    with pytest.raises(VideoReadError, match=r"cut\.mkv: length_mismatch \(header says 120 frames, \d+ decodable; "
                                             r"data\.bad_files='fail'\)"):
        _manifest(tmp_path, lines, bad_files="fail").setup("fit")


def test_max_bad_fraction_counts_samples_not_files(tmp_path, clips):
    long_video, broken = tmp_path / "long.mp4", tmp_path / "broken.mp4"
    shutil.copy(clips["mp4"], long_video)
    broken.write_bytes(b"")
    lines = [(broken, "a", i * 0.05, i * 0.05 + 0.1) for i in range(8)] + [(long_video, "b", 0.0, 0.3)] * 2
    with pytest.raises(TooManyBadFilesError, match=r"8 of 10 samples are bad \(empty: 8\).*broken\.mp4: empty"):
        _manifest(tmp_path, lines, max_bad_fraction=0.5).setup("fit")  # 1 of 2 files would pass 0.5
    dm = _manifest(tmp_path, lines, max_bad_fraction=0.8)
    dm.setup("fit")
    assert dm.data_quality()["bad_fraction"] == pytest.approx(0.8) and len(dm.datasets["train"]) == 2


def test_missing_manifest_file_is_counted_not_fatal_but_an_all_missing_split_is_an_error(tmp_path, clips):
    present = tmp_path / "present.mp4"
    shutil.copy(clips["mp4"], present)
    dm = _manifest(tmp_path, [(present, "a"), (tmp_path / "absent.mp4", "b")])  # default max_bad_fraction 0.05
    dm.setup("fit")
    assert dm.data_quality()["bad/missing"] == 1 and dm.class_names == ["a", "b"] and len(dm.datasets["train"]) == 1
    with pytest.raises(ValueError, match=r"all 2 videos of the train split are missing.*is data\.root right"):
        _manifest(tmp_path, [(tmp_path / "x.mp4", "a"), (tmp_path / "y.mp4", "b")]).setup("fit")
