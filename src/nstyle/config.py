"""Every option of a style transfer run, with its default: one frozen dataclass.

The command line takes its defaults from these fields, so a default lives here and
nowhere else.
"""
from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass

from .errors import ConfigError

OPTIMIZERS = ("lbfgs", "adam", "sgd")
INITS = ("content", "noise", "style", "palette")
POOLINGS = ("max", "avg")
PRESETS = ("default", "keras")
MODELS = ("auto", "vgg19", "vgg16bn-craft", "vgg16-hed")
DEVICES = ("auto", "cpu", "cuda", "mps")
LOSS_FORMS = ("relative", "keras")
PRECISIONS = ("auto", "float32", "bfloat16")
COLOR_MODES = ("none", "luminance", "histogram")
STYLE_LOSSES = ("gram", "meancov", "histogram", "sliced")  # losses.STYLE_LOSSES


@dataclass(frozen=True)
class Config:
    # --- the objective ---
    # Weight of the content loss, on the paper's relu4_2 (Gatys et al. 2015, Methods: conv4_2). At
    # weight 1 the normalised term did nothing measurable (weight 0 gave the same image); on
    # vgg16-hed, relu3_1 at 300 held thin shapes and halos (second stop). On VGG19, relu3_1 held
    # the photo's fine detail so tightly that the houses under The Starry Night stayed the
    # photo's; relu4_2 at 150 lets the strokes repaint them, as the classic's do, with the
    # layout kept (30 pairs: colour 0.82x, edges 0.86x of relu3_1 at 300; README, Quality).
    content_weight: float = 150.0
    style_weight: float = 1e4              # weight of the style loss (sum over style layers)
    tv_weight: float = 1e-1                # weight of the total-variation loss
    # Weight of the total variation of colour alone (losses.chroma_tv_loss, ours): smooths
    # colour speckle, not brightness edges. The relative objective only (Keras: 0).
    tv_chroma_weight: float = 3e4
    content_layers: tuple[str, ...] = ("relu4_2",)  # paper names or Keras aliases (block4_conv2)
    style_layers: tuple[str, ...] = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
    # The style layers' weights w_l (Gatys et al. 2015, eq. 5): each layer decay times the one
    # above it in the network, scaled to a mean of 1 (1 = equal, the paper's and Keras').
    # 0.5 (ours): the shallow layers, which carry colour and fine strokes, count most, as
    # the classic implementations' unnormalised Grams make them; HED's deep layers, retrained
    # to find edges, paint ridges, fainter so (README, "How nstyle differs"). At most 100.
    style_layer_decay: float = 0.5
    # 'relative': each term divided by its target's squared norm, Gram matrices by the
    # number of positions (ours); 'keras': the Keras example's exact normalisations.
    loss_form: str = "relative"
    # The style statistics matched (relative form only): gram (Gatys et al.), meancov
    # (Wasserstein-2 between Gaussians), histogram (Risser et al. 2017), sliced (Heitz et al. 2021).
    style_loss: str = "gram"
    # How far the style targets go from the photo's own statistics (0: the photo is already
    # optimal) to the painting's (1): target = (1 - s) * photo + s * painting, a mixture.
    style_strength: float = 1.0
    # --- the image ---
    size: int = 512                        # output size in pixels: the long side (rows with size_rows)
    size_rows: bool = False                # size is the height, as in the Keras example (img_nrows)
    resample: str = "area"                 # resize filter for the inputs: area, bicubic, bilinear, nearest
    # Style long side = style_scale * output long side (the scale of its strokes): one
    # number for every style, or one per style.
    style_scale: float | tuple[float, ...] = 1.0
    style_weights: tuple[float, ...] | None = None  # blend weights of several styles (default: equal)
    # Keep the photo's colours (Gatys et al. 2016): 'luminance' transfers style on
    # luminance only, 'histogram' maps the painting's colours to the photo's first.
    preserve_colors: str = "none"
    # Initial image: content, noise, style, or palette (the photo's colour distribution carried
    # onto the painting's, Pitie et al. 2005, style_strength of the way; color.transfer_distribution).
    init: str = "palette"
    # How much a pixel's place in the picture decides its colour in the palette start (ours;
    # color.transfer_distribution's layout): 0 by the photo's colour order alone; 2 the
    # painting's colours where the painting has them (The Scream's orange sky in the photo's
    # sky, Picasso's ochre ground around a portrait; README, Quality). At most 10; only the
    # palette start uses it.
    palette_layout: float = 2.0
    noise_ratio: float = 0.0               # blend of uniform noise (+-20 units) into the initial image
    # --- the optimisation ---
    optimizer: str = "lbfgs"               # lbfgs, adam or sgd
    # Optimiser steps per scale (one step = one iteration = one callback): None for the
    # schedule's default (60, 30 at 512 px; schedule.default_iterations), one number for
    # every scale, or one per scale from coarse to fine.
    iterations: int | tuple[int, ...] | None = None
    # Coarse-to-fine: the number of sizes (1 = the output size only); None for as many as
    # keep each step at most 2x (2 at 512 px, 5 at 4096 px).
    scales: int | None = None
    # Long side of the coarsest scale. 256, not 128: a 128-px start laid wide bands and pale
    # washes across the picture that the finer scales kept (faces crossed by stripes, halos);
    # from 256 the edge figure rose 1.16x with the colour nearer the painting's (README, Quality).
    min_size: int = 256
    # Scales too large to optimise whole are refined tile by tile (tiles of at most this long
    # side, overlapping and blended); None: only when the whole image would not fit in memory.
    tile_size: int | None = None
    restore_detail: bool = True            # add the photo's fine detail when moving to a finer scale
    tolerance: float = 0.0                 # stop a scale when the loss falls less than this fraction per step
    learning_rate: float | None = None     # default per optimiser: lbfgs 1, adam 5 (0-255 units), sgd 100
    lr_decay: float = 0.96                 # sgd: learning rate x lr_decay every lr_decay_steps (Keras example)
    lr_decay_steps: int = 100
    history_size: int = 100                # lbfgs: number of past steps kept for the curvature estimate
    line_search: bool = False              # lbfgs: strong-Wolfe line search (more evaluations per step)
    clamp: bool = True                     # keep pixels within 0-255 after every step
    # --- the network ---
    model: str = "auto"                    # auto, vgg19, vgg16bn-craft or vgg16-hed
    weights: str | None = None             # a weights file instead of the pinned one
    pooling: str = "max"                   # max or avg (Gatys et al. prefer avg)
    device: str = "auto"                   # auto, cpu, cuda or mps
    # The network's arithmetic: 'auto' is bfloat16 where the processor computes it natively
    # (CUDA; CPUs with AVX-512 BF16 or AMX), else float32. Losses and Grams stay float32.
    precision: str = "auto"
    seed: int = 0                          # random seed (noise initial image); CPU runs repeat exactly
    preset: str = "default"                # the preset these values came from

    def __post_init__(self) -> None:
        self._check_types()
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("init", self.init, INITS)
        _choice("pooling", self.pooling, POOLINGS)
        _choice("model", self.model, MODELS)
        _choice("device", self.device, DEVICES)
        _choice("loss_form", self.loss_form, LOSS_FORMS)
        _choice("resample", self.resample, ("area", "bicubic", "bilinear", "nearest"))
        _choice("preset", self.preset, PRESETS)
        _choice("precision", self.precision, PRECISIONS)
        _choice("preserve_colors", self.preserve_colors, COLOR_MODES)
        _choice("style_loss", self.style_loss, STYLE_LOSSES)
        _number("style_strength", self.style_strength, lo=0.0)
        if self.style_strength > 1:
            raise ConfigError(f"style strength must be between 0 and 1, not {self.style_strength:g}")
        if self.loss_form != "relative" and (self.style_loss != "gram" or self.style_strength != 1
                                             or self.tv_chroma_weight != 0 or self.style_layer_decay != 1):
            raise ConfigError("the Keras objective has only the Gram style loss at full strength, "
                              "equal style layer weights and no colour total variation")
        for name in ("content_weight", "style_weight", "tv_weight", "tv_chroma_weight", "noise_ratio", "lr_decay",
                     "style_layer_decay"):
            _number(name, getattr(self, name), lo=0.0)
        _number("palette_layout", self.palette_layout, lo=0.0)
        if self.palette_layout > 10:
            raise ConfigError(f"palette layout must be between 0 and 10, not {self.palette_layout:g}")
        if self.style_layer_decay > 100:
            raise ConfigError(f"style layer decay must be between 0 and 100, not {self.style_layer_decay:g}")
        if self.noise_ratio > 1:
            raise ConfigError(f"noise ratio must be between 0 and 1, not {self.noise_ratio:g}")
        for scale in (self.style_scale,) if isinstance(self.style_scale, (int, float)) else self.style_scale:
            _number("style_scale", scale, lo=0.0, strict=True)
        if self.learning_rate is not None:
            _number("learning_rate", self.learning_rate, lo=0.0, strict=True)
        counts = (self.iterations,) if isinstance(self.iterations, int) else self.iterations or ()
        for n in counts:
            if not isinstance(n, int) or not 1 <= n <= 1_000_000:
                raise ConfigError(f"iterations must be between 1 and 1000000, not {n}")
        if self.scales is not None and not 1 <= self.scales <= 10:
            raise ConfigError(f"scales must be between 1 and 10, not {self.scales}")
        if self.tile_size is not None and not 64 <= self.tile_size <= 65_536:
            raise ConfigError(f"tile size must be between 64 and 65536 pixels, not {self.tile_size}")
        if len(counts) > 10:
            raise ConfigError(f"{len(counts)} iteration counts: at most 10 scales")
        if self.scales is not None and len(counts) > 1 and len(counts) != self.scales:
            raise ConfigError(f"{len(counts)} iteration counts for {self.scales} scales: give one, or one per scale")
        if not 16 <= self.min_size <= 65_536:
            raise ConfigError(f"min size must be between 16 and 65536 pixels, not {self.min_size}")
        _number("tolerance", self.tolerance, lo=0.0)
        if not 1 <= self.history_size <= 10_000:
            raise ConfigError(f"history size must be between 1 and 10000, not {self.history_size}")
        if self.lr_decay_steps < 1:
            raise ConfigError(f"lr decay steps must be at least 1, not {self.lr_decay_steps}")
        if not 0 <= self.seed < 2**63:
            raise ConfigError(f"seed must be between 0 and {2**63 - 1}, not {self.seed}")
        if not 32 <= self.size <= 65_536:
            raise ConfigError(f"size must be between 32 and 65536 pixels, not {self.size}")
        if not self.content_layers and not self.style_layers:
            raise ConfigError("no content or style layers given")
        if self.style_weights is not None:
            for w in self.style_weights:
                _number("style weight", w, lo=0.0)
            if sum(self.style_weights) <= 0:
                raise ConfigError("style weights must not all be zero")

    def _check_types(self) -> None:
        """Each field of the type it is declared with, checked at the API's boundary, so that
        ``size=40.5`` or ``iterations=2.0`` is refused in one line instead of failing deep
        inside; lists where tuples are declared are taken as tuples."""
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            label = f.name.replace("_", " ")
            declared = str(f.type)
            if isinstance(value, list) and "tuple" in declared:
                value = tuple(value)
                object.__setattr__(self, f.name, value)
            if value is None and "None" in declared:
                continue
            if declared.startswith("str") and isinstance(value, os.PathLike):
                value = os.fspath(value)
                object.__setattr__(self, f.name, value)
            items = value if isinstance(value, tuple) and "tuple" in declared else (value,)
            if "tuple" in declared and not isinstance(value, tuple) and not declared.startswith(("int |", "float |")):
                raise ConfigError(f"{label} must be a tuple, not {value!r}")
            for item in items:
                if declared == "bool":
                    ok = isinstance(item, bool)
                elif declared.startswith("int") or declared.startswith("tuple[int") or "int | tuple[int" in declared:
                    ok = isinstance(item, int) and not isinstance(item, bool)
                    kind = "a whole number"
                elif declared.startswith("float") or "tuple[float" in declared:
                    ok = isinstance(item, (int, float)) and not isinstance(item, bool)
                    kind = "a number"
                elif declared.startswith("str") or "tuple[str" in declared:
                    ok = isinstance(item, str)
                    kind = "text"
                else:
                    continue
                if not ok:
                    kind = "true or false" if declared == "bool" else kind
                    raise ConfigError(f"{label} must be {kind}, not {item!r}")

    @property
    def lr(self) -> float:
        """The learning rate in use: the option, or the optimiser's default."""
        if self.learning_rate is not None:
            return self.learning_rate
        return {"lbfgs": 1.0, "adam": 5.0, "sgd": 100.0}[self.optimizer]

    def replace(self, **changes) -> "Config":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# The Keras example (fchollet, keras.io "Neural style transfer", 2016/2020) exactly:
# content block5_conv2 (relu5_2), style block{1..5}_conv1, weights 2.5e-8 / 1e-6 / 1e-6,
# its loss normalisations, plain SGD at 100 decayed by 0.96 every 100 steps, 400-pixel
# rows, nearest-neighbour resizing (keras.utils.load_img's default), no pixel clamping,
# float32 arithmetic.
KERAS_PRESET = dict(
    content_weight=2.5e-8, style_weight=1e-6, tv_weight=1e-6, tv_chroma_weight=0.0,
    content_layers=("relu5_2",),
    style_layers=("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"), style_layer_decay=1.0,
    loss_form="keras", size=400, size_rows=True, resample="nearest",
    optimizer="sgd", iterations=4000, scales=1, learning_rate=100.0, lr_decay=0.96, lr_decay_steps=100,
    clamp=False, init="content", style_strength=1.0, noise_ratio=0.0, pooling="max", precision="float32",
)


def preset(name: str, **overrides) -> Config:
    """The config of a named preset, with ``overrides`` applied on top."""
    _choice("preset", name, PRESETS)
    base = KERAS_PRESET if name == "keras" else {}
    return Config(**{**base, **overrides, "preset": name})


def _choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name.replace('_', ' ')} must be one of {', '.join(choices)}, not '{value}'")


def _number(name: str, value: float, lo: float, strict: bool = False) -> None:
    label = name.replace("_", " ")
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{label} must be a finite number, not {value!r}")
    if value < lo or (strict and value == lo):
        raise ConfigError(f"{label} must be {'greater than' if strict else 'at least'} {lo:g}, not {value:g}")

