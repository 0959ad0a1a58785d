"""nstyle serve in a real headless browser: Debian's Chromium driven by Playwright.

The browser is the system's (/usr/bin/chromium): the ``chromium`` fixture installs it with
apt-get where it is missing (as ``.ci/install-browser`` does), and the tests skip, saying
why, only where that install is impossible. Every request the page makes goes through a
route that refuses any host but the server's, and each test ends by checking there was none.
Runs are real (``run_job`` in the worker process) on conftest's random-weight network at
32-64 px.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from PIL import Image

from conftest import tiny, write_image
from nstyle.image import read_png_text
from servers import LiveServer

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]


def install_chromium() -> str | None:
    """Install Debian's chromium where it is missing; None when it is there, else why not."""
    if os.path.exists(CHROMIUM):
        return None
    if shutil.which("apt-get") is None:
        return "no /usr/bin/chromium, and no apt-get to install it with"
    if os.geteuid() != 0:
        return "no /usr/bin/chromium, and installing it needs root: run .ci/install-browser as root"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for command in (["apt-get", "install", "-y", "chromium"], ["apt-get", "update"], ["apt-get", "install", "-y", "chromium"]):
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1200)
        if command[1] == "install" and done.returncode == 0 and os.path.exists(CHROMIUM):
            return None
    return f"apt-get install chromium failed: {(done.stderr or done.stdout).strip().splitlines()[-1:]}"


@pytest.fixture(scope="module")
def browser():
    playwright_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed: pip install -e '.[test]'")
    why = install_chromium()
    if why:
        pytest.skip(why)
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("files")
    write_image(tiny(0, 48, 64), folder / "photo.png")
    write_image(tiny(1, 64, 48), folder / "painting.png")
    write_image(tiny(2, 64, 64), folder / "other.png")
    (folder / "notes.png").write_text("not an image at all\n")
    (folder / "empty.jpg").write_bytes(b"")
    return folder


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = LiveServer(tmp_path_factory.mktemp("data"), kill_after=3)
    yield s
    s.stop()


class Page:
    """A fresh browser context and page on ``url``; every request to another host is refused and kept."""

    def __init__(self, browser, url: str):
        self.url, self.host = url, urlsplit(url).netloc
        self.context = browser.new_context(accept_downloads=True, viewport={"width": 1200, "height": 1000})
        self.foreign: list[str] = []
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.context.route("**/*", self._route)
        self.page = self.context.new_page()
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.open()

    def _route(self, route):
        url = route.request.url
        self.requests.append(url)
        if urlsplit(url).netloc != self.host and not url.startswith(("data:", "blob:")):
            self.foreign.append(url)
            return route.abort()
        return route.continue_()

    def open(self):
        self.page.goto(self.url)
        self.page.wait_for_selector("#connection.ok")
        self.page.wait_for_selector("#examples button")

    def close(self):
        self.context.close()
        assert self.foreign == [], f"requests to other hosts: {self.foreign}"
        assert [e for e in self.errors if "Failed to load resource" not in e] == []  # refusals are answers

    def add_inputs(self, files: Path, size: int = 64, iterations: str = ""):
        p = self.page
        p.set_input_files("#photo-file", str(files / "photo.png"))
        p.wait_for_selector("#photo-img[src*='/api/uploads/']")
        p.set_input_files("#style-file", str(files / "painting.png"))
        p.wait_for_selector("#style-list .painting")
        p.fill("#size", str(size))
        p.fill("#iterations", iterations)

    def start(self) -> str:
        """Press Start; the new run's id."""
        before = set(self.page.eval_on_selector_all("#runs article", "els => els.map(e => e.dataset.id)"))
        self.page.click("#start")
        deadline = time.monotonic() + 20
        while True:
            now = set(self.page.eval_on_selector_all("#runs article", "els => els.map(e => e.dataset.id)"))
            if now - before:
                return (now - before).pop()
            assert time.monotonic() < deadline, f"no new run; message: {self.page.inner_text('#message')}"
            time.sleep(0.05)

    def status(self, run_id: str, status: str, timeout: float = 60):
        self.page.wait_for_selector(f"#runs article[data-id='{run_id}'][data-status='{status}']", timeout=timeout * 1000)


@pytest.fixture
def page(browser, server):
    p = Page(browser, server.url)
    yield p
    try:
        p.close()
    finally:
        server.settle()


def until(page, expression: str, arg=None, timeout: float = 60):
    """Wait until ``expression`` (a JavaScript function of ``arg``) is true in the page. Polled
    from here: Playwright's own wait_for_function evaluates a string, which the page's
    Content-Security-Policy (no 'unsafe-eval') rightly refuses."""
    deadline = time.monotonic() + timeout
    while not page.evaluate(expression, arg):
        assert time.monotonic() < deadline, f"not within {timeout} s: {expression}"
        time.sleep(0.05)


def number(page, selector: str, attribute: str) -> float:
    value = page.get_attribute(selector, attribute)
    return float(value) if value not in (None, "", "final") else 0.0


def test_upload_start_watch_and_download(page, files, tmp_path):
    p = page.page
    previews: list[bytes] = []
    p.on("response", lambda r: "/preview.jpg?step=" in r.url and r.status == 200 and previews.append(r.body()))
    page.add_inputs(files, size=64, iterations="600")
    until(p, "() => document.getElementById('schedule').textContent.includes('64 px, 600 iterations')")
    run_id = page.start()
    p.wait_for_selector("#preview[data-step]")
    steps, points, bar = [], [], []
    for _ in range(3):  # the preview, the plot and the bar move on while it runs
        until(p, "s => Number(document.getElementById('preview').dataset.step) > s", max(steps, default=0))
        steps.append(number(p, "#preview", "data-step"))
        points.append(number(p, "#plot", "data-points"))
        bar.append(number(p, "#bar", "aria-valuenow"))
    assert steps == sorted(steps) and len(set(steps)) == 3
    assert points == sorted(points) and points[-1] > points[0]
    assert bar == sorted(bar) and bar[-1] > bar[0]
    assert "iteration" in p.inner_text("#status") and "of 600" in p.inner_text("#status")
    assert "total" in p.inner_text("#legend") and "style" in p.inner_text("#legend")
    page.status(run_id, "done")
    assert len(set(previews)) >= 2  # the pictures themselves changed
    assert "done: 600 iterations" in p.inner_text("#status")
    with p.expect_download() as download:
        p.click("#download")
    path = tmp_path / "download.png"
    download.value.save_as(path)
    assert download.value.suggested_filename == "nstyle-photo-painting.png"
    meta = json.loads(read_png_text(path)["nstyle"])
    assert meta["steps"] == 600 and meta["options"]["size"] == 64 and meta["options"]["iterations"] == 600
    assert Image.open(path).size == (64, 48)


def test_stop_keeps_the_image(page, files, tmp_path):
    p = page.page
    page.add_inputs(files, iterations="100000")
    run_id = page.start()
    p.wait_for_selector("#preview[data-step]")
    until(p, "() => Number(document.getElementById('preview').dataset.step) >= 3")
    p.click("#stop")
    page.status(run_id, "stopped", timeout=10)
    assert "stopped at iteration" in p.inner_text("#status")
    with p.expect_download() as download:
        p.click("#download")
    download.value.save_as(tmp_path / "stopped.png")
    assert 3 <= json.loads(read_png_text(tmp_path / "stopped.png")["nstyle"])["steps"] < 100000


def test_queue_two_and_cancel_one(page, files):
    p = page.page
    page.add_inputs(files, iterations="100000")
    first = page.start()
    p.wait_for_selector(f"#queue li.running[data-id='{first}']")
    assert p.inner_text("#start") == "Add to queue"
    p.fill("#size", "32")
    second = page.start()
    p.wait_for_selector(f"#queue li.queued[data-id='{second}']")
    assert "#1 in queue" in p.inner_text(f"#queue li.queued[data-id='{second}']")
    p.click(f"#queue li.queued[data-id='{second}'] button:has-text('Cancel')")
    page.status(second, "cancelled")
    assert p.query_selector(f"#queue li[data-id='{second}']") is None
    p.wait_for_selector("#preview[data-step]")  # a first iteration, so that Stop has an image to keep
    p.click(f"#queue li.running[data-id='{first}'] button:has-text('Stop')")
    page.status(first, "stopped", timeout=10)


def test_reload_reattaches_to_the_running_run(page, files):
    p = page.page
    page.add_inputs(files, iterations="100000")
    run_id = page.start()
    until(p, "() => Number(document.getElementById('preview').dataset.step) >= 5")
    p.reload()
    p.wait_for_selector("#connection.ok")
    p.wait_for_selector(f"#queue li.running[data-id='{run_id}']")
    p.wait_for_selector("#preview[data-step]")  # the stage follows it again: its picture
    until(p, "() => Number(document.getElementById('plot').dataset.points) >= 5")  # and its plot so far
    until(p, "() => document.getElementById('status').textContent.includes('of 100000')")
    p.click("#stop")
    page.status(run_id, "stopped", timeout=10)


def test_bad_upload_and_bad_value_show_their_message(page, files):
    p = page.page
    p.set_input_files("#photo-file", str(files / "notes.png"))
    until(p, "() => document.getElementById('message').textContent.includes(\"'notes.png' is not an image nstyle reads\")")
    p.set_input_files("#style-file", str(files / "empty.jpg"))
    until(p, "() => document.getElementById('message').textContent.includes(\"'empty.jpg' is empty (0 bytes)\")")
    assert p.query_selector("#style-list .painting") is None
    p.fill("#size", "-5")
    until(p, "() => document.getElementById('message').textContent === 'size must be between 32 and 65536 pixels, not -5'")
    assert p.get_attribute("#size", "aria-invalid") == "true"
    p.fill("#size", "64")
    until(p, "() => document.getElementById('message').textContent === ''")
    assert p.get_attribute("#size", "aria-invalid") is None
    p.click("#start")
    assert p.inner_text("#message") == "add a photo first"


def test_masks_painted_with_the_brush(page, files, server):
    p = page.page
    page.add_inputs(files, size=32)
    p.set_input_files("#style-file", str(files / "other.png"))
    p.wait_for_selector("#style-list .painting:nth-child(2)")
    p.check("#mask-on")
    box = p.query_selector("#mask-canvas").bounding_box()
    p.click("#mask-brushes button:nth-child(2)")  # the second painting's colour
    p.mouse.move(box["x"] + 5, box["y"] + 5)
    p.mouse.down()
    p.mouse.move(box["x"] + box["width"] / 3, box["y"] + box["height"] - 5, steps=8)
    p.mouse.up()
    run_id = page.start()
    page.status(run_id, "done")
    record = server.client.get(f"/api/runs/{run_id}").json()
    masks = record["inputs"]["masks"]
    assert len(masks) == 2
    first, second = (Image.open(io.BytesIO(server.client.get(f"/api/uploads/{m}/view.jpg").content)).convert("L")
                     for m in masks)
    assert first.getextrema()[1] < 30  # the first painting: painted nowhere
    assert second.getpixel((2, 2)) > 200 and second.getpixel((second.width - 3, 2)) < 30


def test_history_survives_a_restart_and_runs_again(browser, files, tmp_path):
    first = LiveServer(tmp_path / "data")
    page = Page(browser, first.url)
    page.add_inputs(files, size=48)
    page.page.select_option("#preserve_colors", "luminance")
    assert page.page.input_value("#palette_layout") == "2"  # the command line's default
    page.page.fill("#palette_layout", "0")
    run_id = page.start()
    page.status(run_id, "done")
    page.close()
    first.stop()
    second = LiveServer(tmp_path / "data")
    try:
        page = Page(browser, second.url)
        p = page.page
        card = f"#runs article[data-id='{run_id}']"
        p.wait_for_selector(f"{card}[data-status='done'] img[src*='/thumb.jpg']")
        assert "48 px" in p.inner_text(card) and "colours luminance" in p.inner_text(card)
        assert "colour places 0" in p.inner_text(card)
        (tmp_path / "first.png").write_bytes(second.client.get(f"/api/runs/{run_id}/output.png").content)
        assert json.loads(read_png_text(tmp_path / "first.png")["nstyle"])["options"]["palette_layout"] == 0
        p.click(f"{card} button:has-text('Run again with changes')")
        p.wait_for_selector("#photo-img[src*='/api/uploads/']")
        assert p.input_value("#size") == "48" and p.input_value("#preserve_colors") == "luminance"
        assert p.input_value("#palette_layout") == "0"
        assert p.query_selector_all("#style-list .painting") and "painting.png" in p.inner_text("#style-list")
        p.fill("#size", "40")
        again = page.start()
        page.status(again, "done")
        assert "40 px" in p.inner_text(f"#runs article[data-id='{again}']")
        p.click(f"{card} button:has-text('Delete')")
        p.click(f"{card} button:has-text('Delete for good?')")
        p.wait_for_selector(card, state="detached")
        assert not (tmp_path / "data" / "runs" / run_id).exists()
        page.close()
    finally:
        second.stop()


def test_the_request_check_catches_another_host(browser, server):
    """The check every test ends with can fail: a request elsewhere is refused and kept."""
    page = Page(browser, server.url)
    with pytest.raises(Exception):
        page.page.goto("http://198.51.100.7/elsewhere.js")
    assert page.foreign == ["http://198.51.100.7/elsewhere.js"]
    page.foreign.clear()
    page.close()
