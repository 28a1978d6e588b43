"""Probe results kept on disk, so a large video set is probed once, not at every run, rank and trial.

`VideoDataModule.setup()` must know every file's frame count, fps and size before sampling clips;
probing opens and decodes each file (tens of ms; hours for a Kinetics-sized set on every start, on
every DDP rank and Tune trial). mmaction2 asks users to precompute these into annotation files;
here the first run fills an SQLite table keyed by (path, backend) and later runs reuse a row only
while the file's size and modification time are unchanged — a rewritten file is probed again.
Only good probes are kept: a bad file is re-checked every run (it may have been repaired), and
its failure is counted as usual. Rows written before the probe reported codecs and header lengths
(columns added in place) lack them and are probed again once.

Location: ``$ATTNLAB_HOME/cache/video-probes.sqlite`` (``ATTNLAB_HOME`` defaults to ``~/.attnlab``);
``data.probe_cache: false`` turns the cache off. SQLite's own locking serialises concurrent writers
(several ranks or trials starting at once); a cache that cannot be opened or written only costs time.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from contextlib import closing
from pathlib import Path

from datamodules.home import attnlab_home
from datamodules.video_backend import VideoInfo

log = logging.getLogger(__name__)

_SCHEMA = """CREATE TABLE IF NOT EXISTS probes (
    path TEXT NOT NULL, backend TEXT NOT NULL, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
    num_frames INTEGER NOT NULL, fps REAL NOT NULL, width INTEGER NOT NULL, height INTEGER NOT NULL,
    codec TEXT, header_frames INTEGER,
    PRIMARY KEY (path, backend))"""
_ADDED_COLUMNS = {"codec": "TEXT", "header_frames": "INTEGER"}  # absent from caches of older versions


def default_cache_path() -> Path:
    return attnlab_home() / "cache" / "video-probes.sqlite"


def _signature(path: str) -> tuple[int, int] | None:
    """(size, mtime in ns) of the file, None when it cannot be stat'ed (the probe will say why)."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_size, stat.st_mtime_ns


class ProbeCache:
    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path is not None else default_cache_path()

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(self.path, timeout=60)
        connection.execute(_SCHEMA)
        present = {row[1] for row in connection.execute("PRAGMA table_info(probes)")}
        for name, kind in _ADDED_COLUMNS.items():
            if name not in present:
                try:
                    connection.execute(f"ALTER TABLE probes ADD COLUMN {name} {kind}")
                except sqlite3.OperationalError:  # another process added it first
                    pass
        return connection

    def lookup(self, paths: list[str], backend: str) -> dict[str, VideoInfo]:
        """{path: info} for the paths whose cached row matches the file on disk now."""
        signatures = {path: _signature(path) for path in paths}
        try:
            with closing(self._connect()) as connection:
                rows = connection.execute(
                    "SELECT path, size, mtime_ns, num_frames, fps, width, height, codec, header_frames FROM probes "
                    "WHERE backend = ? AND codec IS NOT NULL", (backend,)).fetchall()
        except sqlite3.Error as error:
            log.warning("video probe cache %s unreadable (%s); probing every file", self.path, error)
            return {}
        return {path: VideoInfo(num_frames, fps, width, height, codec, header_frames)
                for path, size, mtime_ns, num_frames, fps, width, height, codec, header_frames in rows
                if path in signatures and signatures[path] == (size, mtime_ns)}

    def store(self, infos: dict[str, VideoInfo], backend: str) -> None:
        """Remember good probes with the files' current size and modification time."""
        rows = []
        for path, info in infos.items():
            signature = _signature(path)
            if signature is not None:
                rows.append((path, backend, *signature, info.num_frames, info.fps, info.width, info.height,
                             info.codec, info.header_frames))
        if not rows:
            return
        try:
            with closing(self._connect()) as connection, connection:  # closed, and committed on success
                connection.executemany("INSERT OR REPLACE INTO probes (path, backend, size, mtime_ns, num_frames, fps, "
                                       "width, height, codec, header_frames) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        except sqlite3.Error as error:
            log.warning("video probe cache %s not written (%s); the next run probes again", self.path, error)
