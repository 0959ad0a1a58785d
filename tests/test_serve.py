"""nstyle serve through its HTTP API, against a real uvicorn server on a loopback port.

The runs are real: the worker process runs ``run_job`` with a ``Stylizer`` on conftest's
random-weight network, at 64 px (a second or less). Each bad input of the issue gets its one
clear message, the server keeps answering, and nothing is written outside its data folder.
"""
from __future__ import annotations

import io
import json
import os
import re
import signal
import sqlite3
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import httpx
import psutil
import pytest
from PIL import Image

from conftest import tiny
from nstyle import cli
from nstyle.image import read_png_text
from servers import Events, LiveServer, deaf_worker, slow_worker

LIMIT = 2 * 2**20  # the test server's upload limit: 2 MB


def png(image) -> bytes:
    out = io.BytesIO()
    pixels = (image.permute(1, 2, 0).numpy() * 255).round().astype("uint8")
    Image.fromarray(pixels).save(out, "PNG")
    return out.getvalue()


def gif() -> bytes:
    out = io.BytesIO()
    Image.new("P", (8, 8)).save(out, "GIF")
    return out.getvalue()


def png_header(width: int, height: int) -> bytes:
    """A PNG that claims width x height and holds a few bytes of data: a decompression bomb's header."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("serve")


@pytest.fixture(scope="module")
def server(root):
    s = LiveServer(root / "data", max_upload_bytes=LIMIT, max_upload_pixels=4_000_000, kill_after=3)
    yield s
    s.stop()


def up(server, data: bytes, name: str = "photo.png") -> httpx.Response:
    return server.client.post("/api/uploads", content=data, headers={"X-File-Name": name})


@pytest.fixture(scope="module")
def inputs(server) -> tuple[str, str]:
    """Ids of a 64x48 photo and a 48x64 painting."""
    photo = up(server, png(tiny(0, 48, 64)), "photo.png").json()["id"]
    painting = up(server, png(tiny(1, 64, 48)), "painting.png").json()["id"]
    return photo, painting


def start(server, inputs, **settings) -> dict:
    body = {"content": inputs[0], "styles": [inputs[1]], "settings": {"size": 64, **settings}}
    response = server.client.post("/api/runs", json=body)
    assert response.status_code == 201, response.text
    return response.json()


# --- the page and what is not there ------------------------------------------------------


def test_page_assets_and_no_listing(server):
    page = server.client.get("/")
    assert page.status_code == 200 and "<title>nstyle</title>" in page.text
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "connect-src 'self'" in csp and "http" not in csp
    for name in ("app.js", "style.css"):
        assert server.client.get(f"/static/{name}").status_code == 200
    for path in ("/static/", "/static/index.html", "/static/..%2Fserve.py", "/static/examples", "/uploads/",
                 "/runs/", "/api/uploads/", "/history.sqlite3", "/api/runs/..%2F..%2Fhistory.sqlite3"):
        response = server.client.get(path)
        assert response.status_code in (404, 405), path
        assert "error" in response.json(), path


def test_options_offer_the_command_lines_defaults(server):
    options = server.client.get("/api/options").json()
    assert options["defaults"]["size"] == cli.D.size == 512
    assert options["defaults"]["style_strength"] == cli.D.style_strength
    assert set(options["choices"]["model"]) == {"auto", "vgg19", "vgg16bn-craft", "vgg16-hed"}
    assert {e["name"] for e in options["examples"]} == {"tubingen.jpg", "starry_night.jpg", "the_scream.jpg"}
    assert options["limits"]["upload_bytes"] == LIMIT


# --- bad uploads ---------------------------------------------------------------------------


@pytest.mark.parametrize("data, name, status, words", [
    (b"", "empty.png", 400, "'empty.png' is empty (0 bytes)"),
    (b"just some text, not an image\n" * 10, "notes.png", 415, "'notes.png' is not an image nstyle reads"),
    (png_header(30000, 30000), "huge.png", 413, "'huge.png' is too large: 900 million pixels"),
    (png_header(3000, 2000), "big.png", 413, "'big.png' is 3000x2000 pixels (6 million); the limit is 4 million"),
    (png(tiny(0))[:60], "cut.png", 400, "'cut.png' is damaged"),
    (gif(), "anim.gif", 415, "'anim.gif' is a GIF image; nstyle reads JPEG, PNG"),
])
def test_bad_upload_gets_one_clear_line(server, root, data, name, status, words):
    response = up(server, data, name)
    assert response.status_code == status
    message = response.json()["error"]
    assert message.startswith(words) and "\n" not in message
    assert server.client.get("/api/options").status_code == 200  # still running
    assert sorted(p.name for p in root.iterdir()) == ["data"]


def test_over_limit_upload_is_refused_as_it_arrives(server, root):
    response = up(server, os.urandom(3 * 2**20), "big.jpg")  # refused by its Content-Length
    assert response.status_code == 413 and response.json()["error"] == "'big.jpg' is 3 MB; the limit is 2 MB"

    def chunks():  # no Content-Length: counted as it comes
        for _ in range(3):
            yield b"\xff" * 2**20

    response = server.client.post("/api/uploads", content=chunks(), headers={"X-File-Name": "stream.jpg"})
    assert response.status_code == 413 and "larger than the limit of 2 MB" in response.json()["error"]
    assert not any(p.stat().st_size > LIMIT for p in (root / "data" / "uploads").iterdir())


def test_file_names_are_labels_never_paths(server, root):
    data = png(tiny(5))
    for name in ("../../../../outside.png", "..\\..\\outside.png", "/etc/outside.png", "%2e%2e%2foutside.png"):
        response = up(server, data, name)
        assert response.status_code == 200, response.text
        record = response.json()
        assert record["name"] == "outside.png" and len(record["id"]) == 32
    assert sorted(p.name for p in root.iterdir()) == ["data"]
    stored = sorted(p.name for p in (root / "data" / "uploads").iterdir())
    assert all(name.split(".")[0].isalnum() for name in stored) and not any("outside" in n for n in stored)


def test_unknown_ids_are_404(server):
    for path in ("/api/runs/0123456789abcdef0123456789abcdef", "/api/runs/0123456789abcdef0123456789abcdef/output.png",
                 "/api/runs/nonsense/preview.jpg", "/api/uploads/0123456789abcdef0123456789abcdef/view.jpg"):
        response = server.client.get(path)
        assert response.status_code == 404 and "no " in response.json()["error"], path
    response = server.client.post("/api/runs/0123456789abcdef0123456789abcdef/stop")
    assert response.status_code == 404 and response.json()["error"] == "no run with that id (it may have been deleted)"
    assert server.client.delete("/api/runs/0123456789abcdef0123456789abcdef").status_code == 404


# --- bad values ------------------------------------------------------------------------------


@pytest.mark.parametrize("settings, field, words", [
    ({"size": -5}, "size", "size must be between 32 and 65536 pixels, not -5"),
    ({"size": 40.5}, "size", "size must be a whole number, not 40.5"),
    ({"size": "big"}, "size", "size must be a whole number, not 'big'"),
    ({"style_strength": 1.5}, "style_strength", "style strength must be between 0 and 1, not 1.5"),
    ({"style_scale": 0}, "style_scale", "style scale must be greater than 0, not 0"),
    ({"iterations": [10, 0]}, "iterations", "iterations must be between 1 and 1000000, not 0"),
    ({"seed": -1}, "seed", "seed must be between 0 and"),
    ({"model": "vgg99"}, "model", "model must be one of auto, vgg19"),
    ({"palette_layout": 11}, "palette_layout", "palette layout must be between 0 and 10, not 11"),
    ({"preserve_colors": "sepia"}, "preserve_colors", "preserve colors must be one of none, luminance, histogram"),
    ({"style_weights": [1, 2]}, "style_weights", "2 style weights for 1 style images"),
    ({"tv_weight": 3}, None, "unknown setting 'tv_weight'"),
])
def test_bad_value_gets_the_command_lines_message(server, inputs, settings, field, words):
    body = {"content": inputs[0], "styles": [inputs[1]], "settings": {"size": 64, **settings}}
    for path in ("/api/runs", "/api/check"):
        response = server.client.post(path, json={**body, "styles": 1} if path == "/api/check" else body)
        assert response.status_code == 400, (path, response.text)
        assert response.json()["error"].startswith(words) and response.json()["field"] == field
    assert all(r["status"] != "queued" for r in server.client.get("/api/runs").json())


def test_bad_request_bodies(server, inputs):
    cases = [({"styles": [inputs[1]]}, "add a photo first"),
             ({"content": inputs[0]}, "add at least one painting"),
             ({"content": "f" * 32, "styles": [inputs[1]]}, "the photo is no longer on the server"),
             ({"content": inputs[0], "styles": ["../../etc/passwd"]}, "painting 1 is no longer on the server"),
             ({"content": inputs[0], "styles": [inputs[1]], "masks": [inputs[0], inputs[0]]}, "give one mask per painting")]
    for body, words in cases:
        response = server.client.post("/api/runs", json=body)
        assert response.status_code == 400 and response.json()["error"].startswith(words), response.text
    response = server.client.post("/api/runs", content=b"{not json", headers={"Content-Type": "application/json"})
    assert response.status_code == 400 and response.json()["error"] == "the request is not valid JSON"


# --- runs --------------------------------------------------------------------------------------


def test_run_progress_previews_and_the_cli_png(server, inputs, root, monkeypatch, random_network, tmp_path):
    events = Events(server.url)
    run = start(server, inputs, seed=3, style_strength=0.7)
    done = server.wait_status(run["id"])
    assert done["status"] == "done" and done["output"] and done["result"]["steps"] == done["result"]["total"]
    progress = events.of("progress", run["id"])
    assert [p["progress"]["step"] for p in progress] == list(range(1, done["result"]["total"] + 1))
    assert progress[-1]["progress"]["terms"].keys() >= {"content", "style", "tv"}
    previews = events.of("preview", run["id"])
    assert previews and previews[-1]["step"] == done["result"]["total"]
    picture = server.client.get(f"/api/runs/{run['id']}/preview.jpg")
    assert picture.headers["content-type"] == "image/jpeg" and Image.open(io.BytesIO(picture.content)).size == (64, 48)
    history = server.client.get(f"/api/runs/{run['id']}/history").json()
    assert len(history) == done["result"]["total"] and history[0]["step"] == 1

    download = server.client.get(f"/api/runs/{run['id']}/output.png")
    assert download.status_code == 200 and "attachment" in download.headers["content-disposition"]
    assert "nstyle-photo-painting.png" in download.headers["content-disposition"]
    (tmp_path / "web.png").write_bytes(download.content)
    meta = json.loads(read_png_text(tmp_path / "web.png")["nstyle"])
    assert meta["seed"] == 3 and meta["options"]["style_strength"] == 0.7 and meta["options"]["size"] == 64

    assert (meta["content"], meta["styles"]) == ("photo.png", ["painting.png"])  # as the browser named them

    # The same files under the names they were uploaded as, on the command line: the same
    # PNG, byte for byte.
    folder = tmp_path / "mine"
    folder.mkdir()
    for upload_id, name in zip(inputs, ("photo.png", "painting.png")):
        (folder / name).write_bytes((root / "data" / "uploads" / f"{upload_id}.png").read_bytes())
    monkeypatch.chdir(folder)
    assert cli.main(["photo.png", "painting.png", "-o", str(tmp_path / "cli.png"),
                     "-s", "64", "--seed", "3", "--style-strength", "0.7", "-q"]) == 0
    assert (tmp_path / "cli.png").read_bytes() == download.content


def test_stop_keeps_the_image(server, inputs, tmp_path):
    events = Events(server.url)
    run = start(server, inputs, iterations=100000)
    events.wait(lambda kind, d: kind == "progress" and d["run"] == run["id"] and d["progress"]["step"] >= 5)
    assert server.client.post(f"/api/runs/{run['id']}/stop").json()["state"] == "stopping"
    record = server.wait_status(run["id"], timeout=10)
    assert record["status"] == "stopped" and record["output"]
    assert record["message"].startswith("stopped at iteration ")
    (tmp_path / "out.png").write_bytes(server.client.get(f"/api/runs/{run['id']}/output.png").content)
    assert 5 <= json.loads(read_png_text(tmp_path / "out.png")["nstyle"])["steps"] < 100000


def test_queue_cancel_and_estimates(server, inputs):
    events = Events(server.url)
    first = start(server, inputs, iterations=100000)
    second = start(server, inputs)
    third = start(server, inputs, size=32)
    state = events.wait(lambda kind, d: kind == "queue" and len(d["queue"]) == 2)[1]
    assert [q["id"] for q in state["queue"]] == [second["id"], third["id"]]
    assert [q["position"] for q in state["queue"]] == [1, 2]
    assert server.client.post(f"/api/runs/{second['id']}/stop").json()["state"] == "cancelled"
    assert server.wait_status(second["id"])["status"] == "cancelled"
    # A page learns of the new queue before the run's new status: once its history shows the
    # run ended, its queue no longer lists it (a browser test read the two in between).
    events.wait(lambda kind, d: kind == "run" and d["id"] == second["id"] and d["status"] == "cancelled")
    with events._cond:
        kinds = [(k, d) for k, d in events.items if k in ("queue", "run")]
    ended = next(i for i, (k, d) in enumerate(kinds) if k == "run" and d["id"] == second["id"] and d["status"] == "cancelled")
    before = [d for k, d in kinds[:ended] if k == "queue"]
    assert before and second["id"] not in [q["id"] for q in before[-1]["queue"]]
    # (after its first iteration: stopped before it, a run has nothing to save and is cancelled)
    events.wait(lambda kind, d: kind == "progress" and d["run"] == first["id"])
    server.client.post(f"/api/runs/{first['id']}/stop")
    assert server.wait_status(first["id"])["status"] == "stopped"
    assert server.wait_status(third["id"])["status"] == "done"
    assert not server.client.get(f"/api/runs/{second['id']}").json()["output"]
    # Estimates come from finished runs: seconds per (size / 1000)^2.
    assert server.app.state.store.seconds_per_size() > 0


def test_the_worker_caps_its_memory_for_each_run(server, inputs):
    # RLIMIT_DATA, from the memory free as the run starts: a wrong estimate ends in an
    # allocation error (a smaller retry, or one line on the page), not the kernel's killer.
    run = start(server, inputs, size=32)
    assert server.wait_status(run["id"])["status"] == "done"
    limits = Path(f"/proc/{server.runner.worker.process.pid}/limits").read_text()
    soft = re.search(r"Max data size\s+(\S+)", limits).group(1)
    assert soft != "unlimited" and int(soft) <= psutil.virtual_memory().total + 2 * 2**30


def test_a_crashed_worker_fails_its_run_only(server, inputs):
    events = Events(server.url)
    run = start(server, inputs, iterations=100000)
    events.wait(lambda kind, d: kind == "progress" and d["run"] == run["id"])
    os.kill(server.runner.worker.process.pid, signal.SIGKILL)
    record = server.wait_status(run["id"], timeout=20)
    assert record["status"] == "failed" and "process ended unexpectedly" in record["message"]
    assert "exit code -9" in record["message"]
    assert server.wait_status(start(server, inputs)["id"], timeout=60)["status"] == "done"


def test_delete_removes_the_files(server, inputs, root):
    run = start(server, inputs, size=32)
    assert server.wait_status(run["id"])["status"] == "done"
    folder = root / "data" / "runs" / run["id"]
    assert (folder / "output.png").is_file() and (folder / "thumb.jpg").is_file()
    assert server.client.delete(f"/api/runs/{run['id']}").json() == {"deleted": run["id"]}
    assert not folder.exists() and server.client.get(f"/api/runs/{run['id']}").status_code == 404


def stop_a_long_run(server, after_step: int = 1) -> tuple[dict, str]:
    """Start an endless run, press Stop once it has reported ``after_step`` iterations, and
    return its record once it has ended, and the photo's upload id."""
    photo = server.client.post("/api/uploads", content=png(tiny(0, 48, 64)), headers={"X-File-Name": "p.png"}).json()
    run = start(server, (photo["id"], photo["id"]), iterations=100000)
    Events(server.url).wait(lambda kind, d: kind == "progress" and d["run"] == run["id"]
                            and d["progress"]["step"] >= after_step)
    server.client.post(f"/api/runs/{run['id']}/stop")
    return server.wait_status(run["id"], timeout=20), photo["id"]


def test_stop_falls_back_to_killing_the_worker(tmp_path):
    deaf = LiveServer(tmp_path / "data", setup=deaf_worker, kill_after=1)
    try:
        record, photo = stop_a_long_run(deaf)
        assert record["status"] == "failed" and re.search(r"did not stop within [\d.]+ s and was ended", record["message"])
        assert deaf.wait_status(start(deaf, (photo, photo))["id"])["status"] == "done"
    finally:
        deaf.stop()


def test_stop_waits_for_an_iteration_longer_than_the_kill_delay(tmp_path):
    slow = LiveServer(tmp_path / "data", setup=slow_worker, kill_after=1)
    try:
        record, _ = stop_a_long_run(slow, after_step=2)
        assert record["status"] == "stopped" and record["output"], record  # saved, not killed
    finally:
        slow.stop()


def test_history_survives_a_restart(tmp_path):
    first = LiveServer(tmp_path / "data")
    photo = first.client.post("/api/uploads", content=png(tiny(0, 48, 64)), headers={"X-File-Name": "p.png"}).json()
    done = start(first, (photo["id"], photo["id"]), size=32)
    assert first.wait_status(done["id"])["status"] == "done"
    long = start(first, (photo["id"], photo["id"]), iterations=100000)
    queued = start(first, (photo["id"], photo["id"]))
    first.wait_status(long["id"], statuses=("running",))
    first.stop()  # the running run is stopped with its image saved; the queued one waits
    with sqlite3.connect(tmp_path / "data" / "history.sqlite3") as db:
        assert db.execute("SELECT status FROM runs WHERE id = ?", (queued["id"],)).fetchone() == ("queued",)
    second = LiveServer(tmp_path / "data")
    try:
        runs = {r["id"]: r for r in second.client.get("/api/runs").json()}
        assert runs[done["id"]]["status"] == "done"
        assert second.client.get(f"/api/runs/{done['id']}/output.png").status_code == 200
        assert runs[long["id"]]["status"] in ("stopped", "cancelled") and "the server stopped" in runs[long["id"]]["message"]
        again = second.wait_status(queued["id"])  # the new server runs what was queued
        assert again["status"] == "done" and second.client.get(f"/api/runs/{queued['id']}/output.png").status_code == 200
    finally:
        second.stop()


# --- the door: host, origin, token -----------------------------------------------------------


def test_loopback_refuses_other_hosts_and_cross_site_posts(server):
    client = server.client
    rebound = client.get("/api/runs", headers={"Host": "attacker.example:8000"})  # DNS rebinding
    assert rebound.status_code == 403 and "answers only to 127.0.0.1 and localhost" in rebound.json()["error"]
    cross = client.post("/api/runs", json={}, headers={"Origin": "http://attacker.example"})
    assert cross.status_code == 403 and cross.json()["error"] == "a request from another site's page is refused"
    assert client.get("/", headers={"Host": "localhost"}).status_code == 200
    assert client.post("/api/check", json={}, headers={"Origin": server.url}).status_code == 200


def test_token_is_needed_on_every_request(tmp_path):
    door = LiveServer(tmp_path / "data", token="s3cret", loopback=False, lifespan="off")
    try:
        client = door.client
        for path in ("/", "/static/app.js", "/api/options", "/api/runs", "/api/events", "/nowhere"):
            response = client.get(path)
            assert response.status_code == 401 and "needs its token" in response.json()["error"], path
        assert client.get("/api/runs?token=wrong").status_code == 401
        entry = client.get("/?token=s3cret", follow_redirects=False)
        assert entry.status_code == 303 and entry.headers["location"] == "/"
        assert "nstyle_token=s3cret" in entry.headers["set-cookie"] and "HttpOnly" in entry.headers["set-cookie"]
        assert client.get("/").status_code == 200  # with the cookie now
        client.cookies.clear()
        assert client.get("/api/runs", headers={"X-Nstyle-Token": "s3cret"}).status_code == 200
    finally:
        door.stop()


# --- the command --------------------------------------------------------------------------------


def test_nstyle_serve_command(tmp_path):
    env = dict(os.environ, NSTYLE_DATA=str(tmp_path / "data"))
    proc = subprocess.Popen([sys.executable, "-m", "nstyle", "serve", "--host", "0.0.0.0", "--port", "0"],
                            stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    try:
        lines = [proc.stderr.readline() for _ in range(3)]
        assert lines[0].startswith("nstyle: warning: listening on 0.0.0.0, reachable from other machines")
        url = lines[1].split("open ", 1)[1].strip()
        port, token = url.split(":")[2].split("/")[0], url.split("token=")[1]
        assert f"{tmp_path / 'data'}" in lines[2]
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(base + "/api/options").status_code == 401
        assert httpx.get(base + "/api/options", headers={"X-Nstyle-Token": token}).status_code == 200
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
        assert "nstyle: server stopped" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_nstyle_serve_bad_arguments(capsys):
    assert cli.main(["serve", "--port", "70000"]) == 1
    assert capsys.readouterr().err == "nstyle: error: port must be between 0 and 65535, not 70000\n"
    assert cli.main(["serve", "--port", "x"]) == 2
    assert "'x' is not a whole number" in capsys.readouterr().err
