"""The three terms of Gatys, Ecker and Bethge (2015), as pure functions.

Two forms of each term:

* ``relative`` (nstyle's default): Gram matrices divided by the number of positions, so
  they do not depend on image size; each content and style term divided by the squared
  norm of its target, so every layer starts near 1 and the weights carry over between
  backbones, paintings and sizes; total variation as the mean squared difference of
  neighbouring pixels in [0, 1] units.
* ``keras``: the Keras example's exact formulas (fchollet, keras.io "Neural style
  transfer"): an unnormalised Gram, style ``sum((S - C)^2) / (4 * 3^2 * (rows * cols)^2)``
  with rows and cols the image's (not the layer's) size, content ``sum((F - P)^2)``, and
  total variation ``sum((dx^2 + dy^2)^1.25)`` over the image's 0-255 values.
"""
from __future__ import annotations

import torch


def gram(features: torch.Tensor, normalize: bool = True, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Gram matrix of feature maps: (N, C, H, W) -> (N, C, C).

    ``G[c, d] = sum_p F[c, p] F[d, p]``, divided by H * W when ``normalize``.

    With a ``mask`` (N, 1, H, W) of weights in [0, 1], the guided Gram matrix of Gatys et
    al. 2017 ("Controlling Perceptual Factors in Neural Style Transfer", section 4):
    features weighted by the mask, divided by ``sum(mask^2)`` when ``normalize``, so a
    region's Gram is the average over that region, comparable to a whole painting's.

    >>> gram(torch.ones(1, 2, 2, 2))
    tensor([[[1., 1.],
             [1., 1.]]])
    """
    n, c, h, w = features.shape
    if mask is not None:
        features = features * mask
    # Positions x channels: a view, not a copy, of channels-last feature maps.
    x = features.permute(0, 2, 3, 1).reshape(n, h * w, c)
    g = _Gram.apply(x)
    if not normalize:
        return g
    return g / (mask.pow(2).sum().clamp_min(1e-8) if mask is not None else h * w)


class _Gram(torch.autograd.Function):
    """X^T X for X of shape (N, P, C), with a one-matmul backward.

    Autograd's own backward of bmm(X^T, X) makes two products and adds them; here
    dL/dX = X (dG + dG^T), one product.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return torch.bmm(x.transpose(1, 2), x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return torch.bmm(x, grad + grad.transpose(1, 2))


def squared_error(x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """sum((x - target)^2) as a 0-d tensor."""
    return (x - target).pow(2).sum()


def relative_error(x: torch.Tensor, target: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """sum((x - target)^2) / sum(target^2): the squared error relative to the target's size."""
    return squared_error(x, target) / (target.pow(2).sum() + eps)


def content_loss(features: torch.Tensor, target: torch.Tensor, form: str = "relative") -> torch.Tensor:
    """Content term for one layer: features and target (N, C, H, W) -> 0-d tensor."""
    return relative_error(features, target) if form == "relative" else squared_error(features, target)


def style_loss(gram_x: torch.Tensor, gram_target: torch.Tensor, form: str = "relative",
               image_pixels: int | None = None) -> torch.Tensor:
    """Style term for one layer from two Gram matrices (N, C, C) -> 0-d tensor.

    With ``form='keras'`` the Grams are unnormalised and ``image_pixels`` is rows * cols of
    the input image: the Keras example divides by ``4 * channels^2 * size^2`` with its
    variable ``channels = 3`` (the image's channels, not the layer's).
    """
    if form == "relative":
        return relative_error(gram_x, gram_target)
    if image_pixels is None:
        raise ValueError("the keras style loss needs image_pixels")
    return squared_error(gram_x, gram_target) / (4.0 * 3 ** 2 * float(image_pixels) ** 2)


def tv_loss(image: torch.Tensor, form: str = "relative") -> torch.Tensor:
    """Total variation of an image (N, 3, H, W) in 0-255 units -> 0-d tensor.

    ``relative``: mean over pixels of squared differences to the right and lower
    neighbour, in [0, 1] units. ``keras``: ``sum((dy^2 + dx^2)^1.25)`` over the top-left
    (H-1) x (W-1) pixels, in 0-255 units, as in the Keras example.
    """
    if form == "relative":
        x = image / 255.0
        dy = (x[:, :, 1:, :] - x[:, :, :-1, :]).pow(2).mean()
        dx = (x[:, :, :, 1:] - x[:, :, :, :-1]).pow(2).mean()
        return dx + dy
    a = (image[:, :, :-1, :-1] - image[:, :, 1:, :-1]).pow(2)
    b = (image[:, :, :-1, :-1] - image[:, :, :-1, 1:]).pow(2)
    return (a + b).pow(1.25).sum()
