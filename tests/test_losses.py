"""The loss terms against values worked out by hand, and a float64 gradient check."""
import pytest
import torch

from nstyle import losses


def test_gram_by_hand():
    # Two channels over four positions: F = [[1, 2, 0, 1], [0, 1, 3, 1]].
    f = torch.tensor([[1.0, 2, 0, 1], [0, 1, 3, 1]]).view(1, 2, 2, 2)
    # G = F F^T = [[1+4+0+1, 0+2+0+1], [3, 0+1+9+1]] = [[6, 3], [3, 11]].
    assert torch.equal(losses.gram(f, normalize=False), torch.tensor([[[6.0, 3], [3, 11]]]))
    assert torch.allclose(losses.gram(f), torch.tensor([[[1.5, 0.75], [0.75, 2.75]]]))


def test_gram_is_size_invariant_when_normalized():
    # Tiling a feature map repeats every position: the normalised Gram is unchanged.
    f = torch.rand(1, 3, 4, 5)
    tiled = f.repeat(1, 1, 2, 3)
    assert torch.allclose(losses.gram(f), losses.gram(tiled), atol=1e-6)
    assert torch.allclose(losses.gram(tiled, normalize=False), 6 * losses.gram(f, normalize=False), atol=1e-5)


def test_content_loss_by_hand():
    x = torch.tensor([1.0, 2, 3, 4]).view(1, 1, 2, 2)
    t = torch.tensor([1.0, 0, 3, 2]).view(1, 1, 2, 2)
    # Squared error: 0 + 4 + 0 + 4 = 8; target's squared norm: 1 + 0 + 9 + 4 = 14.
    assert losses.content_loss(x, t, "keras").item() == 8.0
    assert losses.content_loss(x, t, "relative").item() == pytest.approx(8 / 14)
    assert losses.content_loss(t, t).item() == 0.0


def test_style_loss_by_hand():
    a = torch.tensor([[[6.0, 3], [3, 11]]])
    b = torch.tensor([[[4.0, 3], [2, 11]]])
    # Squared difference: 4 + 0 + 1 + 0 = 5; |a|^2 = 36 + 9 + 9 + 121 = 175.
    assert losses.style_loss(b, a).item() == pytest.approx(5 / 175)
    # Keras: 5 / (4 * 3^2 * (rows * cols)^2) with rows * cols = 10 pixels.
    assert losses.style_loss(b, a, "keras", image_pixels=10).item() == pytest.approx(5 / (4 * 9 * 100))
    with pytest.raises(ValueError):
        losses.style_loss(b, a, "keras")


def test_tv_loss_by_hand():
    # One channel pattern repeated on 3 channels, in 0-255 units.
    p = torch.tensor([[0.0, 255.0], [255.0, 255.0]])
    img = p.expand(1, 3, 2, 2)
    # relative, in [0, 1] units: horizontal diffs (1, 0) -> mean of squares 0.5; vertical
    # diffs (1, 0) -> 0.5; total 1.0.
    assert losses.tv_loss(img).item() == pytest.approx(1.0)
    # keras: only the top-left pixel has both neighbours: a = b = 255^2 on each of the
    # 3 channels, (a + b)^1.25 summed.
    assert losses.tv_loss(img, "keras").item() == pytest.approx(3 * (2 * 255.0 ** 2) ** 1.25, rel=1e-6)
    assert losses.tv_loss(torch.full((1, 3, 5, 4), 7.0)).item() == 0.0


def test_chroma_tv_is_the_colour_part_of_the_total_variation():
    # Grey steps have no colour part; a step of one channel alone has 2/3 of its square
    # across the grey axis ((1, 0, 0) minus its mean 1/3: 4/9 + 1/9 + 1/9).
    grey = torch.tensor([[0.0, 255.0], [255.0, 255.0]]).expand(1, 3, 2, 2)
    assert losses.chroma_tv_loss(grey).item() == pytest.approx(0.0, abs=1e-12)
    red = torch.zeros(1, 3, 2, 2)
    red[0, 0, 0, 1] = 255.0  # one red pixel: a horizontal and a vertical step of (1, 0, 0)
    # each direction: 2/3 of the square in one of the 3 x 2 (channel, position) values -> 1/9
    assert losses.chroma_tv_loss(red).item() == pytest.approx(2 * (2 / 3) / 6)
    # The brightness part and the colour part add up to the plain term, on any image.
    torch.manual_seed(0)
    x = torch.rand(2, 3, 6, 7) * 255
    luma = x.mean(1, keepdim=True).expand_as(x)  # the projection on the grey axis
    assert (losses.chroma_tv_loss(x) + losses.tv_loss(luma)).item() == pytest.approx(losses.tv_loss(x).item(), rel=1e-5)
    x64 = torch.rand(1, 3, 4, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: losses.chroma_tv_loss(x * 255.0), (x64,), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("form", ["relative", "keras"])
def test_gradients_float64(form):
    torch.manual_seed(0)
    target = torch.rand(1, 3, 4, 4, dtype=torch.float64)
    gram_target = losses.gram(torch.rand(1, 3, 4, 4, dtype=torch.float64), form == "relative")
    x = torch.rand(1, 3, 4, 4, dtype=torch.float64)

    def objective(x):
        return (losses.content_loss(x, target, form)
                + losses.style_loss(losses.gram(x, form == "relative"), gram_target, form, image_pixels=16)
                + losses.tv_loss(x * 255.0 + 1.0, form) * 1e-6)

    assert torch.autograd.gradcheck(objective, (x.requires_grad_(),), eps=1e-6, atol=1e-5)


def test_guided_gram_is_the_regions_own_gram():
    f = torch.rand(1, 3, 4, 6)
    mask = torch.zeros(1, 1, 4, 6)
    mask[..., :, :2] = 1.0  # the left third
    # A hard mask: the normalised Gram of the region's features alone.
    assert torch.allclose(losses.gram(f, mask=mask), losses.gram(f[..., :, :2]), atol=1e-6)
    # A uniform mask of any strength is the plain Gram.
    assert torch.allclose(losses.gram(f, mask=torch.full((1, 1, 4, 6), 0.5)), losses.gram(f), atol=1e-6)


# --- Style statistics beyond the Gram matrix: style_target / style_distance / blend_targets

def _seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _distance(x, t, kind, mask=None, target_mask=None):
    """Distance of x's statistics from t's, the sliced directions drawn from one fixed seed."""
    return losses.style_distance(x, losses.style_target(t, kind, target_mask, generator=_seeded()), kind, mask)


@pytest.mark.parametrize("kind", losses.STYLE_LOSSES)
def test_style_distance_is_zero_only_at_the_targets_own_features(kind):
    torch.manual_seed(0)
    t = torch.relu(torch.randn(1, 4, 5, 6))
    assert abs(_distance(t, t, kind).item()) < 1e-6
    assert _distance(torch.relu(torch.randn(1, 4, 5, 6)), t, kind).item() > 1e-2
    mask = (torch.rand(1, 1, 5, 6) > 0.5).float()
    assert abs(_distance(t, t, kind, mask, mask).item()) < 1e-6


@pytest.mark.parametrize("kind", losses.STYLE_LOSSES)
def test_style_distance_of_scaled_features(kind):
    # Features 1.5 times the target's: every statistic but the Gram scales by 1.5, so the
    # relative distance is (1.5 - 1)^2 (meancov: |0.5 mu|^2 + 0.5^2 tr C over |mu|^2 + tr C;
    # histogram and sliced: sorted values 1.5 times the target's). The Gram scales by 1.5^2.
    t = torch.rand(1, 3, 4, 4, generator=_seeded(1))
    expected = (1.5 ** 2 - 1) ** 2 if kind == "gram" else 0.25
    assert _distance(1.5 * t, t, kind).item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("mask", [False, True])
def test_gram_kind_is_exactly_the_existing_style_loss(mask):
    x, t = torch.rand(1, 3, 4, 6, generator=_seeded(0)), torch.rand(1, 3, 4, 6, generator=_seeded(1))
    m = torch.rand(1, 1, 4, 6, generator=_seeded(2)) if mask else None
    target = losses.style_target(t, "gram", m)
    assert torch.equal(target["gram"], losses.gram(t, True, m))
    expected = losses.style_loss(losses.gram(x, True, m), losses.gram(t, True, m), "relative")
    assert torch.equal(losses.style_distance(x, target, "gram", m), expected)


def test_meancov_by_hand():
    # One channel: t = [1, 5, 1, 5] (mean 3, std 2), x = [1, 3, 1, 3] (mean 2, std 1).
    # W2^2 = (2 - 3)^2 + (1 - 2)^2 = 2, over the target's mean square 2^2 + 3^2 = 13.
    t = torch.tensor([1.0, 5, 1, 5]).view(1, 1, 2, 2)
    x = torch.tensor([1.0, 3, 1, 3]).view(1, 1, 2, 2)
    assert _distance(x, t, "meancov").item() == pytest.approx(2 / 13)
    # Two uncorrelated channels add up. Second channel: target [0, 0, 2, 2] (mean 1, std 1),
    # x constant 1 (mean 1, std 0: a singular covariance): W2^2 = 0 + (0 - 1)^2 = 1.
    # Total (2 + 1) / (4 + 9 + 1 + 1) = 3 / 15.
    t2 = torch.cat([t, torch.tensor([0.0, 0, 2, 2]).view(1, 1, 2, 2)], 1)
    x2 = torch.cat([x, torch.ones(1, 1, 2, 2)], 1)
    assert _distance(x2, t2, "meancov").item() == pytest.approx(3 / 15)


def test_histogram_by_hand():
    t = torch.tensor([10.0, 40, 20, 30]).view(1, 1, 2, 2)
    x = torch.tensor([3.0, 1, 2, 5]).view(1, 1, 2, 2)
    assert torch.equal(losses.style_target(t, "histogram")["quantiles"], torch.tensor([[[10.0, 20, 30, 40]]]))
    # x's ranks (2, 0, 1, 3) take the target's values: R(x) = [30, 10, 20, 40]; squared
    # differences 27^2 + 9^2 + 18^2 + 35^2 = 2359, mean 589.75; target's mean square 750.
    assert _distance(x, t, "histogram").item() == pytest.approx(589.75 / 750)
    # Three positions against four values: the target read at levels 0, 1/2, 1 is
    # [10, 25, 40]; x = [0, 1, 2] -> (100 + 576 + 1444) / 3 over 750.
    x3 = torch.tensor([0.0, 1, 2]).view(1, 1, 1, 3)
    assert _distance(x3, t, "histogram").item() == pytest.approx(2120 / 3 / 750)


def test_sliced_by_hand():
    # One channel: the one direction is +1 or -1 and either gives the histogram distance.
    t = torch.tensor([10.0, 40, 20, 30]).view(1, 1, 2, 2)
    x = torch.tensor([3.0, 1, 2, 5]).view(1, 1, 2, 2)
    for seed in range(4):
        target = losses.style_target(t, "sliced", generator=_seeded(seed))
        assert target["directions"].abs().item() == 1.0
        assert losses.style_distance(x, target, "sliced").item() == pytest.approx(589.75 / 750)


def test_sliced_directions_are_fixed_unit_vectors_from_the_generator():
    t = torch.rand(1, 5, 3, 3, generator=_seeded(0))
    a = losses.style_target(t, "sliced", generator=_seeded(7))
    b = losses.style_target(t, "sliced", generator=_seeded(7))
    assert a["directions"].shape == (5, 5) and a["quantiles"].shape == (1, 5, 9)
    assert torch.allclose(a["directions"].norm(dim=0), torch.ones(5))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["directions"], losses.style_target(t, "sliced", generator=_seeded(8))["directions"])


@pytest.mark.parametrize("kind", ["meancov", "histogram", "sliced"])
def test_distribution_kinds_ignore_where_values_are(kind):
    t, x = torch.rand(1, 3, 4, 5, generator=_seeded(0)), torch.rand(1, 3, 4, 5, generator=_seeded(1))
    shuffled = x.flatten(2)[..., torch.randperm(20, generator=_seeded(2))].view(1, 3, 4, 5)
    assert _distance(shuffled, t, kind).item() == pytest.approx(_distance(x, t, kind).item(), rel=1e-5)


def test_meancov_sees_only_mean_and_covariance():
    # Reflecting the features through their mean (2 mu - x) keeps mean and covariance but
    # flips the distribution's skew: meancov cannot tell, histogram can.
    x = torch.rand(1, 2, 4, 4, generator=_seeded(1)) ** 3
    reflected = 2 * x.mean((2, 3), keepdim=True) - x
    assert abs(_distance(reflected, x, "meancov").item()) < 1e-6
    assert _distance(reflected, x, "histogram").item() > 1e-2
    t = torch.rand(1, 2, 4, 4, generator=_seeded(0))
    assert _distance(reflected, t, "meancov").item() == pytest.approx(_distance(x, t, "meancov").item(), rel=1e-5)


@pytest.mark.parametrize("kind", losses.STYLE_LOSSES)
def test_style_masks(kind):
    t, x = torch.rand(1, 3, 4, 6, generator=_seeded(0)), torch.rand(1, 3, 4, 6, generator=_seeded(1))
    ones = torch.ones(1, 1, 4, 6)
    assert _distance(x, t, kind, ones, ones).item() == pytest.approx(_distance(x, t, kind).item(), rel=1e-6)
    # Gram and meancov weigh positions by the mask: a uniform weight is no mask at all.
    if kind in ("gram", "meancov"):
        assert _distance(x, t, kind, 0.3 * ones, 0.7 * ones).item() == pytest.approx(
            _distance(x, t, kind).item(), rel=1e-5)
    # A mask over the left half: the statistics of the left halves alone.
    left = torch.zeros(1, 1, 4, 6)
    left[..., :3] = 1.0
    assert _distance(x, t, kind, left, left).item() == pytest.approx(
        _distance(x[..., :3], t[..., :3], kind).item(), rel=1e-5)


def test_histogram_masks_keep_positions_at_or_above_one_half():
    t, x = torch.rand(1, 2, 4, 6, generator=_seeded(0)), torch.rand(1, 2, 4, 6, generator=_seeded(1))
    soft = torch.full((1, 1, 4, 6), 0.4)
    soft[..., :3] = 0.5  # the threshold itself counts
    for kind in ("histogram", "sliced"):
        assert _distance(x, t, kind, soft, soft).item() == pytest.approx(
            _distance(x[..., :3], t[..., :3], kind).item(), rel=1e-5)
    with pytest.raises(ValueError, match="no position"):
        losses.style_target(t, "histogram", torch.zeros(1, 1, 4, 6))


@pytest.mark.parametrize("kind", losses.STYLE_LOSSES)
def test_style_distance_channels_last(kind):
    t, x = torch.rand(1, 3, 4, 5, generator=_seeded(0)), torch.rand(1, 3, 4, 5, generator=_seeded(1))
    cl = x.to(memory_format=torch.channels_last)
    assert _distance(cl, t, kind).item() == pytest.approx(_distance(x, t, kind).item(), rel=1e-6)


@pytest.mark.parametrize("kind", ["meancov", "histogram", "sliced"])
def test_a_target_of_one_image_serves_a_batch(kind):
    t, x = torch.rand(1, 3, 4, 5, generator=_seeded(0)), torch.rand(1, 3, 4, 5, generator=_seeded(1))
    assert _distance(torch.cat([x, x]), t, kind).item() == pytest.approx(_distance(x, t, kind).item(), rel=1e-6)


@pytest.mark.parametrize("kind", ["meancov", "histogram", "sliced"])
def test_style_distance_gradients_float64(kind):
    t = torch.rand(1, 2, 4, 4, dtype=torch.float64, generator=_seeded(0))   # 16 positions against 9
    target = losses.style_target(t, kind, generator=_seeded(1))
    x = torch.rand(1, 2, 3, 3, dtype=torch.float64, generator=_seeded(2)).requires_grad_()
    assert torch.autograd.gradcheck(lambda x: losses.style_distance(x, target, kind), (x,), eps=1e-6, atol=1e-6)


def test_histogram_gradient_is_the_remap_difference():
    # With R(x) held constant the gradient of mean |x - R(x)|^2 / s is 2 (x - R(x)) / (n s).
    t = torch.tensor([10.0, 40, 20, 30], dtype=torch.float64).view(1, 1, 2, 2)
    x = torch.tensor([3.0, 1, 2, 5], dtype=torch.float64).view(1, 1, 2, 2).requires_grad_()
    losses.style_distance(x, losses.style_target(t, "histogram"), "histogram").backward()
    remapped = torch.tensor([30.0, 10, 20, 40], dtype=torch.float64).view(1, 1, 2, 2)
    assert torch.allclose(x.grad, 2 * (x.detach() - remapped) / (4 * 750))


@pytest.mark.parametrize("kind", losses.STYLE_LOSSES)
def test_blend_of_one_style_is_that_style(kind):
    target = losses.style_target(torch.rand(1, 3, 4, 5, generator=_seeded(0)), kind, generator=_seeded(1))
    blended = losses.blend_targets([target], [2.0], kind)
    assert blended.keys() == target.keys()
    assert all(torch.allclose(blended[k], target[k], atol=1e-6) for k in target)


@pytest.mark.parametrize("kind", losses.STYLE_LOSSES)
def test_blend_with_pixel_shares_is_the_styles_side_by_side(kind):
    # Styles of 4 x 2 and 4 x 6 positions, weighted 1 : 3 (their pixel shares): the blend is
    # the target of the two laid side by side (mean and covariance of the pooled features
    # for meancov; their pooled sorted values for histogram and sliced).
    a = torch.rand(1, 3, 4, 2, generator=_seeded(0))
    b = torch.rand(1, 3, 4, 6, generator=_seeded(1)) * 2 + 1
    targets = [losses.style_target(s, kind, generator=_seeded(2)) for s in (a, b)]
    blended = losses.blend_targets(targets, [1.0, 3.0], kind)
    pooled = losses.style_target(torch.cat([a, b], -1), kind, generator=_seeded(2))
    assert blended.keys() == pooled.keys()
    assert all(torch.allclose(blended[k], pooled[k], atol=1e-5) for k in pooled)


def test_blend_of_sliced_targets_needs_shared_directions():
    s = torch.rand(1, 3, 4, 4, generator=_seeded(0))
    a = losses.style_target(s, "sliced", generator=_seeded(1))
    b = losses.style_target(s, "sliced", generator=_seeded(2))
    with pytest.raises(ValueError, match="directions"):
        losses.blend_targets([a, b], [1.0, 1.0], "sliced")
    with pytest.raises(ValueError):
        losses.blend_targets([a, a], [1.0], "sliced")


def test_unknown_style_loss_is_refused():
    with pytest.raises(ValueError, match="meancov"):
        losses.style_target(torch.rand(1, 2, 3, 3), "wasserstein")
