"""VerifiedCheckpointIO and resume_point, on real files: write, rotate, damage, fall back, refuse."""

from __future__ import annotations

import json
import os
import re
import resource
import signal

import pytest
import torch

from training.checkpoints import (CheckpointError, CheckpointWriteError, ResumeWarning, VerifiedCheckpointIO,
                                  inspect_checkpoint, resume_point)


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    return tmp_path / "checkpoints"


def _save(io, path, step, size=1000):
    io.save_checkpoint({"global_step": step, "epoch": 0, "state_dict": {"w": torch.arange(size, dtype=torch.float32)}},
                       path)


def test_save_writes_a_checksum_and_keeps_the_previous_step(folder):
    io = VerifiedCheckpointIO()
    last = folder / "last.ckpt"
    _save(io, last, 2)
    _save(io, last, 4)
    _save(io, last, 4)  # a second save at the same step (epoch end) keeps the older previous
    record = json.loads((folder / "last.ckpt.sha256").read_text())
    assert record["global_step"] == 4 and record["bytes"] == last.stat().st_size
    assert json.loads((folder / "last.ckpt.prev.sha256").read_text())["global_step"] == 2
    assert inspect_checkpoint(last) == (4, None) and inspect_checkpoint(folder / "last.ckpt.prev") == (2, None)
    assert sorted(p.name for p in folder.iterdir()) == ["last.ckpt", "last.ckpt.prev", "last.ckpt.prev.sha256",
                                                          "last.ckpt.sha256"]


def test_resume_point_prefers_the_newest_valid_and_names_the_damaged(folder):
    io = VerifiedCheckpointIO()
    _save(io, folder / "best-epoch=0-step=2.ckpt", 2)
    _save(io, folder / "last.ckpt", 3)
    _save(io, folder / "last.ckpt", 5)
    assert resume_point(folder) == str(folder / "last.ckpt")
    data = bytearray((folder / "last.ckpt").read_bytes())
    data[-2000] ^= 0x80
    (folder / "last.ckpt").write_bytes(bytes(data))
    with pytest.warns(ResumeWarning, match=r"last\.ckpt is damaged \(SHA-256 differs"):
        assert resume_point(folder) == str(folder / "last.ckpt.prev")
    os.truncate(folder / "last.ckpt.prev", 100)
    with pytest.warns(ResumeWarning) as caught:
        assert resume_point(folder) == str(folder / "best-epoch=0-step=2.ckpt")
    assert [str(warning.message).split(" is damaged ")[0] for warning in caught] == [
        f"checkpoint {folder / 'last.ckpt'}", f"checkpoint {folder / 'last.ckpt.prev'}"]
    assert re.search(r"\(100 bytes, \d+ were written: truncated\)", str(caught[1].message))


def test_a_folder_of_only_damaged_checkpoints_refuses_to_start_from_zero(folder):
    io = VerifiedCheckpointIO()
    _save(io, folder / "last.ckpt", 3)
    os.truncate(folder / "last.ckpt", 10)
    with pytest.raises(CheckpointError, match=r"every checkpoint .* is damaged: .*last\.ckpt \(10 bytes"):
        resume_point(folder)
    assert resume_point(folder / "absent") is None


def test_a_checkpoint_without_checksum_is_checked_by_loading_it(folder):
    torch.save({"global_step": 7}, folder / "legacy.ckpt")
    assert resume_point(folder) == str(folder / "legacy.ckpt")
    (folder / "legacy.ckpt").write_bytes(b"not a zip")
    with pytest.raises(CheckpointError, match=r"legacy\.ckpt \(cannot be loaded"):
        resume_point(folder)


def test_a_failed_write_names_the_intact_checkpoint_and_leaves_no_partial_file(folder):
    io = VerifiedCheckpointIO()
    last = folder / "last.ckpt"
    _save(io, last, 2)
    before = last.read_bytes()
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (len(before) + 500, hard))
    try:
        with pytest.raises(CheckpointWriteError, match=r"could not write checkpoint .*last\.ckpt: File too large "
                                                       r"\(EFBIG\)\. The previous checkpoint .*last\.ckpt \(step 2\) "
                                                       r"is intact"):
            _save(io, last, 4, size=100_000)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous_handler)
    assert last.read_bytes() == before and inspect_checkpoint(last) == (2, None)
    assert sorted(p.name for p in folder.iterdir()) == ["last.ckpt", "last.ckpt.sha256"]
