"""The plan of a run, made before its long part: device, precision, sizes per scale, the
memory each needs against the memory free, and whether a scale is optimised whole or in
tiles. Front ends call ``preflight`` first, so that a run that cannot succeed is refused
in one line before any work.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import psutil
import torch

from . import schedule, tiles
from .config import Config
from .errors import ConfigError
from .image import fit_size
from .network import BackboneSpec, layer_strides, layer_values, resolve_layer, values_per_pixel

def resolve_device(name: str) -> torch.device:
    """'auto' picks cuda, then mps, then cpu; a named device must be available."""
    cuda = torch.cuda.is_available()
    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if name == "auto":
        return torch.device("cuda" if cuda else "mps" if mps else "cpu")
    if (name == "cuda" and not cuda) or (name == "mps" and not mps):
        raise ConfigError(f"device '{name}' is not available on this machine (use --device cpu)")
    return torch.device(name)


def resolve_precision(name: str, device: torch.device) -> torch.dtype:
    """'auto': bfloat16 on CUDA and on CPUs with native bfloat16 (AVX-512 BF16, AMX), else float32."""
    if name != "auto":
        return getattr(torch, name)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    if device.type == "cpu":
        native = getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)() or \
            getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()
        return torch.bfloat16 if native else torch.float32
    return torch.float32


def output_size(height: int, width: int, config: Config) -> tuple[int, int]:
    """The (height, width) of the result for a content image of that size."""
    if config.size_rows:
        # The Keras example: img_nrows = size, img_ncols = int(width * img_nrows / height).
        return config.size, max(1, int(width * config.size / height))
    return fit_size(height, width, config.size)


def style_size(style_hw: tuple[int, int], out_hw: tuple[int, int], config: Config, scale: float) -> tuple[int, int]:
    """A style image's working size: its long side is ``scale`` times the output's long side.

    The Keras preset instead stretches the style to the output's exact size, as its
    ``load_img(target_size=...)`` does.
    """
    if config.size_rows:
        return out_hw
    return fit_size(*style_hw, max(1, round(max(out_hw) * scale)))


# What a run holds whatever the size: the Python and torch runtime and the weights (read
# and copied into the network). From the peak RSS of runs at 256 and 512 px on the CPU.
FIXED_BYTES = 500 * 2**20


def estimate_bytes(spec: BackboneSpec, outputs: Iterable[str], height: int, width: int,
                   value_bytes: int = 4, history: int = 0) -> int:
    """Rough peak memory of a run at one size: activations, loss copies, optimiser state.

    Saved activations (``value_bytes`` each: 2 under bfloat16); under reduced precision
    also the float32 copies of the loss layers and their gradients; ``history`` L-BFGS
    steps (two float32 images each); 10 % for the backward pass's transients; plus
    FIXED_BYTES. Calibrated against the peaks benchmarks/speed.py measures (within 15 %
    there at 256-1024 px).
    """
    outputs = [resolve_layer(n, spec) for n in outputs]
    per_pixel = values_per_pixel(outputs, spec) * value_bytes
    if value_bytes < 4:
        values = layer_values(spec)
        per_pixel += sum(values[n] for n in set(outputs)) * 8
    pixels = height * width
    return int(FIXED_BYTES + 1.1 * per_pixel * pixels + 2 * history * 3 * pixels * 4)


def available_bytes(device: torch.device) -> int | None:
    """Memory free for a run on ``device``, or None where it cannot be told."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if device.type == "cpu":
        try:
            return int(psutil.virtual_memory().available)  # Linux's MemAvailable; macOS and Windows too
        except (OSError, RuntimeError):  # no /proc in a sandbox; NotImplementedError on an odd platform
            return None
    return None


@dataclass(frozen=True)
class RunPlan:
    """What preflight decided: where and how a run goes, scale by scale."""

    device: torch.device
    dtype: torch.dtype
    scales: list[schedule.Scale]
    sizes: list[tuple[int, int]]           # (height, width) per scale
    grids: list[tuple[int, int] | None]    # (rows, cols) of tiles per scale; None: optimised whole

    def tiles(self, index: int) -> list[tiles.Tile] | None:
        grid = self.grids[index]
        return None if grid is None else tiles.grid(*self.sizes[index], *grid)

    @property
    def steps(self) -> int:
        """Optimiser steps of the whole run (a tiled scale takes its iterations per tile)."""
        return sum(sc.iterations * len(self.tiles(i) or [None]) for i, sc in enumerate(self.scales))

    @property
    def work(self) -> int:
        """Pixels x steps of the whole run."""
        return sum(sc.iterations * sum(t.free.pixels for t in self.tiles(i)) if self.grids[i] else
                   sc.iterations * h * w for i, (sc, (h, w)) in enumerate(zip(self.scales, self.sizes)))


def style_options(config: Config, styles: int, masks: int | None = None) -> tuple[list[float], list[float]]:
    """The blend weight and scale of each style; refuses counts that do not match the styles."""
    if masks is not None and masks != styles:
        raise ConfigError(f"{masks} masks for {styles} style images (give one per style)")
    weights = per_style(config.style_weights if config.style_weights is not None else 1.0, styles, "style weights")
    return weights, per_style(config.style_scale, styles, "style scales")


def per_style(value: float | Sequence[float], count: int, what: str) -> list[float]:
    """One number for every style, or exactly one per style."""
    if isinstance(value, (int, float)):
        return [float(value)] * count
    if len(value) == 1:
        return [float(value[0])] * count
    if len(value) != count:
        raise ConfigError(f"{len(value)} {what} for {count} style images")
    return [float(v) for v in value]


def preflight(content: torch.Tensor, config: Config, spec: BackboneSpec,
              styles: Sequence[tuple[int, int]] = ()) -> RunPlan:
    """The checks and the plan of a run, before its long part; a front end calls it first.

    ``styles``: the (height, width) of each painting, to check their working sizes too.
    Raises ConfigError (device; a size too small for the network or too large for memory)
    or LayerError (layer names).
    """
    device = resolve_device(config.device)
    dtype = resolve_precision(config.precision, device)
    layers = [resolve_layer(name, spec) for name in (*config.content_layers, *config.style_layers)]
    out_hw = output_size(*content.shape[-2:], config)
    scales = schedule.plan(max(out_hw), config.scales, config.min_size, config.iterations)
    sizes = [fit_size(*out_hw, sc.size) for sc in scales[:-1]] + [out_hw]
    # Each pooling halves a side: the deepest layer in use needs at least its stride in pixels.
    stride = max(layer_strides(spec)[n] for n in layers)
    h, w = content.shape[-2:]
    if min(sizes[0]) < stride:
        raise ConfigError(f"the photo ({w}x{h} px) is {sizes[0][1]}x{sizes[0][0]} px at the coarsest scale, and "
                          f"{spec.name} needs at least {stride} px on each side: use a less elongated image"
                          f"{'' if min(h, w) < stride else ' or a larger --min-size'}")
    grids = [tiling(spec, config, hw, sc.iterations, dtype, device) for sc, hw in zip(scales, sizes)]
    if styles:
        _check_styles(styles, config, spec, layers, sizes, grids, stride, dtype, device)
    return RunPlan(device, dtype, scales, sizes, grids)


def _check_styles(styles, config: Config, spec: BackboneSpec, layers: list[str], sizes, grids, stride: int,
                  dtype: torch.dtype, device: torch.device) -> None:
    """Each painting's working size (``--style-scale`` times the output's, per scale): not
    below the network's minimum, and its features (computed whole where the scale is
    optimised whole) within the memory free."""
    _, scales = style_options(config, len(styles))
    free = available_bytes(device)
    for k, (hw_style, scale) in enumerate(zip(styles, scales), start=1):
        name = "the painting" if len(styles) == 1 else f"painting {k}"
        for hw, grid in zip(sizes, grids):
            sh, sw = style_size(hw_style, hw, config, scale)
            if min(sh, sw) < stride:
                raise ConfigError(f"{name} ({hw_style[1]}x{hw_style[0]} px) would be {sw}x{sh} px at "
                                  f"--style-scale {scale:g}, and {spec.name} needs at least {stride} px on each "
                                  f"side: use a larger --style-scale or a less elongated painting")
            if grid is None and free is not None:
                need = estimate_bytes(spec, layers, sh, sw, dtype.itemsize) + _WHOLE_IMAGE_BYTES_PER_PIXEL * sh * sw
                if need > _SAFE * free:
                    raise ConfigError(f"{name} at --style-scale {scale:g} would be {sw}x{sh} px and needs about "
                                      f"{need / 2**30:.1f} GB, and {free / 2**30:.1f} GB is free on {device.type}: "
                                      f"use a smaller --style-scale")


# Besides a tile's network, a tiled scale holds whole-image tensors: the image, the photo,
# the paintings at that size, a copy for progress: about six float32 RGB images.
_WHOLE_IMAGE_BYTES_PER_PIXEL = 6 * 3 * 4


# The estimate is within 15 % of measured peaks; past the memory free, a CPU process is
# killed by the kernel, not told: plan within this share of it.
_SAFE = 0.85


def tiling(spec, config: Config, hw: tuple[int, int], iterations: int, dtype: torch.dtype,
           device: torch.device) -> tuple[int, int] | None:
    """How a scale of size ``hw`` is optimised: None for whole, or (rows, cols) of tiles.

    Whole when it fits in the memory free on the device (and is no larger than
    ``config.tile_size``); else in the fewest tiles that fit. Refuses, before starting,
    what will not fit even so, naming the largest size that would.
    """
    free = available_bytes(device)
    history = min(config.history_size, iterations) if config.optimizer == "lbfgs" else 0
    layers = [*config.content_layers, *config.style_layers]

    def need(h: int, w: int) -> int:
        return estimate_bytes(spec, layers, h, w, dtype.itemsize, history)

    def fits(h: int, w: int) -> bool:
        return free is None or need(h, w) + _WHOLE_IMAGE_BYTES_PER_PIXEL * hw[0] * hw[1] <= _SAFE * free

    def too_large() -> ConfigError:
        long_side = max(hw)
        while long_side > 32 and need(*fit_size(*hw, long_side)) > _SAFE * free:
            long_side = int(long_side * 0.95)
        return ConfigError(f"{hw[1]}x{hw[0]} needs about {need(*hw) / 2**30:.1f} GB and {free / 2**30:.1f} GB "
                           f"is free on {device.type}; the largest size that fits is about --size {long_side}")

    if config.loss_form != "relative" or config.style_loss != "gram":
        # The Keras objective's normalisations are the whole image's, and only Gram
        # matrices are sums over positions that tiles can share out: not split.
        if config.tile_size is not None and max(hw) > config.tile_size:
            raise ConfigError("only the Gram style loss of the default objective can be refined in tiles")
        if not fits(*hw):
            raise too_large()
        return None
    try:
        grid = tiles.choose_grid(*hw, fits, config.tile_size)
    except ValueError:
        raise too_large() from None
    if grid is not None and config.tile_size is not None:
        window = max(tiles.grid(*hw, *grid), key=lambda t: t.window.pixels).window
        if not fits(window.height, window.width):
            raise ConfigError(f"tiles of {config.tile_size} px need about {need(window.height, window.width) / 2**30:.1f}"
                              f" GB and {free / 2**30:.1f} GB is free on {device.type}; "
                              "leave --tile-size out to choose one that fits")
    return grid



def memory_ceiling(device: str, under: int | None = None) -> int | None:
    """Set this process's own ceiling on memory (RLIMIT_DATA, Linux): what is free now plus
    what it holds, so that an estimate that was wrong ends in an allocation error (which the
    job retries smaller, then reports in one line) instead of the kernel's out-of-memory
    killer ending the process, and other programs, without a word. CPU runs only (a GPU
    driver maps memory of its own); returns the ceiling in bytes, or None where none is set.

    ``under``: the soft limit to stay under (default: the one in force). A process that runs
    many jobs (the web app's worker) passes the limit it started with, so that each job's
    ceiling follows the memory free when it starts, up as well as down.
    """
    try:
        import resource
    except ImportError:  # not on Windows
        return None
    if device not in ("cpu", "auto") or (device == "auto" and torch.cuda.is_available()):
        return None
    limit = int(psutil.virtual_memory().available * 0.95) + psutil.Process().memory_info().rss
    limit = max(limit, 2 * 2**30)
    soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    soft = soft if under is None else under
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    if soft != resource.RLIM_INFINITY and soft <= limit:
        limit = soft
    try:
        resource.setrlimit(resource.RLIMIT_DATA, (limit, hard))
    except (ValueError, OSError):
        return None
    return limit
