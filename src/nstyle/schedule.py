"""The coarse-to-fine schedule: which sizes to optimise at, and for how many iterations.

Optimising first at a fraction of the target size, then upsampling the result and
continuing at the next size, reaches a good image far sooner than starting at full size:
the coarse scales lay out the large structures cheaply and the last scale only adds
detail (Gatys et al. 2017, "Controlling Perceptual Factors in Neural Style Transfer",
section 5; the multi-scale practice of the popular implementations). Pure and torch-free.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

# Iterations at the finest scale by default, doubling towards coarser ones up to a cap:
# a coarse iteration costs a quarter of the next finer one. A run of one scale (an output
# no larger than the coarsest size, or --scales 1) gets twice the finest's: it has no
# coarser scale to start from.
DEFAULT_FINEST = 30
DEFAULT_CAP = 100
MAX_RATIO = 2.0        # the largest step between sizes when the number of scales is automatic
WORK_CAP_SIZE = 1024   # above this long side, default iterations fall in proportion to it
MIN_ITERATIONS = 10


@dataclass(frozen=True)
class Scale:
    size: int        # long side in pixels
    iterations: int  # optimiser steps at this size


def sizes(size: int, scales: int | None, min_size: int) -> list[int]:
    """Long sides from coarse to fine, a geometric series from ``min_size`` to ``size``.

    ``scales=None`` takes as many as make each step at most MAX_RATIO (2 at 512 px from
    256, 5 at 4096). Fewer scales when ``size`` is too small for them (each at least 16 px
    above the previous); always ends at ``size``.

    >>> sizes(512, 3, 128)
    [128, 256, 512]
    >>> sizes(4096, None, 128)
    [128, 256, 512, 1024, 2048, 4096]
    >>> sizes(100, 3, 128)
    [100]
    """
    if scales is None:
        scales = auto_scales(size, min_size)
    if scales <= 1 or size <= min_size:
        return [size]
    ratio = (size / min_size) ** (1 / (scales - 1))
    out: list[int] = []
    for i in range(scales):
        s = size if i == scales - 1 else round(min_size * ratio ** i)
        if not out or s >= out[-1] + 16:
            out.append(s)
        elif i == scales - 1:
            out[-1] = size
    return out


def auto_scales(size: int, min_size: int) -> int:
    """The fewest scales whose steps are at most MAX_RATIO.

    >>> auto_scales(512, 128), auto_scales(600, 128), auto_scales(100, 128)
    (3, 4, 1)
    """
    if size <= min_size:
        return 1
    return 1 + math.ceil(math.log(size / min_size) / math.log(MAX_RATIO) - 1e-9)


def default_iterations(long_sides: list[int]) -> list[int]:
    """Iterations per scale from coarse to fine: 30 at the finest, doubling to at most 100
    (60 for a run of one scale), and above WORK_CAP_SIZE px fewer in proportion to the long
    side (at least 10).

    Above about 1024 px an iteration costs seconds to minutes on a CPU and the scale starts
    from an upsampled result that is already stylized: it mostly adds detail.

    >>> default_iterations([256, 512])
    [60, 30]
    >>> default_iterations([128, 256, 512])
    [100, 60, 30]
    >>> default_iterations([256])
    [60]
    >>> default_iterations([128, 256, 512, 1024, 2048, 4096])
    [100, 100, 100, 100, 30, 10]
    """
    n = len(long_sides)
    if n == 1:
        counts = [2 * DEFAULT_FINEST]
    else:
        counts = [min(DEFAULT_CAP, DEFAULT_FINEST * 2 ** k) for k in reversed(range(n))]
    return [c if s <= WORK_CAP_SIZE else max(MIN_ITERATIONS, round(c * WORK_CAP_SIZE / s))
            for c, s in zip(counts, long_sides)]


def plan(size: int, scales: int | None, min_size: int, iterations: int | tuple[int, ...] | None) -> list[Scale]:
    """The whole schedule.

    ``scales``: a number of sizes, or None for auto_scales (or, with one iteration count
    per scale, as many as those). ``iterations``: None for the default, one number for every
    scale, or one per scale (coarse to fine; when the size allows fewer scales, the finest
    counts are kept).

    >>> plan(512, 3, 128, None)
    [Scale(size=128, iterations=100), Scale(size=256, iterations=60), Scale(size=512, iterations=30)]
    >>> plan(512, 2, 256, 40)
    [Scale(size=256, iterations=40), Scale(size=512, iterations=40)]
    """
    counts = [iterations] if isinstance(iterations, int) else list(iterations or ())
    if scales is None and len(counts) > 1:
        scales = len(counts)
    long_sides = sizes(size, scales, min_size)
    n = len(long_sides)
    if iterations is None:
        counts = default_iterations(long_sides)
    elif len(counts) == 1:
        counts *= n
    else:
        if len(counts) != scales:
            raise ValueError(f"{len(counts)} iteration counts for {scales} scales: give one, or one per scale")
        counts = counts[len(counts) - n:]
    return [Scale(s, c) for s, c in zip(long_sides, counts)]
