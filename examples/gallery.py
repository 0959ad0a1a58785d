"""Render a gallery of the artists' controls on the example images, as one labelled JPEG.

    python examples/gallery.py [-o examples/gallery.jpg] [--size 384]

Uses the shipped example images, plus The Scream from ../shared/images when it is there
(for the two-painting panels). Takes a few minutes on a 2-core CPU.
"""
from __future__ import annotations

import argparse
import io
import time
from pathlib import Path

import torch
from PIL import Image, ImageDraw

from nstyle import Config, load_image, stylize
from nstyle.image import atomic_write_bytes

HERE = Path(__file__).resolve().parent
SCREAM = HERE.parent.parent / "shared" / "images" / "style" / "the_scream.jpg"


def sky_mask(h: int, w: int, edge: float = 0.1) -> torch.Tensor:
    """1 above 45 % of the height, 0 below, with a soft edge of ``edge`` x height."""
    y = torch.linspace(0, 1, h).view(h, 1).expand(h, w)
    return ((0.5 - y) / edge + 0.5).clamp(0, 1)


def panels(size: int):
    photo, starry = HERE / "tubingen.jpg", HERE / "starry_night.jpg"
    second = SCREAM if SCREAM.exists() else starry
    base = Config(size=size)
    h, w = load_image(photo).shape[-2:]
    sky = sky_mask(h, w)
    yield "photo", None
    yield "default", dict(styles=[starry], config=base)
    yield "--style-strength 0.25", dict(styles=[starry], config=base.replace(style_strength=0.25))
    yield "--style-strength 0.5", dict(styles=[starry], config=base.replace(style_strength=0.5))
    yield "--preserve-colors luminance", dict(styles=[starry], config=base.replace(preserve_colors="luminance"))
    yield "--preserve-colors histogram", dict(styles=[starry], config=base.replace(preserve_colors="histogram"))
    yield "--style-scale 0.5", dict(styles=[starry], config=base.replace(style_scale=0.5))
    yield "--style-scale 2", dict(styles=[starry], config=base.replace(style_scale=2.0))
    yield "two styles, --style-weights 0.7 0.3", dict(styles=[starry, second],
                                                      config=base.replace(style_weights=(0.7, 0.3)))
    yield "--masks: sky / ground", dict(styles=[starry, second], config=base, masks=[sky, 1 - sky])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-o", "--output", default=str(HERE / "gallery.jpg"))
    p.add_argument("--size", type=int, default=384)
    args = p.parse_args()
    tiles = []
    for label, job in panels(args.size):
        t = time.perf_counter()
        if job is None:
            from nstyle.image import fit_size, resize
            img = load_image(HERE / "tubingen.jpg")
            img = resize(img, fit_size(*img.shape[-2:], args.size))
        else:
            img = stylize(HERE / "tubingen.jpg", job["styles"], job["config"], masks=job.get("masks"))
        print(f"{label}: {time.perf_counter() - t:.0f} s", flush=True)
        arr = (img.permute(1, 2, 0).numpy() * 255).round().astype("uint8")
        tile = Image.fromarray(arr)
        ImageDraw.Draw(tile).rectangle((0, 0, tile.width, 16), fill=(0, 0, 0))
        ImageDraw.Draw(tile).text((4, 2), label, fill=(255, 255, 255))
        tiles.append(tile)
    cols = 5
    tw, th = tiles[0].size
    grid = Image.new("RGB", (cols * tw, -(-len(tiles) // cols) * th), "white")
    for i, tile in enumerate(tiles):
        grid.paste(tile, ((i % cols) * tw, (i // cols) * th))
    buffer = io.BytesIO()
    grid.save(buffer, "JPEG", quality=88)
    atomic_write_bytes(Path(args.output), buffer.getvalue())
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
