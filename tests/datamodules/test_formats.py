"""The public datasets' own layouts, each written here file for file as it ships (with tiny PyAV clips):
right classes, splits and labels; the documented quirks; a listed video that is not on disk is counted,
not fatal; auto-detection picks each layout."""

import json
import shutil

import pytest
import torch

from datamodules import VideoDataConfig, build_datamodule
from datamodules.formats import resolve_format

SMALL = dict(clip_len=4, frame_interval=2, short_side=32, crop_size=32, batch_size=2)


def _place(clip, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(clip, path)


def _setup(**fields):
    dm = build_datamodule(VideoDataConfig(**(SMALL | fields)))
    dm.setup("fit")
    return dm


def _labels(dm, split):
    return sorted((r.path.rsplit("/", 1)[-1], r.label) for r in dm.datasets[split].records)


# ---- UCF101 -------------------------------------------------------------------------------------

UCF_CLASSES = ["ApplyEyeMakeup", "HandstandPushups", "YoYo"]
# The dataset's own spelling: the HandstandPushups folder holds v_HandStandPushups_* files.
UCF_STEMS = {"ApplyEyeMakeup": "ApplyEyeMakeup", "HandstandPushups": "HandStandPushups", "YoYo": "YoYo"}


def write_ucf101(base, clip, train_label_offset=1):
    """base/UCF-101/<Class>/v_<Class>_gXX_c01.avi and base/ucfTrainTestlist/ (CRLF, as shipped).
    Split 1: groups 8-9 train, group 1 test (plus YoYo g02 listed but not on disk); split 2: swapped."""
    def video(name, group):
        return f"{name}/v_{UCF_STEMS[name]}_g{group:02d}_c01.avi"

    lists = base / "ucfTrainTestlist"
    lists.mkdir(parents=True)
    (lists / "classInd.txt").write_bytes("".join(f"{i} {n}\r\n" for i, n in enumerate(UCF_CLASSES, 1)).encode())
    for split, train_groups, test_groups in ((1, (8, 9), (1,)), (2, (1,), (8, 9))):
        train = [f"{video(n, g)} {i + train_label_offset}" for i, n in enumerate(UCF_CLASSES) for g in train_groups]
        test = [video(n, g) for n in UCF_CLASSES for g in test_groups] + ([video("YoYo", 2)] if split == 1 else [])
        (lists / f"trainlist0{split}.txt").write_bytes(("\r\n".join(train) + "\r\n").encode())
        (lists / f"testlist0{split}.txt").write_bytes(("\r\n".join(test) + "\r\n").encode())
    for name in UCF_CLASSES:
        for group in (1, 8, 9):
            _place(clip, base / "UCF-101" / video(name, group))
    return base / "UCF-101"


def test_ucf101_one_based_train_labels_test_classes_from_folders_and_a_missing_video(tmp_path, clips):
    root = write_ucf101(tmp_path, clips["avi"])
    dm = _setup(root=str(root))
    assert dm.class_names == UCF_CLASSES and dm.scan.layout == "ucf101"
    assert _labels(dm, "train") == sorted((f"v_{UCF_STEMS[n]}_g{g:02d}_c01.avi", i)
                                          for i, n in enumerate(UCF_CLASSES) for g in (8, 9))
    assert _labels(dm, "test") == sorted((f"v_{UCF_STEMS[n]}_g01_c01.avi", i) for i, n in enumerate(UCF_CLASSES))
    quality = dm.data_quality()
    assert quality["bad/missing"] == 1 and quality["test/bad_files"] == 1 and quality["bad_files"] == 1
    assert quality["val/samples"] == 0  # the protocol has no validation split
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (2, 3, 4, 32, 32) and y.dtype == torch.int64


def test_ucf101_split_is_selectable(tmp_path, clips):
    dm = _setup(root=str(write_ucf101(tmp_path, clips["avi"])), dataset="ucf101", split=2)
    assert [name for name, _ in _labels(dm, "train")] == sorted(f"v_{UCF_STEMS[n]}_g01_c01.avi" for n in UCF_CLASSES)
    assert len(dm.datasets["test"]) == 6 and dm.data_quality()["bad_files"] == 0


def test_ucf101_label_that_disagrees_with_its_folder_names_the_line(tmp_path, clips):
    root = write_ucf101(tmp_path / "zero", clips["avi"], train_label_offset=0)  # converted to 0-based labels
    with pytest.raises(ValueError, match=r"trainlist01\.txt:1: label '0' is not a 1-based class index 1\.\.3"):
        _setup(root=str(root))
    root = write_ucf101(tmp_path / "shifted", clips["avi"], train_label_offset=2)
    with pytest.raises(ValueError, match=r"trainlist01\.txt:1: label 2 is 'HandstandPushups' \(1-based, classInd\.txt\) "
                                         r"but the video is in folder 'ApplyEyeMakeup'"):
        _setup(root=str(root))


# ---- HMDB51 -------------------------------------------------------------------------------------

HMDB_SPLITS = {  # class -> video -> split id in split 1 (1 train, 2 test, 0 unused)
    "brush_hair": {"April_09_brush_hair_u_nm_np1_ba_goo_0.avi": 1, "Blonde_being_brushed_f_nm_np2_ri_med_1.avi": 2,
                   "brushing_hair_2_brush_hair_h_nm_np2_le_goo_0.avi": 0},
    "fall_floor": {"Falling_off_a_chair_fall_floor_f_cm_np1_fr_bad_0.avi": 1,
                   "Parkour_fall_floor_f_cm_np1_ri_med_2.avi": 2, "THE_PROTECTOR_fall_floor_f_nm_np1_ba_med_5.avi": 0},
    "wave": {"wave_hi_wave_h_nm_np1_fr_goo_3.avi": 1, "Hi_wave_u_cm_np1_fr_med_0.avi": 2,
             "not_downloaded_wave_u_cm_np1_fr_med_9.avi": 1},
}


def write_hmdb51(base, clip):
    """base/hmdb51/<class>/<video>.avi and base/testTrainMulti_7030_splits/<class>_test_split{1,2}.txt;
    split 2 swaps train and test. The last wave video is listed (train) but not on disk."""
    splits = base / "testTrainMulti_7030_splits"
    splits.mkdir(parents=True)
    for name, videos in HMDB_SPLITS.items():
        swap = {0: 0, 1: 2, 2: 1}
        for split, ids in ((1, videos), (2, {v: swap[i] for v, i in videos.items()})):
            (splits / f"{name}_test_split{split}.txt").write_text("".join(f"{v} {i} \n" for v, i in ids.items()))
        for video in videos:
            if not video.startswith("not_downloaded"):
                _place(clip, base / "hmdb51" / name / video)
    return base / "hmdb51"


def test_hmdb51_ids_one_train_two_test_zero_unused_and_a_missing_video(tmp_path, clips):
    dm = _setup(root=str(write_hmdb51(tmp_path, clips["avi"])))
    assert dm.class_names == ["brush_hair", "fall_floor", "wave"] and dm.scan.layout == "hmdb51"
    expect = {split: sorted((video, label) for label, videos in enumerate(HMDB_SPLITS.values())
                            for video, i in videos.items() if i == wanted and not video.startswith("not_"))
              for split, wanted in (("train", 1), ("test", 2))}
    assert _labels(dm, "train") == expect["train"] and _labels(dm, "test") == expect["test"]
    quality = dm.data_quality()
    assert quality["files"] == 7  # the three videos marked 0 are not part of split 1 at all
    assert quality["bad/missing"] == 1 and quality["train/bad_files"] == 1


def test_hmdb51_split_two_swaps_the_roles(tmp_path, clips):
    dm = _setup(root=str(write_hmdb51(tmp_path, clips["avi"])), dataset="hmdb51", split=2)
    assert {name for name, _ in _labels(dm, "test")} == {v for videos in HMDB_SPLITS.values()
                                                         for v, i in videos.items() if i == 1 and "not_" not in v}


# ---- Kinetics -----------------------------------------------------------------------------------

KINETICS_ROWS = [  # label, youtube_id, time_start, time_end, split, is_cc, where the downloader put it
    ("air drumming", "--nQbRBEz2s", 104, 114, "train", 0, "train/air drumming"),
    ("air drumming", "-VtLx-mcPds", 14, 24, "train", 0, "train/air drumming"),
    ("zumba", "0_Ao3ql4Cbs", 0, 10, "train", 0, "train/zumba"),
    ("zumba", "gone-from-YT", 30, 40, "train", 0, None),  # not downloadable any more
    ("air drumming", "A3tHP2J_Yp4", 7, 17, "val", 0, "val"),
    ("zumba", "3tz4XHc9mMo", 120, 130, "val", 0, "val"),
]


def write_kinetics(base, clip):
    """base/kinetics400/annotations/{train,validate,test}.csv (the official columns; test.csv without labels,
    as Kinetics-400 first shipped it) and clips named <id>_<start:06d>_<end:06d>.mp4 per label (train) or flat (val)."""
    root = base / "kinetics400"
    (root / "annotations").mkdir(parents=True)
    for file_name, split in (("train.csv", "train"), ("validate.csv", "val")):
        rows = [f'"{label}",{vid},{start},{end},{s},{cc}' for label, vid, start, end, s, cc, _ in KINETICS_ROWS
                if s == split]
        (root / "annotations" / file_name).write_text("label,youtube_id,time_start,time_end,split,is_cc\n"
                                                      + "\n".join(rows) + "\n")
    (root / "annotations" / "test.csv").write_text("youtube_id,time_start,time_end,split\nabc,1,11,test\n")
    for _, vid, start, end, _, _, folder in KINETICS_ROWS:
        if folder:
            _place(clip, root / folder / f"{vid}_{start:06d}_{end:06d}.mp4")
    return root


def test_kinetics_csv_maps_to_downloaded_clip_names_and_counts_missing_videos(tmp_path, clips):
    dm = _setup(root=str(write_kinetics(tmp_path, clips["mp4"])))  # default max_bad_fraction: missing is not fatal
    assert dm.class_names == ["air drumming", "zumba"] and dm.scan.layout == "kinetics"
    assert _labels(dm, "train") == [("--nQbRBEz2s_000104_000114.mp4", 0), ("-VtLx-mcPds_000014_000024.mp4", 0),
                                    ("0_Ao3ql4Cbs_000000_000010.mp4", 1)]
    assert _labels(dm, "val") == [("3tz4XHc9mMo_000120_000130.mp4", 1), ("A3tHP2J_Yp4_000007_000017.mp4", 0)]
    assert _labels(dm, "test") == _labels(dm, "val")  # test.csv has no labels: test on the validation split
    quality = dm.data_quality()
    assert quality["bad/missing"] == 1 and quality["train/bad_samples"] == 1 and quality["bad_fraction"] == 0.0
    missing = next(iter(dm.bad_files()))
    assert missing.endswith("gone-from-YT_000030_000040.mp4")


# ---- Something-Something v2 ----------------------------------------------------------------------

SSV2_LABELS = {"Holding something next to something": "0", "Pushing something from left to right": "1",
               "Putting something on a surface": "2"}
SSV2_ITEMS = {
    "train": [("78687", "holding potato next to vicks vaporub bottle", "Holding [something] next to [something]"),
              ("42326", "pushing a pen from left to right", "Pushing [something] from left to right"),
              ("100904", "putting a cup on a surface", "Putting [something] on a surface"),
              ("31337", "putting a box on a surface", "Putting [something] on a surface")],  # not on disk
    "validation": [("74225", "pushing a mug from left to right", "Pushing [something] from left to right"),
                   ("116154", "holding keys next to a phone", "Holding [something] next to [something]")],
}


def write_ssv2(base, clip):
    """base/20bn-something-something-v2/<id>.webm and base/labels/{labels,train,validation,test}.json."""
    labels = base / "labels"
    labels.mkdir(parents=True)
    (labels / "labels.json").write_text(json.dumps(SSV2_LABELS))
    for split, items in SSV2_ITEMS.items():
        (labels / f"{split}.json").write_text(json.dumps(
            [{"id": i, "label": text, "template": template, "placeholders": ["x"]} for i, text, template in items]))
        for i, _, _ in items:
            if i != "31337":
                _place(clip, base / "20bn-something-something-v2" / f"{i}.webm")
    (labels / "test.json").write_text(json.dumps([{"id": "1420"}]))
    return base / "20bn-something-something-v2"


def test_ssv2_templates_with_brackets_map_to_label_indices_and_missing_videos_count(tmp_path, clips):
    dm = _setup(root=str(write_ssv2(tmp_path, clips["webm"])))
    assert dm.class_names == list(SSV2_LABELS) and dm.scan.layout == "ssv2"
    assert _labels(dm, "train") == [("100904.webm", 2), ("42326.webm", 1), ("78687.webm", 0)]
    assert _labels(dm, "val") == [("116154.webm", 0), ("74225.webm", 1)]
    assert _labels(dm, "test") == _labels(dm, "val")
    assert dm.data_quality()["bad/missing"] == 1 and next(iter(dm.bad_files())).endswith("31337.webm")


def test_ssv2_template_that_is_no_class_names_item_and_template(tmp_path, clips):
    root = write_ssv2(tmp_path, clips["webm"])
    train = tmp_path / "labels" / "train.json"
    train.write_text(json.dumps([{"id": "1", "label": "x", "template": "Spinning [something] around"}]))
    with pytest.raises(ValueError, match=r"train\.json: item 0 \(id 1\): template 'Spinning \[something\] around'"):
        _setup(root=str(root))


# ---- detection ----------------------------------------------------------------------------------

@pytest.mark.parametrize("layout,write,clip", [("ucf101", write_ucf101, "avi"), ("hmdb51", write_hmdb51, "avi"),
                                               ("kinetics", write_kinetics, "mp4"), ("ssv2", write_ssv2, "webm")])
def test_auto_detects_each_layout_and_an_explicit_one_wins(tmp_path, clips, motion_root, layout, write, clip):
    root = write(tmp_path, clips[clip])
    assert resolve_format(VideoDataConfig(root=str(root))) == layout
    assert resolve_format(VideoDataConfig(root=str(root), dataset="folder")) == "folder"
    assert resolve_format(VideoDataConfig(root=str(motion_root))) == "folder"


def test_annotations_elsewhere_are_found_through_data_annotations(tmp_path, clips):
    write_ucf101(tmp_path / "a", clips["avi"])
    shutil.move(tmp_path / "a" / "ucfTrainTestlist", tmp_path / "lists")
    root = str(tmp_path / "a" / "UCF-101")
    assert resolve_format(VideoDataConfig(root=root)) == "folder"
    with pytest.raises(ValueError, match=r"dataset 'ucf101': no classInd\.txt in .*set data\.annotations"):
        _setup(root=root, dataset="ucf101")
    assert _setup(root=root, annotations=str(tmp_path / "lists")).class_names == UCF_CLASSES


def test_settings_a_layout_does_not_take_are_refused(tmp_path, clips):
    root = str(write_kinetics(tmp_path, clips["mp4"]))
    with pytest.raises(ValueError, match=r"data\.split=2: dataset 'kinetics' has one official split"):
        _setup(root=root, split=2)
    with pytest.raises(ValueError, match=r"data\.class_names: dataset 'kinetics' takes its classes"):
        _setup(root=root, class_names=["zumba"])
