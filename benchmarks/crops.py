"""Crops of several images side by side, enlarged, one row per region: a before/after figure.

    python benchmarks/crops.py examples/halo_crops.jpg --labels before after classic \\
        --row 180,60,160,282:out/quality/chroma/rocket__starry_night.png,out/quality/now/rocket__starry_night.png

Each --row is BOX:IMAGES with BOX = left,top,width,height in the pixels of the first image
(the others are resized to its size first, or all to --size) and IMAGES comma-separated; --labels names the
columns. Crops are enlarged --scale times with nearest-neighbour pixels, so noise stays
visible.
"""
from __future__ import annotations

import argparse
import io
from pathlib import Path

from PIL import Image, ImageDraw

from nstyle.image import atomic_write_bytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--row", action="append", required=True, metavar="BOX:IMAGES")
    parser.add_argument("--labels", nargs="+", default=[])
    parser.add_argument("--scale", type=int, default=2)
    parser.add_argument("--size", metavar="W,H", help="resize every image to this first (default: the first image's size)")
    args = parser.parse_args()
    rows = []
    for spec in args.row:
        box, images = spec.split(":", 1)
        left, top, width, height = (int(v) for v in box.split(","))
        paths = images.split(",")
        size = tuple(int(v) for v in args.size.split(",")) if args.size else Image.open(paths[0]).size
        crops = [Image.open(p).convert("RGB").resize(size, Image.LANCZOS)
                 .crop((left, top, left + width, top + height))
                 .resize((width * args.scale, height * args.scale), Image.NEAREST) for p in paths]
        rows.append(crops)
    pad, head = 6, 18
    widths = [max(r[k].width for r in rows if k < len(r)) for k in range(max(map(len, rows)))]
    sheet = Image.new("RGB", (sum(widths) + pad * (len(widths) + 1),
                              head + sum(max(c.height for c in r) + pad for r in rows) + pad), "white")
    draw = ImageDraw.Draw(sheet)
    for k, text in enumerate(args.labels):
        draw.text((pad + sum(widths[:k]) + pad * k, 3), text, fill="black")
    y = head
    for r in rows:
        x = pad
        for k, crop in enumerate(r):
            sheet.paste(crop, (x, y))
            x += widths[k] + pad
        y += max(c.height for c in r) + pad
    buf = io.BytesIO()
    sheet.save(buf, "JPEG", quality=85)
    atomic_write_bytes(args.out, buf.getvalue())
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
