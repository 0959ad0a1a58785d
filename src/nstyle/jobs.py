"""One job for every front end: a stylization with everything around it.

``run_job(Job(...))`` checks every path the run will write (output, snapshots, log) against
every file it reads (photo, paintings, masks, start image, weights) and against each other,
by resolved identity (symlinks, hard links, ``..``), before any work; resolves the weights;
plans memory; runs the engine, retrying smaller on out-of-memory; and writes the result with
its settings in the PNG metadata, the snapshots and the JSON log, each atomically. Ctrl-C
(``Interrupted``) or a cancel flag (``Cancelled``) saves the image as it is, and the job
returns with that status; a diverging loss saves the last good image and raises
``Diverged``. The command line, the web app and batch runs all call this.

>>> result = run_job(Job("photo.jpg", ("painting.jpg",), "out.png"))  # doctest: +SKIP
>>> result.status, result.output  # doctest: +SKIP
('done', PosixPath('out.png'))
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import torch

from . import __version__
from .config import Config
from .engine import Stylizer
from .errors import Cancelled, ConfigError, Diverged, ImageError, Interrupted
from .image import SUPPORTED_OUTPUT, atomic_write_bytes, load_image, save_image
from .loop import Progress
from .objective import Term
from .plan import RunPlan, preflight, style_options
from .weights import WeightsChoice, choose_weights


@dataclass(frozen=True)
class Job:
    """What to paint and where to put it.

    ``log``: a JSON file of the settings and the loss history (None: none). ``save_every``:
    also save ``OUTPUT_<step>.ext`` every that many iterations (0: never). ``init``: an
    image to start from instead of the one ``config.init`` makes. ``names``: what the settings
    record as an input's name, by the path read, where they differ (a batch job on a cluster
    reads copies of the files and records the originals'; nstyle.batch).
    """

    content: str | os.PathLike
    styles: Sequence[str | os.PathLike]
    output: str | os.PathLike
    config: Config = field(default_factory=Config)
    masks: Sequence[str | os.PathLike] | None = None
    init: str | os.PathLike | None = None
    save_every: int = 0
    log: str | os.PathLike | None = None
    names: Mapping[str, str] | None = None


@dataclass
class JobResult:
    """How a job ended: ``status`` 'done', 'interrupted' (Ctrl-C) or 'cancelled'; ``output``
    is None only when it was stopped before its first iteration (nothing saved)."""

    status: str
    output: Path | None
    progress: Progress | None
    history: list[dict]
    model: str
    seconds: float
    size: int                      # the size it ran at (smaller than asked after an out-of-memory retry)


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's bytes, in hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def snapshot_path(out: Path, step: int, total: int) -> Path:
    """``out.png`` -> ``out_007.png``: numbered with as many digits as ``total`` has."""
    return out.with_name(f"{out.stem}_{step:0{len(str(total))}d}{out.suffix}")


def check_output(output: str | os.PathLike, image: bool = True) -> Path:
    """Refuse an output path that cannot be written: an image format we do not write, a
    missing or read-only folder, a folder in its place."""
    out = Path(output).expanduser()
    text = os.fspath(output)
    if image and out.suffix.lower() not in SUPPORTED_OUTPUT:
        raise ImageError(f"unsupported output format '{out.suffix or text}' (use .png, .jpg, .webp, .tif or .bmp)")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise ImageError(f"cannot write '{text}': directory '{parent}' does not exist")
    if not os.access(parent, os.W_OK):
        raise ImageError(f"cannot write '{text}': directory '{parent}' is not writable")
    if out.is_dir():
        raise ImageError(f"cannot write '{text}': it is a directory")
    return out


def _identity(path: Path) -> tuple:
    """What two names of one file share: the inode where the file exists (hard links,
    symlinks), else the resolved path (``..``, symlinked folders)."""
    try:
        st = os.stat(path)
        return ("inode", st.st_dev, st.st_ino)
    except OSError:
        return ("path", os.path.realpath(path))


def check_paths(reads: dict[str, Path], writes: dict[str, Path]) -> None:
    """Refuse a run that would write onto a file it reads, or write two outputs onto one
    file. ``reads`` and ``writes`` map a role ('the photo', 'the log') to a path."""
    inputs = {}
    for role, path in reads.items():
        inputs.setdefault(_identity(path), role)
        inputs.setdefault(("path", os.path.realpath(path)), role)
    seen: dict[tuple, str] = {}
    for role, path in writes.items():
        keys = {_identity(path), ("path", os.path.realpath(path))}
        for key in keys:
            if key in inputs:
                raise ImageError(f"refusing to write {role} '{path}' over {inputs[key]}, an input of this run")
            if key in seen:
                raise ImageError(f"{role} and {seen[key]} would both be written to '{path}'")
        for key in keys:
            seen[key] = role


class _Writer:
    """Writes the output, snapshots and log with the run's settings in them."""

    def __init__(self, job: Job, out: Path, log: Path | None, choice: WeightsChoice, config: Config):
        self.out, self.log, self.history = out, log, []
        names = job.names or {}

        def name(path) -> str:
            return names.get(os.fspath(path), os.fspath(path))

        masks = None if job.masks is None else list(job.masks)
        self.meta = {"version": __version__, "model": choice.spec.name, "weights_md5": choice.md5,
                     "seed": config.seed, "content": name(job.content),
                     "styles": [name(s) for s in job.styles],
                     "masks": None if masks is None else [name(m) for m in masks],
                     "options": {k: v for k, v in config.to_dict().items() if k != "weights"},
                     # the inputs' bytes, so that a result can be matched to them (nstyle batch)
                     "sha256": {"content": file_sha256(job.content), "styles": [file_sha256(s) for s in job.styles],
                                "masks": None if masks is None else [file_sha256(m) for m in masks]}}

    def image(self, image: torch.Tensor, path: Path) -> None:
        last = self.history[-1] if self.history else {}
        info = dict(self.meta, steps=last.get("step", 0), loss=last.get("loss"))
        save_image(image, path, {"Software": f"nstyle {__version__}", "nstyle": json.dumps(info)})

    def finish(self, image: torch.Tensor) -> None:
        self.image(image, self.out)
        if self.log is not None:
            atomic_write_bytes(self.log, json.dumps(dict(self.meta, history=self.history), indent=1).encode())


def run_job(job: Job, engine: Stylizer | None = None, *, callback: Callable[[Progress], None] | None = None,
            notify: Callable[[str], None] | None = None, cancel=None,
            download_progress: Callable[[int, int], None] | None = None,
            extra_terms: Sequence[Term] = ()) -> JobResult:
    """Run ``job`` on ``engine`` (a new ``Stylizer`` if None) and return how it ended.

    ``callback(progress)`` after every iteration; ``notify(text)`` for the one-line notes a
    user should see (which network, tiles, a retry at a smaller size); ``cancel`` as in
    ``Stylizer.stylize``; ``download_progress(done, total)`` while weights download.
    Raises ImageError, WeightsError, LayerError or ConfigError before any work for what
    cannot succeed; ``Diverged`` after saving the last good image.
    """
    engine = engine or Stylizer(job.config)
    config = job.config
    say = notify or (lambda text: None)
    out = check_output(job.output)
    log = None if job.log is None else check_output(job.log, image=False)
    if not isinstance(job.save_every, int) or job.save_every < 0:
        raise ConfigError(f"save every must be a whole number, at least 0, not {job.save_every!r}")
    content = load_image(job.content)
    styles = [load_image(s) for s in job.styles]
    style_options(config, len(styles), None if job.masks is None else len(job.masks))
    masks = None if job.masks is None else [load_image(m) for m in job.masks]
    init = None if job.init is None else load_image(job.init)

    explicit = config.model != "auto" or config.weights is not None
    choice = choose_weights(config.model, config.weights, allow_download=True, progress=download_progress)
    style_shapes = [tuple(s.shape[-2:]) for s in styles]
    plan = preflight(content, config, choice.spec, style_shapes)
    _check_job_paths(job, out, log, choice, plan)
    tiled = [(hw, grid) for hw, grid in zip(plan.sizes, plan.grids) if grid]
    if tiled:
        (h, w), (rows, cols) = tiled[0]
        why = f"larger than --tile-size {config.tile_size}" if config.tile_size else "too large for memory whole"
        say(f"{w}x{h} and above are {why}: refined in {rows}x{cols} overlapping tiles")
    if not explicit:
        why = {"vgg16-hed": " (vgg19 weights not found; 'nstyle download vgg19' fetches them)",
               "vgg16bn-craft": " (vgg19 and vgg16-hed weights not found; 'nstyle download vgg19' or "
                                "'nstyle download vgg16-hed' fetches them)"}.get(choice.spec.name, "")
        say(f"using {choice.spec.name}{why}")
    config = config.replace(model=choice.spec.name, weights=str(choice.path))
    writer = _Writer(job, out, log, choice, config)
    start = time.perf_counter()

    last: list[Progress] = []

    def on_progress(p: Progress) -> None:
        last[:] = [p]
        writer.history.append({"step": p.step, "elapsed": round(p.elapsed, 3), "evaluations": p.evaluations,
                               "scale": p.scale, "size": list(p.size), "loss": p.loss, **p.terms})
        if callback is not None:
            callback(p)
        if job.save_every and p.step % job.save_every == 0 and p.step < p.total:
            writer.image(engine.current_image(), snapshot_path(out, p.step, plan.steps))

    def result(status: str, output: Path | None, progress: Progress | None) -> JobResult:
        return JobResult(status, output, progress, writer.history, choice.spec.name,
                         time.perf_counter() - start, config.size)

    try:
        while True:
            try:
                image = engine.stylize(content, styles, masks=masks, init=init, extra_terms=extra_terms,
                                       callback=on_progress, cancel=cancel, config=config, weights=choice,
                                       plan=plan)
                break
            except Exception as e:  # out of memory despite the plan: retry smaller
                smaller = int(config.size * 0.8)
                if not out_of_memory(e) or smaller < 64:
                    raise
                say(f"out of memory at --size {config.size}; trying again at {smaller}")
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                config = config.replace(size=smaller)
                plan = preflight(content, config, choice.spec, style_shapes)
                _check_job_paths(job, out, log, choice, plan)  # the snapshots' names follow the plan
                writer.meta["options"]["size"] = smaller
                writer.history.clear()
    except Interrupted as e:
        status = "cancelled" if isinstance(e, Cancelled) else "interrupted"
        if e.progress is None:
            return result(status, None, None)
        writer.finish(e.image)
        return result(status, out, e.progress)
    except Diverged as e:
        if not writer.history:  # nothing done yet: nothing worth a file
            raise
        writer.finish(e.image)
        raise Diverged(f"{e}; the last good image is saved in {out}", e.image) from e
    writer.finish(image)
    return result("done", out, last[0] if last else None)


def _check_job_paths(job: Job, out: Path, log: Path | None, choice: WeightsChoice, plan: RunPlan) -> None:
    reads = {"the photo": Path(job.content)}
    reads.update({f"the painting '{s}'": Path(s) for s in job.styles})
    reads.update({f"the mask '{m}'": Path(m) for m in job.masks or ()})
    if job.init is not None:
        reads["the start image"] = Path(job.init)
    reads["the weights file"] = Path(choice.path)
    writes = {"the output": out}
    if log is not None:
        writes["the log"] = log
    if job.save_every:
        for step in range(job.save_every, plan.steps, job.save_every):
            path = snapshot_path(out, step, plan.steps)
            writes[f"the snapshot '{path.name}'"] = path
    check_paths({k: v.expanduser() for k, v in reads.items()}, writes)


def out_of_memory(e: BaseException) -> bool:
    """A GPU (torch.OutOfMemoryError) or CPU allocation failure."""
    if isinstance(e, (MemoryError, getattr(torch, "OutOfMemoryError", MemoryError))):
        return True
    text = str(e).lower()
    return isinstance(e, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)
