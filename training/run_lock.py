"""One writer per run name: a lock on `$ATTNLAB_HOME/runs/<name>/.lock` held while a run trains.

A run name owns a checkpoint folder and an MLflow run, so two processes training the same name at
once would overwrite each other's `last.ckpt` and interleave two histories in one MLflow run. The
first `fit` of a name takes the lock; a second one (another shell, a service job, a Tune trial
retried while its first attempt still lives) is refused at once with `RunLockedError`, naming the
holder (pid, host, command, since when).

The lock is a POSIX record lock (`fcntl.lockf`): the kernel drops it when the holding process
exits, however it exits (`kill -9` included), so a crashed run never leaves a stale lock, and it is
not inherited by forked DataLoader workers. It works across machines only where ATTNLAB_HOME is
on a filesystem with working POSIX locks (local disks, NFSv4).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOCK_NAME = ".lock"
# POSIX locks belong to the process: a second fit of the same name in this process would be granted
# the lock (and release it on exit), so this process's own holdings are checked first.
_held_here: set[Path] = set()


class RunLockedError(RuntimeError):
    """Another live process is training this run name."""


@contextmanager
def hold(run_folder: Path, name: str) -> Iterator[None]:
    """Hold the run's lock for the duration of the block; raise RunLockedError if someone else holds it."""
    run_folder.mkdir(parents=True, exist_ok=True)
    path = (run_folder / LOCK_NAME).resolve()
    if path in _held_here:
        raise RunLockedError(f"run {name!r} is already being trained by this process (pid {os.getpid()})")
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.lockf(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = _describe(descriptor)
            raise RunLockedError(
                f"run {name!r} is already being trained{holder}; a second writer would share its checkpoint "
                f"folder {run_folder} and its MLflow run. Wait for it to finish (or stop it), or use another "
                "run name") from None
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, json.dumps(_holder_record()).encode(), 0)
        _held_here.add(path)
        try:
            yield
        finally:
            _held_here.discard(path)
    finally:
        # Closing our only descriptor of the file releases the lock (POSIX record-lock semantics).
        os.close(descriptor)


def _holder_record() -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S %z"),
            "command": " ".join(sys.argv)[:300]}


def _describe(descriptor: int) -> str:
    """' by pid 123 on host since ... (attnlab train ...)' from the holder's record, if readable."""
    try:
        record = json.loads(os.pread(descriptor, 4096, 0) or b"{}")
    except (OSError, ValueError):
        return ""
    if not record.get("pid"):
        return ""
    return (f" by pid {record['pid']} on {record.get('host', '?')} since {record.get('since', '?')} "
            f"({record.get('command', '')})")
