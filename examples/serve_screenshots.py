"""Screenshots of nstyle serve for the README: during a run and after it.

    python examples/serve_screenshots.py        # writes examples/serve_running.png and serve_done.png

Starts ``nstyle serve`` on a free port with a temporary data folder, drives Debian's Chromium
(/usr/bin/chromium, through Playwright) to paint the bundled Tübingen photo as The Starry
Night at the default settings, and photographs the page part way through and at the end
(1400 px wide, reduced to 1000 px and 256 colours to keep the files small).
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image
from playwright.sync_api import sync_playwright

HERE = Path(__file__).resolve().parent
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]


def save(page, name: str) -> None:
    path = HERE / name
    page.evaluate("() => window.scrollTo(0, 0)")
    page.screenshot(path=str(path))
    img = Image.open(path).convert("RGB")
    img = img.resize((1000, round(img.height * 1000 / img.width)), Image.Resampling.LANCZOS)
    img.quantize(256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    print(f"{path} ({path.stat().st_size // 1024} KB)")


def main() -> None:
    env = dict(os.environ, NSTYLE_DATA=tempfile.mkdtemp(prefix="nstyle-shots-"))
    server = subprocess.Popen([sys.executable, "-m", "nstyle", "serve", "--port", "0"], env=env,
                              stderr=subprocess.PIPE, text=True)
    try:
        url = next(m.group(1) for line in server.stderr if (m := re.search(r"open (http://\S+)", line)))
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1400})
            page.goto(url)
            page.wait_for_selector("#connection.ok")
            page.click("button.example[title*='tubingen']")
            page.click("button.example[title*='starry_night']")
            page.wait_for_selector("#style-list .painting")
            page.click("#start")
            # The last scale ("scale 2/2" with today's schedule): the picture nearly there.
            while not re.search(r"scale (\d+)/\1\b", page.inner_text("#status")):
                time.sleep(0.5)
            time.sleep(5)
            save(page, "serve_running.png")
            page.wait_for_selector("#runs article[data-status='done']", timeout=600_000)
            time.sleep(1)
            save(page, "serve_done.png")
            browser.close()
    finally:
        server.terminate()
        server.wait(30)


if __name__ == "__main__":
    main()
