"""What every part of the stack test shares: the failure type, running commands, HTTP, polling."""

from __future__ import annotations

import base64
import json
import shlex
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class StepFailed(Exception):
    """A check of the stack test failed; the message says what was expected and what was found."""


def command_line(command: list[str]) -> str:
    return " ".join(shlex.quote(word) for word in command)


def run(command: list[str], *, env: dict[str, str] | None = None, quiet: bool = False, timeout: float | None = None,
        input: str | None = None) -> str:
    """Run a command, echoing it; its output streams unless `quiet`. Returns stdout when quiet."""
    print(f"+ {command_line(command)}", flush=True)
    try:
        result = subprocess.run(command, env=env, text=True, timeout=timeout, input=input,
                                capture_output=quiet)
    except subprocess.TimeoutExpired as error:
        raise StepFailed(f"`{command_line(command)}` still running after {timeout:.0f} s") from error
    if result.returncode != 0:
        detail = f":\n{(result.stdout or '')[-2000:]}{(result.stderr or '')[-3000:]}" if quiet else " (output above)"
        raise StepFailed(f"`{command_line(command)}` exited {result.returncode}{detail}")
    return result.stdout if quiet else ""


def http(method: str, url: str, *, body: Any = None, token: str | None = None,
         basic: tuple[str, str] | None = None, timeout: float = 30) -> tuple[int, Any]:
    """(status, parsed JSON or text) of one request (bearer `token` or `basic` user and password);
    HTTP errors are returned, not raised."""
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"} if data else {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if basic:
        headers["Authorization"] = "Basic " + base64.b64encode(":".join(basic).encode()).decode()
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, raw = error.code, error.read()
    text = raw.decode(errors="replace")
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


def get_json(url: str, *, token: str | None = None, basic: tuple[str, str] | None = None, timeout: float = 30) -> Any:
    status, body = http("GET", url, token=token, basic=basic, timeout=timeout)
    if status != 200:
        raise StepFailed(f"GET {url} answered {status}: {str(body)[:500]}")
    return body


def wait_for(what: str, probe: Callable[[], T | None], timeout: float, interval: float = 2.0) -> T:
    """Poll `probe` until it returns something other than None/False; connection errors count as not yet."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            value = probe()
            if value is not None and value is not False:
                return value
        except (OSError, urllib.error.URLError) as error:
            last_error = error
        if time.monotonic() > deadline:
            suffix = f" (last error: {last_error})" if last_error else ""
            raise StepFailed(f"{what}: not reached within {timeout:.0f} s{suffix}")
        time.sleep(interval)
