"""Refining a scale too large to optimise whole, tile by tile (the tile geometry: tiles.py)."""
from __future__ import annotations

from typing import Callable, Sequence

import torch

from . import losses, tiles
from .config import Config
from .loop import State, run
from .network import Backbone, layer_strides, resolve_layer
from .objective import Objective, features_in, layer_masks

class TileObjective(Objective):
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
                 dtype: torch.dtype, iterations: int, state: State, shape: tuple[int, int]) -> torch.Tensor:
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
        return features_in(net, pixels, torch.float32)  # targets in float32, as Objective's

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
        objective = TileObjective(net, config, style_weights, dtype, t.window.crop(x).clone(), t, (height, width),
                                   content_targets, style_targets, tile_masks)
        weight = tiles.feather(t).to(x.device)

        def paste(pixels: torch.Tensor, into: torch.Tensor, t=t, weight=weight) -> torch.Tensor:
            region = t.free.crop(into)
            region.mul_(1 - weight).add_(weight * pixels.detach())
            return into

        state.tile, state.tiles = index + 1, len(grid)
        state.view = lambda pixels, paste=paste: paste(pixels, x.clone())
        v = run(objective, t.free.crop(x).clone().requires_grad_(True), config, iterations, state)
        paste(v, x)
    state.tile = state.tiles = 0
    state.view = None
    return x

