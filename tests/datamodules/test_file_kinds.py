"""Bad-file kinds from the file itself: what is there, and whether its bytes look like a video container."""

from __future__ import annotations

import os

import pytest

from datamodules.file_kinds import access_problem, content_problem


@pytest.fixture
def good(motion_root):
    return next((motion_root / "up").iterdir())


def test_access_problems_are_told_apart(tmp_path, good):
    (tmp_path / "folder.mp4").mkdir()
    (tmp_path / "zero.mp4").write_bytes(b"")
    assert access_problem(str(tmp_path / "gone.mp4")) == "missing"
    assert access_problem(str(tmp_path / "folder.mp4")) == "not_a_file"
    assert access_problem(str(tmp_path / "zero.mp4")) == "empty"
    assert access_problem(str(good)) is None


def test_a_file_cut_before_its_index_is_truncated_and_other_bytes_are_not_video(tmp_path, good):
    data = good.read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2])
    (tmp_path / "notes.mp4").write_text("<html>404 not found</html>\n" * 10)
    (tmp_path / "image.mp4").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(500))
    (tmp_path / "webm.mp4").write_bytes(b"\x1a\x45\xdf\xa3" + os.urandom(500))
    assert content_problem(str(tmp_path / "cut.mp4")) == "truncated"
    assert content_problem(str(tmp_path / "notes.mp4")) == "not_video"
    assert content_problem(str(tmp_path / "image.mp4")) == "not_video"
    assert content_problem(str(tmp_path / "webm.mp4")) is None  # a container: the decoder's "unreadable" stands
    assert content_problem(str(good)) is None
