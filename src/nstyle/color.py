"""Colour preservation after Gatys, Bethge, Hertzmann and Shechtman, "Preserving Color in
Neural Artistic Style Transfer" (2016). Pure functions on (3, H, W) RGB tensors in [0, 1].

* ``luminance``: style transfer on luminance only. Both images go to YIQ; the painting's
  luminance is matched to the photo's mean and standard deviation (the paper's eq. 1);
  the optimisation runs on luminance images; the result's luminance is combined with the
  photo's I and Q channels.
* ``histogram``: the painting's colours are mapped to the photo's colour distribution by
  an affine map x -> A x + b that matches mean and covariance (the paper's section 2.1,
  with the symmetric square roots of the covariances, the "image analogies" variant),
  before the transfer.
"""
from __future__ import annotations

import torch

# NTSC YIQ, as the paper uses: Y is luminance, I and Q carry the colour.
_RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114],
                            [0.596, -0.274, -0.322],
                            [0.211, -0.523, 0.312]], dtype=torch.float64)
_YIQ_TO_RGB = torch.linalg.inv(_RGB_TO_YIQ)


def _apply(matrix: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    return torch.einsum("ij,jhw->ihw", matrix.to(image), image)


def rgb_to_yiq(image: torch.Tensor) -> torch.Tensor:
    """(3, H, W) RGB -> (3, H, W) YIQ."""
    return _apply(_RGB_TO_YIQ, image)


def yiq_to_rgb(image: torch.Tensor) -> torch.Tensor:
    """(3, H, W) YIQ -> (3, H, W) RGB (not clamped)."""
    return _apply(_YIQ_TO_RGB, image)


def luminance(image: torch.Tensor) -> torch.Tensor:
    """(3, H, W) RGB -> (1, H, W) luminance Y."""
    return rgb_to_yiq(image)[:1]


def match_luminance(style: torch.Tensor, content: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """The style's luminance (1, H, W) shifted and scaled to the content's mean and std."""
    ls, lc = luminance(style), luminance(content)
    return (ls - ls.mean()) * (lc.std() / (ls.std() + eps)) + lc.mean()


def as_gray_rgb(y: torch.Tensor) -> torch.Tensor:
    """(1, H, W) luminance -> (3, H, W) with R = G = B = Y, for the network."""
    return y.expand(3, -1, -1).clamp(0, 1)


def combine_luminance(result: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """The result's luminance with the content's I and Q: (3, H, W) RGB in [0, 1]."""
    yiq = rgb_to_yiq(content)
    yiq = torch.cat([luminance(result), yiq[1:]])
    return yiq_to_rgb(yiq).clamp(0, 1)


def _sqrtm(cov: torch.Tensor, inverse: bool = False, eps: float = 1e-5) -> torch.Tensor:
    values, vectors = torch.linalg.eigh(cov)
    values = values.clamp_min(eps)
    return vectors @ torch.diag(values.pow(-0.5 if inverse else 0.5)) @ vectors.T


def color_stats(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean (3, 1) and covariance (3, 3) of an image's RGB colours, in float64."""
    x = image.reshape(3, -1).double()
    # (one pixel has no spread: its covariance is 0, not the NaN of an unbiased estimate)
    return x.mean(1, keepdim=True), torch.cov(x, correction=1 if x.shape[1] > 1 else 0)


def mixture_stats(images: list[torch.Tensor], weights: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """The colour mean and covariance of a mixture of images, image k a share weights[k] / sum."""
    total = sum(weights)
    stats = [(w / total, *color_stats(im)) for im, w in zip(images, weights)]
    mean = sum(w * mu for w, mu, _ in stats)
    second = sum(w * (cov + mu @ mu.T) for w, mu, cov in stats)
    return mean, second - mean @ mean.T


def match_colors(image: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor) -> torch.Tensor:
    """The image (3, H, W) mapped to colour mean ``mean`` and covariance ``cov``, in [0, 1].

    x' = A (x - mu_x) + mean with A = cov^(1/2) Sigma_x^(-1/2) (the paper's section 2.1,
    symmetric square roots).
    """
    x = image.reshape(3, -1).double()
    mu_x, cov_x = color_stats(image)
    a = _sqrtm(cov) @ _sqrtm(cov_x, inverse=True)
    out = a @ (x - mu_x) + mean
    return out.reshape(image.shape).to(image.dtype).clamp(0, 1)


def match_histogram(style: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """The style (3, H, W) with the content's colour mean and covariance, in [0, 1].

    x' = A (x - mu_s) + mu_c with A = Sigma_c^(1/2) Sigma_s^(-1/2).
    """
    return match_colors(style, *color_stats(content))
