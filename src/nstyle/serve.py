"""``nstyle serve``: a local web page where a photo is painted while you watch.

A Starlette app on uvicorn. The page (``web/``: plain HTML, CSS and JavaScript, nothing
from another host) uploads images, starts runs, and follows them through server-sent
events (``/api/events``): each iteration's progress, and a note that a new preview is ready,
which the page fetches once the previous one has loaded. Runs go through ``worker.Runner``
(one worker process, one run at a time, the others queued) and the history through
``store.Store`` (SQLite in the data folder).

What keeps the door closed: bound to 127.0.0.1 unless ``--host`` says otherwise, and then
every request needs the token printed at start-up; on loopback, a request must name this
machine in its Host header (no DNS rebinding) and a POST from another site's page is
refused (Origin); uploads are limited in bytes and pixels and checked by content; their
names are labels, never paths; every file is reached through a run's or an upload's id; no
folder is listed.
"""
from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import re
import secrets
import socket
import threading
import time
import uuid
import webbrowser
from contextlib import asynccontextmanager
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Callable
from urllib.parse import parse_qs, unquote, urlsplit

import uvicorn
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from . import __version__, schedule
from .config import COLOR_MODES, MODELS, Config, ConfigError, preset
from .jobs import Job
from .plan import style_options
from .store import MAX_BYTES, MAX_PIXELS, READS, Store, UploadError, display_name, megabytes
from .worker import Runner

log = logging.getLogger("nstyle.serve")

WEB = Path(__file__).parent / "web"
STATIC = {"app.js": "text/javascript", "style.css": "text/css"}
EXAMPLES = {"tubingen.jpg": "photo", "starry_night.jpg": "painting", "the_scream.jpg": "painting"}
# What the page sets, each a Config field: the same defaults and limits as the command line.
SETTINGS = ("size", "style_strength", "preserve_colors", "palette_layout", "style_scale", "style_weights", "model",
            "seed", "iterations")
FLOATS = ("style_strength", "palette_layout", "style_scale", "style_weights")
MAX_STYLES = 8
HEADERS = [(b"content-security-policy", b"default-src 'none'; script-src 'self'; style-src 'self'; "
            b"img-src 'self' blob: data:; connect-src 'self'; form-action 'self'; base-uri 'none'; "
            b"frame-ancestors 'none'"),
           (b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"),
           (b"x-frame-options", b"DENY")]


def error(message: str, status: int = 400, **extra) -> JSONResponse:
    """Every refusal: one line for the page."""
    return JSONResponse({"error": message, **extra}, status_code=status)


# --- settings --------------------------------------------------------------------------


def page_defaults() -> dict:
    return {k: getattr(Config(), k) for k in SETTINGS}


def settings_config(settings) -> tuple[Config, dict]:
    """The page's settings as a Config, built as the command line builds it (the same
    preset, the same checks and messages); and the settings as recorded. ConfigError for
    a bad value."""
    if not isinstance(settings, dict):
        raise ConfigError("settings must be an object of option names and values")
    unknown = sorted(set(settings) - set(SETTINGS))
    if unknown:
        raise ConfigError(f"unknown setting '{unknown[0]}' (the page sets {', '.join(SETTINGS)})")
    given = {k: v for k, v in settings.items() if v is not None and v != []}
    for k, v in given.items():
        if isinstance(v, list):
            given[k] = v = tuple(v)
        if k in FLOATS:  # JSON has one kind of number; the command line reads these as floats
            fix = (lambda x: float(x) if isinstance(x, int) and not isinstance(x, bool) else x)
            given[k] = tuple(fix(x) for x in v) if isinstance(v, tuple) else fix(v)
    for k in ("iterations", "style_scale"):  # one number for every scale / style, as the CLI passes it
        if isinstance(given.get(k), tuple) and len(given[k]) == 1:
            given[k] = given[k][0]
    config = preset("default", **given)
    return config, {**page_defaults(), **{k: list(v) if isinstance(v, tuple) else v for k, v in given.items()}}


def field_of(message: str) -> str | None:
    """The setting a Config message is about, for the page to mark."""
    for name in sorted(SETTINGS, key=len, reverse=True):
        label = name.replace("_", " ")
        if message.startswith(label) or message.startswith(label.rstrip("s")) or f" {label} " in message:
            return name
    return None


def schedule_text(config: Config) -> str:
    scales = schedule.plan(config.size, config.scales, config.min_size, config.iterations)
    return (" → ".join(f"{s.size}" for s in scales) + " px, " +
            " + ".join(str(s.iterations) for s in scales) + " iterations")


# --- the guard -------------------------------------------------------------------------


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class Guard:
    """ASGI middleware in front of every request (see the module's docstring); adds the
    security headers (a Content-Security-Policy that allows this server only) to every
    response."""

    def __init__(self, app, token: str | None, loopback: bool):
        self.app, self.token, self.loopback = app, token, loopback

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        refusal = self.check(scope)
        if refusal is not None:
            return await refusal(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                message["headers"] = list(message.get("headers", [])) + HEADERS
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def check(self, scope) -> Response | None:
        headers = Headers(scope=scope)
        host = headers.get("host", "")
        hostname = urlsplit(f"//{host}").hostname or ""
        if self.loopback and not is_loopback(hostname):
            return error(f"this server answers only to 127.0.0.1 and localhost, not to '{host}'", 403)
        origin = headers.get("origin")
        if scope["method"] not in ("GET", "HEAD") and origin and urlsplit(origin).netloc != host:
            return error("a request from another site's page is refused", 403)
        if self.token is None:
            return None
        query = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token", [""])[0]
        cookie = SimpleCookie(headers.get("cookie", ""))
        given = [query, headers.get("x-nstyle-token", ""), cookie["nstyle_token"].value if "nstyle_token" in cookie else ""]
        if not any(secrets.compare_digest(g.encode(), self.token.encode()) for g in given if g):
            return error("this server needs its token: open the address it printed when it started", 401)
        if query and scope["path"] == "/":  # keep it in a cookie, out of the address bar
            response = RedirectResponse("/", 303)
            response.set_cookie("nstyle_token", self.token, httponly=True, samesite="strict")
            return response
        return None


# --- server-sent events ----------------------------------------------------------------


class Hub:
    """Fans events out to every open page. ``publish`` may be called from any thread."""

    def __init__(self):
        self._listeners: dict[asyncio.Queue, asyncio.AbstractEventLoop] = {}
        self._lock = threading.Lock()
        self.closed = False

    def publish(self, kind: str, data) -> None:
        self._send(f"event: {kind}\ndata: {json.dumps(data)}\n\n")

    def close(self) -> None:
        self.closed = True
        self._send(None)

    def _send(self, message: str | None) -> None:
        with self._lock:
            listeners = list(self._listeners.items())
        for queue, loop in listeners:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, message)
            except RuntimeError:  # its loop is closed
                self.remove(queue)

    def add(self) -> asyncio.Queue:
        queue: asyncio.Queue = asyncio.Queue()
        with self._lock:
            self._listeners[queue] = asyncio.get_running_loop()
        return queue

    def remove(self, queue: asyncio.Queue) -> None:
        with self._lock:
            self._listeners.pop(queue, None)


# --- the app ---------------------------------------------------------------------------


async def read_body(request: Request, limit: int, name: str) -> bytes:
    """The request's body, refused (UploadError) as soon as it passes ``limit`` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise UploadError(f"'{name}' is {megabytes(int(declared))}; the limit is {megabytes(limit)}", 413)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise UploadError(f"'{name}' is larger than the limit of {megabytes(limit)}", 413)
        chunks.append(chunk)
    return b"".join(chunks)


async def read_json(request: Request) -> dict:
    try:
        body = json.loads(await read_body(request, 256 * 1024, "the request"))
    except (ValueError, UnicodeDecodeError):
        raise ConfigError("the request is not valid JSON") from None
    if not isinstance(body, dict):
        raise ConfigError("the request must be a JSON object")
    return body


def create_app(folder: str | Path | None = None, *, token: str | None = None, loopback: bool = True,
               max_upload_bytes: int = MAX_BYTES, max_upload_pixels: int = MAX_PIXELS,
               worker_setup: Callable[[], None] | None = None, kill_after: float = 5.0) -> Starlette:
    """The web app. ``folder``: the data folder (default ``store.data_folder()``).
    ``worker_setup``: a picklable function the worker process calls first (tests use it to
    swap in a small network)."""
    store = Store(folder, max_upload_bytes, max_upload_pixels)
    hub = Hub()
    runner = Runner(store, hub.publish, worker_setup, kill_after)
    examples: list[dict] = []

    @asynccontextmanager
    async def lifespan(app):
        for name, role in EXAMPLES.items():
            if (WEB / "examples" / name).is_file():
                examples.append(dict(store.add_example(WEB / "examples" / name), role=role))
        runner.start()
        for record in store.queued():  # runs queued when the last server stopped: run them now
            named = record["inputs"]
            try:
                photo, paintings, masks = inputs_of({"content": named["content"]["id"], "masks": named["masks"],
                                                     "styles": [s["id"] for s in named["styles"]]})
                config, _ = settings_config(record["settings"])
            except ConfigError as e:
                hub.publish("run", store.update_run(record["id"], status="failed", message=str(e), finished=time.time()))
                continue
            runner.submit(record["id"], job_of(record["id"], photo, paintings, masks, config), config.size)
        try:
            yield
        finally:
            hub.close()
            await asyncio.to_thread(runner.close)
            store.close()

    def run_or_404(request: Request) -> dict:
        record = store.run(request.path_params["id"])
        if record is None:
            raise HTTPException(404, "no run with that id (it may have been deleted)")
        return record

    async def index(request: Request):
        return FileResponse(WEB / "index.html", media_type="text/html", headers={"Cache-Control": "no-store"})

    async def static(request: Request):
        name = request.path_params["name"]
        if name not in STATIC:
            raise HTTPException(404, "no such file")
        return FileResponse(WEB / name, media_type=STATIC[name], headers={"Cache-Control": "no-cache"})

    async def options(request: Request):
        from .weights import choose_weights

        try:
            auto = (await asyncio.to_thread(choose_weights, "auto", None, False)).spec.name
        except Exception:  # shown as a hint only; a run says what is wrong
            auto = None
        return JSONResponse({"version": __version__, "defaults": page_defaults(),
                             "choices": {"preserve_colors": COLOR_MODES, "model": MODELS}, "auto_model": auto,
                             "limits": {"upload_bytes": store.max_bytes, "upload_pixels": store.max_pixels,
                                        "styles": MAX_STYLES},
                             "reads": READS, "examples": examples})

    async def check(request: Request):
        body = await read_json(request)
        config, _ = settings_config(body.get("settings", {}))
        styles = body.get("styles")
        if isinstance(styles, int) and styles > 0:
            style_options(config, styles)
        return JSONResponse({"ok": True, "schedule": schedule_text(config)})

    async def upload(request: Request):
        name = display_name(unquote(request.headers.get("x-file-name", "")))
        data = await read_body(request, store.max_bytes, name)
        return JSONResponse(await asyncio.to_thread(store.add_upload, data, name))

    async def upload_record(request: Request):
        record = store.upload(request.path_params["id"])
        if record is None:
            raise HTTPException(404, "no upload with that id")
        return JSONResponse({k: record[k] for k in ("id", "name", "width", "height")})

    async def upload_view(request: Request):
        path = store.upload_view(request.path_params["id"])
        if path is None:
            raise HTTPException(404, "no upload with that id")
        return FileResponse(path, media_type="image/jpeg")

    def inputs_of(body: dict) -> tuple[dict, list, list | None]:
        content = body.get("content")
        if not content:
            raise ConfigError("add a photo first")
        photo = store.upload(content) if isinstance(content, str) else None
        if photo is None:
            raise ConfigError("the photo is no longer on the server: add it again")
        styles = body.get("styles") or []
        if not isinstance(styles, list) or not styles:
            raise ConfigError("add at least one painting")
        if len(styles) > MAX_STYLES:
            raise ConfigError(f"at most {MAX_STYLES} paintings")
        paintings = [store.upload(s) if isinstance(s, str) else None for s in styles]
        for k, p in enumerate(paintings, 1):
            if p is None:
                raise ConfigError(f"painting {k} is no longer on the server: add it again")
        masks = body.get("masks")
        if masks is not None:
            if not isinstance(masks, list) or len(masks) != len(styles):
                raise ConfigError(f"give one mask per painting ({len(styles)}), or none")
            masks = [store.upload(m) if isinstance(m, str) else None for m in masks]
            for k, m in enumerate(masks, 1):
                if m is None:
                    raise ConfigError(f"the mask of painting {k} is no longer on the server: paint it again")
        return photo, paintings, masks

    def job_of(run_id: str, photo: dict, paintings: list, masks: list | None, config: Config) -> Job:
        path = lambda u: f"uploads/{u['id']}.{u['ext']}"  # noqa: E731 - relative to the data folder
        # The PNG's settings name the inputs as the browser did (photo.jpg), not as they are
        # stored: the file is then the one `nstyle photo.jpg painting.jpg ...` writes.
        names = {path(u): u["name"] for u in (photo, *paintings, *(masks or ()))}
        return Job(path(photo), tuple(path(p) for p in paintings), f"runs/{run_id}/output.png", config,
                   masks=None if masks is None else tuple(path(m) for m in masks), log=f"runs/{run_id}/output.json",
                   names=names)

    async def create_run(request: Request):
        body = await read_json(request)
        photo, paintings, masks = inputs_of(body)
        config, settings = settings_config(body.get("settings", {}))
        style_options(config, len(paintings), None if masks is None else len(masks))
        run_id = uuid.uuid4().hex
        job = job_of(run_id, photo, paintings, masks, config)
        inputs = {"content": {"id": photo["id"], "name": photo["name"]},
                  "styles": [{"id": p["id"], "name": p["name"]} for p in paintings],
                  "masks": None if masks is None else [m["id"] for m in masks]}
        if runner.full():
            return error(f"the queue is full ({runner.max_queue} runs): wait for some to finish", 429)
        record = store.create_run(run_id, inputs, settings)
        hub.publish("run", record)
        runner.submit(run_id, job, config.size)
        return JSONResponse(record, status_code=201)

    async def list_runs(request: Request):
        return JSONResponse(store.runs())

    async def run_detail(request: Request):
        record = run_or_404(request)
        if request.method == "DELETE":
            if runner.live is not None and runner.live.id == record["id"]:
                return error("this run is still going: stop it before deleting it", 409)
            if record["status"] == "queued":
                try:
                    runner.stop(record["id"])
                except KeyError:
                    pass
            await asyncio.to_thread(store.delete_run, record["id"])
            hub.publish("deleted", {"id": record["id"]})
            return JSONResponse({"deleted": record["id"]})
        return JSONResponse(record)

    async def stop(request: Request):
        record = run_or_404(request)
        try:
            return JSONResponse({"id": record["id"], "state": runner.stop(record["id"])})
        except KeyError:
            return error(f"this run is not running or queued (it is {record['status']})", 409)

    async def picture(request: Request):
        record = run_or_404(request)
        name = request.path_params["name"]
        folder = store.run_folder(record["id"])
        if name == "preview.jpg":
            live = runner.preview(record["id"])
            if live is not None:
                return Response(live, media_type="image/jpeg", headers={"Cache-Control": "no-store"})
        path = folder / name
        if not path.is_file():
            raise HTTPException(404, "no picture of this run yet" if name != "output.png" else
                                "this run has no image: it ended before its first iteration")
        if name == "output.png":
            stem = lambda u: re.sub(r"[^A-Za-z0-9_-]+", "_", Path(u["name"]).stem)[:40] or "image"  # noqa: E731
            filename = f"nstyle-{stem(record['inputs']['content'])}-{stem(record['inputs']['styles'][0])}.png"
            return FileResponse(path, media_type="image/png", filename=filename)
        return FileResponse(path, media_type="image/jpeg", headers={"Cache-Control": "no-cache"})

    async def history(request: Request):
        """A run's loss history, for the plot: live while it runs, from its log after."""
        record = run_or_404(request)
        live = runner.live
        if live is not None and live.id == record["id"]:
            return JSONResponse(live.history)
        path = store.run_folder(record["id"]) / "output.json"
        if not path.is_file():
            return JSONResponse([])
        rows = json.loads(path.read_text()).get("history", [])
        keep = ("step", "loss", "content", "style", "tv")
        return JSONResponse([{k: row[k] for k in keep if k in row} for row in rows])

    async def events(request: Request):
        queue = hub.add()

        async def stream():
            try:
                yield f"event: hello\ndata: {json.dumps(runner.active(history=True))}\n\n"
                while not hub.closed:
                    try:
                        message = await asyncio.wait_for(queue.get(), 15)
                    except asyncio.TimeoutError:
                        yield ": still here\n\n"
                        continue
                    if message is None:
                        return
                    yield message
            finally:
                hub.remove(queue)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    async def not_found(request: Request, exc: HTTPException):
        return error(exc.detail if exc.status_code == 404 and exc.detail != "Not Found" else
                     "no such page" if exc.status_code == 404 else exc.detail, exc.status_code)

    async def refused(request: Request, exc: Exception):
        status = getattr(exc, "status", 400)
        return error(str(exc).splitlines()[0], status, field=field_of(str(exc)))

    async def unexpected(request: Request, exc: Exception):
        log.exception("%s %s", request.method, request.url.path)
        return error(f"unexpected error: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}", 500)

    ID = "{id:str}"
    routes = [
        Route("/", index),
        Route("/static/{name:str}", static),
        Route("/api/options", options),
        Route("/api/check", check, methods=["POST"]),
        Route("/api/uploads", upload, methods=["POST"]),
        Route(f"/api/uploads/{ID}", upload_record),
        Route(f"/api/uploads/{ID}/view.jpg", upload_view),
        Route("/api/runs", list_runs, methods=["GET"]),
        Route("/api/runs", create_run, methods=["POST"]),
        Route(f"/api/runs/{ID}", run_detail, methods=["GET", "DELETE"]),
        Route(f"/api/runs/{ID}/stop", stop, methods=["POST"]),
        Route(f"/api/runs/{ID}/history", history),
        Route(f"/api/runs/{ID}/{{name:str}}", picture),
        Route("/api/events", events),
    ]
    app = Starlette(routes=routes, lifespan=lifespan, middleware=[Middleware(Guard, token=token, loopback=loopback)],
                    exception_handlers={HTTPException: not_found, ConfigError: refused, UploadError: refused,
                                        Exception: unexpected})
    app.router.redirect_slashes = False  # '/api/uploads/' is not found, not sent elsewhere
    app.state.store, app.state.runner, app.state.hub = store, runner, hub
    return app


# --- nstyle serve ----------------------------------------------------------------------


class Server(uvicorn.Server):
    """uvicorn's server, which also ends the pages' event streams when asked to stop (they
    would otherwise hold the shutdown until its timeout)."""

    def __init__(self, config: uvicorn.Config, hub: Hub):
        super().__init__(config)
        self.hub = hub

    def handle_exit(self, sig, frame) -> None:
        self.hub.close()
        super().handle_exit(sig, frame)


def listen(host: str, port: int) -> socket.socket:
    """A socket bound to host:port; ConfigError (one line) where that is impossible."""
    if not 0 <= port <= 65535:
        raise ConfigError(f"port must be between 0 and 65535, not {port}")
    try:
        info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(info[0], socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(info[4])
        sock.listen(128)  # connections wait here until the app has started
    except OSError as e:
        raise ConfigError(f"cannot listen on {host}:{port}: {e.strerror or e} (try another --port)") from None
    return sock


def serve(host: str = "127.0.0.1", port: int = 8000, open_browser: bool = False,
          announce: Callable[[str], None] = lambda text: None, folder: str | Path | None = None) -> None:
    """Run the web app until Ctrl-C; ``announce`` gets the lines a user should read (the
    address, the token, the data folder)."""
    loopback = is_loopback(host)
    token = None if loopback else secrets.token_urlsafe(18)
    app = create_app(folder, token=token, loopback=loopback)
    sock = listen(host, port)
    port = sock.getsockname()[1]
    shown = host if loopback else socket.gethostname()
    url = f"http://{'[' + shown + ']' if ':' in shown else shown}:{port}/"
    if token:
        announce(f"warning: listening on {host}, reachable from other machines; every request needs the token")
        url += f"?token={token}"
    announce(f"open {url}")
    announce(f"history and images in {app.state.store.folder}; Ctrl-C stops the server")
    if open_browser:
        threading.Timer(1.0, webbrowser.open, [url]).start()
    config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=3)
    Server(config, app.state.hub).run(sockets=[sock])
