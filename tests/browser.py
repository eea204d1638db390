"""A headless Chromium driven over the DevTools protocol on a pipe (no extra packages): load a
page, record every request, failed load, console message and uncaught exception, and take a
full-page screenshot."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field

FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--disable-extensions", "--disable-default-apps", "--remote-debugging-pipe",
]


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


@dataclass
class PageLoad:
    requests: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    console: list[str] = field(default_factory=list)
    exceptions: list[str] = field(default_factory=list)
    screenshot_png: bytes = b""
    section_ids: list[str] = field(default_factory=list)
    images: int = 0


class _Pipe:
    def __init__(self, write_fd: int, read_fd: int):
        self.write_fd, self.read_fd = write_fd, read_fd
        self.buffer = b""
        self.next_id = 0
        self.events: list[dict] = []

    def send(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 60) -> dict:
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self.write_fd, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            reply = self._read()
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)
        raise TimeoutError(method)

    def wait_for(self, method: str, timeout: float = 60) -> dict:
        for event in self.events:
            if event.get("method") == method:
                return event
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            event = self._read()
            self.events.append(event)
            if event.get("method") == method:
                return event
        raise TimeoutError(method)

    def _read(self) -> dict:
        while b"\0" not in self.buffer:
            chunk = os.read(self.read_fd, 1 << 20)
            if not chunk:
                raise EOFError("the browser closed its pipe")
            self.buffer += chunk
        message, _, self.buffer = self.buffer.partition(b"\0")
        return json.loads(message)


def load_page(url: str, width: int = 1280) -> PageLoad:
    """Open ``url`` headless and report what happened."""
    binary = find_chromium()
    if binary is None:
        raise FileNotFoundError("no chromium on PATH")
    to_browser_r, to_browser_w = os.pipe()
    from_browser_r, from_browser_w = os.pipe()

    def wire():  # the browser reads fd 3 and writes fd 4
        read_end, write_end = os.dup(to_browser_r), os.dup(from_browser_w)
        os.dup2(read_end, 3)
        os.dup2(write_end, 4)
        os.set_inheritable(3, True)
        os.set_inheritable(4, True)

    profile = tempfile.mkdtemp(prefix="bb-chromium-")
    proc = subprocess.Popen([binary, *FLAGS, f"--user-data-dir={profile}", "about:blank"], preexec_fn=wire,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, close_fds=False)
    os.close(to_browser_r)
    os.close(from_browser_w)
    pipe = _Pipe(to_browser_w, from_browser_r)
    result = PageLoad()
    try:
        target = pipe.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = pipe.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            pipe.send(f"{domain}.enable", session=session)
        pipe.send("Emulation.setDeviceMetricsOverride", {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": False}, session=session)
        pipe.send("Page.navigate", {"url": url}, session=session)
        pipe.wait_for("Page.loadEventFired")
        height = pipe.send("Runtime.evaluate", {"expression": "document.documentElement.scrollHeight", "returnByValue": True}, session=session)["result"]["value"]
        pipe.send("Emulation.setDeviceMetricsOverride", {"width": width, "height": int(height), "deviceScaleFactor": 1, "mobile": False}, session=session)
        ids = pipe.send("Runtime.evaluate", {"expression": "Array.from(document.querySelectorAll('section')).map(s => s.id)", "returnByValue": True}, session=session)
        result.section_ids = ids["result"]["value"]
        images = pipe.send("Runtime.evaluate", {"expression": "Array.from(document.images).filter(i => i.complete && i.naturalWidth > 0).length", "returnByValue": True}, session=session)
        result.images = images["result"]["value"]
        shot = pipe.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True}, session=session)
        result.screenshot_png = base64.b64decode(shot["data"])
        for event in pipe.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Network.requestWillBeSent":
                result.requests.append(params["request"]["url"][:120])
            elif method == "Network.loadingFailed":
                result.failed.append(params.get("errorText", "failed"))
            elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "warning", "assert"):
                result.console.append(" ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", [])))
            elif method == "Log.entryAdded" and params["entry"].get("level") in ("error", "warning"):
                result.console.append(params["entry"].get("text", ""))
            elif method == "Runtime.exceptionThrown":
                result.exceptions.append(params["exceptionDetails"].get("text", "exception"))
        try:
            pipe.send("Browser.close", timeout=10)
        except (EOFError, TimeoutError, RuntimeError):
            pass
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
        os.close(to_browser_w)
        os.close(from_browser_r)
        shutil.rmtree(profile, ignore_errors=True)
    return result
