"""Registry checks of a config's model section in a helper process, so the API process never imports torch.

`training.config.TrainConfig` checks its model section against the block/backbone registries by
building the network on the meta device, which needs torch. The API process hands that one check
to a long-lived child (`python -m service.model_checker`: one JSON line in, one out) and memoises
the answers, which depend on the model section alone. Everything else in a config is validated
in-process by the same pydantic schema the CLI uses.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from functools import lru_cache
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]


class ModelChecker:
    """The helper process; restarted on next use if it died. Thread-safe (one question at a time).

    With torch loaded it holds ~650 MB, as much as the API and the MLflow UI together, so it exits
    after `idle_seconds` without a question (None: never) and starts again (a few seconds) on the next.
    """

    def __init__(self, idle_seconds: float | None = None) -> None:
        self.idle_seconds = idle_seconds
        self._process: subprocess.Popen | None = None
        self._lock = threading.Lock()
        self._idle_timer: threading.Timer | None = None

    def _ensure_started(self) -> subprocess.Popen:
        if self._process is None or self._process.poll() is not None:
            env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # the meta device needs no GPU
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
            self._process = subprocess.Popen([sys.executable, "-m", "service.model_checker"], env=env,
                                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        return self._process

    def problems(self, model_json: str) -> tuple[str, ...]:
        with self._lock:
            self._stop_idle_timer()
            process = self._ensure_started()
            try:
                process.stdin.write(json.dumps(model_json) + "\n")
                process.stdin.flush()
                answer = process.stdout.readline()
            except (BrokenPipeError, OSError):
                answer = ""
            if not answer:
                self._process = None
                raise RuntimeError("the model checker process ended; see the service log")
            if self.idle_seconds is not None:
                self._idle_timer = threading.Timer(self.idle_seconds, self._expire)
                self._idle_timer.daemon = True
                self._idle_timer.start()
            return tuple(json.loads(answer))

    def _stop_idle_timer(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None

    def _expire(self) -> None:
        with self._lock:
            if self._idle_timer is not threading.current_thread():  # a question came in meanwhile
                return
            self._idle_timer = None
            self._stop_process()

    def close(self) -> None:
        with self._lock:
            self._stop_idle_timer()
            self._stop_process()

    def _stop_process(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.stdin.close()  # it exits at end of input; it may still be importing
            try:
                self._process.wait(timeout=1)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None


CHECKER = ModelChecker()


@lru_cache(maxsize=4096)
def model_problems(model_json: str) -> tuple[str, ...]:
    """training.config.model_problems for a model section (as JSON), answered by the helper, memoised."""
    return CHECKER.problems(model_json)


def _serve() -> None:
    from training.config import ModelConfig
    from training.config import model_problems as check

    for line in sys.stdin:
        try:
            problems = check(ModelConfig.model_validate_json(json.loads(line)))
        except Exception as error:  # an answer for every question: the API turns it into a 422
            problems = [f"model: could not be checked ({type(error).__name__}: {error})"]
        sys.stdout.write(json.dumps(problems) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    _serve()
