"""The dataset report on a tree with known defects reports exactly those defects, and the table shows them."""

import shutil

import pytest

from datamodules import VideoDataConfig
from datamodules.check import render_table, summarize
from datamodules.scan import scan_dataset

# clip_len 4 every 4 frames spans 13 frames: the 16-frame clips fit, a 0.4 s (10-frame) segment does not.
CHECK = dict(clip_len=4, frame_interval=4, short_side=32, crop_size=32)


def write_defect_tree(root, clips):
    """Manifests over a tree with one of each defect; returns (train.csv, val.csv)."""
    files = {"a/good.mp4": clips["mp4"], "a/good.avi": clips["avi"], "b/wide.mp4": clips["wide_mp4"],
             "b/clip.webm": clips["webm"], "a/cut.mkv": clips["cut_mkv"]}
    for name, clip in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(clip, root / name)
    (root / "b" / "zero.mp4").write_bytes(b"")
    (root / "b" / "notes.mp4").write_text("a text file renamed as a video\n" * 10)
    (root / "train.csv").write_text("path,label,start,end\n"
                                    "a/good.mp4,a,,\n"
                                    "a/good.avi,a,,\n"
                                    "b/wide.mp4,b,,\n"
                                    "b/clip.webm,b,0.0,0.4\n"       # 10 frames: shorter than one clip
                                    "b/clip.webm,b,2.0,3.0\n"       # segment_past_end
                                    "a/good.mp4,a,0.5,0.2\n"        # segment_empty
                                    "a/gone.mp4,a,,\n"              # missing
                                    "b/zero.mp4,b,,\n"              # empty
                                    "b/notes.mp4,b,,\n"             # not_video
                                    "a/cut.mkv,a,,\n")              # length_mismatch
    (root / "val.csv").write_text("path,label\na/good.mp4,a\nb/wide.mp4,b\n")
    return root / "train.csv", root / "val.csv"


def defect_config(root, clips, **fields):
    train, val = write_defect_tree(root, clips)
    return VideoDataConfig(dataset="manifest", root=str(root), manifests={"train": str(train), "val": str(val)},
                           **(CHECK | fields))


def test_report_lists_exactly_the_defects_of_the_tree(tmp_path, clips):
    cfg = defect_config(tmp_path, clips)
    summary = summarize(scan_dataset(cfg), cfg)
    train, val = summary["splits"]["train"], summary["splits"]["val"]
    assert (summary["layout"], summary["files"], summary["samples"], summary["classes"]) == ("manifest", 8, 12, 2)
    assert train["bad_files"] == {"missing": 1, "empty": 1, "not_video": 1, "length_mismatch": 1}
    assert train["bad_segments"] == {"segment_empty": 1, "segment_past_end": 1}
    assert val["bad_files"] == {} and val["bad_segments"] == {}
    assert (train["videos"], train["samples"], train["usable_samples"], train["shorter_than_clip"]) == (8, 10, 4, 1)
    assert train["codecs"] == {"h264": 2, "mpeg4": 1, "vp9": 1} and train["fps"] == {"25": 4}
    assert train["resolution"] == {"32x32": 3, "48x32": 1}
    assert train["classes"]["per_class"] == {"a": 2, "b": 2} and train["classes"]["imbalance"] == 1.0
    assert train["duration_s"]["min"] == pytest.approx(0.64) and train["duration_s"]["max"] == pytest.approx(0.64)
    assert (val["videos"], val["usable_samples"], val["codecs"]) == (2, 2, {"h264": 2})
    bad = sorted((item["path"].rsplit("/", 1)[-1], item["reason"], item["segment"]) for item in summary["bad"])
    assert bad == [("clip.webm", "segment_past_end", [2.0, 3.0]), ("cut.mkv", "length_mismatch", None),
                   ("gone.mp4", "missing", None), ("good.mp4", "segment_empty", [0.5, 0.2]),
                   ("notes.mp4", "not_video", None), ("zero.mp4", "empty", None)]
    # budget: 5 bad samples (missing left out) of 12 > 5 %
    assert summary["bad_fraction"] == pytest.approx(5 / 12)
    assert summary["verdict"].startswith("training stops: 5 of 12 samples are bad")


def test_verdict_follows_the_policy(tmp_path, clips):
    cfg = defect_config(tmp_path, clips, max_bad_fraction=0.5)
    assert summarize(scan_dataset(cfg), cfg)["verdict"] == "ok"
    failing = cfg.model_copy(update={"bad_files": "fail"})
    assert summarize(scan_dataset(failing), failing)["verdict"].endswith("data.bad_files='fail')")
    unpadded = cfg.model_copy(update={"pad": "none"})
    assert summarize(scan_dataset(unpadded), unpadded)["verdict"].startswith(
        f"training stops: {tmp_path / 'b' / 'clip.webm'}: 10 frames, but a clip spans 13")


def test_table_shows_each_split_and_every_defect(tmp_path, clips):
    cfg = defect_config(tmp_path, clips)
    text = render_table(summarize(scan_dataset(cfg), cfg), width=250)
    lines = [line.replace("┃", "│") for line in text.splitlines()]  # the header row's rule is heavier
    rows = {line.split("│")[1].strip(): [cell.strip() for cell in line.split("│")[2:-1]]
            for line in lines if line.count("│") >= 3}
    assert rows[""] == ["train", "val"]
    assert rows["bad files"][0] == "missing: 1, empty: 1, not_video: 1, length_mismatch: 1" and rows["bad files"][1] == "0"
    assert rows["bad segments"][0] == "segment_empty: 1, segment_past_end: 1"
    assert rows["codecs"] == ["h264: 2, mpeg4: 1, vp9: 1", "h264: 2"]
    assert rows["shorter than one clip (13 frames)"] == ["1", "0"]
    assert "gone.mp4" in text and "verdict: training stops" in text


def test_probing_in_worker_processes_reports_the_same_as_inline(tmp_path, clips, monkeypatch):
    import datamodules.scan as scan

    cfg = defect_config(tmp_path, clips, probe_cache=False)
    inline = summarize(scan_dataset(cfg), cfg)
    monkeypatch.setattr(scan, "POOL_MIN_FILES", 1)
    monkeypatch.setattr(scan, "PROBE_PROCESSES", 2)
    done = []
    pooled = summarize(scan_dataset(cfg, progress=done.append), cfg)
    assert pooled == inline and sum(done) == 8
