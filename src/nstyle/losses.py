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



def chroma_tv_loss(image: torch.Tensor) -> torch.Tensor:
    """Total variation of an image's colour alone (N, 3, H, W) in 0-255 -> 0-d tensor.

    Of each difference ``d`` (3 values, [0, 1] units) to the right and lower neighbour, the
    part across the grey axis R = G = B: ``|d|^2 - (d_R + d_G + d_B)^2 / 3``, averaged as
    ``tv_loss`` averages (so ``tv_loss`` = this + the same of the brightness alone).

    Ours, not the paper's: the optimiser leaves fine multicoloured speckle in flat areas
    (skies, walls) that a painting does not have. Weighting the colour part of the total
    variation removes it while brightness edges, the photo's structure, stay as sharp as
    the plain term leaves them (measured in benchmarks/quality.py: fine colour noise 1.62 ->
    1.23 with the edge figure unchanged, where the same weight on the plain term cost 5 %
    of it).

    >>> grey = torch.arange(4.0).view(1, 1, 2, 2).expand(1, 3, 2, 2) * 50  # brightness only
    >>> round(float(chroma_tv_loss(grey)), 9)
    0.0
    >>> red = torch.zeros(1, 3, 2, 2); red[0, 0, :, 1] = 255  # black | red: 2/3 of |d|^2 is colour
    >>> round(float(chroma_tv_loss(red) / tv_loss(red)), 4)
    0.6667
    """
    x = image / 255.0
    total = image.new_zeros(())
    for d in (x[:, :, 1:, :] - x[:, :, :-1, :], x[:, :, :, 1:] - x[:, :, :, :-1]):
        # |d|^2 - (sum d)^2 / 3, computed as the spread about the mean (never below 0)
        total = total + (d - d.mean(1, keepdim=True)).pow(2).mean()
    return total


def temporal_loss(pixels: torch.Tensor, warped: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The short-term temporal loss of Ruder, Dosovitskiy and Brox, "Artistic style transfer
    for videos" (GCPR 2016), eq. (7): ``(1/D) sum_k c_k (x_k - w_k)^2`` with ``D`` the number
    of values (3 H W), ``x`` the image being optimised, ``w`` the previous stylized frame
    warped by the optical flow and ``c`` the per-pixel weight (0 where the flow is
    unreliable, 1 elsewhere). ``pixels`` and ``warped`` (N, 3, H, W) in 0-255, ``mask``
    (N, 1, H, W) in [0, 1].

    Ours: the differences are in [0, 1] units (divided by 255), the convention of the
    relative total variation, so the weight does not depend on the pixel range; the paper
    sums 0-255 values.

    >>> x = torch.full((1, 3, 2, 2), 255.0)
    >>> temporal_loss(x, torch.zeros(1, 3, 2, 2), torch.tensor([1.0, 0, 0, 0]).view(1, 1, 2, 2))
    tensor(0.2500)
    """
    d = (pixels - warped) / 255.0
    return (mask * d * d).sum() / d.numel()

# --- Style statistics beyond the Gram matrix (selected by ``--style-loss``) -----------
#
# Every kind is a pair of pure functions: ``style_target`` measures a painting's features
# once (no grad) into a dict of tensors; ``style_distance`` compares the generated image's
# features with it in the ``relative`` convention (divided by the target's own scale, so
# every layer starts near 1). Masks are the guides of Gatys et al. 2017, section 4.

STYLE_LOSSES = ("gram", "meancov", "histogram", "sliced")
# Most quantiles a histogram or sliced target keeps per channel. Measured on VGG16 features
# of a 384 px painting, a target compared with its own features reads at most 4e-3 with
# 256 (heavy tails fall between quantiles), 4e-4 with 1024, 4e-5 with 4096.
QUANTILES = 1024
SQRT_EPS = 1e-6     # meancov: eigenvalues of S below (SQRT_EPS * (tr C_t + |mu_t|^2))^2 enter linearly


def style_target(features: torch.Tensor, kind: str, mask: torch.Tensor | None = None, *,
                 generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """The statistics of a painting's features at one layer that `style_distance` compares against.

    ``features`` (N, C, H, W), float (channels-last is fine); ``mask`` (N or 1, 1, H, W) of
    weights in [0, 1] restricts the statistics to a region. Computed once, without grad.
    Returns a dict of tensors (so a caller can move it to a device or blend several with
    `blend_targets`), by ``kind``:

    * ``"gram"``: ``gram`` (N, C, C), the normalised (guided) Gram matrix of Gatys et al.
      (see `gram` for how it weighs a mask).
    * ``"meancov"``: ``mean`` (N, C), ``cov`` (N, C, C) and its square root ``cov_sqrt``
      (N, C, C): the Gaussian the Wasserstein-2 distance compares with. A mask weights each
      position by its value.
    * ``"histogram"``: ``quantiles`` (N, C, Q): each channel's sorted values read at Q
      evenly spaced levels from its minimum to its maximum, linear between values, with
      Q = min(QUANTILES, positions) (all of them, exactly, for a small region). A mask
      selects the positions where it is >= 0.5 (a hard region: a sorted set of values has
      no use for fractional weights).
    * ``"sliced"``: ``directions`` (C, D), D = C random unit vectors drawn once from
      ``generator`` (torch's global generator when None), and ``quantiles`` (N, D, Q) of
      the features projected on them; masks as for ``"histogram"``.

    >>> t = style_target(torch.tensor([1., 5., 1., 5.]).view(1, 1, 2, 2), "meancov")
    >>> t["mean"], t["cov"], t["cov_sqrt"]
    (tensor([[3.]]), tensor([[[4.]]]), tensor([[[2.]]]))
    >>> style_target(torch.tensor([3., 1., 2., 5.]).view(1, 1, 2, 2), "histogram")["quantiles"]
    tensor([[[1., 2., 3., 5.]]])
    """
    _check_style_args(features, kind, mask)
    with torch.no_grad():
        if kind == "gram":
            return {"gram": gram(features, True, mask)}
        if kind == "meancov":
            mean, cov = _moments(features, mask)
            return {"mean": mean, "cov": cov, "cov_sqrt": _sqrt_psd(cov)}
        columns = _columns(features, mask)
        target = {}
        if kind == "sliced":
            c = features.shape[1]
            device = generator.device if generator is not None else features.device
            # Drawn once, here, so the objective is a fixed function (L-BFGS's line search
            # needs one); Heitz et al. draw new directions at every step instead.
            d = torch.randn(c, c, generator=generator, device=device, dtype=torch.float32)
            target["directions"] = (d / d.norm(dim=0)).to(features.device, features.dtype)
            columns = [target["directions"].T @ x for x in columns]
        counts = [x.shape[-1] for x in columns]
        if min(counts) == 0:
            raise ValueError("the mask selects no position (no weight >= 0.5)")
        q = min(QUANTILES, *counts)
        target["quantiles"] = torch.stack([_resample(x.sort(-1).values, q) for x in columns])
        return target


def style_distance(features: torch.Tensor, target: dict[str, torch.Tensor], kind: str,
                   mask: torch.Tensor | None = None) -> torch.Tensor:
    """How far the features' statistics are from ``target``'s, relative to the target's scale: 0-d.

    ``features`` (N, C, H, W) and ``mask`` as in `style_target`; a target of batch 1
    serves any N. Differentiable with respect to ``features``. By ``kind``:

    * ``"gram"``: ``relative_error`` of the normalised Grams; exactly the ``relative``
      ``style_loss`` of the two Grams (Gatys, Ecker and Bethge 2015).
    * ``"meancov"``: the squared Wasserstein-2 distance between the Gaussians with the
      features' and the target's mean and covariance (Dowson and Landau 1982; Givens and
      Shortt 1984), used for style by Mroueh 2019 ("Wasserstein Style Transfer") and by
      crowsonkb/style-transfer-pytorch's ``StyleLossW2``::

          W2^2 = |mu - mu_t|^2 + tr C + tr C_t - 2 tr (C_t^1/2 C C_t^1/2)^1/2

      divided by ``tr C_t + |mu_t|^2`` (the target's mean square). The eigenvalues are
      taken in float64 (crowsonkb iterates Newton-Schulz in float32 on C + 1e-4 I); those
      of S = C_t^1/2 C C_t^1/2 below (SQRT_EPS * that scale)^2 enter linearly, not by
      their root, so the gradient stays finite when C is singular.
    * ``"histogram"``: Risser, Wilmot and Barnes 2017 ("Stable and Controllable Neural
      Texture Synthesis and Style Transfer Using Histogram Losses"): mean of
      ``|f - R(f)|^2``, R(f) the features remapped channel by channel onto the target's
      quantiles (resampled to the features' count) in the order of f's ranks and held
      constant; divided by the mean square of the target's quantiles.
    * ``"sliced"``: Heitz, Vanhoey, Chambon and Belcour 2021 ("A Sliced Wasserstein Loss
      for Neural Texture Synthesis"): the features projected on the target's directions,
      sorted, against the target's sorted projections resampled to the features' count;
      mean squared difference, divided by the mean square of the target's projections.

    For histogram and sliced a region without a position (mask nowhere >= 0.5) adds 0.

    >>> t = style_target(torch.tensor([1., 5., 1., 5.]).view(1, 1, 2, 2), "meancov")
    >>> x = torch.tensor([1., 3., 1., 3.]).view(1, 1, 2, 2)  # mean 2, std 1 against 3, 2
    >>> style_distance(x, t, "meancov")  # ((2 - 3)^2 + (1 - 2)^2) / (2^2 + 3^2) = 2 / 13
    tensor(0.1538)
    """
    _check_style_args(features, kind, mask)
    n = features.shape[0]
    if kind == "gram":
        return relative_error(gram(features, True, mask), target["gram"])
    if kind == "meancov":
        mean, cov = (_f64(t) for t in _moments(features, mask))
        t_mean, t_cov, t_sqrt = (_f64(target[k]).expand(n, *target[k].shape[1:]) for k in ("mean", "cov", "cov_sqrt"))
        t_trace = t_cov.diagonal(dim1=-2, dim2=-1).sum(-1)
        scale = t_trace + t_mean.pow(2).sum(-1)                                    # (N,)
        lam = torch.linalg.eigvalsh(t_sqrt @ cov @ t_sqrt)
        # tr S^1/2 as the sum of the roots of S's eigenvalues; below the floor the root
        # becomes the chord lam / sqrt(floor): 0 at 0 and of finite slope, where sqrt's is
        # infinite (S is singular wherever a channel is dead or C exceeds the positions).
        floor = (SQRT_EPS * scale).pow(2).unsqueeze(-1)
        root_trace = (lam * lam.clamp_min(floor).rsqrt()).sum(-1)
        w2 = (mean - t_mean).pow(2).sum(-1) + cov.diagonal(dim1=-2, dim2=-1).sum(-1) + t_trace - 2 * root_trace
        return (w2.sum() / (scale.sum() + 1e-8)).to(features.device, features.dtype)
    columns = _columns(features, mask)
    if kind == "sliced":
        directions = target["directions"].to(features.dtype)
        columns = [directions.T @ x for x in columns]
    quantiles = target["quantiles"].expand(n, -1, -1)
    error = features.new_zeros(())
    for x, q in zip(columns, quantiles):
        # sum (sort(x) - target)^2 is sum (x - R(x))^2 with R(x) held constant: R puts the
        # target's values in x's rank order, and sorting is a permutation. The gradient is
        # 2 (x - R(x)) either way.
        error = error + (x.sort(-1).values - _resample(q, x.shape[-1])).pow(2).sum()
    count = max(1, sum(x.numel() for x in columns))
    return error / count / (quantiles.pow(2).mean() + 1e-8)


def blend_targets(targets: list[dict[str, torch.Tensor]], weights: list[float], kind: str) -> dict[str, torch.Tensor]:
    """One target for a mixture of styles: style k's share of the mixture is weights[k] / sum(weights).

    * ``"gram"``: the weighted mean of the Grams (the mixture's second moment).
    * ``"meancov"``: the mixture's moments, ``mu = sum w_k mu_k`` and
      ``C = sum w_k (C_k + mu_k mu_k^T) - mu mu^T``, and C's square root.
    * ``"histogram"``, ``"sliced"``: the mixture's quantiles. Each style's Q_k quantiles
      are samples of mass w_k / Q_k; pooled and sorted, each sits at the middle of its
      cumulative mass, and the curve through them (linear between, constant beyond) is
      read at m = min(QUANTILES, sum Q_k) levels (j + 0.5) / m. Equal masses give the
      pooled samples back exactly. Sliced targets must share their directions (make them
      with generators seeded alike).

    With weights equal to the styles' pixel shares, the blend is the target of the styles'
    features laid side by side (for histogram and sliced: while they hold at most
    QUANTILES positions; beyond, close to it). The optimiser's present way of mixing
    styles, a weighted sum of per-style losses, is a different objective.

    >>> a = {"gram": torch.tensor([[[2.]]])}; b = {"gram": torch.tensor([[[4.]]])}
    >>> blend_targets([a, b], [1.0, 3.0], "gram")
    {'gram': tensor([[[3.5000]]])}
    """
    _check_kind(kind)
    if not targets or len(targets) != len(weights):
        raise ValueError(f"{len(weights)} weights for {len(targets)} style targets")
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(f"blend weights must be >= 0 with a positive sum, not {list(weights)}")
    # Styles of weight 0 drop out (an atom of no mass would still bend the quantile curve).
    kept = [(t, w / sum(weights)) for t, w in zip(targets, weights) if w > 0]
    with torch.no_grad():
        if kind == "gram":
            return {"gram": sum(w * t["gram"] for t, w in kept)}
        if kind == "meancov":
            like = kept[0][0]["cov"]
            means = [_f64(t["mean"]) for t, _ in kept]
            mean = sum(w * mu for (_, w), mu in zip(kept, means))
            second = sum(w * (_f64(t["cov"]) + _outer(mu)) for (t, w), mu in zip(kept, means))
            cov = (second - _outer(mean)).to(like.device, like.dtype)
            return {"mean": mean.to(like.device, like.dtype), "cov": cov, "cov_sqrt": _sqrt_psd(cov)}
        blended = {}
        if kind == "sliced":
            directions = kept[0][0]["directions"]
            if any(not torch.equal(t["directions"], directions) for t, _ in kept):
                raise ValueError("sliced targets to blend must share their directions (seed their generators alike)")
            blended["directions"] = directions
        blended["quantiles"] = _mix_quantiles([t["quantiles"] for t, _ in kept], [w for _, w in kept])
        return blended


def _check_kind(kind: str) -> None:
    if kind not in STYLE_LOSSES:
        raise ValueError(f"unknown style loss {kind!r}: choose one of {', '.join(STYLE_LOSSES)}")


def _check_style_args(features: torch.Tensor, kind: str, mask: torch.Tensor | None) -> None:
    _check_kind(kind)
    if features.dim() != 4:
        raise ValueError(f"features must be (N, C, H, W), not {tuple(features.shape)}")
    if mask is not None and (mask.dim() != 4 or mask.shape[1] != 1 or mask.shape[-2:] != features.shape[-2:]
                             or mask.shape[0] not in (1, features.shape[0])):
        raise ValueError(f"a mask for features {tuple(features.shape)} must be (N or 1, 1, H, W), "
                         f"not {tuple(mask.shape)}")


def _outer(v: torch.Tensor) -> torch.Tensor:
    """v v^T for vectors (..., C) -> (..., C, C)."""
    return v.unsqueeze(-1) * v.unsqueeze(-2)


def _f64(x: torch.Tensor) -> torch.Tensor:
    """x in float64, moved to the CPU from a device without float64 (Apple's MPS)."""
    return x.to("cpu" if x.device.type == "mps" else x.device, torch.float64)


def _moments(features: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (N, C) and covariance (N, C, C) over positions, weighted by ``mask`` (N, 1, H, W).

    The weights are divided by their sum; the covariance is the population one (divided by
    the total weight, not by one less).
    """
    n, c, h, w = features.shape
    x = features.permute(0, 2, 3, 1).reshape(n, h * w, c)      # a view when channels-last
    if mask is None:
        mean = x.mean(1)
        return mean, _Gram.apply(x - mean.unsqueeze(1)) / (h * w)
    weight = mask.expand(n, 1, h, w).reshape(n, h * w, 1)
    weight = weight / weight.sum(1, keepdim=True).clamp_min(1e-8)
    mean = (weight * x).sum(1)
    return mean, _Gram.apply((x - mean.unsqueeze(1)) * weight.sqrt())


def _sqrt_psd(cov: torch.Tensor) -> torch.Tensor:
    """Square root of symmetric positive semi-definite matrices (..., C, C), through float64 eigh.

    Eigenvalues below 0 (rounding) count as 0. Returns cov's dtype and device.
    """
    values, vectors = torch.linalg.eigh(_f64(cov))
    root = (vectors * values.clamp_min(0).sqrt().unsqueeze(-2)) @ vectors.mT
    return root.to(cov.device, cov.dtype)


def _columns(features: torch.Tensor, mask: torch.Tensor | None) -> list[torch.Tensor]:
    """Each image's features (C, P) at the positions where ``mask`` >= 0.5 (all without a mask)."""
    n, _, h, w = features.shape
    x = features.flatten(2)
    if mask is None:
        # Contiguous rows: sorting along a strided (channels-last) row is about 2x slower.
        return [xb.contiguous() for xb in x.unbind(0)]
    keep = (mask >= 0.5).expand(n, 1, h, w).flatten(1)
    return [xb[:, kb] for xb, kb in zip(x.unbind(0), keep.unbind(0))]


def _resample(quantiles: torch.Tensor, m: int) -> torch.Tensor:
    """Sorted values (..., n), read at m evenly spaced levels from the first to the last.

    Value i sits at level i / (n - 1) and the curve is linear between neighbours (numpy's
    default ``quantile`` rule), so the smallest and largest values are kept; the identity
    for m == n; a single level reads the middle. Index arithmetic in integers, exact for
    any count.

    >>> _resample(torch.tensor([0., 10., 20., 30.]), 3)
    tensor([ 0., 15., 30.])
    """
    n = quantiles.shape[-1]
    if m == n:
        return quantiles
    if n == 1:
        return quantiles.expand(*quantiles.shape[:-1], m)
    # Level j / (m - 1) sits at index j (n - 1) / (m - 1) = num / den.
    j = torch.arange(m, device=quantiles.device)
    num, den = (j * (n - 1), m - 1) if m > 1 else (j + n - 1, 2)
    lo = torch.div(num, den, rounding_mode="floor").clamp(max=n - 2)
    frac = (num - lo * den).to(quantiles.dtype) / den
    a, b = quantiles[..., lo], quantiles[..., lo + 1]
    return a + frac * (b - a)


def _mix_quantiles(quantiles: list[torch.Tensor], weights: list[float]) -> torch.Tensor:
    """The quantiles of a mixture: sets (N, C, Q_k) with shares w_k -> (N, C, min(QUANTILES, sum Q_k))."""
    like = quantiles[0]
    values = _f64(torch.cat(quantiles, -1))
    if values.shape[-1] == 1:
        return like
    mass = torch.cat([torch.full((q.shape[-1],), w / q.shape[-1], dtype=torch.float64, device=values.device)
                      for q, w in zip(quantiles, weights)])
    values, order = values.sort(-1)
    mass = mass.expand(values.shape).gather(-1, order)
    level = mass.cumsum(-1) - mass / 2                         # each atom at the middle of its mass
    m = min(QUANTILES, values.shape[-1])
    wanted = ((torch.arange(m, dtype=torch.float64, device=values.device) + 0.5) / m).expand(*values.shape[:-1], m)
    return interp(wanted, level, values).to(like.device, like.dtype)


def interp(x: torch.Tensor, xp: torch.Tensor, fp: torch.Tensor) -> torch.Tensor:
    """numpy.interp over the last dimension, batched: the piecewise-linear curve through
    (xp, fp), xp increasing (..., n), read at x (..., m); constant beyond the ends.

    >>> interp(torch.tensor([-1., 0.5, 1.5, 9.]), torch.tensor([0., 1., 2.]), torch.tensor([0., 10., 40.]))
    tensor([ 0.,  5., 25., 40.])
    """
    hi = torch.searchsorted(xp.contiguous(), x.contiguous()).clamp(1, xp.shape[-1] - 1)
    lo = hi - 1
    x0, x1 = xp.gather(-1, lo), xp.gather(-1, hi)
    frac = ((x - x0) / (x1 - x0).clamp_min(torch.finfo(xp.dtype).tiny)).clamp(0, 1)
    y0, y1 = fp.gather(-1, lo), fp.gather(-1, hi)
    return y0 + frac * (y1 - y0)
