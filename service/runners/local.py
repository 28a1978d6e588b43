"""Each job attempt as its own process on this machine: `python -m service.cli train --config FILE`.

The process gets its own session (it survives a service restart and is cancelled as a group) and
runs under a tiny shell that writes its exit code to a file, so a service started later still
learns how an attempt it did not spawn ended. An attempt killed by a signal is LOST, not FAILED:
its job is launched again and resumes. The handle records pid and the kernel's process
start time: a pid the kernel has reused for another process is not mistaken for the job.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from service.runners.base import JobRunner, RunnerJob, RunnerState, launch_args

PROJECT_ROOT = Path(__file__).resolve().parents[2]
# Runs the command, then records its exit code atomically; $0 is the exit-code file.
WRAPPER = 'code=0; "$@" || code=$?; echo "$code" > "$0.tmp" && mv "$0.tmp" "$0"'
CANCEL_GRACE_SECONDS = 10.0


def process_start_time(pid: int) -> int | None:
    """Start time of a live, non-zombie process in clock ticks since boot; None if there is none."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) ": state is field 3
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])  # field 22 of proc(5), counted from field 3


class LocalProcessRunner(JobRunner):
    def __init__(self, python: str = sys.executable):
        self.python = python
        self._children: dict[int, subprocess.Popen] = {}  # reaped on poll; adopted jobs are not ours

    def start(self, job: RunnerJob, config_path: Path, log_path: Path) -> str:
        exit_file = log_path.parent / f"attempt-{job.attempt}.exit"
        exit_file.unlink(missing_ok=True)
        command = [self.python, "-m", "service.cli", *launch_args(job, config_path)]
        env = {**os.environ, **job.env, "PYTHONUNBUFFERED": "1"}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
        with open(log_path, "ab") as log:
            child = subprocess.Popen(["/bin/sh", "-c", WRAPPER, str(exit_file), *command],
                                     stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                     cwd=log_path.parent, env=env, start_new_session=True)
        self._children[child.pid] = child
        return json.dumps({"pid": child.pid, "start": process_start_time(child.pid),
                           "exit_file": str(exit_file)})

    def poll(self, handle: str) -> RunnerState:
        info = json.loads(handle)
        child = self._children.get(info["pid"])
        if child is not None and child.poll() is not None:
            del self._children[info["pid"]]
        verdict = self._exit_verdict(Path(info["exit_file"]))
        if verdict is not None:
            return verdict
        if self._alive(info):
            return RunnerState.RUNNING
        # It may have written its exit code between the two checks.
        return self._exit_verdict(Path(info["exit_file"])) or RunnerState.LOST

    def cancel(self, handle: str) -> None:
        info = json.loads(handle)
        if not self._alive(info):
            return
        self._signal_group(info["pid"], signal.SIGTERM)

        def escalate() -> None:
            if self._alive(info):
                self._signal_group(info["pid"], signal.SIGKILL)
            child = self._children.pop(info["pid"], None)
            if child is not None:
                child.poll()

        timer = threading.Timer(CANCEL_GRACE_SECONDS, escalate)
        timer.daemon = True
        timer.start()

    def ended(self, handle: str) -> bool:
        # The wrapper shell dies at once on SIGTERM while Python is still shutting down (and writing
        # its run's status), so the whole process group must be gone, not just the wrapper.
        info = json.loads(handle)
        if self.poll(handle) is RunnerState.RUNNING:
            return False
        try:
            os.killpg(info["pid"], 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False

    @staticmethod
    def _exit_verdict(exit_file: Path) -> RunnerState | None:
        try:
            code = int(exit_file.read_text().strip())
        except (OSError, ValueError):
            return None
        if code > 128:
            # Killed by a signal (sh reports 128 + its number): the OOM killer, a `kill -9`, a node
            # shutting down. Not a verdict on the job: the supervisor launches it again (resume).
            return RunnerState.LOST
        return RunnerState.SUCCEEDED if code == 0 else RunnerState.FAILED

    @staticmethod
    def _alive(info: dict) -> bool:
        started = process_start_time(info["pid"])
        return started is not None and started == info["start"]

    @staticmethod
    def _signal_group(pid: int, signum: int) -> None:
        try:
            os.killpg(pid, signum)
        except (ProcessLookupError, PermissionError):
            pass
