"""The engine: ``Stylizer`` keeps its network between runs; ``stylize`` is the one-shot call.

The method of Gatys, Ecker and Bethge, "A Neural Algorithm of Artistic Style" (2015):
start from the photo (or noise) and minimise

    content_weight * content + style_weight * style + tv_weight * total_variation

(plus our colour total variation, losses.chroma_tv_loss) over the pixels, coarse to fine (schedule.py), with targets computed once per scale; the
network stops at the deepest layer in use. The library never prints: progress leaves
through the callback, messages through ``logging``.
"""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Callable, Sequence

import torch

from . import color
from .config import Config
from .errors import Cancelled, ConfigError, Diverged, Interrupted
from .image import load_image, resize
from .loop import Progress, State, pixels_to_image, run
from .network import Backbone
from .objective import Objective, StatsCache, Term
from .plan import RunPlan, preflight, style_options, style_size
from .tiled import refine_tiled
from .weights import WeightsChoice, choose_weights, load_backbone

# The ImageNet mean in RGB 0-255: the centre of the noise initial image.
_NOISE_CENTRE = (123.68, 116.779, 103.939)


_NOISE_RANGE = 20.0  # uniform noise of +-20 units, as one of the reference tutorials uses


def _as_mask(x, what: str) -> torch.Tensor:
    """A mask as (1, H, W) in [0, 1]: a path (its luminance) or a 2-d or 3-d tensor."""
    if isinstance(x, torch.Tensor) and x.ndim == 2:
        x = x.unsqueeze(0)
    if isinstance(x, torch.Tensor) and x.ndim == 3 and x.shape[0] == 1:
        x = x.expand(3, -1, -1)
    if isinstance(x, torch.Tensor) and (x.ndim != 3 or x.shape[0] != 3):
        raise ConfigError(f"{what} must be (H, W), (1, H, W) or (3, H, W), not {tuple(x.shape)}")
    return _as_image(x, what).mean(0, keepdim=True)


def _as_image(x, what: str) -> torch.Tensor:
    """An image as a (3, H, W) float32 tensor in [0, 1] on the CPU, the caller's left as it is.

    Takes a path, a float tensor in [0, 1] or a uint8 tensor in 0-255 (as images are
    stored). Anything else is refused in one line naming ``what`` it was: a float tensor in
    0-255 would otherwise come back all white without a word.
    """
    if isinstance(x, (str, os.PathLike)):
        return load_image(x)
    if not isinstance(x, torch.Tensor):
        raise ConfigError(f"{what} must be a path or a (3, H, W) tensor, not {type(x).__name__}")
    t = x.detach().cpu()
    if t.ndim != 3 or t.shape[0] != 3:
        raise ConfigError(f"{what} must be a (3, H, W) tensor, not {tuple(t.shape)}")
    if t.shape[1] == 0 or t.shape[2] == 0:
        raise ConfigError(f"{what} is empty: {tuple(t.shape)}")
    if t.dtype == torch.uint8:
        return (t.float() / 255.0).contiguous()
    if not t.is_floating_point():
        raise ConfigError(f"{what} must be a float tensor in [0, 1] or a uint8 one, not {t.dtype}")
    t = t.float()
    if not bool(torch.isfinite(t).all()):
        raise ConfigError(f"{what} has NaN or infinite values")
    lo, hi = float(t.min()), float(t.max())
    if lo < -1e-3 or hi > 1 + 1e-3:
        hint = " (divide 0-255 values by 255)" if hi <= 255 + 1e-3 and lo >= -1e-3 else ""
        raise ConfigError(f"{what} must have values in [0, 1], not {lo:.4g} to {hi:.4g}{hint}")
    # contiguous: a strided view (frame[:, ::2, ::2]) kept its strides through the palette
    # start's arithmetic, and L-BFGS could not flatten the gradient (a RuntimeError)
    return t.clamp(0.0, 1.0).contiguous()


class Stylizer:
    """An engine that keeps its network: reads and builds each backbone once (per model,
    weights file, layers, pooling and device) and runs any number of stylizations.

    >>> engine = Stylizer(Config(size=256))                        # doctest: +SKIP
    >>> a = engine.stylize("photo.jpg", ["painting.jpg"])  # reads the weights  # doctest: +SKIP
    >>> b = engine.stylize("other.jpg", ["painting.jpg"])  # does not           # doctest: +SKIP

    ``device`` overrides ``config.device``. One stylization at a time per engine (a lock
    makes a second caller wait); ``current_image()`` may be called from any thread. Each
    network keeps its paintings' statistics at the sizes they were used (``stats_cache``), so
    many photos in one painting compute them once per size.
    """

    KEEP = 4  # networks kept at most (each 60-80 MB of weights)

    def __init__(self, config: Config | None = None, *, device: str | None = None):
        self.config = config or Config()
        if device is not None:
            self.config = self.config.replace(device=device)
        self._nets: dict[tuple, Backbone] = {}
        self._stats: dict[int, StatsCache] = {}  # by id() of a network in _nets
        self._lock = threading.Lock()
        self._state: State | None = None
        self._out_hw: tuple[int, int] | None = None

    def network(self, choice: WeightsChoice, config: Config, device: torch.device) -> Backbone:
        """The backbone for a run of ``config``, built on first use and kept."""
        layers = (*config.content_layers, *config.style_layers)
        key = (choice.spec.name, str(choice.path), choice.md5, layers, config.pooling, str(device))
        net = self._nets.get(key)
        if net is None:
            net = load_backbone(choice, layers, config.pooling)
            # Channels-last lets oneDNN (CPU) and cuDNN pick their fastest convolutions.
            self._nets[key] = net = net.to(device, memory_format=torch.channels_last)
            self._stats[id(net)] = StatsCache()
            while len(self._nets) > self.KEEP:  # the least recently built goes first
                self._stats.pop(id(self._nets.pop(next(iter(self._nets)))), None)
        return net

    def stats_cache(self, net: Backbone) -> StatsCache:
        """The paintings' statistics kept for ``net``, one of this engine's networks."""
        return self._stats[id(net)]

    def cache_info(self) -> dict[str, int]:
        """How often a painting's statistics were found kept (hits) or computed (misses)."""
        caches = list(self._stats.values())
        return {"hits": sum(c.hits for c in caches), "misses": sum(c.misses for c in caches)}

    def current_image(self) -> torch.Tensor | None:
        """The image of the latest finished step of the current (or last) run, (3, H, W) in
        [0, 1] on the CPU, at the output size; None before the first step. Inside a
        callback it is the image of the step that callback reports."""
        state, out_hw = self._state, self._out_hw
        image = None if state is None else state.image()
        if image is not None and out_hw is not None and tuple(image.shape[-2:]) != out_hw:
            image = resize(image, out_hw, "bicubic")
        return image

    def stylize(self, content, styles, *, masks=None, init=None, extra_terms: Sequence[Term] = (),
                callback: Callable[[Progress], None] | None = None, cancel=None,
                config: Config | None = None, weights: WeightsChoice | None = None,
                plan: RunPlan | None = None) -> torch.Tensor:
        """Paint ``content`` in the manner of ``styles``; return the image (3, H, W) in [0, 1].

        ``content`` and each of ``styles`` are paths or (3, H, W) float tensors in [0, 1].
        ``masks``, one per style (paths, or (H, W) / (1, H, W) / (3, H, W) tensors in [0, 1],
        any size: resized to the photo's), say where each style goes: white for that style,
        gray blends, black none; where no mask covers, only the content term applies.
        ``init`` (a path or a (3, H, W) tensor in [0, 1], any size) is the image to start
        from instead of the one ``config.init`` makes (video starts a frame from the previous
        one, warped). ``extra_terms`` are added to the objective (see ``Term``); they need
        the whole image, so a run that would be refined in tiles refuses them.
        ``callback(progress)`` is called after every iteration (``current_image()`` gives
        its image). ``cancel`` (anything with ``is_set()``, e.g. a ``threading.Event``):
        once set, the run stops within one iteration and raises ``Cancelled`` with the
        current image, exactly as Ctrl-C raises ``Interrupted``. A diverging loss raises
        ``Diverged`` carrying the last good image (all at the output size).
        ``config`` overrides the engine's for this call; ``weights`` and ``plan`` pass a
        choice a front end has already made (jobs.py), else they are made here.
        """
        with self._lock:
            return self._stylize(content, styles, masks, init, tuple(extra_terms), callback, cancel,
                                 config or self.config, weights, plan)

    def _stylize(self, content, styles, masks, init, extra_terms, callback, cancel, config: Config,
                 choice: WeightsChoice | None, run_plan: RunPlan | None) -> torch.Tensor:
        start = time.perf_counter()
        if isinstance(styles, (str, Path, torch.Tensor)):
            styles = [styles]
        if not styles:
            raise ConfigError("at least one style image is needed")
        weights, style_scales = style_options(config, len(styles), None if masks is None else len(masks))
        mask_imgs = None if masks is None else [_as_mask(m, f"mask {k}") for k, m in enumerate(masks, 1)]
        content_img = _as_image(content, "the photo")
        style_imgs = [_as_image(s, "the painting" if len(styles) == 1 else f"painting {k}")
                      for k, s in enumerate(styles, 1)]
        init_img = None if init is None else _as_image(init, "the start image")
        content_img, style_imgs, finish = _prepare_colors(content_img, style_imgs, config)
        if choice is None:  # auto never downloads, as choose_weights decides
            choice = choose_weights(config.model, config.weights, allow_download=config.model != "auto")
        run_plan = run_plan or preflight(content_img, config, choice.spec, [tuple(s.shape[-2:]) for s in style_imgs])
        if init_img is not None:
            recoloured = init_img
        elif config.init == "palette":
            recoloured = _palette_start(content_img, style_imgs, weights, config, run_plan.sizes[0])
        else:
            recoloured = content_img
        if extra_terms and any(run_plan.grids):
            raise ConfigError("extra loss terms need the whole image, and this size is refined in tiles; "
                              "use a smaller size")
        device, dtype, out_hw = run_plan.device, run_plan.dtype, run_plan.sizes[-1]
        torch.manual_seed(config.seed)
        generator = torch.Generator().manual_seed(config.seed)
        net = self.network(choice, config, device)
        state = State(callback, start, finish, total=run_plan.steps, scales=len(run_plan.scales),
                      cancel=cancel, work_total=run_plan.work)
        self._state, self._out_hw = state, out_hw

        def prepare(img: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
            return resize(img, hw, config.resample).unsqueeze(0).to(device) * 255.0

        x = prev_c = None
        try:
            for index, (scale, hw, grid) in enumerate(zip(run_plan.scales, run_plan.sizes, run_plan.grids)):
                if state.cancelled():
                    raise Cancelled(pixels_to_image(x) if x is not None else resize(content_img, hw, "area"),
                                    state.progress)
                c = prepare(content_img, hw)
                s = [prepare(img, style_size(img.shape[-2:], hw, config, k)) for img, k in zip(style_imgs, style_scales)]
                m = None if mask_imgs is None else [resize(k, hw, "area").unsqueeze(0).to(device) for k in mask_imgs]
                if x is None:
                    if init_img is not None:
                        x = prepare(init_img, hw)
                    else:
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
                    objective = Objective(net, c, s, weights, config, dtype, m, extra_terms, cache=self.stats_cache(net))
                    x = run(objective, x.requires_grad_(True), config, scale.iterations, state)
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


def stylize(content, styles, config: Config | None = None,
            callback: Callable[[Progress], None] | None = None, masks=None) -> torch.Tensor:
    """One stylization with a fresh ``Stylizer`` (see ``Stylizer.stylize``); the weights
    file's parsed arrays stay cached in the process, the built network does not.

    >>> img = stylize("photo.jpg", ["painting.jpg"], Config(size=256))  # doctest: +SKIP
    """
    return Stylizer(config).stylize(content, styles, masks=masks, callback=callback)


def _palette_start(content: torch.Tensor, styles: list[torch.Tensor], weights: list[float],
                   config: Config, first_hw: tuple[int, int]) -> torch.Tensor:
    """init='palette': the photo with its colours moved toward the paintings' (ours).

    Starting from the photo, a Gram-type style loss leaves large flat areas in the photo's
    colours (a pale sky stays pale under The Scream): nothing in it says which region should
    turn which colour, and the optimiser does not travel that far. The photo with its colour
    distribution carried onto the paintings' (their pixels pooled by weight; Pitié et al.
    2005's iterative transfer, ``color.transfer_distribution``) starts it there, with every
    edge in place and colours assigned by their order (a bright sky toward the painting's
    bright sky); ``style_strength`` s takes that fraction of the way. An affine map of mean and
    covariance (Gatys et al. 2016, section 2.1), used before, could not do that: under
    The Scream a blue sky became grey-blue, not orange. With --preserve-colors the photo's
    colours are the point, so the photo is the start.

    With ``palette_layout`` the colours also follow their place in the picture; that map
    takes every pixel through it (no colour lookup table), so it runs on the photo at the
    first scale's size ``first_hw``, the only size the start is used at.
    """
    if config.preserve_colors != "none":
        return content
    layout = config.palette_layout
    if layout:
        content = resize(content, first_hw, config.resample)
    target = color.pixel_sample(styles, weights, seed=config.seed, with_places=bool(layout))
    recoloured = color.transfer_distribution(content, target, seed=config.seed, layout=layout)
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


def _upsample(pixels: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    return torch.nn.functional.interpolate(pixels, size=hw, mode="bicubic", align_corners=False).clamp(0, 255)

