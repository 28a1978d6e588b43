"""Manifests (CSV/TSV, the Kinetics 'path label' text), class-folder splits, and configuration errors."""

import shutil

import pytest
import torch

from datamodules import VideoDataConfig, build_datamodule
from datamodules.manifest import folder_splits, read_manifest


def test_csv_manifest_with_header_resolves_paths_and_segments(tmp_path):
    (tmp_path / "m.csv").write_text("path,label,start,end\nvids/a.mp4,walk,0.5,1.5\n/abs/b.mp4,run,,\n")
    rows = read_manifest(tmp_path / "m.csv")
    assert [(r.path, r.label, r.start, r.end) for r in rows] == [
        (str(tmp_path / "vids" / "a.mp4"), "walk", 0.5, 1.5), ("/abs/b.mp4", "run", None, None)]


def test_kinetics_text_manifest_resolves_against_root(tmp_path):
    (tmp_path / "train.txt").write_text("# comment\nabseiling/x.mp4 0\n\nzumba/y.mp4 399\n")
    rows = read_manifest(tmp_path / "train.txt", root="/data/k400")
    assert [(r.path, r.label) for r in rows] == [("/data/k400/abseiling/x.mp4", "0"), ("/data/k400/zumba/y.mp4", "399")]


def _manifest_dataset(tmp_path, motion_root, val_line):
    videos = sorted(motion_root.rglob("*.mp4"))
    train = "".join(f"{v}\t{v.parent.name}\t0.0\t0.5\n" for v in videos)
    (tmp_path / "train.tsv").write_text(train)
    (tmp_path / "val.tsv").write_text(val_line)
    return VideoDataConfig(dataset="manifest", manifests={"train": str(tmp_path / "train.tsv"),
                           "val": str(tmp_path / "val.tsv")}, clip_len=4, frame_interval=3, short_side=64,
                           crop_size=56, batch_size=3, pad="none")


def test_manifest_datamodule_trains_on_the_labelled_segments(tmp_path, motion_root):
    video = next((motion_root / "up").iterdir())
    dm = build_datamodule(_manifest_dataset(tmp_path, motion_root, f"{video}\tup\n"))
    dm.setup("fit")
    assert dm.class_names == ["down", "up"] and dm.num_classes == 2
    record = dm.datasets["train"].records[0]
    assert (record.first, record.num_frames) == (0, 12)  # 0.0-0.5 s at 25 fps, of 16 frames
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (3, 3, 4, 56, 56) and y.dtype == torch.int64
    assert len(dm.datasets["val"]) == 1


def test_unknown_label_names_the_manifest_line(tmp_path, motion_root):
    video = next((motion_root / "up").iterdir())
    dm = build_datamodule(_manifest_dataset(tmp_path, motion_root, f"{video}\tup\n{video}\tjump\n"))
    with pytest.raises(ValueError, match=r"val\.tsv:2: unknown label 'jump'"):
        dm.setup("fit")


def test_clip_longer_than_video_without_padding_names_file_and_fields(tmp_path, motion_root):
    cfg = VideoDataConfig(root=str(motion_root), clip_len=8, frame_interval=4, short_side=64, crop_size=56,
                          pad="none")
    with pytest.raises(ValueError, match=r"\.mp4: 16 frames, but a clip spans 29.*data\.clip_len=8"):
        build_datamodule(cfg).setup("fit")


def test_missing_root_and_empty_class_folder_are_named(tmp_path, motion_root):
    with pytest.raises(ValueError, match="does not exist"):
        build_datamodule(VideoDataConfig(root=str(tmp_path / "nowhere"))).setup()
    shutil.copytree(motion_root, tmp_path / "tree")
    (tmp_path / "tree" / "empty").mkdir()
    with pytest.raises(ValueError, match=r"class folder .*tree/empty has no videos"):
        build_datamodule(VideoDataConfig(root=str(tmp_path / "tree"))).setup()


def test_seeded_folder_split_is_stratified_and_reproducible(motion_root):
    first, names = folder_splits(motion_root, [".mp4"], (0.34, 0.33, 0.33), seed=3)
    again, _ = folder_splits(motion_root, [".mp4"], (0.34, 0.33, 0.33), seed=3)
    other, _ = folder_splits(motion_root, [".mp4"], (0.34, 0.33, 0.33), seed=4)
    assert names == ["down", "up"] and first == again
    assert {split: sorted(e.label for e in entries) for split, entries in first.items()} == {
        "train": [0, 1], "val": [0, 1], "test": [0, 1]}
    assert first != other
