"""The run-name lock: a second holder is refused naming the first; the kernel frees it when the holder dies."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from training.run_lock import RunLockedError, hold

HOLDER = """
import sys, time
from pathlib import Path
from training.run_lock import hold
with hold(Path(sys.argv[1]), "shared"):
    print("held", flush=True)
    time.sleep(600)
"""


def test_a_second_process_is_refused_until_the_first_dies(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunLockedError, match=rf"run 'shared' is already being trained by pid {holder.pid} on "
                                                 r".* since .*; a second writer would share"):
            with hold(tmp_path, "shared"):
                pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    deadline = time.monotonic() + 10
    while True:  # the kernel releases the dead holder's lock
        try:
            with hold(tmp_path, "shared"):
                break
        except RunLockedError:
            assert time.monotonic() < deadline
            time.sleep(0.05)


def test_the_same_process_cannot_hold_one_name_twice(tmp_path):
    with hold(tmp_path, "mine"):
        with pytest.raises(RunLockedError, match="already being trained by this process"):
            with hold(tmp_path, "mine"):
                pass
    with hold(tmp_path, "mine"):  # released after the block
        pass
