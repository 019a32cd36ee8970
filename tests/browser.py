"""Debian's chromium, headless, driven over the Chrome DevTools Protocol (websocket-client), for the
page tests and the page benchmark: the system browser only, nothing downloaded.

    with Browser() as browser:
        page = browser.open("http://127.0.0.1:8080/")
        page.evaluate("document.title")
        page.screenshot(path)

One browser process per `Browser`, its profile in a temporary folder removed at the end.
Why the protocol and not `chromium --headless --screenshot` / `--dump-dom`: measured here, one such
run takes 2.2-2.4 s and sees the page once, at one moment; a browser driven over the protocol starts
in 1.3 s, opens the page in 0.3 s and is then asked what the page shows as often as needed, while the
page lives on (a change seen without a reload is the point of the test).
"""
from __future__ import annotations

import base64
import itertools
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import websocket

CANDIDATES = ("chromium", "chromium-browser", "google-chrome")


def chromium_path() -> str | None:
    return next((path for path in map(shutil.which, CANDIDATES) if path), None)


class Page:
    """One tab: JavaScript evaluated in it, screenshots of it."""

    def __init__(self, url: str, timeout: float):
        self.socket = websocket.create_connection(url, timeout=timeout, suppress_origin=True)
        self.ids = itertools.count(1)

    def call(self, method: str, **params) -> dict:
        number = next(self.ids)
        self.socket.send(json.dumps({"id": number, "method": method, "params": params}))
        while True:                                  # events arrive between the answers: skipped
            message = json.loads(self.socket.recv())
            if message.get("id") == number:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression!r} raised {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, seconds: float, every: float = 0.1):
        """The expression's value once it is truthy; None after `seconds`."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(every)
        return None

    def screenshot(self, path: Path) -> Path:
        path.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"]))
        return path

    def close(self) -> None:
        self.socket.close()


class Browser:
    def __init__(self, width: int = 1280, height: int = 900, timeout: float = 30.0):
        self.executable = chromium_path()
        if self.executable is None:
            raise RuntimeError("no chromium on this machine (apt-get install chromium)")
        self.size, self.timeout = (width, height), timeout
        self.profile = Path(tempfile.mkdtemp(prefix="gamma-chromium-"))
        self.process: subprocess.Popen | None = None
        self.pages: list[Page] = []

    def __enter__(self) -> "Browser":
        flags = ["--headless=new", "--remote-debugging-port=0", "--remote-debugging-address=127.0.0.1",
                 f"--user-data-dir={self.profile}", f"--window-size={self.size[0]},{self.size[1]}",
                 "--no-first-run", "--no-default-browser-check", "--disable-gpu", "--disable-extensions",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--hide-scrollbars", "--mute-audio", "--force-device-scale-factor=1"]
        if os.geteuid() == 0:                        # CI runs as root, where chromium's sandbox cannot start
            flags.append("--no-sandbox")
        # TMPDIR: chromium's own temporary folders go with the profile, not into /tmp
        self.process = subprocess.Popen([self.executable, *flags, "about:blank"], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, env={**os.environ, "TMPDIR": str(self.profile)})
        self.port = self._debugging_port()
        return self

    def _debugging_port(self) -> int:
        """Chromium writes the port it chose into its profile once it listens."""
        marker, deadline = self.profile / "DevToolsActivePort", time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if marker.is_file() and marker.read_text().strip():
                return int(marker.read_text().split()[0])
            if self.process.poll() is not None:
                raise RuntimeError(f"chromium exited with status {self.process.returncode} before it listened")
            time.sleep(0.05)
        raise RuntimeError(f"chromium did not listen within {self.timeout} s")

    def open(self, url: str) -> Page:
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}/json/new?{url}", method="PUT")
        target = json.loads(urllib.request.urlopen(request, timeout=self.timeout).read())
        page = Page(target["webSocketDebuggerUrl"], self.timeout)
        self.pages.append(page)
        return page

    def __exit__(self, *exc) -> None:
        for page in self.pages:
            page.close()
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        shutil.rmtree(self.profile, ignore_errors=True)
