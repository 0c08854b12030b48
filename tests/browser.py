"""Browser end-to-end helpers: the real app in a subprocess on a free loopback port, driven by Debian's
Chromium through Playwright, with a screenshot of each step under test-artifacts/ui/<test>/.

Fixtures (import them into a test module): `chromium` (one browser per module), `app_home` (an empty
$DREAMRUNNER_HOME), `artifacts` (the test's screenshot folder). Tests skip, saying why, only when no
Chromium executable is installed, and fail instead under CI (CI set), where .ci/run installs Debian's chromium.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts" / "ui"
CHROMIUM = os.environ.get("DREAMRUNNER_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
# As the machine notes say: without the background-networking flags Chromium keeps trying to reach
# Google's hosts on a closed network.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
STARTUP_TIMEOUT = 60.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class AppServer:
    """`python app.py` in a subprocess, as a user starts it."""

    def __init__(self, home: Path, project: Path | None = None, log: Path | None = None,
                 env: dict | None = None, args: tuple[str, ...] = ()):
        self.home = Path(home)
        self.project = project
        self.env = env or {}  # extra environment variables (HOME, OPENAI_API_KEY, ...)
        self.args = tuple(args)  # extra app.py arguments
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log_path = log or (self.home / f"app-{self.port}.log")
        self.process: subprocess.Popen | None = None

    def start(self) -> AppServer:
        # Offline like CI: model look-ups fail at once instead of waiting on the closed network.
        env = {**os.environ, "DREAMRUNNER_HOME": str(self.home), "GRADIO_ANALYTICS_ENABLED": "False",
               "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
               "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]), **self.env}
        command = [sys.executable, str(ROOT / "app.py"), "--host", "127.0.0.1", "--port", str(self.port),
                   *self.args]
        if self.project is not None:
            command += ["--project", str(self.project)]
        self.home.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "w")
        self.process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"app.py exited with {self.process.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(self.url, timeout=2) as response:
                    if response.status == 200:
                        return self
            except OSError:
                time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"app.py did not answer on {self.url} within {STARTUP_TIMEOUT} s:\n{self.log()}")

    def stop(self, kill: bool = False) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if getattr(self, "_log", None):
            self._log.close()

    def log(self) -> str:
        try:
            return self.log_path.read_text()[-4000:]
        except OSError:
            return ""

    def __enter__(self) -> AppServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def read_project(folder: Path) -> dict:
    return json.loads((Path(folder) / "project.json").read_text(encoding="utf-8"))["story"]


def wait_until(check, timeout: float = 20.0, interval: float = 0.2, what: str = "condition"):
    """Poll `check()` until it returns a truthy value (what the app writes lands a moment after a click)."""
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except (OSError, ValueError, KeyError, IndexError, AssertionError) as error:
            last_error = error
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}" + (f" ({last_error})" if last_error else ""))


class Steps:
    """Numbered screenshots of one test's steps."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.count = 0

    def shot(self, page, name: str) -> Path:
        self.count += 1
        path = self.folder / f"{self.count:02d}-{re.sub(r'[^a-z0-9]+', '-', name.lower())}.png"
        page.screenshot(path=str(path), full_page=True)
        return path


@pytest.fixture(scope="module")
def chromium():
    if not Path(CHROMIUM).exists():
        # CI must run the editor's end-to-end tests: there a missing browser is a failure, not a skip.
        skip_or_fail = pytest.fail if os.environ.get("CI") else pytest.skip
        skip_or_fail(f"no Chromium at {CHROMIUM}: install Debian's chromium (apt-get install -y chromium) "
                    "or set DREAMRUNNER_CHROMIUM")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def app_home(tmp_path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def artifacts(request) -> Steps:
    folder = ARTIFACTS / re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return Steps(folder)


def new_page(browser, url: str):
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.set_default_timeout(20_000)
    page.goto(url)
    # The project status line is filled by the page's load event: the app is ready when it shows.
    page.locator("#project-status").get_by_text("scenes").wait_for()
    return page


def open_tab(page, name: str) -> None:
    page.get_by_role("tab", name=name, exact=True).click()


def fill_and_leave(page, selector: str, text: str) -> None:
    """Type into a textbox and move the focus away (the editor saves a field when it loses focus)."""
    box = page.locator(f"{selector} textarea, {selector} input").first
    box.fill(text)
    box.press("Tab")


IMAGE_W, IMAGE_H = 720, 480  # the box editor's keyframe image for a 480x720 video (the demo's)


def image_geometry(page):
    """Where the keyframe image sits inside the box editor's canvas (it is scaled to fit and centred), in
    viewport coordinates (the canvas is scrolled into view first: the mouse only reaches the viewport)."""
    canvas = page.locator("#box-editor canvas").first
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    scale = min(box["width"] / IMAGE_W, box["height"] / IMAGE_H)
    left = box["x"] + (box["width"] - IMAGE_W * scale) / 2
    top = box["y"] + (box["height"] - IMAGE_H * scale) / 2
    return left, top, scale


def drag_box(page, box, dx_px: int, dy_px: int):
    """Drag a normalized box by (dx, dy) image pixels, grabbing it in its middle."""
    left, top, scale = image_geometry(page)
    x0, y0, x1, y1 = box
    start_x = left + (x0 + x1) / 2 * IMAGE_W * scale
    start_y = top + (y0 + y1) / 2 * IMAGE_H * scale
    page.mouse.move(start_x, start_y)
    page.mouse.down()
    page.mouse.move(start_x + dx_px * scale / 2, start_y + dy_px * scale / 2, steps=4)
    page.mouse.move(start_x + dx_px * scale, start_y + dy_px * scale, steps=4)
    page.mouse.up()


def toast_texts(page) -> list[str]:
    return page.locator(".toast-body, [data-testid='toast-body']").all_inner_texts()
