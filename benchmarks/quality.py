"""Quality: how much of the painting and of the photo a result holds; prints tables, writes sheets.

    python benchmarks/quality.py --config default:               # 5 photos x 6 paintings at 512 px
    python benchmarks/quality.py --config default: --config hist:preserve_colors=histogram \
        --config quick:iterations=50/30/15                      # several configs, the first the baseline
    python benchmarks/quality.py --config default: --pairs tubingen   # only pairs naming tubingen
    python benchmarks/quality.py --compare default hist         # side by side, from saved results
    python benchmarks/quality.py --self-check                   # the figures on made-up images

Every photo x painting of ../shared/images/{content,style} (or --content DIR --style DIR) is
painted in-process with nstyle.stylize for each --config NAME:field=value,... (fields of
nstyle.Config; a value with '/' is a tuple, e.g. iterations=100/60/30; preset=keras starts from
that preset; --size unless the config names a size). A result goes to
out/quality/<config>/<photo>__<painting>.png with a .json beside it (config, size, wall time,
evaluations); a later run reuses it when the saved config and size match, so it computes only
what is missing (--force redoes it: a code change does not change the config). The published
outputs of the classic Torch implementation (../shared/reference) are scored too, as "classic".

Figures of one result (tables give each pair's, and medians over pairs):
  colour   sliced Wasserstein-1 distance between the result's and the painting's pixel colours
           in CIELAB, both at 128 px long side: 64 fixed random directions, 256 quantiles each
           (so pixel counts need not match); in Lab units, 0 = the same colour distribution.
           Tells whether the painting's palette was taken up, in what proportions. Blind to
           where colours are (the painting's pixels shuffled score 0) and to texture.
  palette  1 - colour(result, painting) / colour(photo, painting): 0 = the photo's palette kept,
           1 = the painting's reached, < 0 further from it than the photo. Noisy when photo and
           painting already share a palette (a small denominator); with preserve_colors the aim
           is 0, not 1.
  edges    Pearson correlation of the Sobel gradient magnitudes of the luminance (L*) of result
           and photo at 128 px long side after a 3x3 binomial blur: how much of the photo's
           large-scale structure survives, painted texture mattering less. 1 for the photo
           itself (no style at all): read it with palette. It cannot say whether a shape is
           still recognisable or pleasing, and strong strokes at 128 px lower it anyway.
  noise    mean |a*, b* minus their Gaussian blur (sigma 1 px)| of the result at its own size,
           over the same of the painting resized to the result's long side: 1 = as much fine
           colour variation as the painting itself. Above 1 flags colour speckle (the optimiser's
           high-frequency chroma). Sharp colour edges count as much as speckle; blind to luminance
           noise; a painting smaller than the result is upsampled, which smooths it and raises
           the ratio; a flat-coloured painting does too.
  halo     light bands beside bright objects: the mean luminance 2-10 px outside the photo's
           locally bright objects minus that 16-32 px outside, over the objects' own contrast,
           result minus photo, in percent (0 = the photo's falloff kept; the classic outputs
           score -6 to 7). Only photos with small bright objects on a darker ground give it
           weight (a lit tower, roofs against the sky); elsewhere its few pixels make it noisy,
           and a painting whose lights glow (Turner, van Gogh) raises it legitimately.
Every figure compares pixels, not what a viewer sees: look at the sheets as well.
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import io
import json
import math
import re
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

from nstyle import Config, ConfigError, Diverged, load_image, preset, stylize
from nstyle.image import atomic_write_bytes, fit_size, resize, save_image

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT.parent / "shared" / "images"
REFERENCE = ROOT.parent / "shared" / "reference"
OUT = ROOT / "out" / "quality"
# jcjohnson/neural-style's published outputs (../shared/reference/README.md) by (photo, painting).
CLASSIC = {("tubingen", "the_scream"): "tubingen_scream.png", ("tubingen", "starry_night"): "tubingen_starry.png",
           ("tubingen", "shipwreck"): "tubingen_shipwreck.png",
           ("tubingen", "seated-nude"): "tubingen_seated_nude.png"}
FIGURES = ("colour", "palette", "edges", "noise", "halo")
EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp")

# --- the figures: pure functions of (3, H, W) float tensors in [0, 1] ---

_RGB_TO_XYZ = torch.tensor([[0.4124564, 0.3575761, 0.1804375],   # linear sRGB -> XYZ, D65 (IEC 61966-2-1)
                            [0.2126729, 0.7151522, 0.0721750],
                            [0.0193339, 0.1191920, 0.9503041]], dtype=torch.float64)
_WHITE = torch.tensor([0.95047, 1.0, 1.08883], dtype=torch.float64)  # D65 white point, Y = 1


def srgb_to_lab(image: torch.Tensor) -> torch.Tensor:
    """(3, H, W) sRGB in [0, 1] -> (3, H, W) float64 CIELAB (L* 0-100, D65)."""
    rgb = image.double().clamp(0, 1)
    linear = torch.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    t = torch.einsum("ij,jhw->ihw", _RGB_TO_XYZ, linear) / _WHITE[:, None, None]
    d = 6 / 29
    f = torch.where(t > d ** 3, t.clamp_min(d ** 3) ** (1 / 3), t / (3 * d * d) + 4 / 29)
    return torch.stack([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


def _fit(image: torch.Tensor, long_side: int) -> torch.Tensor:
    return resize(image, fit_size(*image.shape[-2:], long_side), "area")


def _filter(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """(C, H, W) convolved per channel with the 2-D ``kernel``, edges reflected."""
    k = kernel.to(x.dtype)
    pad = (k.shape[1] // 2, k.shape[1] // 2, k.shape[0] // 2, k.shape[0] // 2)
    x = F.pad(x[:, None], pad, mode="reflect" if min(x.shape[-2:]) > max(pad) else "replicate")
    return F.conv2d(x, k[None, None])[:, 0]


def colour_distance(a: torch.Tensor, b: torch.Tensor, long_side: int = 128, directions: int = 64,
                    quantiles: int = 256, seed: int = 0) -> float:
    """Sliced Wasserstein-1 distance of the CIELAB pixel distributions of ``a`` and ``b``.

    Both are resized to ``long_side`` (area); their pixels are projected on ``directions``
    fixed random unit vectors of Lab and compared at ``quantiles`` evenly spaced levels, so
    images of different sizes compare. Lab units; 0 for the same colours in any arrangement.
    """
    g = torch.Generator().manual_seed(seed)
    units = torch.randn(3, directions, generator=g, dtype=torch.float64)
    units /= units.norm(dim=0)
    levels = (torch.arange(quantiles, dtype=torch.float64) + 0.5) / quantiles
    qa, qb = (torch.quantile(srgb_to_lab(_fit(x, long_side)).flatten(1).T @ units, levels, dim=0) for x in (a, b))
    return float((qa - qb).abs().mean())


def palette_score(result: torch.Tensor, photo: torch.Tensor, painting: torch.Tensor) -> float:
    """1 - colour(result, painting) / colour(photo, painting): 0 photo's palette, 1 painting's."""
    base = colour_distance(photo, painting)
    return 1 - colour_distance(result, painting) / base if base > 0 else math.nan


def edge_correlation(result: torch.Tensor, photo: torch.Tensor, long_side: int = 128) -> float:
    """Pearson correlation of the Sobel gradient magnitudes of L* of ``result`` and ``photo``.

    Both at ``result``'s size scaled to ``long_side`` (area), after a 3x3 binomial blur.
    """
    hw = fit_size(*result.shape[-2:], long_side)
    blur = torch.tensor([[1.0, 2, 1], [2, 4, 2], [1, 2, 1]]) / 16
    sobel = torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]])
    mags = []
    for image in (result, photo):
        luma = _filter(srgb_to_lab(resize(image, hw, "area"))[:1], blur)
        gx, gy = _filter(luma, sobel), _filter(luma, sobel.T)
        m = (gx * gx + gy * gy).sqrt().flatten()
        mags.append(m - m.mean())
    denom = float(mags[0].norm() * mags[1].norm())
    return float(mags[0] @ mags[1]) / denom if denom > 0 else 0.0


def _chroma_detail(image: torch.Tensor, sigma: float) -> float:
    ab = srgb_to_lab(image)[1:]
    r = max(1, math.ceil(3 * sigma))
    g = torch.exp(-torch.arange(-r, r + 1, dtype=torch.float64) ** 2 / (2 * sigma * sigma))
    g /= g.sum()
    return float((ab - _filter(ab, torch.outer(g, g))).abs().mean())


def colour_noise(result: torch.Tensor, painting: torch.Tensor, sigma: float = 1.0) -> float:
    """Fine colour variation of ``result`` over that of ``painting`` at the result's long side.

    Each: the mean absolute high-pass (image minus its Gaussian blur of ``sigma`` px) of a*, b*.
    """
    ref = _fit(painting, max(result.shape[-2:]))
    base = _chroma_detail(ref, sigma)
    return _chroma_detail(result, sigma) / base if base > 0 else math.inf


def halo(result: torch.Tensor, photo: torch.Tensor) -> float:
    """Light bands beside bright objects, in percent: result minus photo of
    (mean luminance 2-10 px outside the photo's locally bright objects - mean 16-32 px
    outside) / (the objects' mean - that same far mean). Both at the result's size.

    Bright objects: pixels 0.15 above the mean luminance of their 41x41 neighbourhood, opened
    with a 3x3 square; distances are square (max-pooling dilations). NaN without any.
    """
    def lum(image: torch.Tensor) -> torch.Tensor:
        return (torch.tensor([0.2126, 0.7152, 0.0722], dtype=torch.float64).view(3, 1, 1) * image.double()).sum(0)
    r, p = lum(result), lum(resize(photo, tuple(result.shape[-2:]), "area"))
    x = p[None, None]
    background = F.avg_pool2d(F.pad(x, (20, 20, 20, 20), mode="replicate"), 41, 1)
    bright = ((x - background) > 0.15).double()
    bright = F.max_pool2d(-F.max_pool2d(-bright, 3, 1, 1), 3, 1, 1)  # opening: no single pixels
    if bright.sum() == 0:
        return math.nan

    def near(d: int) -> torch.Tensor:
        return F.max_pool2d(bright, 2 * d + 1, 1, d)[0, 0] > 0

    inside, band, far = near(0), near(10) & ~near(2), near(32) & ~near(16)
    if band.sum() == 0 or far.sum() == 0:
        return math.nan

    def ratio(img: torch.Tensor) -> float:
        contrast = float(img[inside].mean() - img[far].mean())
        return float(img[band].mean() - img[far].mean()) / contrast if contrast > 0 else math.nan

    return 100 * (ratio(r) - ratio(p))


def score(result: torch.Tensor, photo: torch.Tensor, painting: torch.Tensor) -> dict[str, float]:
    return {"colour": colour_distance(result, painting), "palette": palette_score(result, photo, painting),
            "edges": edge_correlation(result, photo), "noise": colour_noise(result, painting),
            "halo": halo(result, photo)}


def self_check() -> None:
    """The figures on made-up images, where the answer is known."""
    for rgb, lab in (((1.0, 1, 1), (100.0, 0, 0)), ((1.0, 0, 0), (53.24, 80.09, 67.20))):  # white, red
        assert torch.allclose(srgb_to_lab(torch.tensor(rgb)[:, None, None]).flatten(),
                              torch.tensor(lab, dtype=torch.float64), atol=0.02)
    g = torch.Generator().manual_seed(1)
    y, x = torch.meshgrid(torch.linspace(0, 1, 96), torch.linspace(0, 1, 128), indexing="ij")
    photo = torch.stack([x, y, 0.5 * (x + y)])
    photo[:, 30:60, 40:90] = torch.tensor([0.9, 0.2, 0.1])[:, None, None]  # a red block: a shape
    painting = (0.6 * _fit(torch.rand(3, 48, 64, generator=g), 128) + torch.tensor([0.3, 0.25, 0.0])[:, None, None])
    painting = painting.clamp(0, 1)
    assert colour_distance(photo, photo) == 0 and abs(edge_correlation(photo, photo) - 1) < 1e-9
    assert abs(palette_score(photo, photo, painting)) < 1e-9
    assert abs(palette_score(painting, photo, painting) - 1) < 1e-9
    shuffled = photo.flatten(1)[:, torch.randperm(96 * 128, generator=g)].view(3, 96, 128)
    assert colour_distance(shuffled, photo) < 1e-9 and abs(edge_correlation(shuffled, photo)) < 0.2
    assert colour_distance(_fit(photo, 64), photo) < 1.0 < colour_distance(painting, photo)
    assert abs(colour_noise(painting, painting) - 1) < 1e-9
    speckled = (painting + 0.1 * torch.randn(painting.shape, generator=g)).clamp(0, 1)
    assert colour_noise(speckled, painting) > 1.3 and colour_noise(photo, painting) < 0.5
    # a lit tower on a dark sky; the same with a light band 3-8 px beside it; a dark moat
    night = torch.full((3, 96, 128), 0.1)
    night[:, 20:96, 60:68] = 0.9
    banded, moat = night.clone(), night.clone()
    for img, level in ((banded, 0.4), (moat, 0.02)):
        img[:, 20:96, 52:57] = level
        img[:, 20:96, 71:76] = level
    assert abs(halo(night, night)) < 1e-9 and halo(banded, night) > 10 and halo(moat, night) < 0
    assert math.isnan(halo(photo * 0 + 0.5, photo * 0 + 0.5))  # nothing bright: no figure
    print(f"self-check passed: colour(painting, photo) {colour_distance(painting, photo):.1f}, "
          f"edges(shuffled) {edge_correlation(shuffled, photo):.3f}, noise(speckled) "
          f"{colour_noise(speckled, painting):.2f}, noise(smooth photo) {colour_noise(photo, painting):.3f}, "
          f"halo(light band) {halo(banded, night):.1f}")


# --- configs and runs ---

def _value(text: str, tuple_ok: bool):
    if tuple_ok and "/" in text:
        return tuple(_value(t, False) for t in text.split("/"))
    if text.lower() in ("true", "false", "none"):
        return {"true": True, "false": False, "none": None}[text.lower()]
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_config(spec: str, size: int) -> tuple[str, Config]:
    """'NAME:field=value,field=value' -> (NAME, Config); the size is ``size`` unless named."""
    name, colon, body = spec.partition(":")
    if not colon or not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or name == "classic":
        raise SystemExit(f"--config {spec!r}: give NAME:field=value,... "
                         "(NAME of letters, digits, _ . -; not 'classic')")
    fields = {f.name: str(f.type) for f in dataclasses.fields(Config)}
    values = {}
    for item in filter(None, body.split(",")):
        key, eq, text = item.partition("=")
        key = key.strip().replace("-", "_")
        if key not in fields or not eq:
            hint = difflib.get_close_matches(key, fields, 1)
            raise SystemExit(f"--config {name}: '{item}' is not field=value with a Config field"
                             + (f" (did you mean '{hint[0]}'?)" if hint else ""))
        value = _value(text.strip(), "tuple" in fields[key])
        if fields[key].startswith("tuple") and value is not None and not isinstance(value, tuple):
            value = (value,)  # content_layers=relu4_2: one layer
        values[key] = value
    values.setdefault("size", size)
    try:
        return name, preset(values.pop("preset", "default"), **values)
    except (ConfigError, TypeError) as exc:
        raise SystemExit(f"--config {name}: {exc}")


def run_pair(config: Config, photo: Path, painting: Path, out: Path, force: bool) -> dict:
    """The result of one pair at ``out`` (PNG): reused when its .json matches ``config``, else made."""
    meta_path = out.with_suffix(".json")
    wanted = json.loads(json.dumps(config.to_dict()))
    if not force and out.exists() and meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if meta.get("config") == wanted and meta.get("size") == config.size:
            return {**meta, "reused": True}
    last = {"evaluations": 0}
    t = time.perf_counter()
    try:
        image = stylize(photo, [painting], config, callback=lambda p: last.update(evaluations=p.evaluations))
        diverged = False
    except Diverged as exc:  # keep the last good image, and say so
        image, diverged = exc.image, True
    wall = time.perf_counter() - t
    out.parent.mkdir(parents=True, exist_ok=True)
    save_image(image, out)
    meta = {"config": wanted, "size": config.size, "wall": wall, "evaluations": last["evaluations"],
            "diverged": diverged, "when": time.strftime("%Y-%m-%d %H:%M")}
    atomic_write_bytes(meta_path, json.dumps(meta, indent=1).encode())
    return {**meta, "reused": False}


def images_in(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise SystemExit(f"no folder {folder}")
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in EXTENSIONS)


def classic_path(photo: Path, painting: Path) -> Path | None:
    name = CLASSIC.get((photo.stem, painting.stem))
    return REFERENCE / name if name and (REFERENCE / name).exists() else None


# --- printing ---

def _num(x: float, digits: int) -> str:
    return "-" if x is None or math.isnan(x) else f"{x:.{digits}f}"


def print_pairs(title: str, rows: dict[str, dict]) -> None:
    print(f"\n### {title}\n\n| pair | colour | palette | edges | noise | halo | wall s | evaluations |\n"
          "|---|---|---|---|---|---|---|---|")
    for pair, r in rows.items():
        note = " (reused)" if r.get("reused") else " (diverged)" if r.get("diverged") else ""
        print(f"| {pair} | {_num(r['colour'], 2)} | {_num(r['palette'], 2)} | {_num(r['edges'], 3)} | "
              f"{_num(r['noise'], 2)} | {_num(r.get('halo', math.nan), 1)} | {_num(r.get('wall', math.nan), 1)}{note} | {r.get('evaluations', '-')} |")


def medians(rows: dict[str, dict]) -> dict[str, float]:
    out = {}
    for f in FIGURES:
        values = [r[f] for r in rows.values() if f in r and not math.isnan(r[f])]
        out[f] = statistics.median(values) if values else math.nan
    walls = [r["wall"] for r in rows.values() if "wall" in r]
    out["wall"] = sum(walls) if walls else math.nan
    return out


def print_summary(title: str, table: dict[str, dict[str, dict]]) -> None:
    """One line per config: medians over its pairs and total wall time, each / the first config's."""
    print(f"\n### {title}\n\n| config | pairs | colour | palette | edges | noise | halo | wall s |\n"
          "|---|---|---|---|---|---|---|---|")
    base = None
    for name, rows in table.items():
        m = medians(rows)
        base = base or m
        cells = []
        for f, digits in (("colour", 2), ("palette", 2), ("edges", 3), ("noise", 2), ("halo", 1), ("wall", 0)):
            # A ratio to a palette near 0 (the baseline kept the photo's colours) means nothing;
            # nor does one of halo figures, which sit either side of 0.
            ok = f != "halo" and base[f] > (0.05 if f == "palette" else 0) and not math.isnan(m[f])
            cells.append(_num(m[f], digits) + (f" ({m[f] / base[f]:.2f}x)" if ok else ""))
        print(f"| {name} | {len(rows)} | " + " | ".join(cells) + " |")


# --- contact sheets ---

def to_pil(image: torch.Tensor, height: int) -> Image.Image:
    h, w = image.shape[-2:]
    small = resize(image, (height, max(1, round(w * height / h))), "area")
    return Image.fromarray((small.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy())


def label(r: dict, prefix: str = "") -> str:
    return (f"{prefix}colour {_num(r['colour'], 1)}  palette {_num(r['palette'], 2)}\n"
            f"edges {_num(r['edges'], 2)}  noise {_num(r['noise'], 2)}")


def sheet(rows: list[list[tuple[Image.Image | None, str]]], path: Path, pad: int = 6) -> None:
    """A grid of (thumbnail, label) cells, labels under the pictures, saved as JPEG (quality 90)."""
    font = ImageFont.load_default()
    line = 12
    ncols = max(len(r) for r in rows)
    widths = [max((r[i][0].width for r in rows if i < len(r) and r[i][0]), default=0) for i in range(ncols)]
    heights = [max((c[0].height for c in r if c[0]), default=0) + line * max(c[1].count("\n") + 1 for c in r)
               for r in rows]
    canvas = Image.new("RGB", (sum(widths) + pad * (ncols + 1), sum(heights) + pad * (len(rows) + 1)), "white")
    draw = ImageDraw.Draw(canvas)
    y = pad
    for row, h in zip(rows, heights):
        x = pad
        for (picture, text), w in zip(row, widths):
            top = y
            if picture:
                canvas.paste(picture, (x, y))
                top += picture.height
            draw.multiline_text((x + 2, top + 1), text, fill="black", font=font, spacing=2)
            x += w + pad
        y += h + pad
    buffer = io.BytesIO()
    canvas.save(buffer, "JPEG", quality=90)
    atomic_write_bytes(path, buffer.getvalue())


def write_sheets(folder: Path, pairs, images: dict, rows: dict[str, dict], classic: dict[str, dict]) -> None:
    """Per painting: photo | painting | result | classic; and overview.jpg (photos x paintings)."""
    photos = sorted({p for p, _ in pairs}, key=lambda p: p.stem)
    paintings = sorted({s for _, s in pairs}, key=lambda s: s.stem)
    for s in paintings:
        cells = []
        for p in photos:
            key = f"{p.stem}__{s.stem}"
            if key in rows:
                row = [(to_pil(images[p], 256), p.stem), (to_pil(images[s], 256), s.stem),
                       (to_pil(load_image(folder / f"{key}.png"), 256), label(rows[key], f"{folder.name}: "))]
                if key in classic:
                    row.append((to_pil(load_image(classic_path(p, s)), 256), label(classic[key], "classic: ")))
                cells.append(row)
        if cells:
            sheet(cells, folder / f"sheet_{s.stem}.jpg")
    grid = [[(None, "")] + [(to_pil(images[s], 192), s.stem) for s in paintings]]
    for p in photos:
        grid.append([(to_pil(images[p], 192), p.stem)] + [
            (to_pil(load_image(folder / f"{p.stem}__{s.stem}.png"), 192), label(rows[f"{p.stem}__{s.stem}"]))
            if f"{p.stem}__{s.stem}" in rows else (None, "") for s in paintings])
    sheet(grid, folder / "overview.jpg")


# --- the two modes ---

def score_classic(pairs, images: dict) -> dict[str, dict]:
    return {f"{p.stem}__{s.stem}": score(load_image(classic_path(p, s)), images[p], images[s])
            for p, s in pairs if classic_path(p, s)}


def benchmark(args, configs: list[tuple[str, Config]], pairs, images: dict) -> None:
    table = {}
    for name, config in configs:
        folder = args.out / name
        rows = {}
        for p, s in pairs:
            key = f"{p.stem}__{s.stem}"
            run = run_pair(config, p, s, folder / f"{key}.png", args.force)
            print(f"{name} {key}: {'reused' if run['reused'] else 'made'}, {run['wall']:.1f} s, "
                  f"{run['evaluations']} evaluations", flush=True)
            figures = score(load_image(folder / f"{key}.png"), images[p], images[s])
            rows[key] = {**figures, **{k: run[k] for k in ("wall", "evaluations", "reused", "diverged")}}
        table[name] = rows
        atomic_write_bytes(folder / "figures.json", json.dumps(
            {"config": json.loads(json.dumps(config.to_dict())), "size": config.size, "pairs": rows,
             "medians": medians(rows)}, indent=1).encode())
    classic = score_classic(pairs, images)
    for name, rows in table.items():
        print_pairs(f"{name}: {next(spec for spec in args.config if spec.startswith(name + ':'))}", rows)
        write_sheets(args.out / name, pairs, images, rows, classic)
    if classic:
        print_pairs("classic (jcjohnson/neural-style, published outputs)", classic)
    print_summary(f"medians over all pairs, ratios to {configs[0][0]}", table)
    if classic:
        on_classic = {name: {k: r for k, r in rows.items() if k in classic} for name, rows in table.items()}
        print_summary(f"medians over the {len(classic)} pairs with a classic output, ratios to {configs[0][0]}",
                      {**on_classic, "classic": classic})
    print(f"\nsheets and figures.json under {args.out}/<config>/")


def _saved(path: Path, photo: torch.Tensor, painting: torch.Tensor) -> dict:
    """The figures of a saved result, with its wall time when its .json has one."""
    meta = path.with_suffix(".json")
    wall = json.loads(meta.read_text()).get("wall") if meta.exists() else None
    return {**score(load_image(path), photo, painting), **({"wall": wall} if wall is not None else {})}


def compare(args, pairs, images: dict) -> None:
    names = args.compare
    folders = {n: args.out / n for n in names}
    pairs = [(p, s) for p, s in pairs if all((f / f"{p.stem}__{s.stem}.png").exists() for f in folders.values())]
    if not pairs:
        raise SystemExit(f"no pair has a result under every one of {', '.join(str(f) for f in folders.values())}")
    table = {n: {f"{p.stem}__{s.stem}": _saved(f / f"{p.stem}__{s.stem}.png", images[p], images[s])
                 for p, s in pairs} for n, f in folders.items()}
    classic = score_classic(pairs, images)
    print_summary(f"medians over the {len(pairs)} pairs all of {', '.join(names)} have, ratios to {names[0]}",
                  {**table, **({"classic": classic} if classic else {})})
    for s in sorted({s for _, s in pairs}, key=lambda s: s.stem):
        rows = []
        for p in sorted({p for p, t in pairs if t == s}, key=lambda p: p.stem):
            key = f"{p.stem}__{s.stem}"
            row = [(to_pil(images[p], 256), p.stem), (to_pil(images[s], 256), s.stem)]
            row += [(to_pil(load_image(folders[n] / f"{key}.png"), 256), label(table[n][key], f"{n}: "))
                    for n in names]
            if key in classic:
                row.append((to_pil(load_image(classic_path(p, s)), 256), label(classic[key], "classic: ")))
            rows.append(row)
        path = args.out / f"compare_{'_'.join(names)}_{s.stem}.jpg"
        sheet(rows, path)
        print(f"wrote {path}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", action="append", metavar="NAME:FIELD=VALUE,...",
                   help="a configuration to run (repeatable; the first is the baseline), e.g. 'default:' or "
                        "'hist:preserve_colors=histogram' or 'short:iterations=50/30/15'")
    p.add_argument("--compare", nargs="+", metavar="CONFIG", help="compare the saved results of these configs")
    p.add_argument("--content", type=Path, default=IMAGES / "content", help="folder of photos (default: %(default)s)")
    p.add_argument("--style", type=Path, default=IMAGES / "style", help="folder of paintings (default: %(default)s)")
    p.add_argument("--size", type=int, default=512, help="output long side unless a config names one (default: 512)")
    p.add_argument("--pairs", nargs="+", metavar="TEXT", help="only pairs whose 'photo__painting' contains a TEXT")
    p.add_argument("--out", type=Path, default=OUT, help="results, sheets and figures (default: out/quality)")
    p.add_argument("--force", action="store_true", help="recompute results even where saved ones match")
    p.add_argument("--self-check", action="store_true", help="check the figures on made-up images and exit")
    args = p.parse_args()
    if args.self_check:
        return self_check()
    if bool(args.config) == bool(args.compare):
        p.error("give --config (one or more) or --compare, not both")
    configs = [parse_config(spec, args.size) for spec in args.config or []]
    if len({name for name, _ in configs}) < len(configs):
        p.error("each --config needs a name of its own")
    pairs = [(c, s) for c in images_in(args.content) for s in images_in(args.style)
             if not args.pairs or any(t in f"{c.stem}__{s.stem}" for t in args.pairs)]
    if not pairs:
        raise SystemExit("no photo x painting pair matches --pairs")
    images = {path: load_image(path) for pair in pairs for path in pair}
    print(f"{len(pairs)} pairs from {args.content} x {args.style}", flush=True)
    if args.compare:
        compare(args, pairs, images)
    else:
        benchmark(args, configs, pairs, images)


if __name__ == "__main__":
    main()
