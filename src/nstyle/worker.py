"""The web app's runs: a queue in front of one worker process that owns the network.

The worker (a spawned process) keeps one ``Stylizer`` and runs one ``Job`` at a time through
``run_job``, exactly as the command line does, so the PNG it writes is the one ``nstyle``
writes with the same settings. It sends back plain dicts through a pipe: each iteration's
``Progress`` (``dataclasses.asdict``), a JPEG preview at most every ``PREVIEW_INTERVAL``
seconds, the job's notes, and how it ended. Stop sets a ``multiprocessing.Event`` the run
checks every iteration (``cancel=``); a worker that has not stopped ``kill_after`` seconds
later is killed. A worker that dies (killed, out of memory, a crash in native code) fails
only the job it was running; the next job gets a new worker.

``Runner`` is the server's side: the queue, the running job's live state (progress, loss
history, latest preview), and the thread that feeds the worker and reads from it.
"""
from __future__ import annotations

import dataclasses
import io
import logging
import multiprocessing
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from .errors import Diverged, ImageError, LayerError, WeightsError, ConfigError
from .jobs import Job, run_job
from .plan import memory_ceiling
from .store import Store, write_views

log = logging.getLogger("nstyle.worker")

PREVIEW_INTERVAL = 0.3   # seconds between two previews at most: about three a second
PREVIEW_SIDE = 768       # long side of a preview


def preview_jpeg(image, side: int = PREVIEW_SIDE, quality: int = 80) -> bytes:
    """A (3, H, W) image in [0, 1] as a JPEG of at most ``side`` pixels on its long side."""
    # In numpy, on one thread: torch's element-wise ops on all threads cost 30 times as much
    # (31 ms against 1 ms at 512x384) when another program holds a core.
    pixels = (np.clip(image.numpy(), 0, 1) * 255 + 0.5).astype(np.uint8).transpose(1, 2, 0)
    img = Image.fromarray(np.ascontiguousarray(pixels))
    img.thumbnail((side, side), Image.Resampling.BILINEAR)
    out = io.BytesIO()
    img.save(out, "JPEG", quality=quality)
    return out.getvalue()


# --- the worker process ----------------------------------------------------------------


def worker_main(conn, cancel, folder: str, setup: Callable[[], None] | None = None) -> None:
    """The worker process: run each job received on ``conn`` until it receives None."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the server's to handle
    os.chdir(folder)  # jobs name their files relative to the data folder
    if setup is not None:
        setup()
    from .engine import Stylizer

    engine = Stylizer()
    conn.send({"type": "ready", "pid": os.getpid()})
    limit = _soft_data_limit()
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        # A ceiling on this process's memory for each job, from what is free as it starts:
        # an estimate that was wrong ends in a smaller retry or a one-line failure, not in
        # the kernel's out-of-memory killer.
        memory_ceiling(message["job"].config.device, under=limit)
        conn.send(_run(message["run"], message["job"], engine, conn, cancel))


def _soft_data_limit() -> int | None:
    try:
        import resource
    except ImportError:
        return None
    return resource.getrlimit(resource.RLIMIT_DATA)[0]


def _run(run_id: str, job: Job, engine, conn, cancel) -> dict:
    last = [0.0]
    spent = [0.0]  # seconds of the run spent on the page (progress and previews): the server's cost

    def on_progress(p) -> None:
        start = time.perf_counter()
        conn.send({"type": "progress", "run": run_id, "progress": dataclasses.asdict(p)})
        if start - last[0] >= PREVIEW_INTERVAL or p.step == p.total:
            last[0] = start
            image = engine.current_image()
            if image is not None:
                conn.send({"type": "preview", "run": run_id, "step": p.step, "jpeg": preview_jpeg(image)})
        spent[0] += time.perf_counter() - start

    def notify(text: str) -> None:
        conn.send({"type": "note", "run": run_id, "text": text})

    downloaded = [0.0]

    def download_progress(done: int, total: int) -> None:
        if time.monotonic() - downloaded[0] > 1 or done >= total:
            downloaded[0] = time.monotonic()
            notify(f"downloading the network's weights: {done / 2**20:.0f}/{total / 2**20:.0f} MB")

    end = {"type": "end", "run": run_id}
    try:
        result = run_job(job, engine, callback=on_progress, notify=notify, cancel=cancel,
                         download_progress=download_progress)
    except (ImageError, WeightsError, LayerError, ConfigError, Diverged) as e:
        return dict(end, status="failed", message=str(e).splitlines()[0])
    except MemoryError:
        return dict(end, status="failed", message="out of memory: try a smaller size")
    except Exception as e:  # still one line for the page; the traceback to the server's log
        log.exception("run %s failed", run_id)
        text = str(e).splitlines()[0] if str(e) else type(e).__name__
        if "out of memory" in text.lower():
            text = "out of memory: try a smaller size"
        return dict(end, status="failed", message=f"unexpected error: {text}")
    progress = None if result.progress is None else dataclasses.asdict(result.progress)
    return dict(end, status=result.status, saved=result.output is not None, progress=progress,
                seconds=result.seconds, model=result.model, side=result.size, page_seconds=spent[0])


# --- the server's side -----------------------------------------------------------------


@dataclass
class Live:
    """The running job as the page sees it."""

    id: str
    size: int
    started: float = field(default_factory=time.time)
    progress: dict | None = None
    history: list = field(default_factory=list)   # per iteration: {step, loss, content, style, tv}
    preview: bytes | None = None
    preview_step: int = 0
    notes: list = field(default_factory=list)
    stop_asked: float | None = None                 # time.monotonic() of Stop
    stop_reason: str = ""                           # who stopped it, when not the user
    longest: float = 0.0                            # seconds of its longest iteration so far

    def public(self, history: bool = False) -> dict:
        """What the page shows of it; with the loss history so far (a page that comes back)."""
        shown = {"id": self.id, "started": self.started, "progress": self.progress, "preview_step": self.preview_step,
                 "notes": self.notes, "stopping": self.stop_asked is not None, "left": left(self.progress)}
        return dict(shown, history=self.history) if history else shown


def left(progress: dict | None) -> float | None:
    """Seconds left, as the command line estimates them; None before the third iteration."""
    if not progress or progress["step"] < 3 or progress["fraction"] <= 0:
        return None
    return progress["elapsed"] * (1 - progress["fraction"]) / progress["fraction"]


class _Worker:
    def __init__(self, context, folder: Path, setup):
        self.conn, child = context.Pipe()
        self.cancel = context.Event()
        self.process = context.Process(target=worker_main, args=(child, self.cancel, str(folder), setup),
                                       name="nstyle-worker", daemon=True)
        self.process.start()
        self.started = time.monotonic()
        child.close()

    def kill(self) -> None:
        self.process.kill()
        self.process.join(5)
        self.conn.close()


class Runner:
    """The queue and the worker. ``publish(kind, data)`` is called (from the runner's thread)
    for every change the page shows: 'queue', 'run', 'progress', 'preview', 'note'."""

    def __init__(self, store: Store, publish: Callable[[str, dict], None],
                 setup: Callable[[], None] | None = None, kill_after: float = 5.0, max_queue: int = 50):
        self.store, self.publish, self.setup = store, publish, setup
        self.kill_after, self.max_queue = kill_after, max_queue
        self._context = multiprocessing.get_context("spawn")
        self._lock = threading.RLock()
        self._queue: list[tuple[str, Job, int]] = []   # (run id, job, size) in order
        self.live: Live | None = None
        self.worker: _Worker | None = None
        self._closing = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="nstyle-runner", daemon=True)

    def start(self) -> None:
        with self._lock:
            self.worker = _Worker(self._context, self.store.folder, self.setup)
        self._thread.start()

    def close(self) -> None:
        """Stop the running job (its image is saved as for Stop) and end the worker. The queued
        runs stay queued in the store: the next server runs them."""
        with self._lock:
            self._queue.clear()
            live = self.live
            if live is not None:
                self.stop(live.id, why="the server stopped")
        # A little longer than the runner's own fallback (it kills a worker that does not stop).
        deadline = time.monotonic() + (self.patience(live) if live is not None else 0) + 1.5
        while live is not None and self.live is live and time.monotonic() < deadline:
            time.sleep(0.05)
        self._closing.set()
        self._thread.join(self.kill_after + 5)
        with self._lock:
            if self.worker is not None:
                try:
                    self.worker.conn.send(None)
                    self.worker.process.join(2)
                except OSError:
                    pass
                if self.worker.process.is_alive():
                    self.worker.kill()
                self.worker = None

    # --- what the routes call ----------------------------------------------------------

    def full(self) -> bool:
        return len(self._queue) >= self.max_queue

    def submit(self, run_id: str, job: Job, size: int) -> None:
        with self._lock:
            self._queue.append((run_id, job, size))
        self._publish_queue()
        self._wake.set()

    def stop(self, run_id: str, why: str = "") -> str:
        """Stop the running job or cancel a queued one: 'stopping' or 'cancelled'; KeyError
        for a run that is neither."""
        with self._lock:
            if self.live is not None and self.live.id == run_id:
                if self.live.stop_asked is None:
                    self.live.stop_asked, self.live.stop_reason = time.monotonic(), why
                    self.worker.cancel.set()
                    self.publish("note", {"run": run_id, "text": "stopping"})
                return "stopping"
            for item in self._queue:
                if item[0] == run_id:
                    self._queue.remove(item)
                    break
            else:
                raise KeyError(run_id)
            self._publish_queue()  # before the run's new status: a page that shows it ended no longer queues it
        self.publish("run", self.store.update_run(run_id, status="cancelled", finished=time.time(),
                                                  message=why or "cancelled before it started"))
        return "cancelled"

    def preview(self, run_id: str) -> bytes | None:
        with self._lock:
            if self.live is not None and self.live.id == run_id:
                return self.live.preview
        return None

    def active(self, history: bool = False) -> dict:
        """The running job (with its loss history so far if asked) and the queue with each
        one's position and estimated duration."""
        with self._lock:
            # Seconds per (size / 1000 px)^2: from finished runs, else from the running one.
            rate = self.store.seconds_per_size()
            live = self.live.public(history) if self.live else None
            if rate is None and live is not None and live["left"] is not None:
                rate = (live["progress"]["elapsed"] + live["left"]) / (self.live.size / 1000) ** 2
            queue = [{"id": run_id, "position": position, "takes": None if rate is None else rate * (size / 1000) ** 2}
                     for position, (run_id, job, size) in enumerate(self._queue, 1)]
            return {"running": live, "queue": queue}

    def _publish_queue(self) -> None:
        """Publish the queue as it is now. Under the lock, so that two threads' snapshots
        reach the pages in the order they were taken: the last one a page gets is the newest."""
        with self._lock:
            self.publish("queue", self.active())

    # --- the runner's thread ----------------------------------------------------------

    def _loop(self) -> None:
        while not self._closing.is_set():
            try:
                self._step()
            except Exception:  # the thread must survive anything: log it and go on
                log.exception("the web app's runner")
                time.sleep(0.5)

    def _step(self) -> None:
        with self._lock:
            worker = self.worker
            if worker is None or not worker.process.is_alive():
                self._worker_died(worker)
                return
            if self.live is None and self._queue:
                self._start_next(worker)
            live = self.live
        if live is None:
            self._wake.wait(0.2)
            self._wake.clear()
            # An idle worker may still have died: checked on the next step.
            return
        try:
            ready = worker.conn.poll(0.1)
            message = worker.conn.recv() if ready else None
        except (EOFError, OSError):
            self._worker_died(worker)
            return
        if message is not None:
            self._handle(message)
        with self._lock:
            if (self.live is live and live.stop_asked is not None
                    and time.monotonic() - live.stop_asked > self.patience(live)):
                log.warning("run %s did not stop within %.0f s: ending its worker", live.id, self.patience(live))
                self._worker_died(worker, killed=True)

    def patience(self, live: Live) -> float:
        """How long a run may take to stop after Stop before its worker is killed: the run
        stops at the end of its iteration, so at least three times its longest one (a large
        image's iteration can take longer than ``kill_after`` on a CPU)."""
        return max(self.kill_after, 3 * live.longest)

    def _start_next(self, worker: _Worker) -> None:
        run_id, job, size = self._queue.pop(0)
        worker.cancel.clear()
        self.live = Live(run_id, size)
        worker.conn.send({"run": run_id, "job": job})
        self.publish("run", self.store.update_run(run_id, status="running", started=self.live.started))
        self._publish_queue()

    def _handle(self, message: dict) -> None:
        kind = message["type"]
        with self._lock:
            live = self.live
            if live is None or message.get("run") != live.id:
                return  # 'ready', or a message of a run already ended
            if kind == "progress":
                p = message["progress"]
                if live.progress is not None:  # the first one's time includes the run's setup
                    live.longest = max(live.longest, p["elapsed"] - live.progress["elapsed"])
                live.progress = p
                live.history.append({"step": p["step"], "loss": p["loss"], **p["terms"]})
                self.publish("progress", {"run": live.id, "progress": p, "left": left(p)})
            elif kind == "preview":
                live.preview, live.preview_step = message["jpeg"], message["step"]
                self.publish("preview", {"run": live.id, "step": message["step"]})
            elif kind == "note":
                live.notes.append(message["text"])
                self.publish("note", {"run": live.id, "text": message["text"]})
            elif kind == "end":
                self._finish(live, message)

    def _finish(self, live: Live, end: dict) -> None:
        output = self.store.run_folder(live.id) / "output.png"
        status, message = end["status"], end.get("message")
        if status == "done":
            message = None
        elif status in ("cancelled", "interrupted"):
            if end.get("saved"):
                status, p = "stopped", end["progress"]
                message = f"stopped at iteration {p['step']} of {p['total']}"
            else:
                status, message = "cancelled", "stopped before the first iteration: nothing to save"
            if live.stop_reason:
                message += f" ({live.stop_reason})"
        result = {k: end[k] for k in ("seconds", "model", "side", "page_seconds") if k in end}
        if end.get("progress"):
            p = end["progress"]
            result.update(steps=p["step"], total=p["total"], loss=p["loss"], size=p["size"])
        if output.is_file():
            write_views(output)
        record = self.store.update_run(live.id, status=status, message=message, finished=time.time(), result=result)
        self.live = None
        self._publish_queue()
        self.publish("run", record)

    def _worker_died(self, worker: _Worker | None, killed: bool = False) -> None:
        """The worker is gone (or was killed): fail its job, start another."""
        code = None
        if worker is not None and not killed:
            worker.process.join(5)  # the pipe's end may come before the exit status
            code = worker.process.exitcode
            if time.monotonic() - worker.started < 5:
                time.sleep(2)  # one that dies as it starts is not restarted in a tight loop
        with self._lock:
            if self._closing.is_set():
                return
            if worker is not None:
                worker.kill()
                if not killed:
                    log.warning("the worker process ended unexpectedly (exit code %s): starting another", code)
            live = self.live
            if live is not None:
                if killed:
                    saved = (self.store.run_folder(live.id) / "output.png").is_file()
                    message = {"type": "end", "run": live.id, "status": "failed",
                               "message": f"the run did not stop within {self.patience(live):.3g} s and was ended; "
                                          + ("its last saved image is kept" if saved else "nothing was saved")}
                else:
                    message = {"type": "end", "run": live.id, "status": "failed",
                               "message": f"the run's process ended unexpectedly (exit code {code}); "
                                          "the server is still running"}
                self._finish(live, message)
            self.worker = _Worker(self._context, self.store.folder, self.setup)
