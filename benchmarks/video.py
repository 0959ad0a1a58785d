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
    python benchmarks/video.py --sweep            # the temporal weight's calibration
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from nstyle import Config, Stylizer, load_image
from nstyle.image import resize
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
    if per_frame:
        for f in frames:
            t = time.perf_counter()
            painted.append(engine.stylize(f, [style], config=config))
            times.append(time.perf_counter() - t)
    else:
        t = time.perf_counter()
        for image in stylize_video(frames, [style], config, options=options, engine=engine, timings=timings):
            painted.append(image)
            times.append(time.perf_counter() - t)
            t = time.perf_counter()
    return painted, times, timings


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--frames", type=int, default=24, help="at 12 fps: 24 frames is 2 s")
    p.add_argument("--iterations", type=int, default=VideoOptions.frame_iterations)
    p.add_argument("--first", type=int, nargs="+", default=None, help="the first frame's iterations per scale")
    p.add_argument("--style", default=str(ROOT / "examples" / "starry_night.jpg"))
    p.add_argument("--sweep", action="store_true", help="temporal error and style loss for several weights")
    p.add_argument("--save", help="save the painted frames of the pan clip here (per-frame and video)")
    args = p.parse_args()
    photo, style = load_image(ROOT / "examples" / "tubingen.jpg"), load_image(args.style)
    hw = working_size(*photo.shape[-2:], args.size)
    config = Config(size=max(hw), iterations=tuple(args.first) if args.first else None)
    engine = Stylizer(config)
    clips = {"pan and zoom": pan_zoom(photo, args.frames, hw), "moving object": moving_object(photo, args.frames, hw)}
    if args.sweep:
        frames = clips["pan and zoom"][:4]
        for w in (0, 2e4, 1e5, 2e5, 1e6, 2e6):
            painted, _, _ = run(frames, style, config, engine, VideoOptions(args.iterations, w), False)
            print(f"temporal weight {w:g}: temporal error {temporal_error(frames, painted):.2f}/255", flush=True)
        return
    print(f"{args.size} px ({hw[1]}x{hw[0]}), {args.frames} frames, first frame {config.iterations or 'default'}"
          f" iterations, later frames {args.iterations}", flush=True)
    options = VideoOptions(args.iterations)
    for name, frames in clips.items():
        solo, solo_t, _ = run(frames, style, config, engine, options, True)
        vid, vid_t, timings = run(frames, style, config, engine, options, False)
        e_solo, e_vid = temporal_error(frames, solo), temporal_error(frames, vid)
        print(f"{name}: temporal error per-frame {e_solo:.2f}/255, video {e_vid:.2f}/255 ({e_solo / e_vid:.1f}x lower); "
              f"s/frame after the first: per-frame {sum(solo_t[1:]) / len(solo_t[1:]):.1f}, "
              f"video {sum(vid_t[1:]) / len(vid_t[1:]):.1f}; flow {100 * timings['flow'] / sum(vid_t):.2f} % of the time",
              flush=True)
        if name == "moving object":
            bg = torch.ones(hw)
            bg[int(hw[0] * 0.4):int(hw[0] * 0.8)] = 0  # away from the disc's path
            for label, p in (("per-frame", solo), ("video", vid)):
                drift = ((p[-1] - p[0]) * bg).sum((1, 2)).abs() / bg.sum() * 255
                print(f"  colour drift first->last frame ({label}): {float(drift.mean()):.2f}/255", flush=True)
        if args.save and name == "pan and zoom":
            torch.save({"frames": frames, "per_frame": solo, "video": vid}, args.save)


if __name__ == "__main__":
    main()
