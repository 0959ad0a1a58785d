"""The objective of Gatys, Ecker and Bethge (2015) at one size: its targets and its terms.

    content_weight * content + style_weight * style + tv_weight * total_variation
    (+ tv_chroma_weight * the total variation of colour alone, ours, in the "tv" term;
     + any extra terms a caller adds, such as video's temporal loss)

The loss functions themselves are pure functions in losses.py; this module holds the
targets of one photo and one blend of paintings and evaluates the weighted terms.
"""
from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from . import losses
from .config import Config
from .network import Backbone, BackboneSpec, resolve_layer

@dataclass(frozen=True)
class Term:
    """An extra term of the objective, added to content, style and total variation.

    ``fn(pixels, features)`` gets the image being optimised, (1, 3, H, W) in 0-255 at the
    current scale's size (coarse to fine: resize your own targets to it), and the network's
    activations by layer name (those the objective computes), and returns a scalar tensor
    differentiable in ``pixels``. The objective adds ``weight * fn(...)``; progress reports
    it under ``name``. Video's temporal loss is one (Ruder et al. 2016).
    """

    name: str
    weight: float
    fn: Callable[[torch.Tensor, dict[str, torch.Tensor]], torch.Tensor]


class StatsCache:
    """Paintings' statistics kept between objectives of one network (``Objective``'s
    ``cache``): the ``keep`` most recently used, with counts of ``hits`` and ``misses``.
    A batch of many photos in one painting computes them once per size, not once per job."""

    def __init__(self, keep: int = 32):
        self.keep, self.hits, self.misses = keep, 0, 0
        self._items: OrderedDict = OrderedDict()

    def get(self, key):
        value = self._items.get(key)
        if value is None:
            self.misses += 1
        else:
            self.hits += 1
            self._items.move_to_end(key)
        return value

    def put(self, key, value) -> None:
        self._items[key] = value
        while len(self._items) > self.keep:
            self._items.popitem(last=False)


class Objective:
    """The loss of Gatys et al. for one content image and one blend of styles at one size.

    Computes the targets once at construction; ``__call__(pixels)`` returns the weighted
    total and its terms by name (content, style, tv, then each extra ``Term``). ``cache`` (a
    ``StatsCache`` of this network) keeps the paintings' statistics for later objectives.
    """

    def __init__(self, net: Backbone, content: torch.Tensor, styles: Sequence[torch.Tensor],
                 style_weights: Sequence[float], config: Config, dtype: torch.dtype = torch.float32,
                 masks: Sequence[torch.Tensor] | None = None, extra: Sequence[Term] = (),
                 cache: StatsCache | None = None):
        self._setup(net, config, style_weights, extra)
        self.image_pixels = content.shape[-2] * content.shape[-1]
        with torch.no_grad():
            feats = self.features(content)
            self.content_targets = {n: feats[n].detach() for n in self.content_layers}
            painting = [self.painting_stats(s, cache) for s in styles]
            self.layer_masks = None
            if masks is not None:
                self.layer_masks = layer_masks(masks, {n: feats[n].shape[-2:] for n in self.style_layers})
            if self.form != "relative":  # the Keras example's unnormalised Grams, exactly
                grams = painting
                if masks is None:
                    self.style_targets = {n: sum(w * g[n] for w, g in zip(self.blend, grams)) for n in self.style_layers}
                else:
                    self.style_targets = grams
            elif masks is None:
                # Several styles blend as a mixture of their statistics (for Gram matrices,
                # the weighted sum of Gatys et al.).
                self.style_targets = {n: self.target(n, feats[n], [p[n] for p in painting], self.blend)
                                      for n in self.style_layers}
            else:
                # Each style matched in its own region (guided statistics, Gatys et al. 2017).
                self.style_targets = [{n: self.target(n, feats[n], [p[n]], [1.0], m[n]) for n in self.style_layers}
                                      for p, m in zip(painting, self.layer_masks)]
        self.dtype = dtype

    def _setup(self, net: Backbone, config: Config, style_weights: Sequence[float],
               extra: Sequence[Term] = ()) -> None:
        """The layers and weights of the objective."""
        self.extra = tuple(extra)
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
        self.layer_weights = style_layer_weights(self.style_layers, spec, config.style_layer_decay)
        self.tv_weight = config.tv_weight
        self.tv_chroma_weight = config.tv_chroma_weight
        total = sum(style_weights)
        self.blend = [w / total for w in style_weights]
        self.image_pixels = None  # the Keras form's normaliser; only whole images have it
        self.kind = config.style_loss
        self.strength = config.style_strength
        self.seed = config.seed

    def stats(self, layer: str, f: torch.Tensor, mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The style statistics of features ``f`` at ``layer`` (see ``losses.style_target``)."""
        # sliced: the same random directions for every image of a layer, so they blend.
        generator = torch.Generator().manual_seed(self.seed * 1009 + self.style_layers.index(layer))
        return losses.style_target(f, self.kind, mask, generator=generator)

    def painting_stats(self, painting: torch.Tensor, cache: StatsCache | None = None) -> dict[str, dict]:
        """What the style term needs of one painting (1, 3, h, w) in 0-255, by layer: its
        statistics (its unnormalised Grams in the Keras form). With ``cache``, kept under the
        painting's pixels and what else they depend on (the network is the cache's own)."""
        key = None
        if cache is not None:
            pixels = painting.detach().cpu().contiguous().numpy().tobytes()
            key = (hashlib.sha256(pixels).hexdigest(), tuple(painting.shape), tuple(self.style_layers), self.form,
                   self.kind, self.seed if self.kind == "sliced" else None)
            found = cache.get(key)
            if found is not None:
                return found
        f = self.features(painting)
        if self.form != "relative":
            stats = {n: losses.gram(f[n], False) for n in self.style_layers}
        else:
            stats = {n: self.stats(n, f[n]) for n in self.style_layers}
        if cache is not None:
            cache.put(key, stats)
        return stats

    def target(self, layer: str, photo: torch.Tensor, paintings: Sequence[dict], blend: Sequence[float],
               mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The style target of one layer: the paintings' statistics (``painting_stats``, at
        this layer) blended by ``blend``, and moved towards the photo's own by
        ``1 - style_strength`` (ours: a target the photo already meets at strength 0, so the
        result goes from the photo to the painting)."""
        target = losses.blend_targets(list(paintings), list(blend), self.kind)
        if self.strength < 1:
            target = losses.blend_targets([self.stats(layer, photo, mask), target],
                                          [1 - self.strength, self.strength], self.kind)
        return target

    def features(self, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
        return features_in(self.net, pixels, self.dtype)

    def __call__(self, pixels: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return self.terms(self.features(pixels), pixels)

    def terms(self, feats: dict[str, torch.Tensor], pixels: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The weighted total and its terms by name, from the features and the pixels."""
        zero = pixels.new_zeros(())
        content = sum((losses.content_loss(feats[n], t, self.form) for n, t in self.content_targets.items()), zero)
        if self.form != "relative":  # the Keras example's unnormalised Grams
            def distance(f, target, mask=None):
                return losses.style_loss(losses.gram(f, False, mask), target, self.form, self.image_pixels)
        else:
            def distance(f, target, mask=None):
                return losses.style_distance(f, target, self.kind, mask)
        if self.layer_masks is None:
            style = sum((self.layer_weights[n] * distance(feats[n], t) for n, t in self.style_targets.items()), zero)
        else:
            style = sum((w * self.layer_weights[n] * distance(feats[n], targets[n], masks[n])
                         for w, targets, masks in zip(self.blend, self.style_targets, self.layer_masks)
                         for n in self.style_layers), zero)
        tv = self.tv_weight * losses.tv_loss(pixels, self.form) if self.tv_weight else zero
        if self.tv_chroma_weight:
            tv = tv + self.tv_chroma_weight * losses.chroma_tv_loss(pixels)
        terms = {"content": self.content_weight * content, "style": self.style_weight * style, "tv": tv}
        for term in self.extra:
            terms[term.name] = term.weight * term.fn(pixels, feats)
        return sum(terms.values(), zero), terms


def style_layer_weights(layers: Sequence[str], spec: BackboneSpec, decay: float) -> dict[str, float]:
    """The style layers' weights w_l (Gatys, Ecker and Bethge 2015, eq. 5) by layer name:
    ``decay ** k`` for the k-th shallowest of the distinct ``layers`` (resolved names of
    ``spec``), scaled to a mean of 1, so that the style weight keeps its meaning. ``decay``
    1 gives exactly 1 each.

    >>> from nstyle.network import BACKBONES
    >>> style_layer_weights(["relu2_1", "relu1_1"], BACKBONES["vgg19"], 0.5)  # 2/3 * (0.5, 1)
    {'relu2_1': 0.6666666666666666, 'relu1_1': 1.3333333333333333}
    """
    order = sorted(set(layers), key=spec.names.index)
    raw = [decay ** k for k in range(len(order))]
    total = sum(raw)
    weights = {n: w * len(raw) / total for n, w in zip(order, raw)}
    return {n: weights[n] for n in layers}


def features_in(net: Backbone, pixels: torch.Tensor, dtype: torch.dtype) -> dict[str, torch.Tensor]:
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

