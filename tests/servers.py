"""Helpers for the web app's tests: a real uvicorn server on a free loopback port, in a
thread of the test process, whose worker process runs the real ``run_job`` and ``Stylizer``
on conftest's small random-weight network (``random_network_worker``, called in the worker).

Not a test module: ``test_serve.py`` and ``test_serve_browser.py`` import it.
"""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import httpx
import uvicorn

from nstyle.serve import Server, create_app, listen


def random_network_worker() -> None:
    """In the worker process: conftest's seeded random-weight NARROW network in place of the
    one the config names (as the ``random_network`` fixture does in the test process), and
    one thread, as the test process has."""
    import torch

    torch.set_num_threads(1)
    from conftest import NARROW, random_backbone

    from nstyle import engine, jobs
    from nstyle.weights import WeightsChoice

    choice = WeightsChoice(NARROW, Path("random-weights"), "random")
    engine.choose_weights = jobs.choose_weights = lambda *args, **kwargs: choice
    engine.load_backbone = lambda chosen, outputs, pooling="max": random_backbone(outputs, chosen.spec, 0, pooling)


def deaf_worker() -> None:
    """The random network, and runs that never see their cancel flag: Stop must fall back to
    killing the worker."""
    random_network_worker()
    from nstyle import worker

    real = worker.run_job
    worker.run_job = lambda job, engine, cancel=None, **kwargs: real(job, engine, **kwargs)


def slow_worker() -> None:
    """The random network, with every iteration taking 1.2 s longer (as a large image's do on
    a CPU): Stop must wait for the iteration to end rather than kill the worker."""
    random_network_worker()
    from nstyle import worker

    real = worker.run_job

    def slow(job, engine, callback=None, **kwargs):
        def late(progress):
            time.sleep(1.2)
            callback(progress)
        return real(job, engine, callback=late, **kwargs)

    worker.run_job = slow


class LiveServer:
    """``create_app(folder, **options)`` served by uvicorn on 127.0.0.1 and a free port."""

    def __init__(self, folder: Path, setup=random_network_worker, host: str = "127.0.0.1", lifespan: str = "on",
                 **options):
        self.app = create_app(folder, worker_setup=setup, **options)
        sock = listen(host, 0)
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        config = uvicorn.Config(self.app, log_level="warning", access_log=False, timeout_graceful_shutdown=2,
                                lifespan=lifespan)  # off: no worker, no examples (for tests of the door)
        self.server = Server(config, self.app.state.hub)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "the server did not start"
            time.sleep(0.02)
        self.client = httpx.Client(base_url=self.url, timeout=30)

    @property
    def runner(self):
        return self.app.state.runner

    def stop(self) -> None:
        self.client.close()
        self.server.handle_exit(None, None)
        self.thread.join(30)
        assert not self.thread.is_alive(), "the server did not stop"

    def settle(self, timeout: float = 60) -> None:
        """Stop whatever a test left running or queued and wait until it has ended, so that
        one failed test cannot keep the next ones waiting behind a long run."""
        left = [r["id"] for r in self.client.get("/api/runs").json() if r["status"] in ("queued", "running")]
        for run_id in left:
            self.client.post(f"/api/runs/{run_id}/stop")  # 409 where it ended meanwhile
        for run_id in left:
            self.wait_status(run_id, timeout=timeout)

    def wait_status(self, run_id: str, statuses=("done", "stopped", "cancelled", "failed"), timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            record = self.client.get(f"/api/runs/{run_id}").json()
            if record["status"] in statuses:
                return record
            assert time.monotonic() < deadline, f"run {run_id} still {record['status']} after {timeout} s"
            time.sleep(0.05)


class Events:
    """The server-sent events of ``/api/events``, read in a thread: (kind, data) pairs."""

    def __init__(self, url: str):
        self.items: list[tuple[str, object]] = []
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(url,), daemon=True)
        self._thread.start()
        self.wait(lambda kind, data: kind == "hello")

    def _read(self, url: str) -> None:
        try:
            with httpx.stream("GET", url + "/api/events", timeout=None) as response:
                kind = None
                for line in response.iter_lines():
                    if line.startswith("event: "):
                        kind = line[7:]
                    elif line.startswith("data: "):
                        with self._cond:
                            self.items.append((kind, json.loads(line[6:])))
                            self._cond.notify_all()
        except httpx.HTTPError:
            pass

    def wait(self, predicate, timeout: float = 60):
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for item in self.items:
                    if predicate(*item):
                        return item
                left = deadline - time.monotonic()
                assert left > 0, f"no such event within {timeout} s; the last: {self.items[-3:]}"
                self._cond.wait(left)

    def of(self, kind: str, run: str | None = None) -> list:
        with self._cond:
            return [d for k, d in self.items if k == kind and (run is None or d.get("run") == run)]
