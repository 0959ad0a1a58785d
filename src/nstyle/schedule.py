"""The coarse-to-fine schedule: which sizes to optimise at, and for how many iterations.

Optimising first at a fraction of the target size, then upsampling the result and
continuing at the next size, reaches a good image far sooner than starting at full size:
the coarse scales lay out the large structures cheaply and the last scale only adds
detail (Gatys et al. 2017, "Controlling Perceptual Factors in Neural Style Transfer",
section 5; the multi-scale practice of the popular implementations). Pure and torch-free.
"""
from __future__ import annotations

from dataclasses import dataclass

# Iterations at the finest scale by default, doubling towards coarser ones up to a cap:
# a coarse iteration costs a quarter of the next finer one.
DEFAULT_FINEST = 30
DEFAULT_CAP = 100


@dataclass(frozen=True)
class Scale:
    size: int        # long side in pixels
    iterations: int  # optimiser steps at this size


def sizes(size: int, scales: int, min_size: int) -> list[int]:
    """Long sides from coarse to fine, a geometric series from ``min_size`` to ``size``.

    Fewer scales when ``size`` is too small for them (each at least 16 px above the
    previous); always ends at ``size``.

    >>> sizes(512, 3, 128)
    [128, 256, 512]
    >>> sizes(100, 3, 128)
    [100]
    """
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


def default_iterations(n: int) -> list[int]:
    """Iterations per scale from coarse to fine: 30 at the finest, doubling to at most 100.

    >>> default_iterations(3)
    [100, 60, 30]
    """
    return [min(DEFAULT_CAP, DEFAULT_FINEST * 2 ** k) for k in reversed(range(n))]


def plan(size: int, scales: int, min_size: int, iterations: int | tuple[int, ...] | None) -> list[Scale]:
    """The whole schedule.

    ``iterations``: None for the default, one number for every scale, or one per scale
    (coarse to fine; when the size allows fewer scales, the finest counts are kept).

    >>> plan(512, 3, 128, None)
    [Scale(size=128, iterations=100), Scale(size=256, iterations=60), Scale(size=512, iterations=30)]
    >>> plan(512, 2, 256, 40)
    [Scale(size=256, iterations=40), Scale(size=512, iterations=40)]
    """
    long_sides = sizes(size, scales, min_size)
    n = len(long_sides)
    if iterations is None:
        counts = default_iterations(n)
    elif isinstance(iterations, int):
        counts = [iterations] * n
    else:
        counts = list(iterations)
        if len(counts) == 1:
            counts *= n
        elif len(counts) != scales:
            raise ValueError(f"{len(counts)} iteration counts for {scales} scales: give one, or one per scale")
        counts = counts[len(counts) - n:]
    return [Scale(s, c) for s, c in zip(long_sides, counts)]
