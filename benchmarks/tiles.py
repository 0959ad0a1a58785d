"""High resolution: tile-by-tile refinement against optimising whole; prints figures, asserts nothing.

    python benchmarks/tiles.py                       # tiled vs whole at 1024 px (~8 min on 2 cores)
    python benchmarks/tiles.py --size 768 --tile-size 384
    python benchmarks/tiles.py --only big            # default runs at 2048 and 4096 px (~40 min)

Sections:
  compare  the same default run at --size twice: optimised whole, and with the scales above
           --tile-size refined tile by tile. For each: wall time, peak RSS (a fresh process
           each), the whole image's float32 loss at the end (the objective tiling
           approximates: lower is better), and a seam score: the mean colour step across
           the tiles' boundaries over the mean step anywhere (1.00: no seam). Writes both
           images and crops around a boundary to out/tiles/.
  big      default runs at 2048 and 4096 px (tubingen x starry night): wall time, peak
           RSS, and how each scale was run; a patch of the largest next to the same patch of
           the next size enlarged (out/tiles/detail_*.jpg).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from speed import CONTENT, STYLE  # noqa: E402

OUT = ROOT / "out" / "tiles"


def _child(size: int, tile_size: int | None, path: str) -> dict:
    """In a fresh process: one default run; the image saved to ``path``; figures as a dict."""
    import time

    from nstyle import Config, stylize
    from nstyle.image import load_image, save_image
    from nstyle.weights import choose_weights
    from nstyle.plan import preflight
    config = Config(size=size, tile_size=tile_size)
    spec = choose_weights(config.model).spec
    plan = preflight(load_image(CONTENT), config, spec)
    t = time.perf_counter()
    image = stylize(CONTENT, [STYLE], config)
    wall = time.perf_counter() - t
    save_image(image, path)
    return {"wall": wall, "model": spec.name,
            "scales": [f"{w}x{h}" + (f" in {g[0]}x{g[1]} tiles" if g else "") + f", {sc.iterations} it"
                       for sc, (h, w), g in zip(plan.scales, plan.sizes, plan.grids)]}


def run_child(size: int, tile_size: int | None, path: Path) -> dict:
    code = (f"import json,sys; sys.path.insert(0,{str(ROOT / 'benchmarks')!r}); import tiles; "
            f"print(json.dumps(tiles._child({size},{tile_size},{str(path)!r})))")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if status:
        raise SystemExit(f"child run failed at {size} px")
    r = json.loads(out.strip().splitlines()[-1])
    r["peak_gb"] = usage.ru_maxrss / 2**20
    return r


def whole_loss(path: Path, size: int) -> float:
    """The whole image's loss at its own size, float32, default objective."""
    import torch
    from nstyle import Config
    from nstyle.image import load_image, resize
    from nstyle.weights import choose_weights, load_backbone
    from nstyle.objective import Objective
    from nstyle.plan import style_size
    config = Config(size=size)
    image = load_image(path)
    hw = tuple(image.shape[-2:])
    net = load_backbone(choose_weights(config.model), [*config.content_layers, *config.style_layers])
    content = resize(load_image(CONTENT), hw, "area").unsqueeze(0) * 255
    style = load_image(STYLE)
    style = resize(style, style_size(style.shape[-2:], hw, config, 1.0), "area").unsqueeze(0) * 255
    with torch.no_grad():
        obj = Objective(net, content, [style], [1.0], config)
        return float(obj(image.unsqueeze(0) * 255)[0])


def seam_score(path: Path, size: int, tile_size: int) -> float:
    """Mean absolute step across the tile cores' inner boundaries over the mean step anywhere."""
    from nstyle import tiles
    from nstyle.image import load_image
    x = load_image(path)
    h, w = x.shape[-2:]
    rows, cols = tiles.grid_shape(h, w, tile_size)
    dy = (x[:, 1:] - x[:, :-1]).abs().mean(dim=(0, 2))  # step between row i and i+1
    dx = (x[:, :, 1:] - x[:, :, :-1]).abs().mean(dim=(0, 1))
    ys, xs = tiles.splits(h, rows)[1:-1], tiles.splits(w, cols)[1:-1]
    # the core boundary and the edges of the cross-fade (overlap / 2 either side)
    at = [dy[b - 1 + d] for b in ys for d in (-tiles.OVERLAP // 2, 0, tiles.OVERLAP // 2)]
    at += [dx[b - 1 + d] for b in xs for d in (-tiles.OVERLAP // 2, 0, tiles.OVERLAP // 2)]
    return float(sum(at) / len(at)) / float((dy.mean() + dx.mean()) / 2)


def compare(args) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    print(f"\n## {args.size} px, {CONTENT.name} x {STYLE.name}: optimised whole vs tiles of {args.tile_size} px"
          " above that size")
    print(f"{'run':7} {'wall s':>7} {'peak RSS':>9} {'loss (whole, fp32)':>19} {'seam score':>11}  scales")
    for label, tile in (("whole", None), ("tiled", args.tile_size)):
        path = OUT / f"{label}_{args.size}.png"
        r = run_child(args.size, tile, path)
        print(f"{label:7} {r['wall']:7.1f} {r['peak_gb']:7.2f} GB {whole_loss(path, args.size):19.1f} "
              f"{seam_score(path, args.size, args.tile_size):11.3f}  {'; '.join(r['scales'])}", flush=True)
    from PIL import Image
    a, b = (Image.open(OUT / f"{k}_{args.size}.png") for k in ("whole", "tiled"))
    from nstyle import tiles
    x = tiles.splits(a.width, tiles.grid_shape(a.height, a.width, args.tile_size)[1])[1]
    y = tiles.splits(a.height, tiles.grid_shape(a.height, a.width, args.tile_size)[0])[1]
    box = (x - 128, y - 128, x + 128, y + 128)  # centred on where four tiles meet
    pair = Image.new("RGB", (512, 256))
    pair.paste(a.crop(box), (0, 0))
    pair.paste(b.crop(box), (256, 0))
    pair.save(OUT / f"seam_crop_{args.size}.png")
    print(f"crops around the tiles' meeting point (whole | tiled): {OUT / f'seam_crop_{args.size}.png'}")


def big(args) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    print(f"\n## default runs, {CONTENT.name} x {STYLE.name}")
    print(f"{'size':>5} {'wall s':>7} {'peak RSS':>9}  scales")
    for size in args.big_sizes:
        r = run_child(size, None, OUT / f"default_{size}.png")
        print(f"{size:5} {r['wall']:7.1f} {r['peak_gb']:7.2f} GB  {r['model']}: {'; '.join(r['scales'])}", flush=True)
    if len(args.big_sizes) >= 2:
        detail_crop(*sorted(args.big_sizes)[-2:])


def detail_crop(small: int, large: int) -> None:
    """The same patch of the larger render and of the smaller one enlarged to its size, side by side."""
    from PIL import Image
    big = Image.open(OUT / f"default_{large}.png").convert("RGB")
    little = Image.open(OUT / f"default_{small}.png").convert("RGB").resize(big.size, Image.BICUBIC)
    w, h = 640, 480
    x, y = int(big.width * 0.55), int(big.height * 0.35)  # the houses under the sky
    pair = Image.new("RGB", (2 * w + 8, h), "white")
    pair.paste(little.crop((x, y, x + w, y + h)), (0, 0))
    pair.paste(big.crop((x, y, x + w, y + h)), (w + 8, 0))
    path = OUT / f"detail_{small}_{large}.jpg"
    pair.save(path, quality=90)
    print(f"a {w}x{h} patch: the {small} px render enlarged (left) and the {large} px render (right): {path}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", choices=["compare", "big"], action="append")
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--tile-size", type=int, default=512)
    p.add_argument("--big-sizes", type=int, nargs="+", default=[2048, 4096])
    args = p.parse_args()
    for name in args.only or ["compare", "big"]:
        {"compare": compare, "big": big}[name](args)


if __name__ == "__main__":
    main()
