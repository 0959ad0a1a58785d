"""Running a batch's jobs on a Ray cluster (nstyle batch --ray): one actor per device.

Ray (Moritz et al., "Ray: A Distributed Framework for Emerging AI Applications", OSDI 2018;
https://docs.ray.io) is the distributed engine: each job is one task, a call to an actor
that holds one ``Stylizer`` (so its network stays loaded between jobs) and asks Ray for the
job's CPUs and GPUs (``num_cpus``, ``num_gpus``). The driver puts every input file into
the object store once (``ray.put``) and passes references; an actor fetches a file the first
time a job needs it and keeps it in its own scratch folder, so no node needs a shared file
system. The job's result comes back as bytes, for the driver to write.

Scheduling is the driver's own, on top of Ray's: a job goes to an actor that is ready and
idle. An actor that dies (its process killed, its node lost) fails nothing: its job goes
back to the queue for another actor, and a new actor is asked for (Ray starts it wherever
resources free up). A job whose actor died ``MAX_DEATHS`` times fails with that reason.

This module knows nothing of what a job is: ``RayPool.run`` calls ``fn(engine, payload,
files, scratch)`` in the actor, with ``files`` mapping each input's hash to its local path.
Ray is an optional dependency (``pip install 'nstyle[ray]'``), imported only here.
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

from . import __version__
from .errors import ConfigError
from .image import _alive

MAX_DEATHS = 3           # actors lost while running one job before the job is failed
START_TIMEOUT = 300.0    # seconds with no actor ready and nothing running before giving up


def import_ray():
    """Ray, or a one-line error saying how to install it."""
    try:
        import ray
    except ImportError:
        raise ConfigError("--ray needs Ray, an optional extra: pip install 'nstyle[ray]'") from None
    return ray


@dataclass(frozen=True)
class Task:
    """One job for the pool: ``key`` names it; ``payload`` is plain data for ``fn``;
    ``inputs`` the (sha256, suffix) of each file it reads (sent in ``RayPool.run``'s files)."""

    key: str
    payload: dict
    inputs: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Outcome:
    """How a task ended: ``result`` is ``fn``'s return (a dict), or None where ``error`` (one
    line) says why there is none; ``worker`` names the process that ran it."""

    key: str
    result: dict | None
    error: str | None
    worker: str
    seconds: float


class _Painter:
    """The actor: one per device, its engine kept between jobs."""

    def __init__(self, threads: int, setup: Callable[[], None] | None):
        if setup is not None:
            setup()
        import ray
        import torch

        from .engine import Stylizer

        torch.set_num_threads(threads)
        self.engine = Stylizer()
        _remove_stale_scratch()
        self.scratch = Path(tempfile.mkdtemp(prefix=f"nstyle-ray-{os.getpid()}-"))
        self.files: dict[str, Path] = {}
        context = ray.get_runtime_context()
        self.worker = f"{ray.util.get_node_ip_address()}:{os.getpid()} (node {context.get_node_id()[:8]})"
        self.versions = {"nstyle": __version__, "torch": torch.__version__}

    def ready(self) -> dict:
        return {"worker": self.worker, **self.versions}

    def run(self, fn, payload: dict, inputs: Sequence[tuple[str, str]], refs: list) -> dict:
        import ray

        start = time.perf_counter()
        for (sha, suffix), ref in zip(inputs, refs):
            if sha not in self.files:  # fetched from the object store once per actor
                path = self.scratch / "inputs" / f"{sha}{suffix}"
                path.parent.mkdir(exist_ok=True)
                path.write_bytes(ray.get(ref[0]))
                self.files[sha] = path
        work = Path(tempfile.mkdtemp(dir=self.scratch))
        try:
            result = fn(self.engine, payload, self.files, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return {"result": result, "seconds": time.perf_counter() - start}

    def close(self) -> None:
        shutil.rmtree(self.scratch, ignore_errors=True)


def _remove_stale_scratch() -> None:
    """Remove the scratch folders of actors on this machine whose process is gone (killed)."""
    root = Path(tempfile.gettempdir())
    for path in root.glob("nstyle-ray-*-*"):
        pid = path.name.split("-")[2]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


class RayPool:
    """Actors on a Ray cluster that run ``Task``s; a context manager (connects, then shuts
    the actors down and disconnects).

    ``address``: a cluster's address, 'auto' (the one this machine belongs to) or 'local'
    (start one here). ``workers``: how many actors at most (default: as many as the
    cluster's CPUs and GPUs hold at ``cpus``/``gpus`` per job). ``threads``: torch's threads
    in each (default: ``cpus``, at least 1). ``setup`` runs first in each actor's process.
    """

    def __init__(self, address: str, cpus: float = 1.0, gpus: float = 0.0, threads: int | None = None,
                 workers: int | None = None, setup: Callable[[], None] | None = None):
        if cpus <= 0 or gpus < 0:
            raise ConfigError(f"--cpus-per-job must be above 0 and --gpus-per-job at least 0, not {cpus:g} and {gpus:g}")
        self.address, self.cpus, self.gpus = address, cpus, gpus
        self.threads = threads or max(1, int(cpus))
        self.workers, self.setup = workers, setup
        self.ray = import_ray()
        self._actors: list = []
        self._ready: list = []  # those that have started
        self._started = False
        self.deaths = 0  # actors lost during the run

    def __enter__(self) -> "RayPool":
        ray = self.ray
        if not ray.is_initialized():
            try:
                ray.init(address=self.address, logging_level=logging.WARNING, log_to_driver=False,
                         include_dashboard=False if self.address == "local" else None)
            except (ConnectionError, RuntimeError, ValueError) as e:
                text = str(e).splitlines()[0] if str(e) else type(e).__name__
                raise ConfigError(f"cannot connect to the Ray cluster at '{self.address}': {text}") from None
            self._started = True
        total = ray.cluster_resources()
        fits = int(total.get("CPU", 0) // self.cpus)
        if self.gpus:
            fits = min(fits, int(total.get("GPU", 0) // self.gpus))
        if fits < 1:
            self.__exit__(None, None, None)
            raise ConfigError(f"the Ray cluster has {total.get('CPU', 0):g} CPUs and {total.get('GPU', 0):g} GPUs: "
                              f"not enough for one job at {self.cpus:g} CPUs and {self.gpus:g} GPUs")
        self.size = min(fits, self.workers) if self.workers else fits
        self._actor_class = ray.remote(num_cpus=self.cpus, num_gpus=self.gpus, max_restarts=0)(_Painter)
        return self

    def __exit__(self, *exc) -> None:
        try:  # each actor that started removes its scratch folder; then all go
            closing = [actor.close.remote() for actor in self._ready if actor in self._actors]
            self.ray.wait(closing, num_returns=len(closing), timeout=5)
        except Exception:
            pass
        for actor in self._actors:
            try:
                self.ray.kill(actor)
            except Exception:  # already gone
                pass
        self._actors.clear()
        if self._started:
            self.ray.shutdown()
            self._started = False

    def _new_actor(self):
        actor = self._actor_class.remote(self.threads, self.setup)
        self._actors.append(actor)
        return actor, actor.ready.remote()

    def run(self, fn: Callable, tasks: Sequence[Task], files: dict[str, Path],
            on_start: Callable[[str, str], None] | None = None) -> Iterator[Outcome]:
        """Run every task, yielding each ``Outcome`` as it arrives (in no set order).
        ``files`` maps an input's sha256 to its path on this machine; each is put into the
        object store once, when a task first needs it. ``on_start(key, worker)`` as a task
        is handed to an actor."""
        ray = self.ray
        exceptions = ray.exceptions
        lost = (exceptions.RayActorError, exceptions.WorkerCrashedError, exceptions.ObjectLostError,
                exceptions.OwnerDiedError, exceptions.NodeDiedError)
        refs: dict[str, object] = {}
        queue = deque(tasks)
        deaths: dict[str, int] = {}
        starting: dict = {}    # ready() ref -> actor
        idle: list = []        # (actor, worker name)
        running: dict = {}     # run() ref -> (actor, worker name, task, start time)
        for _ in range(min(self.size, len(queue))):
            actor, ref = self._new_actor()
            starting[ref] = actor
        waiting_since = time.monotonic()

        def replace(actor) -> None:  # ask Ray for another, which starts where resources free up
            self.deaths += 1
            if actor in self._actors:
                self._actors.remove(actor)
            if len(starting) + len(running) + len(idle) < self.size:
                new, ref = self._new_actor()
                starting[ref] = new

        while queue or running:
            while idle and queue:
                actor, worker = idle.pop()
                task = queue.popleft()
                for sha, _ in task.inputs:
                    if sha not in refs:
                        refs[sha] = ray.put(Path(files[sha]).read_bytes())
                # Nested in a list, the references reach the actor unresolved: it fetches
                # only the files it has not kept yet.
                ref = actor.run.remote(fn, task.payload, task.inputs, [[refs[sha]] for sha, _ in task.inputs])
                running[ref] = (actor, worker, task, time.monotonic())
                if on_start is not None:
                    on_start(task.key, worker)
            if not queue and not running:
                break
            if not running and not idle and not starting:
                new, ref = self._new_actor()
                starting[ref] = new
            done, _ = ray.wait([*starting, *running], num_returns=1, timeout=1.0)
            if not done:
                if not running and time.monotonic() - waiting_since > START_TIMEOUT:
                    raise ConfigError(f"no Ray worker started in {START_TIMEOUT:.0f} s (each needs {self.cpus:g} CPUs "
                                      f"and {self.gpus:g} GPUs)")
                continue
            ref = done[0]
            if ref in starting:
                actor = starting.pop(ref)
                try:
                    info = ray.get(ref)
                except lost:
                    replace(actor)
                    continue
                except exceptions.RayTaskError as e:  # the actor's own start failed: every one will
                    raise ConfigError(f"a Ray worker could not start: {_cause(e)}") from None
                mine = {"nstyle": __version__, "torch": _torch_version()}
                theirs = {k: info[k] for k in mine}
                if theirs != mine:
                    raise ConfigError(f"the Ray worker {info['worker']} has {_versions(theirs)}, this machine "
                                      f"{_versions(mine)}: install the same on every node")
                idle.append((actor, info["worker"]))
                self._ready.append(actor)
                waiting_since = time.monotonic()
                continue
            actor, worker, task, began = running.pop(ref)
            try:
                answer = ray.get(ref)
            except lost:
                replace(actor)
                deaths[task.key] = deaths.get(task.key, 0) + 1
                if deaths[task.key] >= MAX_DEATHS:
                    yield Outcome(task.key, None, f"its Ray worker died {MAX_DEATHS} times (last on {worker})",
                                  worker, time.monotonic() - began)
                else:
                    queue.appendleft(task)
                waiting_since = time.monotonic()
                continue
            except exceptions.RayTaskError as e:
                idle.append((actor, worker))
                yield Outcome(task.key, None, _cause(e), worker, time.monotonic() - began)
                continue
            idle.append((actor, worker))
            waiting_since = time.monotonic()
            yield Outcome(task.key, answer["result"], None, worker, answer["seconds"])


def _cause(e: BaseException) -> str:
    """The first line of what went wrong inside a Ray task."""
    cause = getattr(e, "cause", None) or e
    text = str(cause).strip().splitlines()
    return text[-1] if text else type(cause).__name__


def _torch_version() -> str:
    import torch

    return torch.__version__


def _versions(v: dict) -> str:
    return ", ".join(f"{k} {v[k]}" for k in v)
