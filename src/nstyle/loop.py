"""The optimisation loop at one size: one optimiser step is one iteration is one callback.

L-BFGS (the paper; Deep Learning with Python 8.3), Adam (the TensorFlow tutorials) or SGD
with exponential decay (the Keras example). ``Progress`` is what a front end sees of it.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import torch

from .config import Config
from .errors import Cancelled, Diverged, Interrupted

@dataclass(frozen=True)
class Progress:
    """What happened in one iteration; handed to the callback after every optimiser step.

    Plain data (numbers, strings, tuples and one dict of numbers), so that
    ``json.dumps(dataclasses.asdict(progress))`` works and it can cross to another process
    or a web page. The image itself is not in it: ``Stylizer.current_image()`` gives it
    (inside the callback, the image of this very step).
    """

    step: int             # 1-based iteration just finished
    total: int            # iterations planned
    loss: float           # weighted total loss, evaluated at the start of this step
    terms: dict[str, float]  # each weighted term of it by name: content, style, tv and any extra term
    elapsed: float        # seconds since the run started
    evaluations: int      # forward+backward passes so far
    size: tuple[int, int]  # (height, width) of the image being optimised
    scale: int = 1        # 1-based index of the current scale of the coarse-to-fine schedule
    scales: int = 1       # number of scales
    fraction: float = 0.0  # share of the run's work done (steps weighted by their pixel count)
    tile: int = 0         # 1-based tile being refined when the scale is refined tile by tile, else 0
    tiles: int = 0        # tiles of this scale (0: optimised whole)

    @property
    def content(self) -> float:
        return self.terms.get("content", 0.0)

    @property
    def style(self) -> float:
        return self.terms.get("style", 0.0)

    @property
    def tv(self) -> float:
        return self.terms.get("tv", 0.0)


def pixels_to_image(pixels: torch.Tensor) -> torch.Tensor:
    """(1, 3, H, W) in 0-255 -> (3, H, W) float in [0, 1] on the CPU."""
    return (pixels.detach()[0].float() / 255.0).clamp(0.0, 1.0).cpu()


@dataclass
class State:
    """What runs across the scales and tiles of one stylization: counters, the callback, the
    cancel flag and the latest good pixels (for ``image()``)."""

    callback: Callable[[Progress], None] | None
    start: float
    finish: Callable[[torch.Tensor], torch.Tensor]  # optimised image -> output (colour modes)
    total: int
    scales: int
    cancel: object | None = None  # anything with is_set(), e.g. threading.Event
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
    # The pixels after the latest step, a copy no step changes (safe to read from another thread).
    good: torch.Tensor | None = None

    def image(self) -> torch.Tensor | None:
        """The latest image, (3, H, W) in [0, 1] on the CPU, at the current scale's size; None
        before the first step."""
        good, view = self.good, self.view
        if good is None:
            return None
        return self.finish(pixels_to_image(view(good) if view else good))

    def cancelled(self) -> bool:
        return self.cancel is not None and bool(self.cancel.is_set())


def run(objective, x: torch.Tensor, config: Config, iterations: int, state: State) -> torch.Tensor:
    """The optimisation loop at one size; returns the pixels (1, 3, H, W) in 0-255."""
    opt, sched = _optimizer(x, config)
    bounded = config.clamp and config.optimizer == "lbfgs"
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
        if bounded:
            _project_gradient(x)
        state.evaluations += 1
        loss = loss.detach()
        terms = {k: float(v.detach()) for k, v in terms.items()}
        if config.line_search:
            cache.append((x.detach().clone(), loss, x.grad.detach().clone(), terms))
            del cache[:-4]
        first.setdefault("loss", loss)
        first.setdefault("terms", terms)
        return loss

    state.good = good = x.detach().clone()
    history: list[float] = []
    best, best_pixels = math.inf, good
    whole = state.view or (lambda pixels: pixels)
    try:
        for i in range(1, iterations + 1):
            if state.cancelled():
                raise Cancelled(pixels_to_image(whole(good)), state.progress)
            first.clear()
            if config.optimizer == "lbfgs":
                opt.step(closure)
                if i == 1 and getattr(objective, "dtype", torch.float32) != torch.float32:
                    _forget_first_step(opt)
            else:
                closure()
                opt.step()
                if sched is not None:
                    sched.step()
            loss_value = float(first["loss"])
            if not math.isfinite(loss_value):
                if state.step == 0 and i == 1:
                    why = "at the start: a weight or an input is out of range (NaN, infinite or too large)"
                elif config.optimizer == "lbfgs":
                    why = f"at step {state.step + 1}; try a smaller weight or --line-search"
                else:
                    why = f"at step {state.step + 1}; lower the learning rate (now {config.lr:g})"
                raise Diverged(f"the loss became {loss_value} {why}", pixels_to_image(whole(good)))
            # loss_value is the loss at ``good``, the pixels this step started from.
            if loss_value < best:
                best, best_pixels = loss_value, good
            elif config.optimizer == "lbfgs" and loss_value > BLOWUP * best:
                # L-BFGS without a line search takes a step as long as its curvature estimate
                # says, and an estimate built from steps that never met a stiff direction
                # (a flat photo, whose colour total variation starts at 0) can send the pixels
                # far off, the loss up a thousandfold. Ours: back to the best pixels so far, and
                # for the rest of this scale a fresh estimate with the strong-Wolfe line search,
                # which cannot take such a step (it costs a few more evaluations a step).
                with torch.no_grad():
                    x.copy_(best_pixels)
                opt, sched = _optimizer(x, config.replace(line_search=True))
            if config.clamp:
                with torch.no_grad():
                    x.clamp_(0.0, 255.0)
            state.good = good = x.detach().clone()
            state.step += 1
            history.append(loss_value)
            stop = _converged(history, config.tolerance)
            pixels = x.shape[-2] * x.shape[-1]
            state.work_done += pixels
            if stop:  # the rest of this scale is skipped
                state.total -= iterations - i
                state.work_total -= (iterations - i) * pixels
            progress = Progress(state.step, state.total, loss_value, dict(first["terms"]),
                                time.perf_counter() - state.start, state.evaluations,
                                state.image_size or tuple(x.shape[-2:]), state.scale, state.scales,
                                state.work_done / state.work_total, state.tile, state.tiles)
            state.progress = progress
            if state.callback is not None:
                state.callback(progress)
            if state.cancelled():
                raise Cancelled(pixels_to_image(whole(good)), progress)
            if stop:
                break
    except Interrupted:
        raise
    except KeyboardInterrupt:
        # state.progress, not this scale's: a Ctrl-C in the first step of a later scale
        # still has the earlier scales' work to keep.
        raise Interrupted(pixels_to_image(whole(good)), state.progress) from None
    return x.detach()


def _forget_first_step(opt: torch.optim.LBFGS) -> None:
    """Drop the curvature pair of L-BFGS's first step, taken with the network in bfloat16.

    That step is short by design (``1 / sum|g|``, far below a pixel unit) and bfloat16 cannot
    see it: the network's inputs round to the same values, so the change of gradient comes
    from the float32 terms alone (the total variations) and describes their curvature only.
    With the colour total variation's weight, that pair passes L-BFGS's own test and its
    estimate sends the next step far off (on a flat synthetic photo the loss rose 3500x).
    Without the pair the next step is a plain gradient step, as when L-BFGS skips a pair, and
    the pairs after it see the whole objective.
    """
    # torch's LBFGS forms that pair at the start of the next step from s = d * t; with t = 0
    # it is skipped (y.s is not above 1e-10) and the next direction is -g, at full length.
    for state in opt.state.values():
        if "t" in state:
            state["t"] = 0.0


def _project_gradient(x: torch.Tensor) -> None:
    """Zero the gradient of the pixels held at 0 or 255 that it would push further out.

    The loop clamps the pixels to 0-255 after every step. Left to itself, L-BFGS keeps
    proposing steps past the bound for those pixels; the clamp cuts them, so the step it
    remembers is not the step taken, its curvature estimate drifts, and over a long run the
    loss rises (tubingen x The Starry Night, VGG19, 256 px, one scale: 330 after 60 steps,
    414 after 200, rising on 59 of them). With their gradient zeroed, L-BFGS works on the free
    pixels only, as a projected quasi-Newton method does (the binding set of Bertsekas 1982,
    "Projected Newton methods for optimization problems with simple constraints", in its
    simplest form, without a margin): 327 after 60 steps, 309 after 200, rising on 4
    (benchmarks/README.md, "The clamp, projected").
    """
    with torch.no_grad():
        g = x.grad
        g.masked_fill_(((x <= 0.0) & (g > 0)) | ((x >= 255.0) & (g < 0)), 0.0)


BLOWUP = 10.0  # a loss this many times the best so far sends L-BFGS back to the best pixels


def _converged(history: list[float], tolerance: float, window: int = 5) -> bool:
    """True when the loss fell by less than ``tolerance`` (relative) per step over the last window."""
    if tolerance <= 0 or len(history) <= window:
        return False
    drop = (history[-window - 1] - history[-1]) / (window * abs(history[-1]) + 1e-12)
    return drop < tolerance


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

