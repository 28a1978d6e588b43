"""Fault 8: a 200-video manifest with 10 % of its files broken in six different ways.

Training (a real `attnlab train` process) must skip exactly those 20, count each under its kind in
MLflow, and train on every one of the 180 good ones. The broken files: missing, a directory named
`.mp4`, empty, truncated (an MP4 cut before its index), not a video (text saved as .mp4), and no
read permission. Root reads any file regardless of its mode, so when the test runs as root the
training process gives up CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH first (from its bounding set,
before exec), like an ordinary user.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess

import pytest

from tests.faults.conftest import attnlab, child_env, report_lost, write_config
from training.tracking import RUN_NAME_TAG, client, default_tracking_uri, experiment_id

pytestmark = pytest.mark.slow
GOOD, BROKEN = 180, {"missing": 4, "not_a_file": 3, "empty": 3, "truncated": 4, "not_video": 3,
                     "permission_denied": 3}
PR_CAPBSET_DROP, CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH = 24, 1, 2


def _as_an_ordinary_reader() -> None:
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    for capability in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH):
        if libc.prctl(PR_CAPBSET_DROP, capability, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def _break(path, kind: str, good: bytes) -> None:
    if kind == "not_a_file":
        path.mkdir()
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        path.write_bytes(good[: len(good) // 3])
    elif kind == "not_video":
        path.write_text("<html><body>404: this video was removed</body></html>\n" * 20)
    elif kind == "permission_denied":
        path.write_bytes(good)
        path.chmod(0o000)


def test_a_200_video_manifest_with_10_percent_broken_files_counts_each_kind_exactly(fault_home, tmp_path):
    from datamodules.synthetic import make_motion_videos

    originals = make_motion_videos(tmp_path / "originals", num_classes=2, videos_per_class=4, frames=16,
                                   size=(32, 32))
    sources = sorted(originals.glob("*/*.mp4"))
    root = tmp_path / "videos"
    rows, index = [], 0
    for position in range(GOOD):
        source = sources[position % len(sources)]
        target = root / source.parent.name / f"good_{position:03d}.mp4"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, target)
        rows.append(f"{target.relative_to(root)},{source.parent.name}")
    for kind, count in BROKEN.items():
        for _ in range(count):
            source = sources[index % len(sources)]
            target = root / source.parent.name / f"{kind}_{index:03d}.mp4"
            index += 1
            if kind != "missing":
                _break(target, kind, source.read_bytes())
            rows.append(f"{target.relative_to(root)},{source.parent.name}")
    (root / "train.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    (root / "val.csv").write_text("path,label\n" + "\n".join(f"{s},{s.parent.name}" for s in sources) + "\n")
    config = {
        "name": "bad-data",
        "data": {"kind": "video", "dataset": "manifest", "root": str(root),
                 "manifests": {"train": str(root / "train.csv"), "val": str(root / "val.csv"),
                               "test": str(root / "val.csv")},
                 "clip_len": 4, "frame_interval": 2, "short_side": 32, "crop_size": 32, "test_clips": 1,
                 "batch_size": 30, "num_workers": 0, "max_bad_fraction": 0.15},
        "model": {"family": "nonlocal", "backbone": "c2d_resnet_tiny", "placement": "nl-1"},
        "trainer": {"accelerator": "cpu", "devices": 1, "max_epochs": 1, "limit_val_batches": 1,
                    "limit_test_batches": 1, "log_every_n_steps": 1, "enable_progress_bar": False},
        "tracking": {"log_model": False, "figures": False},
    }
    path = write_config(tmp_path / "run.yaml", config)

    try:
        finished = subprocess.run(attnlab("train", "--config", str(path)), capture_output=True, text=True,
                                  timeout=900, env=child_env(),
                                  preexec_fn=_as_an_ordinary_reader if os.geteuid() == 0 else None)
    finally:
        for denied in root.glob("*/permission_denied_*.mp4"):
            denied.chmod(0o644)
    output = finished.stdout + finished.stderr
    assert finished.returncode == 0, output[-5000:]

    uri = default_tracking_uri()
    mlflow = client(uri)
    (run,) = mlflow.search_runs([experiment_id(uri, "attnlab", create=False)], f"tags.`{RUN_NAME_TAG}` = 'bad-data'")
    metrics = run.data.metrics
    counted = {kind: metrics.get(f"data/bad/{kind}") for kind in BROKEN}
    steps = {metric.step for metric in mlflow.get_metric_history(run.info.run_id, "train/loss")}
    report_lost("200-video manifest, 10 % broken six ways", {
        "kinds miscounted (kind: counted, made)": {kind: (counted[kind], made) for kind, made in BROKEN.items()
                                                   if counted[kind] != made},
        "good videos not trained on": GOOD - (metrics["data/train/samples"] - metrics["data/train/bad_samples"]),
        "bad files not counted": len(rows) - GOOD - metrics["data/train/bad_files"],
        "other kinds counted": {key: value for key, value in metrics.items() if key.startswith("data/bad/")
                                and key.removeprefix("data/bad/") not in BROKEN and value},
    })
    assert metrics["data/train/samples"] == GOOD + sum(BROKEN.values()) == 200
    assert len(steps) == GOOD // 30  # six full batches of good clips: every good video once

