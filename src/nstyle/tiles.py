"""Tiles: the geometry for refining an image too large to optimise whole.

A scale whose image would not fit in memory (or whose long side exceeds ``tile_size``)
is refined one tile at a time, in raster order (``tiled.refine_tiled``). Each tile
has three nested rectangles:

* ``core``: the cores partition the image; the whole image's Gram matrices are the
  sums of the cores' (Gram matrices are sums over positions);
* ``free``: the core widened by ``overlap / 2`` on every side with a neighbour: the
  pixels optimised. Neighbouring free regions overlap by ``overlap`` pixels, and a tile
  is written back with a linear ramp over the overlap with the tiles before it, so
  each seam is a cross-fade between two results that each saw the other's pixels;
* ``window``: the free region widened by ``margin``: the network's input. The margin
  gives the features near the free region's edge their real surroundings instead of
  the zero padding at a crop's edge; its pixels are held fixed.

Every edge inside the image lies on a grid of ``align`` pixels (the deepest layer's
stride), so a tile's feature maps line up position for position with the whole
image's. Pure: no network, no optimisation.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

ALIGN = 16     # the stride of relu5_x: pooling grids of tiles and of the whole image agree
OVERLAP = 64   # pixels shared by neighbouring free regions, cross-faded
# Context around the free region: about half the receptive field of relu4_2 (76 px in
# VGG16, 84 in VGG19), beyond which a pixel's effect on a feature is small.
MARGIN = 96


@dataclass(frozen=True)
class Rect:
    """Rows y0:y1 and columns x0:x1 of an image."""

    y0: int
    y1: int
    x0: int
    x1: int

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def pixels(self) -> int:
        return self.height * self.width

    def crop(self, t: torch.Tensor) -> torch.Tensor:
        """The rectangle of a (..., H, W) tensor (a view)."""
        return t[..., self.y0:self.y1, self.x0:self.x1]

    def within(self, outer: "Rect") -> "Rect":
        """This rectangle in the coordinates of ``outer``, which contains it."""
        return Rect(self.y0 - outer.y0, self.y1 - outer.y0, self.x0 - outer.x0, self.x1 - outer.x0)

    def grow(self, by: int, height: int, width: int) -> "Rect":
        """Widened by ``by`` on every side, clipped to a height x width image."""
        return Rect(max(0, self.y0 - by), min(height, self.y1 + by), max(0, self.x0 - by), min(width, self.x1 + by))

    def on_features(self, stride: int) -> "Rect":
        """The feature-map positions of a layer with this stride whose input cells lie inside.

        Pooling floors, so a last partial cell at the image's edge has no position, in a
        crop as in the whole image.
        """
        return Rect(self.y0 // stride, self.y1 // stride, self.x0 // stride, self.x1 // stride)


@dataclass(frozen=True)
class Tile:
    core: Rect
    free: Rect
    window: Rect


def splits(length: int, parts: int, align: int = ALIGN) -> list[int]:
    """Boundaries 0 = b0 < b1 < ... < b_parts = length, inner ones on the ``align`` grid.

    >>> splits(1000, 3)
    [0, 336, 672, 1000]
    """
    if parts < 1 or length < parts * align:
        raise ValueError(f"cannot split {length} px into {parts} parts of at least {align} px")
    inner = [round(k * length / parts / align) * align for k in range(1, parts)]
    return [0, *inner, length]


def grid(height: int, width: int, rows: int, cols: int, overlap: int = OVERLAP, margin: int = MARGIN,
         align: int = ALIGN) -> list[Tile]:
    """The tiles of a height x width image in raster order (row by row, left to right)."""
    if overlap % (2 * align) or margin % align:
        raise ValueError(f"overlap must be a multiple of {2 * align} and margin of {align}")
    ys, xs = splits(height, rows, align), splits(width, cols, align)
    tiles = []
    for r in range(rows):
        for c in range(cols):
            core = Rect(ys[r], ys[r + 1], xs[c], xs[c + 1])
            free = core.grow(overlap // 2, height, width)
            tiles.append(Tile(core, free, free.grow(margin, height, width)))
    return tiles


def grid_shape(height: int, width: int, tile_size: int) -> tuple[int, int]:
    """(rows, cols) of tiles of at most ``tile_size`` pixels a side.

    >>> grid_shape(3072, 4096, 2048)
    (2, 2)
    """
    return max(1, math.ceil(height / tile_size)), max(1, math.ceil(width / tile_size))


def choose_grid(height: int, width: int, fits: Callable[[int, int], bool], tile_size: int | None = None,
                overlap: int = OVERLAP, margin: int = MARGIN, align: int = ALIGN) -> tuple[int, int] | None:
    """The tiling of a scale: None to optimise it whole, else (rows, cols).

    ``fits(h, w)`` says whether a window of that size fits in memory. With ``tile_size``,
    tiles of at most that size (whole when the image is no larger); without, whole when it
    fits, else the fewest tiles whose windows fit. Raises ValueError when even tiles of
    ``4 * align`` pixels would not fit.
    """
    if tile_size is not None:
        if max(height, width) <= tile_size:
            return None
        return grid_shape(height, width, max(tile_size, 2 * align))
    if fits(height, width):
        return None
    side = max(height, width)
    while side > 4 * align:
        side = math.ceil(side * 0.8)
        rows, cols = grid_shape(height, width, side)
        if height < rows * align or width < cols * align:
            break
        if all(fits(t.window.height, t.window.width) for t in grid(height, width, rows, cols, overlap, margin, align)):
            return rows, cols
    raise ValueError(f"not even tiles of {4 * align} px fit in memory")


def feather(tile: Tile, overlap: int = OVERLAP) -> torch.Tensor:
    """Write-back weights (free.height, free.width) for a tile in raster order.

    A linear ramp from 0 to 1 over ``overlap`` pixels on the sides shared with tiles
    written before it (above, left), so the overlap cross-fades from theirs to this one's;
    1 elsewhere: the tiles after it cross-fade over this one in turn.
    """
    def ramp(lo: int, hi: int, seam: int) -> torch.Tensor:
        # positions lo..hi-1; the overlap with the tile before is centred on ``seam`` (0: none)
        pos = torch.arange(lo, hi, dtype=torch.float32)
        if seam == 0:
            return torch.ones_like(pos)
        return ((pos - (seam - overlap // 2) + 0.5) / overlap).clamp(0, 1)

    f, c = tile.free, tile.core
    return ramp(f.y0, f.y1, c.y0).view(-1, 1) * ramp(f.x0, f.x1, c.x0).view(1, -1)
