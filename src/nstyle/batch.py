"""nstyle batch: many photos by many paintings, resumable, on one machine or a Ray cluster.

``plan_pairs`` makes every pairing of photos and paintings (or ``read_pairs`` the rows of a
CSV file) into ``BatchJob``s with output names that say what they are
(``photo__painting.png``) and cannot collide; ``run_batch`` runs them through the command
line's own ``run_job``, so each PNG is byte for byte the one ``nstyle`` writes with the same
settings.

A job is finished when its output exists and the settings embedded in it (jobs.py: model,
weights checksum, every option, the SHA-256 of each input) are this job's: a rerun after
any stop (Ctrl-C, kill -9, a lost machine) skips those without loading a network and runs
the rest; a changed option or input runs the jobs it changes again. Results are made in a
work folder (``OUT/.nstyle-batch/``) and renamed into place when finished, so the output
folder never holds a partial image. ``OUT/manifest.sqlite`` has one row per job: its
settings, status, seconds, the worker that ran it and, if it failed, why (one line). A
failed job does not stop the others. One batch at a time writes to a folder (a lock).

On one machine the jobs share one ``Stylizer``: one loaded network, and each painting's
style statistics computed once per size (objective.StatsCache). With ``ray=ADDRESS`` they
run as Ray tasks on a cluster (cluster.py), the results written here by this process.
"""
from __future__ import annotations

import csv
import fcntl
import hashlib
import json
import os
import re
import shutil
import socket
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from PIL import Image

from .config import Config
from .errors import ConfigError, ImageError, Interrupted
from .image import SUPPORTED_OUTPUT, atomic_write_bytes, remove_stale_temps
from .jobs import Job, check_paths, file_sha256, run_job
from .plan import style_options
from .weights import WeightsChoice, choose_weights

WORK = ".nstyle-batch"          # the work folder inside the output folder
MANIFEST = "manifest.sqlite"
_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"   # the last 12 bytes of every complete PNG


@dataclass(frozen=True)
class BatchJob:
    """One job of a batch: a photo, one or more paintings (blended by ``style_weights``,
    None: equal or ``--style-weights``), and the output's file name in the output folder."""

    name: str
    content: str
    styles: tuple[str, ...]
    style_weights: tuple[float, ...] | None = None


@dataclass(frozen=True)
class BatchProgress:
    """Where a batch stands, after each event: 'start', 'skip', 'running' (a job handed to
    ``worker``), 'step' (an iteration of a job on this machine, ``fraction`` of it done),
    'done', 'failed' (with ``error``), 'end'. ``rate`` is jobs per second finished in this
    run, ``left_seconds`` the time left at that rate (None before the first finishes)."""

    event: str
    name: str | None
    total: int
    done: int
    skipped: int
    failed: int
    running: int
    left: int
    elapsed: float
    rate: float | None
    left_seconds: float | None
    worker: str | None = None
    error: str | None = None
    fraction: float = 0.0


@dataclass
class BatchResult:
    """How a batch ended: counts, each failed job's ``(name, error)``, and whether it was
    interrupted (Ctrl-C) before every job had run."""

    total: int
    done: int
    skipped: int
    failed: list[tuple[str, str]]
    interrupted: bool
    seconds: float
    manifest: Path
    cache: dict = field(default_factory=dict)  # this machine's style statistics: hits, misses

    @property
    def ok(self) -> bool:
        return not self.failed and not self.interrupted


# --- what to run -----------------------------------------------------------------------


def image_files(paths: Sequence[str | os.PathLike], what: str) -> list[str]:
    """Files as given, and each folder's image files (by suffix, not hidden, sorted)."""
    found: list[str] = []
    for given in paths:
        path = Path(given).expanduser()
        if path.is_dir():
            inside = sorted(p for p in path.iterdir() if p.suffix.lower() in SUPPORTED_OUTPUT
                            and not p.name.startswith(".") and p.is_file())
            if not inside:
                raise ImageError(f"no images in the folder '{given}' ({what})")
            found.extend(os.path.join(os.fspath(given), p.name) for p in inside)
        elif path.exists():
            found.append(os.fspath(given))
        else:
            raise ImageError(f"cannot read '{given}' ({what}): no such file or folder")
    return found


def plan_pairs(contents: Sequence[str], styles: Sequence[str]) -> list[BatchJob]:
    """Every photo in every painting."""
    return name_jobs([(c, (s,), None) for s in styles for c in contents])


def read_pairs(path: str | os.PathLike) -> list[BatchJob]:
    """The jobs a CSV file names, one a row: ``photo, painting[, painting ...]``; several
    paintings are blended, equally or by a weight after each (``painting.jpg=0.7``). Relative
    paths are relative to the file's folder; a first row ``content,...`` is a header; blank
    rows and rows starting with ``#`` are skipped."""
    folder = os.path.dirname(os.fspath(path))
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read the pairs file '{path}': {getattr(e, 'strerror', None) or e}") from None
    raw = []
    header = True  # the first row with cells may be a header
    for number, row in enumerate(rows, 1):
        cells = [c.strip() for c in row if c.strip()]
        if not cells or cells[0].startswith("#"):
            continue
        if header and cells[0].lower() == "content":
            header = False
            continue
        header = False
        if len(cells) < 2:
            raise ConfigError(f"{path}, row {number}: a photo and at least one painting are needed")
        styles, weights = [], []
        for cell in cells[1:]:
            name, _, weight = cell.rpartition("=")
            try:
                w = float(weight) if name else None
            except ValueError:
                w = None
            styles.append(os.path.normpath(os.path.join(folder, name if w is not None else cell)))
            weights.append(w)
        if any(w is not None for w in weights) and any(w is None for w in weights):
            raise ConfigError(f"{path}, row {number}: give a weight to every painting of the row or to none")
        content = os.path.normpath(os.path.join(folder, cells[0]))
        raw.append((content, tuple(styles), None if weights[0] is None else tuple(weights)))
    if not raw:
        raise ConfigError(f"the pairs file '{path}' names no jobs")
    return name_jobs(raw)


def _label(path: str) -> str:
    """A file name's stem, with anything a file name should not hold replaced by '_'."""
    return re.sub(r"[^\w.+-]", "_", Path(path).stem) or "_"


def name_jobs(raw: Sequence[tuple[str, tuple[str, ...], tuple[float, ...] | None]]) -> list[BatchJob]:
    """``BatchJob``s named ``photo__painting.png`` (``photo__a+b.png`` for a blend). Where two
    different jobs would get one name (the same stem in two folders, ``a.jpg`` and ``a.png``;
    compared without case, for case-insensitive file systems) each gets a short hash of its
    own paths and weights too; a job named twice is run once."""
    unique = list(dict.fromkeys(raw))
    base = [f"{_label(c)}__{'+'.join(_label(s) for s in styles)}" for c, styles, _ in unique]
    counts: dict[str, int] = {}
    for b in base:
        counts[b.casefold()] = counts.get(b.casefold(), 0) + 1
    jobs = []
    for b, (c, styles, weights) in zip(base, unique):
        if counts[b.casefold()] > 1:
            b += "-" + hashlib.sha256(json.dumps([c, styles, weights]).encode()).hexdigest()[:8]
        jobs.append(BatchJob(f"{b[:200]}.png", c, styles, weights))
    return jobs


def settings_of(path: Path) -> dict | None:
    """The settings an nstyle PNG carries (jobs.py), None for anything else or an incomplete
    file; reads the text chunk without decoding the pixels."""
    try:
        with open(path, "rb") as f:
            f.seek(-len(_IEND), os.SEEK_END)
            if f.read() != _IEND:
                return None
        with Image.open(path) as img:
            text = img.info.get("nstyle") if img.format == "PNG" else None
        return json.loads(text) if text else None
    except (OSError, ValueError, SyntaxError):
        return None


def expected_settings(job: BatchJob, config: Config, choice: WeightsChoice, hashes: dict[str, str]) -> dict:
    """The part of a finished output's settings that says it is this job's result."""
    options = {k: v for k, v in config.replace(model=choice.spec.name, weights=str(choice.path)).to_dict().items()
               if k != "weights"}
    mine = {"model": choice.spec.name, "weights_md5": choice.md5, "seed": config.seed, "options": options,
            "sha256": {"content": hashes[job.content], "styles": [hashes[s] for s in job.styles], "masks": None}}
    return json.loads(json.dumps(mine))  # as JSON gives it back: lists, not tuples


def is_finished(path: Path, expected: dict) -> bool:
    found = settings_of(path)
    return found is not None and all(found.get(k) == v for k, v in expected.items())


# --- the manifest ------------------------------------------------------------------------


class Manifest:
    """``OUT/manifest.sqlite``: one row per job (by output name), updated as it runs; every
    change committed at once, so a killed batch leaves it readable."""

    def __init__(self, path: Path):
        self.path = path
        self.db = sqlite3.connect(path, isolation_level=None, timeout=30)
        self.db.execute("CREATE TABLE IF NOT EXISTS jobs (name TEXT PRIMARY KEY, content TEXT, styles TEXT, "
                        "settings TEXT, status TEXT, seconds REAL, worker TEXT, error TEXT, attempts INTEGER "
                        "DEFAULT 0, updated TEXT)")

    def set(self, name: str, status: str, **values) -> None:
        values = {"status": status, "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **values}
        if status == "running":
            self.db.execute("INSERT INTO jobs (name, attempts) VALUES (?, 0) ON CONFLICT(name) DO NOTHING", (name,))
            self.db.execute("UPDATE jobs SET attempts = attempts + 1 WHERE name = ?", (name,))
        columns = ", ".join(values)
        updates = ", ".join(f"{k} = excluded.{k}" for k in values)
        self.db.execute(f"INSERT INTO jobs (name, {columns}) VALUES (?{', ?' * len(values)}) "
                        f"ON CONFLICT(name) DO UPDATE SET {updates}", (name, *values.values()))

    def rows(self) -> list[dict]:
        cursor = self.db.execute("SELECT * FROM jobs ORDER BY name")
        keys = [d[0] for d in cursor.description]
        return [dict(zip(keys, row)) for row in cursor]

    def close(self) -> None:
        self.db.close()


# --- running -------------------------------------------------------------------------------


def error_line(e: BaseException) -> str:
    """One line for a job's failure, as the command line would print it."""
    text = str(e).strip().splitlines()
    if isinstance(e, MemoryError) or (text and "out of memory" in text[0].lower()):
        return "out of memory: try a smaller --size"
    return text[0] if text else type(e).__name__


def paint(engine, payload: dict, files: dict[str, Path], work: Path) -> dict:
    """One job on a Ray worker (cluster.py calls it): ``run_job`` on the local copies of its
    inputs, recording the originals' names; the PNG's bytes, or the error in one line."""
    content = files[payload["content_sha"]]
    styles = [files[sha] for sha in payload["style_shas"]]
    names = {os.fspath(content): payload["content"], **{os.fspath(p): n for p, n in zip(styles, payload["styles"])}}
    out = work / payload["name"]
    config = payload["config"]
    if payload.get("weights_sha"):  # the user's own weights file, sent with the job
        config = config.replace(weights=os.fspath(files[payload["weights_sha"]]))
    try:
        run_job(Job(content, tuple(styles), out, config, names=names), engine)
    except Exception as e:
        line = error_line(e)
        for path, name in names.items():  # the file as the user named it, not the copy
            line = line.replace(path, name)
        return {"error": line}
    return {"png": out.read_bytes()}


def run_batch(jobs: Sequence[BatchJob], output: str | os.PathLike, config: Config | None = None, *,
              callback: Callable[[BatchProgress], None] | None = None, ray: str | None = None,
              cpus_per_job: float = 1.0, gpus_per_job: float = 0.0, threads: int | None = None,
              workers: int | None = None, setup: Callable[[], None] | None = None) -> BatchResult:
    """Run ``jobs`` into the folder ``output`` (made if missing), skipping those finished.

    ``config`` holds every option (its ``style_weights`` apply to jobs without their own).
    ``callback(BatchProgress)`` after each event. ``ray``: a Ray cluster's address, 'auto' or
    'local', to run there (``cpus_per_job``, ``gpus_per_job``, ``threads`` per job, at most
    ``workers`` actors, ``setup`` run first in each; see cluster.RayPool); None: here, in
    this process, one job at a time. Raises ConfigError, ImageError or WeightsError before
    any work for what no job could survive; a job's own failure is in the result.
    """
    config = config or Config()
    start = time.perf_counter()
    out = Path(output).expanduser()
    try:
        (out / WORK).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ImageError(f"cannot write to the folder '{output}': {e.strerror or e}") from None
    lock = open(out / WORK / "lock", "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        lock.close()
        raise ImageError(f"another nstyle batch is writing to '{output}'") from None
    manifest = Manifest(out / MANIFEST)
    try:
        return _run(list(jobs), out, config, manifest, callback, start, ray,
                    dict(cpus=cpus_per_job, gpus=gpus_per_job, threads=threads, workers=workers, setup=setup))
    finally:
        manifest.close()
        shutil.rmtree(out / WORK / "work", ignore_errors=True)
        lock.close()


def _run(jobs: list[BatchJob], out: Path, config: Config, manifest: Manifest, callback, start: float,
         ray: str | None, pool_options: dict) -> BatchResult:
    for n, weights in {(len(j.styles), j.style_weights) for j in jobs}:  # what no job could run with: refused now
        style_options(config if weights is None else config.replace(style_weights=weights), n, None)
    choice = choose_weights(config.model, config.weights, allow_download=True)
    config = config.replace(model=choice.spec.name)  # every worker uses what this machine chose
    work = out / WORK / "work"
    shutil.rmtree(work, ignore_errors=True)  # left by a batch that was killed (we hold the lock)
    work.mkdir()
    _remove_stale_temps(out)
    inputs = {os.path.realpath(p) for j in jobs for p in (j.content, *j.styles)}
    if os.path.realpath(out) in {os.path.dirname(p) for p in inputs}:
        raise ImageError(f"the output folder '{out}' holds inputs of this batch: its results would become inputs "
                         "of the next run; choose another folder")

    hashes: dict[str, str] = {}
    broken: dict[str, str] = {}
    for path in dict.fromkeys(p for j in jobs for p in (j.content, *j.styles)):
        try:
            hashes[path] = file_sha256(path)
        except OSError as e:
            broken[path] = f"cannot read '{path}': {e.strerror or e}"

    tally = _Tally(len(jobs), manifest, callback, start)
    tally.report("start")
    todo: list[tuple[BatchJob, Config]] = []
    for job in jobs:
        final = out / job.name
        job_config = config if job.style_weights is None else config.replace(style_weights=job.style_weights)
        row = dict(content=job.content, styles=json.dumps(job.styles))
        bad = next((broken[p] for p in (job.content, *job.styles) if p in broken), None)
        if bad is not None:
            tally.fail(job.name, bad, **row)
            continue
        expected = expected_settings(job, job_config, choice, hashes)
        row["settings"] = json.dumps(expected)
        if is_finished(final, expected):
            tally.skipped += 1
            manifest.set(job.name, "done", error=None, **row)
            tally.report("skip", job.name)
            continue
        try:
            check_paths({f"the photo '{job.content}'": Path(job.content),
                         **{f"the painting '{s}'": Path(s) for s in job.styles}}, {"the output": final})
            if final.exists() and settings_of(final) is None:
                raise ImageError(f"refusing to replace '{final}': it is not an image nstyle made")
        except ImageError as e:
            tally.fail(job.name, error_line(e), **row)
            continue
        manifest.set(job.name, "pending", error=None, **row)
        todo.append((job, job_config))

    interrupted, cache = False, {}
    try:
        if ray is None:
            _run_here(todo, out, work, tally, cache)
        elif todo:
            _run_on_ray(todo, out, hashes, ray, pool_options, tally)
    except KeyboardInterrupt:
        interrupted = True
        for row in manifest.rows():
            if row["status"] == "running":
                manifest.set(row["name"], "interrupted")
    tally.report("end")
    return BatchResult(len(jobs), tally.done, tally.skipped, tally.failed, interrupted,
                       time.perf_counter() - start, manifest.path, cache)


class _Tally:
    """A batch's counts, kept in step with the manifest and reported to the callback."""

    def __init__(self, total: int, manifest: Manifest, callback, start: float):
        self.total, self.manifest, self.callback, self.start = total, manifest, callback, start
        self.done = self.skipped = self.running = 0
        self.failed: list[tuple[str, str]] = []
        self.first: float | None = None   # when the first job was handed out
        self.last: float | None = None    # when the latest finished

    def report(self, event: str, name: str | None = None, **extra) -> None:
        if self.callback is None:
            return
        left = self.total - self.done - self.skipped - len(self.failed)
        rate = self.done / max(self.last - self.first, 1e-9) if self.done else None
        eta = None if rate is None else max(0.0, (left - extra.get("fraction", 0.0)) / rate)
        self.callback(BatchProgress(event, name, self.total, self.done, self.skipped, len(self.failed), self.running,
                                    left, time.perf_counter() - self.start, rate, eta, **extra))

    def started(self, name: str, worker: str) -> None:
        self.first = self.first or time.perf_counter()
        self.running += 1
        self.manifest.set(name, "running", worker=worker)
        self.report("running", name, worker=worker)

    def finished(self, name: str, worker: str, seconds: float) -> None:
        self.running -= 1
        self.done += 1
        self.last = time.perf_counter()
        self.manifest.set(name, "done", error=None, worker=worker, seconds=round(seconds, 3))
        self.report("done", name, worker=worker)

    def fail(self, name: str, error: str, worker: str | None = None, seconds: float | None = None, **row) -> None:
        """A job failed (``worker`` set: one that had started)."""
        if worker is not None:
            self.running -= 1
            row.update(worker=worker, seconds=None if seconds is None else round(seconds, 3))
        self.failed.append((name, error))
        self.manifest.set(name, "failed", error=error, **row)
        self.report("failed", name, error=error, worker=worker)


def _run_here(todo, out: Path, work: Path, tally: _Tally, cache: dict) -> None:
    """One job at a time in this process, all on one engine (built at the first job to run);
    ``cache`` gets the counts of its style statistics cache."""
    from .engine import Stylizer

    engine = None
    worker = f"{socket.gethostname()}:{os.getpid()}"
    for job, job_config in todo:
        tally.started(job.name, worker)
        began = time.perf_counter()
        path = work / job.name
        try:
            engine = engine or Stylizer(job_config)
            result = run_job(Job(job.content, job.styles, path, job_config), engine,
                             callback=lambda p, name=job.name: tally.report("step", name, fraction=p.fraction))
            if result.status != "done":  # Ctrl-C: the image as it was is not a result
                raise KeyboardInterrupt
            os.replace(path, out / job.name)
        except (KeyboardInterrupt, Interrupted):
            path.unlink(missing_ok=True)
            raise
        except Exception as e:
            path.unlink(missing_ok=True)
            tally.fail(job.name, error_line(e), worker, time.perf_counter() - began)
            continue
        finally:
            if engine is not None:
                cache.update(engine.cache_info())
        tally.finished(job.name, worker, time.perf_counter() - began)


def _run_on_ray(todo, out: Path, hashes: dict[str, str], address: str, options: dict, tally: _Tally) -> None:
    """Every job as a Ray task (cluster.py); each result written here, atomically."""
    from .cluster import RayPool, Task

    tasks, files = [], {}
    # A weights file of the user's own goes with the jobs; the pinned ones each worker finds
    # in its own cache or downloads, as nstyle does.
    weights = todo[0][1].weights
    weights_sha = None if weights is None else file_sha256(weights)
    for job, job_config in todo:
        paths = [job.content, *job.styles, *([] if weights is None else [weights])]
        shas = [hashes.get(p) or weights_sha for p in paths]
        files.update(zip(shas, map(Path, paths)))
        payload = {"name": job.name, "content": job.content, "styles": list(job.styles), "content_sha": shas[0],
                   "style_shas": shas[1:len(job.styles) + 1], "weights_sha": weights_sha, "config": job_config}
        tasks.append(Task(job.name, payload, tuple(zip(shas, (Path(p).suffix.lower() for p in paths)))))
    with RayPool(address, **options) as pool:
        for outcome in pool.run(paint, tasks, files, on_start=tally.started):
            error = outcome.error or (outcome.result or {}).get("error")
            if error is None:
                try:
                    atomic_write_bytes(out / outcome.key, outcome.result["png"])
                except ImageError as e:
                    error = error_line(e)
            if error is None:
                tally.finished(outcome.key, outcome.worker, outcome.seconds)
            else:
                tally.fail(outcome.key, error, outcome.worker, outcome.seconds)


def _remove_stale_temps(out: Path) -> None:
    """Temporary files of atomic writes into ``out`` left by a killed process."""
    for name in os.listdir(out):
        found = re.match(r"^\.(.+)\.(\d+)\.[^.]+\.tmp$", name)
        if found:
            remove_stale_temps(out / found.group(1))
