"""Probe cache: a second setup probes nothing, a rewritten file is probed again, and the cache can be off."""

import shutil
import sqlite3

import pytest

from datamodules import VideoDataConfig, build_datamodule
from datamodules.probe_cache import default_cache_path
from datamodules.synthetic import make_motion_videos
from datamodules.video_backend import BACKENDS


@pytest.fixture
def probe_calls(monkeypatch):
    """Paths the real backends were asked to probe (the real probe still runs)."""
    calls = []
    for backend_class in BACKENDS.values():
        real_probe = backend_class.probe

        def counting_probe(self, path, real_probe=real_probe):
            calls.append(path)
            return real_probe(self, path)
        monkeypatch.setattr(backend_class, "probe", counting_probe)
    return calls


def _setup(root, **overrides):
    fields = dict(root=str(root), clip_len=4, frame_interval=2, short_side=64, crop_size=56, batch_size=2,
                  split_fractions=(1.0, 0.0, 0.0))
    dm = build_datamodule(VideoDataConfig(**(fields | overrides)))
    dm.setup("fit")
    return dm


def _infos(dm):
    return {record.path: record.info for record in dm.datasets["train"].records}


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_second_setup_probes_nothing_and_sees_the_same_videos(tmp_path, motion_root, probe_calls, backend):
    root = shutil.copytree(motion_root, tmp_path / "videos")
    first = _setup(root, backend=backend)
    assert len(probe_calls) == 6
    with sqlite3.connect(default_cache_path()) as connection:
        assert connection.execute("SELECT COUNT(*) FROM probes WHERE backend = ?", (backend,)).fetchone() == (6,)
    second = _setup(root, backend=backend)
    assert len(probe_calls) == 6  # nothing probed again
    assert _infos(second) == _infos(first)


def test_rewritten_or_broken_files_are_probed_again(tmp_path, motion_root, probe_calls):
    root = shutil.copytree(motion_root, tmp_path / "videos")
    before = _infos(_setup(root, max_bad_fraction=0.5))
    longer = make_motion_videos(tmp_path / "longer", num_classes=2, videos_per_class=1, frames=24)
    rewritten, broken = root / "down" / "down_000.mp4", root / "up" / "up_001.mp4"
    shutil.copy(longer / "down" / "down_000.mp4", rewritten)
    broken.write_text("no longer a video\n")
    probe_calls.clear()
    dm = _setup(root, max_bad_fraction=0.5)
    assert sorted(probe_calls) == sorted([str(rewritten), str(broken)])
    after = _infos(dm)
    assert before[str(rewritten)].num_frames == 16 and after[str(rewritten)].num_frames == 24
    assert str(broken) not in after and dm.data_quality()["bad_files"] == 1


def test_probe_cache_off_writes_nothing(tmp_path, motion_root, probe_calls):
    root = shutil.copytree(motion_root, tmp_path / "videos")
    _setup(root, probe_cache=False)
    _setup(root, probe_cache=False)
    assert len(probe_calls) == 12 and not default_cache_path().exists()
