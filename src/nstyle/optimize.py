"""stylize(): optimise an image's pixels to match a photo's content and a painting's style.

The method of Gatys, Ecker and Bethge, "A Neural Algorithm of Artistic Style" (2015):
start from the photo (or noise) and minimise

    content_weight * content + style_weight * style + tv_weight * total_variation

over the pixels, with L-BFGS (the paper; Deep Learning with Python 8.3), Adam (the
TensorFlow tutorials) or SGD with exponential decay (the Keras example). One optimiser
step is one iteration is one ``callback(Progress)``. Targets (content features, style
Gram matrices) are computed once; the network stops at the deepest layer in use.

The library never prints: progress leaves through the callback, messages through
``logging``.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch

from . import color, losses, schedule, tiles
from .config import Config, ConfigError
from .image import fit_size, load_image, resize
from .models import (Backbone, available_bytes, choose_weights, estimate_bytes, layer_strides, load_backbone,
                     resolve_layer)

# The ImageNet mean in RGB 0-255: the centre of the noise initial image.
_NOISE_CENTRE = (123.68, 116.779, 103.939)
_NOISE_RANGE = 20.0  # uniform noise of +-20 units, as one of the reference tutorials uses


@dataclass
class Progress:
    """What happened in one iteration; handed to the callback after every optimiser step."""

    step: int             # 1-based iteration just finished
    total: int            # iterations planned
    loss: float           # weighted total loss, evaluated at the start of this step
    content: float        # weighted content term
    style: float          # weighted style term
    tv: float             # weighted total-variation term
    elapsed: float        # seconds since stylize() started
    evaluations: int      # forward+backward passes so far
    size: tuple[int, int]  # (height, width) of the image being optimised
    scale: int = 1        # 1-based index of the current scale of the coarse-to-fine schedule
    scales: int = 1       # number of scales
    fraction: float = 0.0  # share of the run's work done (steps weighted by their pixel count)
    tile: int = 0         # 1-based tile being refined when the scale is refined tile by tile, else 0
    tiles: int = 0        # tiles of this scale (0: optimised whole)
    _pixels: torch.Tensor = field(repr=False, default=None)
    _finish: Callable[[torch.Tensor], torch.Tensor] | None = field(repr=False, default=None)
    _view: Callable[[torch.Tensor], torch.Tensor] | None = field(repr=False, default=None)

    def image(self) -> torch.Tensor:
        """The current image, (3, H, W) float in [0, 1] on the CPU (a copy)."""
        image = pixels_to_image(self._view(self._pixels) if self._view else self._pixels)
        return self._finish(image) if self._finish else image

    def terms(self) -> dict[str, float]:
        return {"loss": self.loss, "content": self.content, "style": self.style, "tv": self.tv}


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during stylize(); carries the image as it was, so no work is lost."""

    def __init__(self, image: torch.Tensor, progress: Progress | None):
        super().__init__("interrupted")
        self.image = image
        self.progress = progress


class Diverged(RuntimeError):
    """The loss became NaN or infinite; ``image`` is the last image with a finite loss."""

    def __init__(self, message: str, image: torch.Tensor):
        super().__init__(message)
        self.image = image


def pixels_to_image(pixels: torch.Tensor) -> torch.Tensor:
    """(1, 3, H, W) in 0-255 -> (3, H, W) float in [0, 1] on the CPU."""
    return (pixels.detach()[0].float() / 255.0).clamp(0.0, 1.0).cpu()


def resolve_device(name: str) -> torch.device:
    """'auto' picks cuda, then mps, then cpu; a named device must be available."""
    cuda = torch.cuda.is_available()
    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if name == "auto":
        return torch.device("cuda" if cuda else "mps" if mps else "cpu")
    if (name == "cuda" and not cuda) or (name == "mps" and not mps):
        raise ConfigError(f"device '{name}' is not available on this machine (use --device cpu)")
    return torch.device(name)


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


def _as_mask(x) -> torch.Tensor:
    """A mask as (1, H, W) in [0, 1]: a path (its luminance) or a 2-d or 3-d tensor."""
    m = load_image(x) if not isinstance(x, torch.Tensor) else x.float()
    if m.ndim == 2:
        m = m.unsqueeze(0)
    if m.ndim != 3 or m.shape[0] not in (1, 3):
        raise ConfigError(f"a mask tensor must be (H, W), (1, H, W) or (3, H, W), not {tuple(m.shape)}")
    return m.mean(0, keepdim=True).clamp(0, 1)


def _as_image(x) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        if x.ndim != 3 or x.shape[0] != 3:
            raise ConfigError(f"an image tensor must be (3, H, W), not {tuple(x.shape)}")
        return x.float()
    return load_image(x)


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


class Objective:
    """The loss of Gatys et al. for one content image and one blend of styles at one size.

    Computes the targets once at construction; ``__call__(pixels)`` returns the weighted
    total and its three terms.
    """

    def __init__(self, net: Backbone, content: torch.Tensor, styles: Sequence[torch.Tensor],
                 style_weights: Sequence[float], config: Config, dtype: torch.dtype = torch.float32,
                 masks: Sequence[torch.Tensor] | None = None):
        self._setup(net, config, style_weights)
        self.image_pixels = content.shape[-2] * content.shape[-1]
        with torch.no_grad():
            feats = self.features(content)
            self.content_targets = {n: feats[n].detach() for n in self.content_layers}
            painting = [self.features(s) for s in styles]
            self.layer_masks = None
            if masks is not None:
                self.layer_masks = layer_masks(masks, {n: feats[n].shape[-2:] for n in self.style_layers})
            if self.form != "relative":  # the Keras example's unnormalised Grams, exactly
                grams = [{n: losses.gram(f[n], False) for n in self.style_layers} for f in painting]
                if masks is None:
                    self.style_targets = {n: sum(w * g[n] for w, g in zip(self.blend, grams)) for n in self.style_layers}
                else:
                    self.style_targets = grams
            elif masks is None:
                # Several styles blend as a mixture of their statistics (for Gram matrices,
                # the weighted sum of Gatys et al.).
                self.style_targets = {n: self.target(n, feats[n], [f[n] for f in painting], self.blend)
                                      for n in self.style_layers}
            else:
                # Each style matched in its own region (guided statistics, Gatys et al. 2017).
                self.style_targets = [{n: self.target(n, feats[n], [f[n]], [1.0], m[n]) for n in self.style_layers}
                                      for f, m in zip(painting, self.layer_masks)]
        self.dtype = dtype

    def _setup(self, net: Backbone, config: Config, style_weights: Sequence[float]) -> None:
        """The layers and weights of the objective."""
        spec = net.spec
        self.net = net
        # Targets are computed once, so in float32; ``dtype`` is for the iterations. With
        # bfloat16 targets too, a run's final float32 loss was 1.2 % above a float32 run's;
        # with float32 targets it is at or below it (benchmarks/precision.py).
        self.dtype = torch.float32
        self.form = config.loss_form
        self.content_layers = [resolve_layer(n, spec) for n in config.content_layers]
        self.style_layers = [resolve_layer(n, spec) for n in config.style_layers]
        self.content_weight = config.content_weight / max(1, len(self.content_layers))
        self.style_weight = config.style_weight / max(1, len(self.style_layers))
        self.tv_weight = config.tv_weight
        total = sum(style_weights)
        self.blend = [w / total for w in style_weights]
        self.image_pixels = None  # the Keras form's normaliser; only whole images have it
        self.kind = config.style_loss
        self.strength = config.style_strength
        self.seed = config.seed

    def target(self, layer: str, photo: torch.Tensor, paintings: Sequence[torch.Tensor], blend: Sequence[float],
               mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The style target of one layer: the paintings' statistics blended by ``blend``, and
        moved towards the photo's own by ``1 - style_strength`` (ours: a target the photo
        already meets at strength 0, so the result goes from the photo to the painting)."""
        def stats(f: torch.Tensor, m: torch.Tensor | None) -> dict[str, torch.Tensor]:
            # sliced: the same random directions for every image of a layer, so they blend.
            generator = torch.Generator().manual_seed(self.seed * 1009 + self.style_layers.index(layer))
            return losses.style_target(f, self.kind, m, generator=generator)

        target = losses.blend_targets([stats(f, None) for f in paintings], list(blend), self.kind)
        if self.strength < 1:
            target = losses.blend_targets([stats(photo, mask), target], [1 - self.strength, self.strength], self.kind)
        return target

    def features(self, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
        return _features(self.net, pixels, self.dtype)

    def __call__(self, pixels: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return self.terms(self.features(pixels), pixels)

    def terms(self, feats: dict[str, torch.Tensor], pixels: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The weighted total and its three terms, from the features and the pixels (for TV)."""
        zero = pixels.new_zeros(())
        content = sum((losses.content_loss(feats[n], t, self.form) for n, t in self.content_targets.items()), zero)
        if self.form != "relative":  # the Keras example's unnormalised Grams
            def distance(f, target, mask=None):
                return losses.style_loss(losses.gram(f, False, mask), target, self.form, self.image_pixels)
        else:
            def distance(f, target, mask=None):
                return losses.style_distance(f, target, self.kind, mask)
        if self.layer_masks is None:
            style = sum((distance(feats[n], t) for n, t in self.style_targets.items()), zero)
        else:
            style = sum((w * distance(feats[n], targets[n], masks[n])
                         for w, targets, masks in zip(self.blend, self.style_targets, self.layer_masks)
                         for n in self.style_layers), zero)
        tv = losses.tv_loss(pixels, self.form) if self.tv_weight else zero
        terms = {"content": self.content_weight * content, "style": self.style_weight * style,
                 "tv": self.tv_weight * tv}
        return terms["content"] + terms["style"] + terms["tv"], terms


def _features(net: Backbone, pixels: torch.Tensor, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The network's activations, computed in ``dtype``, returned as float32."""
    # The optimised pixels stay contiguous (L-BFGS flattens them); the network runs
    # channels-last.
    pixels = pixels.contiguous(memory_format=torch.channels_last)
    if dtype == torch.float32:
        return net(pixels)
    with torch.autocast(pixels.device.type, dtype=dtype):
        feats = net(pixels)
    # Gram matrices and squared errors sum many terms: keep them in float32.
    return {k: v.float() for k, v in feats.items()}


def layer_masks(masks: Sequence[torch.Tensor], sizes: dict[str, tuple[int, int]]) -> list[dict[str, torch.Tensor]]:
    """Each style's mask (N, 1, H, W) at each layer's (h, w), shared out where masks overlap
    (so they sum to at most 1), by area averaging."""
    share = torch.cat(list(masks), 1)
    share = share / share.sum(1, keepdim=True).clamp_min(1.0)
    return [{n: torch.nn.functional.interpolate(share[:, k:k + 1], tuple(hw), mode="area") for n, hw in sizes.items()}
            for k in range(share.shape[1])]


class _TileObjective(Objective):
    """One tile's part of a scale refined tile by tile (see refine_tiled).

    The variable is the tile's free region; the rest of its window is held at the
    current image's pixels. Content and style count the free region's feature
    positions; TV its pixels and their neighbours.
    """

    def __init__(self, net: Backbone, config: Config, style_weights: Sequence[float], dtype: torch.dtype,
                 window: torch.Tensor, tile: tiles.Tile, image_hw: tuple[int, int], content_targets: dict,
                 style_targets, masks: list[dict] | None):
        self._setup(net, config, style_weights)
        self.dtype = dtype
        self.window = window
        self.free = tile.free.within(tile.window)
        self.ring = tile.free.grow(1, *image_hw).within(tile.window)
        strides = layer_strides(net.spec)
        self.crops = {n: self.free.on_features(strides[n]) for n in net.outputs}
        self.content_targets = content_targets
        self.style_targets = style_targets
        self.layer_masks = masks
        if masks is not None:  # styles without mask in this tile drop out
            keep = [k for k, m in enumerate(masks) if m is not None]
            self.blend = [self.blend[k] for k in keep]
            self.style_targets = [style_targets[k] for k in keep]
            self.layer_masks = [masks[k] for k in keep]

    def __call__(self, free: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        window = self.window.clone()
        self.free.crop(window).copy_(free)
        feats = {n: self.crops[n].crop(f) for n, f in self.features(window).items()}
        return self.terms(feats, self.ring.crop(window))


def gram_sums(feats: dict[str, torch.Tensor], region: tiles.Rect, window: tiles.Rect, strides: dict[str, int],
              layers: Sequence[str], guide: dict[str, torch.Tensor] | None = None) -> dict[str, tuple]:
    """Per layer, (unnormalised Gram matrix, mass) of the feature positions of ``region``.

    ``feats`` are the network's activations of the ``window`` crop; ``guide`` a style's
    whole-image mask per layer (then the Gram is the guided one and the mass the sum of
    mask^2; else the mass is the number of positions).
    """
    out = {}
    for n in layers:
        f = region.within(window).on_features(strides[n]).crop(feats[n])
        m = None if guide is None else region.on_features(strides[n]).crop(guide[n])
        out[n] = (losses.gram(f, normalize=False, mask=m),
                  f.shape[-2] * f.shape[-1] if m is None else float(m.pow(2).sum()))
    return out


def _add(total: dict, part: dict) -> None:
    for n, (g, mass) in part.items():
        g0, m0 = total.get(n, (0, 0.0))
        total[n] = (g0 + g, m0 + mass)


def _mean(total: dict) -> dict[str, torch.Tensor]:
    return {n: g / max(mass, 1e-8) for n, (g, mass) in total.items()}


def tiled_gram(features: Callable, image: torch.Tensor, grid: list[tiles.Tile], strides: dict[str, int],
               layers: Sequence[str]) -> dict[str, torch.Tensor]:
    """An image's normalised Gram matrices per layer, summed over the cores of ``grid``:
    the whole image's, up to the margin's effect on features near a window's edge."""
    total: dict = {}
    for t in grid:
        _add(total, gram_sums(features(t.window.crop(image)), t.core, t.window, strides, layers))
    return _mean(total)


def refine_tiled(net: Backbone, x: torch.Tensor, content: torch.Tensor, styles: Sequence[torch.Tensor],
                 style_weights: Sequence[float], masks: Sequence[torch.Tensor] | None, config: Config,
                 dtype: torch.dtype, iterations: int, state: "_State", shape: tuple[int, int]) -> torch.Tensor:
    """Refine pixels x (1, 3, H, W) too large to optimise whole, tile by tile, in place.

    The style targets are the whole image's: Gram matrices are sums over positions, so
    those of the painting (at the size the whole output would use) and of the current
    image are accumulated over tile cores. Each tile is then asked for its share of the
    whole image's correction (an approximation of ours, not from a paper):

        target_tile = Gram_tile(x0) + (Gram_target - Gram_image(x0))

    its own current Gram plus the whole image's shortfall, which over all tiles adds up
    to the whole image's target. Matching the whole image's target in every tile instead
    would force each tile (a patch of sky) to hold all of the painting's statistics;
    giving each tile the global loss would let the first tiles overcorrect for the rest.
    Content targets are the photo's features over each tile. Tiles overlap and are
    cross-faded (tiles.feather); each sees its neighbours' current pixels as context.
    """
    height, width = x.shape[-2:]
    grid = tiles.grid(height, width, *shape)
    strides = layer_strides(net.spec)
    layers = [resolve_layer(n, net.spec) for n in config.style_layers]
    content_layers = [resolve_layer(n, net.spec) for n in config.content_layers]
    blend = [w / sum(style_weights) for w in style_weights]

    def features(pixels: torch.Tensor) -> dict[str, torch.Tensor]:
        return _features(net, pixels, torch.float32)  # targets in float32, as Objective's

    with torch.no_grad():
        # The paintings' Gram matrices, each over its own tiling.
        side = max(grid[0].core.height, grid[0].core.width)
        painting = [tiled_gram(features, style, tiles.grid(*style.shape[-2:], *tiles.grid_shape(*style.shape[-2:], side)),
                               strides, layers) for style in styles]
        feature_hw = {n: (height // strides[n], width // strides[n]) for n in layers}
        guides = None if masks is None else layer_masks(masks, feature_hw)
        # The current image's: over the cores for the whole, over each free region for the tile.
        groups = [None] if guides is None else guides
        whole: list[dict] = [{} for _ in groups]
        free: list[list[dict]] = []
        for t in grid:
            feats = features(t.window.crop(x))
            free.append([])
            for k, guide in enumerate(groups):
                _add(whole[k], gram_sums(feats, t.core, t.window, strides, layers, guide))
                part = gram_sums(feats, t.free, t.window, strides, layers, guide)
                free[-1].append(None if min(mass for _, mass in part.values()) < 1.0 else _mean(part))
        whole_mean = [_mean(w) for w in whole]
        if guides is None:
            targets = [{n: sum(w * g[n] for w, g in zip(blend, painting)) for n in layers}]
        else:
            targets = painting
        strength = config.style_strength
        if strength < 1:  # towards the photo's own Gram matrices, as Objective.target does
            # (the photo's features per window are computed again in the loop below: keeping
            # every window's features would hold the whole image's, which tiles exist to avoid)
            photo: list[dict] = [{} for _ in groups]
            for t in grid:
                feats = features(t.window.crop(content))
                for k, guide in enumerate(groups):
                    _add(photo[k], gram_sums(feats, t.core, t.window, strides, layers, guide))
            targets = [{n: (1 - strength) * p[n] + strength * g[n] for n in layers}
                       for p, g in zip(map(_mean, photo), targets)]

    for index, t in enumerate(grid):
        with torch.no_grad():
            feats = features(t.window.crop(content))
        crop = t.free.within(t.window)
        content_targets = {n: crop.on_features(strides[n]).crop(feats[n]) for n in content_layers}
        tile_targets = [None if g is None else {n: {"gram": g[n] + (targets[k][n] - whole_mean[k][n])} for n in layers}
                        for k, g in enumerate(free[index])]
        if guides is None:  # (a free region has at least one position: never None here)
            style_targets, tile_masks = tile_targets[0], None
        else:
            style_targets = tile_targets
            tile_masks = [None if g is None else {n: t.free.on_features(strides[n]).crop(guides[k][n]) for n in layers}
                          for k, g in enumerate(tile_targets)]
        objective = _TileObjective(net, config, style_weights, dtype, t.window.crop(x).clone(), t, (height, width),
                                   content_targets, style_targets, tile_masks)
        weight = tiles.feather(t).to(x.device)

        def paste(pixels: torch.Tensor, into: torch.Tensor, t=t, weight=weight) -> torch.Tensor:
            region = t.free.crop(into)
            region.mul_(1 - weight).add_(weight * pixels.detach())
            return into

        state.tile, state.tiles = index + 1, len(grid)
        state.view = lambda pixels, paste=paste: paste(pixels, x.clone())
        v = _run(objective, t.free.crop(x).clone().requires_grad_(True), config, iterations, state)
        paste(v, x)
    state.tile = state.tiles = 0
    state.view = None
    return x


def initial_pixels(content: torch.Tensor, other: torch.Tensor, config: Config,
                   generator: torch.Generator) -> torch.Tensor:
    """The starting image (1, 3, H, W) in 0-255, from content (or ``other``: the painting
    for init='style', the recoloured photo for init='palette') and noise.

    Noise is uniform within +-20 units around the ImageNet mean; ``noise_ratio`` r blends
    ``r * noise + (1 - r) * image`` around that mean (init='noise' is r = 1).
    """
    base = content if config.init == "content" else other
    ratio = 1.0 if config.init == "noise" else config.noise_ratio
    if ratio == 0:
        return base.clone()
    centre = torch.tensor(_NOISE_CENTRE, device=base.device).view(1, 3, 1, 1)
    noise = (torch.rand(base.shape, generator=generator) * 2 - 1).to(base.device) * _NOISE_RANGE
    return centre + ratio * noise + (1 - ratio) * (base - centre)


def _optimizer(x: torch.Tensor, config: Config):
    if config.optimizer == "lbfgs":
        # One step = one iteration (max_iter=1); the history persists between steps.
        # Tolerances off: the iteration count is the user's choice.
        return torch.optim.LBFGS([x], lr=config.lr, max_iter=1, history_size=config.history_size,
                                 tolerance_grad=-1.0, tolerance_change=-1.0,
                                 line_search_fn="strong_wolfe" if config.line_search else None), None
    if config.optimizer == "adam":
        return torch.optim.Adam([x], lr=config.lr), None
    # The Keras example: plain SGD, learning rate lr * decay^(step / decay_steps)
    # (keras.optimizers.schedules.ExponentialDecay, not staircase).
    opt = torch.optim.SGD([x], lr=config.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: config.lr_decay ** (step / config.lr_decay_steps))
    return opt, sched


def stylize(content, styles, config: Config | None = None,
            callback: Callable[[Progress], None] | None = None, masks=None) -> torch.Tensor:
    """Paint ``content`` in the manner of ``styles``; return the image (3, H, W) in [0, 1].

    ``content`` and each of ``styles`` are paths or (3, H, W) float tensors in [0, 1].
    ``masks``, one per style (paths, or (H, W) / (1, H, W) / (3, H, W) tensors in [0, 1],
    any size: resized to the photo's), say where each style goes: white for that style,
    gray blends, black none; where no mask covers, only the content term applies.
    Runs the coarse-to-fine schedule of ``config`` (see ``schedule.plan``), with targets
    recomputed at every scale. ``callback(progress)`` is called after every iteration.
    Ctrl-C raises ``Interrupted`` carrying the current image; a diverging loss raises
    ``Diverged`` carrying the last good one (both at the output size).

    >>> img = stylize("photo.jpg", ["painting.jpg"], Config(size=256))  # doctest: +SKIP
    """
    config = config or Config()
    start = time.perf_counter()
    if isinstance(styles, (str, Path, torch.Tensor)):
        styles = [styles]
    if not styles:
        raise ConfigError("at least one style image is needed")
    weights, style_scales = style_options(config, len(styles), None if masks is None else len(masks))
    mask_imgs = None if masks is None else [_as_mask(m) for m in masks]
    content_img = _as_image(content)
    style_imgs = [_as_image(s) for s in styles]
    content_img, style_imgs, finish = _prepare_colors(content_img, style_imgs, config)
    recoloured = _palette_start(content_img, style_imgs, weights, config) if config.init == "palette" else content_img

    choice = choose_weights(config.model, config.weights, allow_download=config.model != "auto")  # auto never downloads
    run_plan = preflight(content_img, config, choice.spec)
    device, dtype, out_hw = run_plan.device, run_plan.dtype, run_plan.sizes[-1]
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    net = load_backbone(choice, [*config.content_layers, *config.style_layers], config.pooling)
    # Channels-last lets oneDNN (CPU) and cuDNN pick their fastest convolutions.
    net = net.to(device, memory_format=torch.channels_last)
    state = _State(callback, start, finish, total=run_plan.steps, scales=len(run_plan.scales),
                   work_total=run_plan.work)

    def prepare(img: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        return resize(img, hw, config.resample).unsqueeze(0).to(device) * 255.0

    x = prev_c = None
    try:
        for index, (scale, hw, grid) in enumerate(zip(run_plan.scales, run_plan.sizes, run_plan.grids)):
            c = prepare(content_img, hw)
            s = [prepare(img, style_size(img.shape[-2:], hw, config, k)) for img, k in zip(style_imgs, style_scales)]
            m = None if mask_imgs is None else [resize(k, hw, "area").unsqueeze(0).to(device) for k in mask_imgs]
            if x is None:
                first = prepare(style_imgs[0] if config.init == "style" else recoloured, hw)
                x = initial_pixels(c, first, config, generator)
            else:
                # Continue from the coarser result, upsampled, plus the photo's detail that
                # the coarser scale could not hold (its own upsampling residual). A
                # deviation from plain coarse-to-fine: without it the blurry start makes
                # the style term dominate and the fine scale paints over the photo's shapes.
                x = _upsample(x.detach(), hw)
                if config.restore_detail:
                    x = (x + c - _upsample(prev_c, hw)).clamp(0, 255)
            prev_c = c
            state.scale, state.image_size = index + 1, hw
            if grid is None:
                objective = Objective(net, c, s, weights, config, dtype, m)
                x = _run(objective, x.requires_grad_(True), config, scale.iterations, state)
            else:
                x = refine_tiled(net, x, c, s, weights, m, config, dtype, scale.iterations, state, grid)
    except (Interrupted, Diverged) as e:
        if tuple(e.image.shape[-2:]) != out_hw:
            e.image = resize(e.image, out_hw, "bicubic")
        e.image = finish(e.image)
        raise
    except KeyboardInterrupt:
        # Between two scales: the last scale's result is the work to keep.
        if x is None:
            raise
        raise Interrupted(finish(resize(pixels_to_image(x), out_hw, "bicubic")), state.progress) from None
    return finish(pixels_to_image(x))


def _palette_start(content: torch.Tensor, styles: list[torch.Tensor], weights: list[float],
                   config: Config) -> torch.Tensor:
    """init='palette': the photo with its colours moved toward the paintings' (ours).

    Starting from the photo, a Gram-type style loss leaves large flat areas in the photo's
    colours (a pale sky stays pale under The Scream): nothing in it says which region should
    turn which colour, and the optimiser does not travel that far. The photo recoloured to
    the paintings' colour mean and covariance (their mixture for several; the affine map of
    Gatys et al. 2016, section 2.1, the other way round) starts it there, with every edge
    in place; ``style_strength`` s takes that fraction of the way. With --preserve-colors the
    photo's colours are the point, so the photo is the start.
    """
    if config.preserve_colors != "none":
        return content
    recoloured = color.match_colors(content, *color.mixture_stats(styles, weights))
    return content + config.style_strength * (recoloured - content)


def _prepare_colors(content: torch.Tensor, styles: list[torch.Tensor], config: Config):
    """Apply --preserve-colors to the inputs; return them and the function that finishes an output."""
    if config.preserve_colors == "histogram":
        return content, [color.match_histogram(s, content) for s in styles], lambda image: image
    if config.preserve_colors == "luminance":
        gray = color.as_gray_rgb(color.luminance(content))
        styles = [color.as_gray_rgb(color.match_luminance(s, content)) for s in styles]

        def finish(image: torch.Tensor) -> torch.Tensor:
            # The optimised luminance with the photo's own colour channels.
            return color.combine_luminance(image, resize(content, tuple(image.shape[-2:]), config.resample))

        return gray, styles, finish
    return content, styles, lambda image: image


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


def preflight(content: torch.Tensor, config: Config, spec) -> RunPlan:
    """The checks and the plan of a run, before its long part; a front end calls it first.

    Raises ConfigError (device, size that will not fit) or LayerError (layer names).
    """
    device = resolve_device(config.device)
    dtype = resolve_precision(config.precision, device)
    for name in (*config.content_layers, *config.style_layers):
        resolve_layer(name, spec)
    out_hw = output_size(*content.shape[-2:], config)
    scales = schedule.plan(max(out_hw), config.scales, config.min_size, config.iterations)
    sizes = [fit_size(*out_hw, sc.size) for sc in scales[:-1]] + [out_hw]
    grids = [tiling(spec, config, hw, sc.iterations, dtype, device) for sc, hw in zip(scales, sizes)]
    return RunPlan(device, dtype, scales, sizes, grids)


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


def _upsample(pixels: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    return torch.nn.functional.interpolate(pixels, size=hw, mode="bicubic", align_corners=False).clamp(0, 255)


@dataclass
class _State:
    """Counters that run across the scales of one stylize() call."""

    callback: Callable[[Progress], None] | None
    start: float
    finish: Callable[[torch.Tensor], torch.Tensor]
    total: int
    scales: int
    scale: int = 0
    step: int = 0
    evaluations: int = 0
    progress: Progress | None = None  # the latest
    work_total: float = 1.0  # pixels x iterations of the whole schedule
    work_done: float = 0.0
    image_size: tuple[int, int] | None = None  # (height, width) of the current scale's image
    tile: int = 0
    tiles: int = 0
    # Refining a tile: the whole image with these tile pixels in place.
    view: Callable[[torch.Tensor], torch.Tensor] | None = None


def _run(objective: Objective, x: torch.Tensor, config: Config, iterations: int, state: _State) -> torch.Tensor:
    """The optimisation loop at one size; returns the pixels (1, 3, H, W) in 0-255."""
    opt, sched = _optimizer(x, config)
    # The line search evaluates points that the next step evaluates again; remember them.
    cache: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict]] = []
    first: dict = {}  # the loss and terms at the start of the current step

    def closure():
        for px, loss, grad, terms in cache:
            if torch.equal(px, x.detach()):
                x.grad = grad.clone()
                first.setdefault("loss", loss)
                first.setdefault("terms", terms)
                return loss
        opt.zero_grad(set_to_none=False)
        loss, terms = objective(x)
        loss.backward()
        state.evaluations += 1
        loss = loss.detach()
        terms = {k: float(v.detach()) for k, v in terms.items()}
        if config.line_search:
            cache.append((x.detach().clone(), loss, x.grad.detach().clone(), terms))
            del cache[:-4]
        first.setdefault("loss", loss)
        first.setdefault("terms", terms)
        return loss

    good = x.detach().clone()
    progress = None
    history: list[float] = []
    whole = state.view or (lambda pixels: pixels)
    try:
        for i in range(1, iterations + 1):
            first.clear()
            if config.optimizer == "lbfgs":
                opt.step(closure)
            else:
                closure()
                opt.step()
                if sched is not None:
                    sched.step()
            loss_value = float(first["loss"])
            if not math.isfinite(loss_value):
                raise Diverged(f"the loss became {loss_value} at step {state.step + 1}; "
                               f"lower the learning rate (now {config.lr:g})", pixels_to_image(whole(good)))
            if config.clamp:
                with torch.no_grad():
                    x.clamp_(0.0, 255.0)
            good = x.detach().clone()
            state.step += 1
            history.append(loss_value)
            stop = _converged(history, config.tolerance)
            pixels = x.shape[-2] * x.shape[-1]
            state.work_done += pixels
            if stop:  # the rest of this scale is skipped
                state.total -= iterations - i
                state.work_total -= (iterations - i) * pixels
            terms = first["terms"]
            progress = Progress(state.step, state.total, loss_value, terms["content"], terms["style"],
                                terms["tv"], time.perf_counter() - state.start, state.evaluations,
                                state.image_size or tuple(x.shape[-2:]), state.scale, state.scales,
                                state.work_done / state.work_total, state.tile, state.tiles, x, state.finish,
                                state.view)
            state.progress = progress
            if state.callback is not None:
                state.callback(progress)
            if stop:
                break
    except KeyboardInterrupt:
        raise Interrupted(pixels_to_image(whole(good)), progress) from None
    return x.detach()


def _converged(history: list[float], tolerance: float, window: int = 5) -> bool:
    """True when the loss fell by less than ``tolerance`` (relative) per step over the last window."""
    if tolerance <= 0 or len(history) <= window:
        return False
    drop = (history[-window - 1] - history[-1]) / (window * abs(history[-1]) + 1e-12)
    return drop < tolerance
