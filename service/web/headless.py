"""A headless Chromium driven over the DevTools protocol, through a pipe: no extra package, no port.

Debian's `chromium` (`make browser`) with `--remote-debugging-pipe` reads protocol commands on its
fd 3 and answers on fd 4, NUL-separated JSON. The page's browser test, `make screenshots` and
benchmarks/bench_web.py drive the web page with it: navigate, click, type, upload a file, run
JavaScript, wait for a condition, take a screenshot. Clicks and typing go through the protocol's
input events, as a user's would.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-extensions", "--mute-audio", "--hide-scrollbars", "--remote-debugging-pipe"]
# fd 3 <- our stdin pipe (commands), fd 4 -> our stdout pipe (answers); Chromium's own output to a file.
LAUNCH = 'exec "$@" 3<&0 4>&1 0</dev/null 1>&2'


class ProtocolError(RuntimeError):
    """Chromium answered a command with an error, or a wait ran out."""


def find_chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        raise ProtocolError("chromium is not installed: `make browser` (Debian package chromium) installs it")
    return found


class Browser:
    """One Chromium process; `page()` opens a tab. Use as a context manager."""

    def __init__(self, chromium: str | None = None, log_path: Path | None = None):
        self._profile = tempfile.TemporaryDirectory(prefix="attnlab-chromium-")
        self.log_path = log_path or Path(self._profile.name) / "chromium.log"
        command = [find_chromium() if chromium is None else chromium, *FLAGS,
                   f"--user-data-dir={self._profile.name}", "about:blank"]
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen(["/bin/sh", "-c", LAUNCH, "sh", *command], stdin=subprocess.PIPE,
                                             stdout=subprocess.PIPE, stderr=log)
        self._next_id = 0
        self._answers: dict[int, dict] = {}
        self._events: list[dict] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, name="chromium-reader", daemon=True)
        self._reader.start()
        self.call("Target.setDiscoverTargets", discover=False)

    @property
    def pid(self) -> int:
        """Chromium's main process (its renderers are its children)."""
        return self._process.pid

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _read(self) -> None:
        buffer = b""
        while chunk := self._process.stdout.read1(1 << 16):
            buffer += chunk
            *messages, buffer = buffer.split(b"\0")
            with self._changed:
                for raw in messages:
                    message = json.loads(raw)
                    if "id" in message:
                        self._answers[message["id"]] = message
                    else:
                        self._events.append(message)
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def call(self, method: str, session: str | None = None, timeout: float = 60.0, **params: Any) -> dict:
        with self._changed:
            self._next_id += 1
            message_id = self._next_id
        message = {"id": message_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        self._process.stdin.write(json.dumps(message).encode() + b"\0")
        self._process.stdin.flush()
        deadline = time.monotonic() + timeout
        with self._changed:
            while message_id not in self._answers:
                if self._process.poll() is not None:
                    raise ProtocolError(f"chromium exited ({self._process.returncode}); see {self.log_path}")
                if not self._changed.wait(max(0.0, deadline - time.monotonic())) and time.monotonic() > deadline:
                    raise ProtocolError(f"{method}: no answer in {timeout} s")
            answer = self._answers.pop(message_id)
        if "error" in answer:
            raise ProtocolError(f"{method}: {answer['error'].get('message')} {answer['error'].get('data', '')}")
        return answer.get("result", {})

    def event_count(self) -> int:
        with self._changed:
            return len(self._events)

    def wait_event(self, method: str, session: str | None, since: int, timeout: float = 60.0) -> dict:
        """The first `method` event of `session` at index >= `since` of the event log."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for event in self._events[since:]:
                    if event.get("method") == method and event.get("sessionId") == session:
                        return event.get("params", {})
                if time.monotonic() > deadline:
                    raise ProtocolError(f"no {method} event in {timeout} s")
                self._changed.wait(0.2)

    def page(self, width: int = 1400, height: int = 900, mobile: bool = False) -> Page:
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        return Page(self, session, width, height, mobile)

    def close(self) -> None:
        if self._process.poll() is None:
            try:
                self.call("Browser.close", timeout=10)
            except ProtocolError:
                pass
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._profile.cleanup()


class Page:
    """One tab with a fixed viewport (CSS pixels); `mobile` emulates a phone's viewport handling."""

    def __init__(self, browser: Browser, session: str, width: int, height: int, mobile: bool):
        self.browser, self.session = browser, session
        for domain in ("Page", "Runtime", "DOM"):
            self.call(f"{domain}.enable")
        self.resize(width, height, mobile)

    def call(self, method: str, **params: Any) -> dict:
        return self.browser.call(method, self.session, **params)

    def resize(self, width: int, height: int, mobile: bool = False) -> None:
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1,
                  mobile=mobile, screenWidth=width, screenHeight=height)
        self.call("Emulation.setTouchEmulationEnabled", enabled=mobile, maxTouchPoints=5 if mobile else 1)

    def goto(self, url: str, timeout: float = 60.0) -> None:
        """Navigate and wait for the load event."""
        since = self.browser.event_count()
        answer = self.call("Page.navigate", url=url)
        if answer.get("errorText"):
            raise ProtocolError(f"navigating to {url}: {answer['errorText']}")
        self.browser.wait_event("Page.loadEventFired", self.session, since, timeout)

    def evaluate(self, expression: str, timeout: float = 60.0) -> Any:
        """The value of a JavaScript expression (promises awaited), as JSON."""
        answer = self.browser.call("Runtime.evaluate", self.session, timeout=timeout, expression=expression,
                                   awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in answer:
            details = answer["exceptionDetails"]
            raise ProtocolError(f"{expression[:80]!r}: {details.get('exception', {}).get('description') or details}")
        return answer["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 60.0, what: str | None = None) -> Any:
        """Poll a JavaScript expression until it is truthy; its value."""
        deadline = time.monotonic() + timeout
        probe = f"(() => {{ const value = ({expression}); return [Boolean(value), value instanceof Node ? null : value]; }})()"
        while True:
            truthy, value = self.evaluate(probe)
            if truthy:
                return value
            if time.monotonic() > deadline:
                raise ProtocolError(f"waited {timeout} s for {what or expression}")
            time.sleep(0.1)

    def text(self, selector: str) -> str:
        return self.evaluate(f"(document.querySelector({json.dumps(selector)}) || {{}}).innerText || ''")

    def click(self, selector: str) -> None:
        """A real mouse click (pressed + released) at the centre of the element."""
        box = self.evaluate(f"""(() => {{
            const element = document.querySelector({json.dumps(selector)});
            if (!element) return null;
            element.scrollIntoView({{block: "center", inline: "center"}});
            const r = element.getBoundingClientRect();  // layout viewport; input events: the visual one
            const view = window.visualViewport || {{offsetLeft: 0, offsetTop: 0}};
            return [r.x + r.width / 2 - view.offsetLeft, r.y + r.height / 2 - view.offsetTop, r.width * r.height];
        }})()""")
        if not box or not box[2]:
            raise ProtocolError(f"nothing visible to click at {selector!r}")
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=box[0], y=box[1], button="left", clickCount=1)

    def type(self, selector: str, text: str) -> None:
        """Focus the element and type `text` into it (as an input method would insert it)."""
        self.evaluate(f"document.querySelector({json.dumps(selector)}).focus()")
        self.call("Input.insertText", text=text)

    def upload(self, selector: str, *paths: Path) -> None:
        """Choose files in an <input type=file>, as the file picker would."""
        root = self.call("DOM.getDocument", depth=0)["root"]["nodeId"]
        node = self.call("DOM.querySelector", nodeId=root, selector=selector)["nodeId"]
        if not node:
            raise ProtocolError(f"no file input at {selector!r}")
        self.call("DOM.setFileInputFiles", nodeId=node, files=[str(Path(p).resolve()) for p in paths])

    def screenshot(self, path: Path, full_page: bool = False) -> Path:
        params: dict[str, Any] = {"format": "png", "captureBeyondViewport": full_page}
        if full_page:
            size = self.evaluate("[document.documentElement.scrollWidth, document.documentElement.scrollHeight]")
            params["clip"] = {"x": 0, "y": 0, "width": size[0], "height": size[1], "scale": 1}
        data = self.call("Page.captureScreenshot", **params)["data"]
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path
