"""nstyle video against painting each frame on its own (Ruder, Dosovitskiy and Brox 2016).

Makes two clips of its own from examples/tubingen.jpg: a pan and zoom over the photo, and a
still camera with an object (a disc) moving over the photo. Paints each both ways with the
same settings and prints, per clip:

* temporal error: the mean masked absolute difference between each painted frame and the
  previous one warped by the flow, in 0-255 units (the mask of the consistency check);
* colour drift (still clip): the mean absolute difference of the mean colour of the first
  and last painted frames, in 0-255 units, over the still background;
* seconds per frame after the first, and the share of time spent on optical flow.

    python benchmarks/video.py --size 256 --frames 24
    python benchmarks/video.py --size 512 --frames 6 --clip pan --video-only   # seconds per frame at 512 px
    python benchmarks/video.py --size 256 --frames 24 --clip pan --examples examples  # README frames and GIF
    python benchmarks/video.py --sweep            # the temporal weight's calibration

Seconds are also given as float32 forward+backward passes of the network at 512x384, timed
in the same process, since these machines' speed varies from run to run.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from nstyle import Config, Stylizer, load_image
from nstyle.image import resize
from nstyle.weights import choose_weights
from nstyle.video import VideoOptions, consistency_mask, optical_flow, stylize_video, warp, working_size

ROOT = Path(__file__).resolve().parents[1]


def pan_zoom(photo: torch.Tensor, frames: int, hw: tuple[int, int]) -> list[torch.Tensor]:
    """A window moving right and closing in over the photo."""
    H, W = photo.shape[-2:]
    out = []
    for i in range(frames):
        t = i / max(frames - 1, 1)
        scale = 0.8 - 0.15 * t
        h, w = int(H * scale), int(W * scale)
        y, x = int((H - h) * 0.5), int((W - w) * t)
        out.append(resize(photo[:, y:y + h, x:x + w], hw, "area"))
    return out


def moving_object(photo: torch.Tensor, frames: int, hw: tuple[int, int]) -> list[torch.Tensor]:
    """A still camera; a red disc crosses the photo."""
    still = resize(photo, hw, "area")
    h, w = hw
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    out = []
    for i in range(frames):
        cx, cy, r = w * (0.15 + 0.7 * i / max(frames - 1, 1)), h * 0.6, h * 0.12
        disc = ((xx - cx) ** 2 + (yy - cy) ** 2 < r * r).float()
        f = still * (1 - disc) + torch.tensor([0.8, 0.15, 0.1]).view(3, 1, 1) * disc
        out.append(f)
    return out


def temporal_error(frames, painted) -> float:
    errs = []
    for k in range(1, len(frames)):
        back, fwd = optical_flow(frames[k], frames[k - 1]), optical_flow(frames[k - 1], frames[k])
        mask = consistency_mask(back, fwd)
        d = (painted[k] - warp(painted[k - 1], back)).abs().mean(0)
        errs.append(float((mask * d).sum() / mask.sum().clamp_min(1)) * 255)
    return sum(errs) / len(errs)


def run(frames, style, config, engine, options, per_frame: bool):
    times, timings = [], {}
    painted = []
    last: dict[int, dict] = {}
    timings["last terms"] = last  # each frame's final terms (content, style, tv[, temporal])
    if per_frame:
        for i, f in enumerate(frames):
            t = time.perf_counter()
            painted.append(engine.stylize(f, [style], config=config,
                                          callback=lambda p, i=i: last.__setitem__(i, p.terms)))
            times.append(time.perf_counter() - t)
    else:
        t = time.perf_counter()
        for image in stylize_video(frames, [style], config, options=options, engine=engine, timings=timings,
                                   callback=lambda i, p: last.__setitem__(i, p.terms)):
            painted.append(image)
            times.append(time.perf_counter() - t)
            t = time.perf_counter()
    return painted, times, timings


def pass_seconds(engine: Stylizer, config: Config) -> float:
    """Seconds of one float32 forward+backward pass of the run's network at 512x384, timed
    here (best of 3 after a warm-up): the unit the other timings are also given in."""
    net = engine.network(choose_weights(config.model, config.weights), config, torch.device("cpu"))
    x = (torch.rand(1, 3, 384, 512) * 255).requires_grad_(True)
    times = []
    for _ in range(4):
        t = time.perf_counter()
        out = net(x.contiguous(memory_format=torch.channels_last))
        sum(v.float().sum() for v in out.values()).backward()
        times.append(time.perf_counter() - t)
    return min(times[1:])


def save_examples(folder: Path, solo, vid, name: str) -> None:
    """Three frames side by side (top: each frame on its own; bottom: nstyle video) as a JPEG,
    and the whole clip as an animated GIF (left: per frame; right: video), for the README."""
    from PIL import Image

    def pil(t):
        return Image.fromarray((t.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy())

    picks = [0, len(vid) // 2, len(vid) - 1]
    h, w = vid[0].shape[-2:]
    sheet = Image.new("RGB", (3 * w + 8, 2 * h + 4), "white")
    for col, k in enumerate(picks):
        sheet.paste(pil(solo[k]), (col * (w + 4), 0))
        sheet.paste(pil(vid[k]), (col * (w + 4), h + 4))
    sheet.save(folder / f"video_{name}_frames.jpg", quality=90)
    pairs = []
    for a, b in zip(solo, vid):
        frame = Image.new("RGB", (2 * w + 4, h), "white")
        frame.paste(pil(a), (0, 0))
        frame.paste(pil(b), (w + 4, 0))
        pairs.append(frame.quantize(colors=255, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE))
    pairs[0].save(folder / f"video_{name}.gif", save_all=True, append_images=pairs[1:], duration=83, loop=0,
                  optimize=True)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--frames", type=int, default=24, help="at 12 fps: 24 frames is 2 s")
    p.add_argument("--iterations", type=int, default=VideoOptions.frame_iterations)
    p.add_argument("--first", type=int, nargs="+", default=None, help="the first frame's iterations per scale")
    p.add_argument("--model", default="auto", help="the network (auto: as nstyle picks it)")
    p.add_argument("--style", default=str(ROOT / "examples" / "starry_night.jpg"))
    p.add_argument("--clip", choices=("pan", "still", "both"), default="both",
                   help="pan: the pan and zoom; still: the still camera with a moving object")
    p.add_argument("--video-only", action="store_true",
                   help="skip painting each frame on its own (seconds per frame and colour drift only)")
    p.add_argument("--weights", type=float, nargs="+", default=[VideoOptions.temporal_weight],
                   help="the temporal weight (several with --sweep)")
    p.add_argument("--sweep", action="store_true", help="temporal error and style term for each of --weights")
    p.add_argument("--save", help="save the painted frames of the pan clip here (per-frame and video)")
    p.add_argument("--examples", type=Path, help="write frames side by side and an animated GIF of each clip here")
    args = p.parse_args()
    photo, style = load_image(ROOT / "examples" / "tubingen.jpg"), load_image(args.style)
    hw = working_size(*photo.shape[-2:], args.size)
    config = Config(size=max(hw), model=args.model, iterations=tuple(args.first) if args.first else None)
    engine = Stylizer(config)
    clips = {}
    if args.clip in ("pan", "both"):
        clips["pan and zoom"] = pan_zoom(photo, args.frames, hw)
    if args.clip in ("still", "both"):
        clips["moving object"] = moving_object(photo, args.frames, hw)
    if args.sweep:
        # Each weight on every clip asked for: the temporal error against the style term the
        # frames end with (freezing the first frame would score a temporal error of 0).
        for w in args.weights:
            for name, frames in clips.items():
                painted, _, timings = run(frames, style, config, engine, VideoOptions(args.iterations, w), False)
                extra = f", colour drift {drift(painted, hw):.2f}/255" if name == "moving object" else ""
                print(f"temporal weight {w:g}, {name}: temporal error {temporal_error(frames, painted):.2f}/255,"
                      f" style {final_style(timings, len(frames)):.3g}{extra}", flush=True)
        return
    unit = pass_seconds(engine, config)
    bf16 = "avx512_bf16" in Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else False
    print(f"{args.size} px ({hw[1]}x{hw[0]}), {args.frames} frames, first frame {config.iterations or 'default'}"
          f" iterations, later frames {args.iterations}, temporal weight {args.weights[0]:g};"
          f" one float32 fwd+bwd pass at 512x384 = {unit:.2f} s ({'avx512_bf16' if bf16 else 'no bf16'} on this CPU)",
          flush=True)
    options = VideoOptions(args.iterations, args.weights[0])
    for name, frames in clips.items():
        vid, vid_t, timings = run(frames, style, config, engine, options, False)
        later = sum(vid_t[1:]) / max(len(vid_t) - 1, 1)
        e_vid = temporal_error(frames, vid)
        print(f"{name}: video: first frame {vid_t[0]:.1f} s, then {later:.1f} s per frame"
              f" ({later / unit:.1f} passes); flow {100 * timings['flow'] / sum(vid_t):.2f} % of the time;"
              f" temporal error {e_vid:.2f}/255; style term of the frames after the first"
              f" {final_style(timings, len(frames)):.3g}", flush=True)
        solo = None
        if not args.video_only:
            solo, solo_t, solo_timings = run(frames, style, config, engine, options, True)
            e_solo = temporal_error(frames, solo)
            per = sum(solo_t[1:]) / max(len(solo_t) - 1, 1)
            print(f"  per-frame: temporal error {e_solo:.2f}/255 (video {e_solo / e_vid:.1f}x lower); style term"
                  f" {final_style(solo_timings, len(frames)):.3g}; {per:.1f} s per frame ({per / unit:.1f} passes)",
                  flush=True)
        if name == "moving object":
            for label, painted in (("per-frame", solo), ("video", vid)):
                if painted is not None:
                    print(f"  colour drift first->last frame ({label}): {drift(painted, hw):.2f}/255", flush=True)
        if args.save and name == "pan and zoom":
            torch.save({"frames": frames, "per_frame": solo, "video": vid}, args.save)
        if args.examples and solo is not None:
            save_examples(args.examples, solo, vid, "pan" if name == "pan and zoom" else "still")


def drift(painted, hw: tuple[int, int]) -> float:
    """The still clip's colour drift: the mean over channels of the absolute difference of the
    first and last painted frames' mean colour over the background away from the disc's
    path, in 0-255 units."""
    bg = torch.ones(hw)
    bg[int(hw[0] * 0.4):int(hw[0] * 0.8)] = 0  # away from the disc's path
    d = ((painted[-1] - painted[0]) * bg).sum((1, 2)).abs() / bg.sum() * 255
    return float(d.mean())


def final_style(timings: dict, frames: int) -> float:
    """The mean style term at the end of each frame after the first (the first frame is
    painted the same way in both modes)."""
    last = [float(timings["last terms"][i]["style"]) for i in range(1, frames)]
    return sum(last) / max(len(last), 1)


if __name__ == "__main__":
    main()
