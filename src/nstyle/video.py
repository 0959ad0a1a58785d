"""Video: a clip painted frame by frame without flicker.

The method of Ruder, Dosovitskiy and Brox, "Artistic style transfer for videos" (GCPR 2016;
IJCV 2018 for the long-term variant; code: manuelruder/artistic-videos). Stylizing each
frame on its own flickers: each optimisation lands in another local minimum. Instead:

* dense optical flow between consecutive frames, forward and backward (OpenCV's DIS flow);
* each frame after the first starts from the previous stylized frame warped by the flow
  and is held to it by a temporal loss (``losses.temporal_loss``), weighted by a mask that
  is zero where the flow cannot be trusted: disoccluded pixels (the forward-backward
  consistency check) and motion boundaries;
* optionally (``long_term``) frames 1, 2 and 4 back, each pixel tied to the nearest of
  them that sees it (the IJCV paper's long-term consistency);
* the first frame gets the full coarse-to-fine run, later frames one scale at the output
  size with fewer iterations, since they start close to their answer.

``stylize_video`` is the core (an iterable of frames in, stylized frames out); ``run_video``
is the job around it that the command line runs: the file read and written through PyAV
(FFmpeg in its wheel), frames kept in a work folder with a manifest so that an
interrupted run continues where it stopped, the output written atomically at the end with
the input's timestamps and audio.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import os
import shutil
import tempfile
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from . import __version__, color, losses
from .config import Config
from .engine import Stylizer
from .errors import ConfigError, Interrupted, VideoError
from .image import atomic_write_bytes, fit_size, load_image, resize, save_image
from .jobs import check_output, check_paths
from .loop import Progress
from .objective import Term
from .weights import choose_weights

# The thresholds of Ruder et al.'s consistency check (artistic-videos, consistencyChecker).
DISOCCLUSION = (0.01, 0.5)       # |w + w'|^2 > 0.01 (|w|^2 + |w'|^2) + 0.5
MOTION_BOUNDARY = (0.01, 0.002)  # |grad u|^2 + |grad v|^2 > 0.01 |w|^2 + 0.002
LONG_TERM = (1, 2, 4)            # frames back tied to the current one with long_term
OUTPUTS = (".mp4", ".mov", ".mkv", ".m4v")


@dataclass(frozen=True)
class VideoOptions:
    """What video adds to an image run's ``Config`` (which applies to every frame)."""

    frame_iterations: int = 30          # iterations of each frame after the first, at the output size only
    # Weight of the temporal loss, calibrated by measurement (benchmarks/video.py --sweep,
    # 256 px, 8 frames of each clip, 40 iterations a frame): the masked temporal error of the
    # pan and zoom against the style term its frames end with was 5.43/255 and 44.6 at 1e4,
    # 4.64 and 50.6 at 3e4, 3.91 and 65.3 at 1e5; the still camera's 2.73 and 29.9 at 1e4,
    # 2.10 and 33.3 at 3e4. Above 3e4 the frames keep the previous one's strokes at the cost
    # of their own (at 1e6 the style term was 6x the per-frame run's and the clip visibly
    # blurred as warps compound). With nstyle's relative terms and the loss in [0, 1] units,
    # the paper's weights do not carry over. 5e4 since the style layers lean toward the
    # shallow ones (Config.style_layer_decay 0.5), whose fine texture flickers more: on 24
    # frames at 256 px, 30 iterations a frame, the pan and zoom's error was 4.55/255 (2.96x
    # below per-frame painting's 13.46) and style 47.2 at 3e4, 4.20 (3.2x) and 49.1 at 5e4;
    # the still camera's 1.27 and 42, 1.03 and 43. 1e5 since L-BFGS's gradient is projected
    # at the clamp (loop._project_gradient), which moved VGG19's first frame: on 24 frames at
    # 256 px the still camera's background drifted 2.18/255 at 5e4, past the 2/255 asked,
    # and 1.79 at 1e5 (1.42 at 2e5), with its temporal error 0.86 -> 0.59/255 (0.43) and style
    # 80.1 -> 82.3 (84.1); the pan and zoom's 4.11 -> 3.71/255 and style 87.6 -> 93.9.
    # With Config's content on relu4_2 at 150 (the twelfth stop) still 1.79/255 at 1e5, temporal
    # error 0.53/255 (pan 3.61), 18.9x (4.2x) below painting each frame on its own.
    temporal_weight: float = 1e5
    long_term: bool = False             # also tie each frame to the frames 2 and 4 back
    start: float = 0.0                  # seconds into the clip where painting starts
    duration: float | None = None       # seconds painted (None: to the end)
    work_dir: str | None = None         # the frames' folder (None: OUTPUT.frames beside the output)
    keep_frames: bool = False           # keep the work folder after the video is written

    def check(self) -> None:
        if not isinstance(self.frame_iterations, int) or not 1 <= self.frame_iterations <= 100000:
            raise ConfigError(f"frame iterations must be between 1 and 100000, not {self.frame_iterations}")
        if not self.temporal_weight >= 0:
            raise ConfigError(f"temporal weight must be 0 or more, not {self.temporal_weight}")
        if not self.start >= 0:
            raise ConfigError(f"start must be 0 seconds or more, not {self.start}")
        if self.duration is not None and not self.duration > 0:
            raise ConfigError(f"duration must be more than 0 seconds, not {self.duration}")


# --- flow, masks, warping ------------------------------------------------------------


def _gray_u8(frame: torch.Tensor) -> np.ndarray:
    return (color.luminance(frame)[0].clamp(0, 1) * 255).round().to(torch.uint8).numpy()


_DIS = None


def optical_flow(frame: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """Dense optical flow (H, W, 2) from ``frame`` to ``other`` (both (3, H, W) in [0, 1]):
    ``frame(p)`` is seen at ``other(p + flow(p))``; channel 0 is x, 1 is y, in pixels.
    OpenCV's DIS flow (Kroeger et al. 2016), medium preset, on the luminance."""
    global _DIS
    import cv2

    if _DIS is None:
        _DIS = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    flow = _DIS.calc(_gray_u8(frame), _gray_u8(other), None)
    return torch.from_numpy(flow)


def warp(image: torch.Tensor, flow: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
    """``image`` (C, H, W) sampled at ``p + flow(p)`` (``mode``: bilinear or bicubic; outside
    the image, the nearest edge pixel): the previous frame brought onto the current one by
    the backward flow. An integer flow moves pixels exactly.

    >>> img = torch.arange(6.0).view(1, 2, 3)
    >>> warp(img, torch.tensor([1.0, 0.0]).expand(2, 3, 2))
    tensor([[[1., 2., 2.],
             [4., 5., 5.]]])
    """
    h, w = image.shape[-2:]
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64),
                            indexing="ij")
    x = xs + flow[..., 0].double()
    y = ys + flow[..., 1].double()
    grid = torch.stack([2 * x / max(w - 1, 1) - 1, 2 * y / max(h - 1, 1) - 1], -1)
    out = F.grid_sample(image[None].double(), grid[None], mode=mode, padding_mode="border", align_corners=True)
    return out[0].to(image.dtype)


def consistency_mask(backward: torch.Tensor, forward: torch.Tensor) -> torch.Tensor:
    """Where the backward flow ``w`` (current -> previous frame, (H, W, 2)) can be trusted,
    as (H, W) of 0 and 1, checked against the forward flow ``w'`` (previous -> current).

    Ruder et al. (section 4.1): a pixel is disoccluded where the forward flow at the place
    it comes from does not lead back, ``|w + w~'|^2 > 0.01 (|w|^2 + |w~'|^2) + 0.5`` (``w~'``
    the forward flow warped by ``w``), on a motion boundary where
    ``|grad u|^2 + |grad v|^2 > 0.01 |w|^2 + 0.002``, and (as in their consistencyChecker)
    unreliable where it comes from outside the previous frame. All three get 0.
    """
    h, w = backward.shape[:2]
    back_fw = warp(forward.permute(2, 0, 1), backward).permute(1, 2, 0)
    both = (back_fw + backward).pow(2).sum(-1)
    a, b = DISOCCLUSION
    disoccluded = both > a * (back_fw.pow(2).sum(-1) + backward.pow(2).sum(-1)) + b
    # Forward differences, zero at the last row and column.
    dx = torch.zeros_like(backward)
    dy = torch.zeros_like(backward)
    dx[:, :-1] = backward[:, 1:] - backward[:, :-1]
    dy[:-1] = backward[1:] - backward[:-1]
    a, b = MOTION_BOUNDARY
    boundary = (dx.pow(2) + dy.pow(2)).sum(-1) > a * backward.pow(2).sum(-1) + b
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    x, y = xs + backward[..., 0], ys + backward[..., 1]
    outside = (x < 0) | (x > w - 1) | (y < 0) | (y > h - 1)
    return (~(disoccluded | boundary | outside)).float()


def long_term_masks(masks: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """The IJCV paper's long-term weights (eq. 9): ``masks`` for frames 1, 2, 4 ... back,
    nearest first; each pixel keeps the weight of the nearest frame that sees it,
    ``c_j = max(c_j - sum_{k < j} c_k, 0)``."""
    out, seen = [], torch.zeros_like(masks[0])
    for m in masks:
        out.append((m - seen).clamp_min(0))
        seen = seen + m
    return out


def temporal_term(targets: Sequence[tuple[torch.Tensor, torch.Tensor]], weight: float) -> Term:
    """The temporal loss as an extra term of the objective: ``targets`` are pairs of a
    warped earlier result (3, H, W) in [0, 1] and its mask (H, W)."""
    prepared = [(w[None] * 255.0, m[None, None]) for w, m in targets]

    def fn(pixels: torch.Tensor, features) -> torch.Tensor:
        total = pixels.new_zeros(())
        for warped, mask in prepared:
            if warped.shape[-2:] != pixels.shape[-2:]:  # only on a scale below the output size
                warped = F.interpolate(warped, size=pixels.shape[-2:], mode="bilinear", align_corners=False)
                mask = F.interpolate(mask, size=pixels.shape[-2:], mode="area")
            total = total + losses.temporal_loss(pixels, warped.to(pixels.device), mask.to(pixels.device))
        return total

    return Term("temporal", weight, fn)


# --- the core ------------------------------------------------------------------------


def fresh_start(frame: torch.Tensor, previous: torch.Tensor, warped: torch.Tensor, mask: torch.Tensor,
                config: Config) -> torch.Tensor:
    """Where a frame starts: the previous result warped where the flow is trusted (``mask``
    1), and elsewhere (what the camera or a moving object uncovers, what enters at the
    edge) the frame itself, recoloured to the previous result's colour mean and covariance.

    Ruder et al. start from the warped result everywhere, which leaves there what was in
    front before (a moving object drags a trail; the edge pixels repeat into what enters)
    for the few iterations a frame gets to undo. Ours: those places start as the photo in
    the painted result's colours. By an affine map, not the first frame's distribution
    transfer (init='palette'): that one, tried (benchmarks/video.py, 256 px, 24 frames),
    left the pan's temporal error as it was (4.28 -> 4.29/255), raised the still camera's
    (1.32 -> 1.54/255) and cost 0.24 s a frame, 3.6 % of it.
    """
    if config.preserve_colors == "luminance":  # the run optimises the luminance, as ``warped`` holds it
        fill = color.as_gray_rgb(color.luminance(frame))
    elif config.preserve_colors != "none":
        fill = frame
    else:
        fill = color.match_colors(frame, *color.color_stats(previous)).clamp(0, 1)
    return mask * warped + (1 - mask) * fill


def _frame(x) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.ndim != 3 or x.shape[0] != 3:
        raise ConfigError(f"a video frame must be a (3, H, W) tensor, not {getattr(x, 'shape', type(x).__name__)}")
    return (x.float() / 255.0 if x.dtype == torch.uint8 else x.float()).contiguous()


def stylize_video(frames: Iterable[torch.Tensor], styles, config: Config | None = None, *,
                  options: VideoOptions = VideoOptions(), engine: Stylizer | None = None,
                  history: Sequence[tuple[torch.Tensor, torch.Tensor]] = (), weights=None,
                  callback: Callable[[int, Progress], None] | None = None, cancel=None,
                  timings: dict | None = None) -> Iterator[torch.Tensor]:
    """Paint each of ``frames`` ((3, H, W) tensors, float in [0, 1] or uint8, all of one
    size: the output size; ``config.size`` should be their long side) and yield each
    result, (3, H, W) in [0, 1], as soon as it is done.

    The palette start hands out colours by the photo's colour order here, whatever
    ``config.palette_layout`` says (see below).

    ``history``: (frame, result) pairs of the frames just before these, oldest first (a
    resumed run); with none, the first frame gets the full coarse-to-fine run of
    ``config``. ``callback(index, progress)``: after every iteration, ``index`` counting
    from 0 at the first of ``frames``. ``timings``: a dict whose ``flow`` and ``stylize``
    entries gain the seconds spent on each. ``cancel`` as in ``Stylizer.stylize``.

    >>> for image in stylize_video(frames, ["painting.jpg"], Config(size=256)):  # doctest: +SKIP
    ...     save(image)
    """
    options.check()
    engine = engine or Stylizer(config)
    # The palette start by colour order alone (Config.palette_layout 0, ours): colours placed
    # by where they are in the frame moved the still camera's background colour 3.29/255
    # between the first and last of 24 frames at 256 px, against 1.78 by colour order
    # (benchmarks/video.py; the pan's temporal error 4.15 against 4.20/255).
    config = (config or engine.config).replace(palette_layout=0.0)
    # Later frames clamped as the image mode's are, the gradient projected at the bounds
    # (loop._project_gradient). A later frame starts near a minimum, and where pixels sit at
    # black or white the plain clamp cut the steps L-BFGS took, its curvature pairs no longer
    # described them and it overshot: on VGG19 a frame of a still clip saw its loss rise to
    # 1.7x its start within 30 iterations, and the still background's colour drifted 3.01/255
    # over 24 frames at 256 px. Later frames then ran unclamped (1.88/255). With the
    # projection, clamped or unclamped later frames give the same clip (temporal error 0.86/255
    # both, drift 2.18 and 2.17: the first frame, now projected too, moved it from 1.88), so
    # video takes the image mode's rule (benchmarks/README.md, "The clamp, projected").
    later = config.replace(scales=1, iterations=options.frame_iterations)
    back = LONG_TERM if options.long_term else (1,)
    past: deque = deque(((_frame(f), _frame(r)) for f, r in history), maxlen=max(back))
    timings = {} if timings is None else timings
    timings.setdefault("flow", 0.0)
    timings.setdefault("stylize", 0.0)
    for index, frame in enumerate(frames):
        frame = _frame(frame)
        on_step = None if callback is None else (lambda p, i=index: callback(i, p))
        t0 = time.perf_counter()
        if not past:
            image = engine.stylize(frame, styles, callback=on_step, cancel=cancel, config=config, weights=weights)
        else:
            warped, masks = [], []
            for j in back:
                if j > len(past):
                    break
                before, result = past[-j]
                backward = optical_flow(frame, before)
                forward = optical_flow(before, frame)
                # Bicubic: a bilinear warp is a blur, and a blur a frame compounds over a clip.
                warped.append(warp(result, backward, "bicubic").clamp(0, 1))
                masks.append(consistency_mask(backward, forward))
            masks = long_term_masks(masks)
            if config.preserve_colors == "luminance":
                # The run optimises the luminance (engine._prepare_colors): hold that to the past.
                warped = [color.as_gray_rgb(color.luminance(w)) for w in warped]
            start = fresh_start(frame, past[-1][1], warped[0], masks[0], config)
            t1 = time.perf_counter()
            timings["flow"] += t1 - t0
            t0 = t1
            term = temporal_term(list(zip(warped, masks)), options.temporal_weight)
            image = engine.stylize(frame, styles, init=start, extra_terms=[term], callback=on_step,
                                   cancel=cancel, config=later, weights=weights)
        timings["stylize"] += time.perf_counter() - t0
        past.append((frame, image))
        yield image


# --- reading and writing video files -------------------------------------------------


@dataclass
class VideoInfo:
    """A clip as probed: the selected frames' timestamps and what the output keeps."""

    path: str
    width: int
    height: int
    rate: Fraction                 # the average frame rate
    time_base: Fraction
    pts: list[int]                 # timestamps of the selected frames, in time_base
    total: int                     # frames in the whole clip
    audio: bool
    variable: bool                 # frame intervals differ (kept as they are)
    begin: float = 0.0             # seconds: the selection's start
    end: float | None = None       # seconds: its end (None: the clip's)

    @property
    def frames(self) -> int:
        return len(self.pts)


def _av():
    try:
        import av
    except ImportError:
        raise VideoError("video needs PyAV and OpenCV: pip install 'nstyle[video]'") from None
    return av


def _reason(e: BaseException) -> str:
    text = getattr(e, "strerror", None) or str(e)
    return text.splitlines()[0] if text else type(e).__name__


def _open(path: str):
    av = _av()
    name = f"'{path}'"
    if not os.path.exists(path):
        raise VideoError(f"cannot read {name}: no such file")
    if os.path.isdir(path):
        raise VideoError(f"cannot read {name}: it is a directory")
    if os.path.getsize(path) == 0:
        raise VideoError(f"cannot read {name}: the file is empty (0 bytes)")
    try:
        container = av.open(path)
    except av.FFmpegError as e:
        raise VideoError(f"cannot read {name}: not a video FFmpeg can read, or truncated ({_reason(e)})") from None
    except OSError as e:
        raise VideoError(f"cannot read {name}: {_reason(e)}") from None
    if not container.streams.video:
        kinds = ", ".join(sorted({s.type for s in container.streams})) or "nothing"
        container.close()
        raise VideoError(f"cannot read {name}: it has no video track (only {kinds})")
    return container


def _seconds(pts: int, stream) -> float:
    return float((pts - (stream.start_time or 0)) * stream.time_base)


def _selected(t: float, begin: float, end: float | None) -> bool:
    return t >= begin - 1e-6 and (end is None or t < end - 1e-6)


def probe(path: str | os.PathLike, start: float = 0.0, duration: float | None = None) -> VideoInfo:
    """Open and decode the whole clip once (so a broken file fails here, before any
    painting) and return what a run needs. Raises VideoError in one line."""
    av = _av()
    path = os.fspath(path)
    end = None if duration is None else start + duration
    with _open(path) as container:
        stream = container.streams.video[0]
        declared = stream.frames
        pts, total = [], 0
        try:
            for frame in container.decode(stream):
                if frame.pts is None:
                    continue
                total += 1
                if _selected(_seconds(frame.pts, stream), start, end):
                    pts.append(frame.pts)
        except av.FFmpegError as e:
            raise VideoError(f"cannot read '{path}': damaged or truncated after {total} frames ({_reason(e)})") from None
        if total == 0:
            raise VideoError(f"cannot read '{path}': its video track has no frames")
        if declared and total < declared:
            raise VideoError(f"cannot read '{path}': truncated, {total} of its {declared} frames could be decoded")
        if not pts:
            raise VideoError(f"'{path}' has no frames between {start:g} s and "
                             f"{'its end' if end is None else f'{end:g} s'} (it has {total})")
        rate = stream.average_rate or stream.guessed_rate
        if not rate:
            raise VideoError(f"cannot read '{path}': its frame rate is unknown")
        steps = np.diff(sorted(pts)) if len(pts) > 1 else np.array([1])
        return VideoInfo(path, stream.codec_context.width, stream.codec_context.height, Fraction(rate),
                         Fraction(stream.time_base), pts, total, bool(container.streams.audio),
                         bool(len(steps) and steps.max() - steps.min() > 1), start, end)


def read_frames(info: VideoInfo, size: tuple[int, int] | None = None, skip: int = 0) -> Iterator[torch.Tensor]:
    """The selected frames of a probed clip, from the ``skip``-th on, as (3, H, W) in
    [0, 1], resized to ``size`` (height, width) when given."""
    av = _av()
    wanted = set(info.pts)
    index = 0
    with _open(info.path) as container:
        try:
            for frame in container.decode(container.streams.video[0]):
                if frame.pts not in wanted:
                    continue
                index += 1
                if index <= skip:
                    continue
                image = torch.from_numpy(frame.to_ndarray(format="rgb24")).permute(2, 0, 1).float() / 255.0
                if size is not None and tuple(image.shape[-2:]) != tuple(size):
                    image = resize(image, size, "area")
                yield image
        except av.FFmpegError as e:
            raise VideoError(f"cannot read '{info.path}': {_reason(e)}") from None


def _encoder(suffix: str) -> str:
    av = _av()
    for name in ("libx264", "h264", "mpeg4"):  # H.264 where the wheel has it
        if name in av.codecs_available:
            return name
    raise VideoError("this FFmpeg build has no H.264 or MPEG-4 encoder")


def write_video(path: str | os.PathLike, frames: Iterable[torch.Tensor], info: VideoInfo, crf: int = 18) -> None:
    """Encode ``frames`` ((3, H, W) in [0, 1], one per selected frame of ``info``) as H.264
    with the input's timestamps, time base and frame rate, copy its audio track over the
    same span, and rename the file onto ``path`` only once it is complete."""
    av = _av()
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=f".part{path.suffix}")
    os.close(fd)
    try:
        with _open(info.path) as source, av.open(tmp, "w", format=_muxer(path.suffix)) as out:
            codec = _encoder(path.suffix)
            stream = out.add_stream(codec, rate=info.rate)
            stream.codec_context.time_base = info.time_base
            stream.time_base = info.time_base
            stream.pix_fmt = "yuv420p"
            if codec == "libx264":
                stream.options = {"crf": str(crf), "preset": "medium"}
            audio_in = source.streams.audio[0] if source.streams.audio else None
            copy = audio_in is not None and _copyable(audio_in, path.suffix)
            if audio_in is None:
                audio_out = None
            elif copy:
                audio_out = out.add_stream_from_template(audio_in)
            else:
                # A layout of the same channel count that AAC takes ("1 channels", an unordered
                # layout some files carry, is refused; more than 5.1 is mixed down).
                channels = audio_in.codec_context.layout.nb_channels if audio_in.codec_context.layout else 2
                layout = {1: "mono", 2: "stereo", 3: "3.0", 4: "4.0", 5: "5.0", 6: "5.1"}.get(channels, "5.1")
                audio_out = out.add_stream("aac", rate=audio_in.codec_context.sample_rate or 48000, layout=layout)
                # 96 kb/s a channel (192 kb/s stereo), capped at AAC's most: 6144 bits a channel
                # per 1024-sample frame, which a low sample rate reaches first.
                audio_out.bit_rate = min(96_000, 6 * audio_out.codec_context.sample_rate) * \
                    audio_out.codec_context.layout.nb_channels
            first = info.pts[0]
            count = 0
            for image, pts in zip(frames, info.pts):
                if count == 0:
                    stream.height, stream.width = image.shape[-2:]
                pixels = (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).contiguous().numpy()
                frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
                frame.pts, frame.time_base = pts - first, info.time_base
                out.mux(stream.encode(frame))
                count += 1
            if count != info.frames:
                raise VideoError(f"{count} frames to write, {info.frames} expected")
            out.mux(stream.encode(None))
            if audio_out is not None:
                (_copy_audio if copy else _encode_audio)(source, audio_in, audio_out, out, info)
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, av.FFmpegError):
            raise VideoError(f"cannot write '{path}': {_reason(e)}") from None
        if isinstance(e, OSError):
            raise VideoError(f"cannot write '{path}': {_reason(e)}") from None
        raise


def _muxer(suffix: str) -> str:
    return {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}[suffix.lower()]


# Audio codecs that FFmpeg's MP4 and QuickTime muxers take as they are (others are refused,
# some only when the file is closed, e.g. PCM in MP4); Matroska takes any. Anything else is
# re-encoded as AAC, the audio codec every player of an H.264 MP4 reads.
_COPY_AUDIO = {
    "mp4": {"aac", "mp3", "ac3", "eac3", "opus", "flac", "alac"},
    "mov": {"aac", "mp3", "ac3", "eac3", "alac", "pcm_s16le", "pcm_s16be", "pcm_s24le", "pcm_s24be",
            "pcm_f32le", "pcm_u8"},
}


def _copyable(audio_in, suffix: str) -> bool:
    allowed = _COPY_AUDIO.get(_muxer(suffix))
    return allowed is None or audio_in.codec_context.name in allowed


def _in_span(t: float, info: VideoInfo) -> bool:
    """An audio timestamp ``t`` (seconds on the painted span's clock, plus ``info.begin``)
    falls in what is painted."""
    return not ((info.begin > 0 and t < info.begin - 1e-6) or (info.end is not None and t >= info.end - 1e-6))


def _encode_audio(source, audio_in, audio_out, out, info: VideoInfo) -> None:
    """Decode the audio of the painted span and encode it as AAC (when its codec cannot be
    copied into the output's container), starting at the same offset from the first frame."""
    av = _av()
    rate = audio_out.codec_context.sample_rate
    resampler = av.AudioResampler(format="fltp", layout=audio_out.codec_context.layout.name, rate=rate)
    first = info.pts[0] * info.time_base
    samples = None
    for frame in source.decode(audio_in):
        if frame.pts is None:
            continue
        t = float(frame.pts * frame.time_base - first)
        if not _in_span(t + info.begin, info):
            continue
        for piece in resampler.resample(frame):
            if samples is None:
                samples = max(0, round(t * rate))
            piece.pts, piece.time_base = samples, Fraction(1, rate)
            samples += piece.samples
            out.mux(audio_out.encode(piece))
    for piece in resampler.resample(None):
        if samples is not None:
            piece.pts, piece.time_base = samples, Fraction(1, rate)
            samples += piece.samples
            out.mux(audio_out.encode(piece))
    out.mux(audio_out.encode(None))


def _copy_audio(source, audio_in, audio_out, out, info: VideoInfo) -> None:
    """Remux the audio packets of the painted span (no re-encoding), moved by as much as the
    video (its first painted frame at 0), so that both stay in step. With no ``start`` all
    audio before the first frame is kept (an encoder's priming), with no ``duration`` all
    after it."""
    tb = audio_in.time_base
    first = info.pts[0] * info.time_base  # seconds, on the container's clock
    offset = round(first / tb)
    for packet in source.demux(audio_in):
        if packet.pts is None or packet.dts is None:
            continue
        if not _in_span(float(packet.pts * tb - first) + info.begin, info):
            continue
        packet.pts -= offset
        packet.dts -= offset
        packet.stream = audio_out
        out.mux(packet)


# --- the job: a file in, a file out, resumable -----------------------------------------


@dataclass(frozen=True)
class VideoJob:
    input: str | os.PathLike
    styles: Sequence[str | os.PathLike]
    output: str | os.PathLike
    config: Config = field(default_factory=Config)
    options: VideoOptions = field(default_factory=VideoOptions)


@dataclass
class VideoProgress:
    """Plain data for a front end: where the whole clip stands after one iteration."""

    frame: int           # 1-based frame being painted
    frames: int          # frames to paint in all
    step: int            # iteration of this frame
    steps: int           # its iterations planned
    loss: float
    elapsed: float       # seconds since this run started
    left: float | None   # seconds left for the clip (None until it can be estimated)
    resumed: int = 0     # frames that were already done when this run started


@dataclass
class VideoResult:
    status: str          # 'done' or 'interrupted' (Ctrl-C, a cancel flag)
    output: Path | None
    frames: int          # frames painted in all (done, or so far)
    total: int
    work: Path           # the work folder (gone when done, unless kept)
    seconds: float
    timings: dict


def _identity(path: str | os.PathLike) -> dict:
    """What says a file is the same: size, modification time and a hash of its first MB."""
    st = os.stat(path)
    with open(path, "rb") as f:
        head = hashlib.sha256(f.read(2**20)).hexdigest()
    return {"path": os.path.realpath(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "head_sha256": head}


def frame_path(work: Path, index: int) -> Path:
    return work / f"frame_{index + 1:06d}.png"


def working_size(height: int, width: int, size: int) -> tuple[int, int]:
    """The frames' (height, width) at a long side of ``size``, each side even (H.264's
    4:2:0 colour needs even sides)."""
    h, w = fit_size(height, width, size)
    return max(2, h - h % 2), max(2, w - w % 2)


def run_video(job: VideoJob, engine: Stylizer | None = None, *, callback: Callable[[VideoProgress], None] | None = None,
              notify: Callable[[str], None] | None = None, cancel=None) -> VideoResult:
    """Paint a video file into another, resumably. Every check that can fail is made before
    the first frame: the options, the output's folder and format, the input decoded once
    (VideoError for a broken clip), the paintings, the weights, and that nothing is
    written onto an input. Finished frames are kept as PNG files in the work folder with
    a manifest of the input's identity and the options; the same command run again
    continues from the first unfinished frame (other options or another input start
    afresh). Ctrl-C or ``cancel`` ends with status 'interrupted' and the frames kept.
    """
    start = time.perf_counter()
    say = notify or (lambda text: None)
    options, config = job.options, job.config
    options.check()
    out = check_output(job.output, image=False)
    if out.suffix.lower() not in OUTPUTS:
        raise VideoError(f"unsupported video output '{out.suffix or out.name}' (use {', '.join(OUTPUTS)})")
    _av(), _cv2()
    info = probe(job.input, options.start, options.duration)
    styles = [load_image(s) for s in job.styles]
    choice = choose_weights(config.model, config.weights, allow_download=True)
    hw = working_size(info.height, info.width, config.size)
    config = config.replace(size=max(hw), model=choice.spec.name, weights=str(choice.path))
    work = Path(options.work_dir).expanduser() if options.work_dir else out.with_name(out.name + ".frames")
    reads = {"the video": Path(job.input), "the weights file": Path(choice.path)}
    reads.update({f"the painting '{s}'": Path(s) for s in job.styles})
    check_paths({k: v.expanduser() for k, v in reads.items()}, {"the output": out, "the work folder": work})
    if work.exists() and not work.is_dir():
        raise VideoError(f"cannot use '{work}' as the work folder: it is a file")

    manifest = {"nstyle": __version__, "input": _identity(job.input),
                "styles": [_identity(s) for s in job.styles], "weights_md5": choice.md5,
                "size": list(hw), "frames": info.frames, "start": options.start, "duration": options.duration,
                "options": {k: v for k, v in config.to_dict().items() if k != "weights"},
                "video": {k: v for k, v in asdict(options).items() if k not in ("work_dir", "keep_frames")}}
    manifest = json.loads(json.dumps(manifest))  # tuples as lists, as read back
    done = _resume_point(work, manifest, info.frames, say)
    engine = engine or Stylizer(config)
    timings: dict = {}
    durations: list[float] = []
    frame_start = [time.perf_counter()]

    def on_step(index: int, p: Progress) -> None:
        if callback is None:
            return
        k = done + index
        left = None
        if durations:
            per = sum(durations) / len(durations)
            left = per * (info.frames - k - 1) + max(0.0, per - (time.perf_counter() - frame_start[0]))
        elif k > 0 and p.fraction > 0:  # a later frame with none finished yet: this one's pace
            per = p.elapsed / p.fraction
            left = per * (info.frames - k) - p.elapsed
        callback(VideoProgress(k + 1, info.frames, p.step, p.total, p.loss, time.perf_counter() - start,
                               left, done))

    painted = done
    if done < info.frames:
        first = max(0, done - (max(LONG_TERM) if options.long_term else 1))
        history = [(f, load_image(frame_path(work, first + i)))
                   for i, f in enumerate(itertools.islice(read_frames(info, hw, first), done - first))]
        frames = read_frames(info, hw, done)
        try:
            for index, image in enumerate(stylize_video(frames, [*styles], config, options=options, engine=engine,
                                                        history=history, weights=choice, callback=on_step,
                                                        cancel=cancel, timings=timings)):
                save_image(image, frame_path(work, done + index))
                painted = done + index + 1
                now = time.perf_counter()
                if painted > 1:
                    durations.append(now - frame_start[0])
                frame_start[0] = now
        except Interrupted:
            return VideoResult("interrupted", None, painted, info.frames, work, time.perf_counter() - start, timings)
    write_video(out, (load_image(frame_path(work, i)) for i in range(info.frames)), info)
    if not options.keep_frames:
        shutil.rmtree(work, ignore_errors=True)
    return VideoResult("done", out, info.frames, info.frames, work, time.perf_counter() - start, timings)


def _cv2():
    try:
        import cv2
    except ImportError:
        raise VideoError("video needs PyAV and OpenCV: pip install 'nstyle[video]'") from None
    return cv2


def _resume_point(work: Path, manifest: dict, frames: int, say: Callable[[str], None]) -> int:
    """How many frames of the work folder can be kept (the first run: 0), after writing the
    manifest. Frames of another input or other options are removed: they are ours (the
    folder has our manifest) and no longer match."""
    path = work / "manifest.json"
    if path.is_file():
        try:
            old = json.loads(path.read_text())
        except (OSError, ValueError):
            old = None
        if old == manifest:
            done = 0
            while done < frames and frame_path(work, done).is_file():
                done += 1
            if done:
                say(f"continuing from frame {done + 1} of {frames} ({done} done in {work})")
            return done
        for stale in work.glob("frame_*.png"):
            stale.unlink()
        say(f"the frames in {work} are of another input or other options: starting afresh")
    elif work.is_dir() and any(work.iterdir()):
        raise VideoError(f"cannot use '{work}' as the work folder: it holds other files and no nstyle manifest")
    work.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, json.dumps(manifest, indent=1).encode())
    return 0
