"""Colour preservation: conversions and matching with hand-checked values, and the plumbing."""
import pytest
import torch

from nstyle import Config, stylize
from nstyle import color


def test_yiq_by_hand():
    white = torch.ones(3, 1, 1)
    red = torch.tensor([1.0, 0, 0]).view(3, 1, 1)
    # Y of white is 0.299 + 0.587 + 0.114 = 1, and white has no colour (I = Q = 0).
    assert torch.allclose(color.rgb_to_yiq(white).flatten(), torch.tensor([1.0, 0, 0]), atol=1e-6)
    assert torch.allclose(color.rgb_to_yiq(red).flatten(), torch.tensor([0.299, 0.596, 0.211]), atol=1e-6)
    img = torch.rand(3, 4, 5)
    assert torch.allclose(color.yiq_to_rgb(color.rgb_to_yiq(img)), img, atol=1e-5)


def test_match_luminance_takes_the_contents_mean_and_std():
    g = torch.Generator().manual_seed(0)
    style, content = torch.rand(3, 8, 8, generator=g) * 0.3, torch.rand(3, 6, 7, generator=g)
    y = color.match_luminance(style, content)
    lc = color.luminance(content)
    assert y.mean().item() == pytest.approx(lc.mean().item(), abs=1e-5)
    assert y.std().item() == pytest.approx(lc.std().item(), rel=1e-4)
    # an affine map of the style's own luminance: correlation 1
    ls = color.luminance(style).flatten()
    assert torch.corrcoef(torch.stack([ls, y.flatten()]))[0, 1] > 0.9999


def test_combine_luminance_keeps_the_photos_colours():
    content = torch.tensor([0.8, 0.2, 0.1]).view(3, 1, 1).expand(3, 2, 2).clone()
    result = torch.full((3, 2, 2), 0.5)  # gray of luminance 0.5
    out = color.combine_luminance(result, content)
    yiq_out, yiq_c = color.rgb_to_yiq(out), color.rgb_to_yiq(content)
    assert torch.allclose(yiq_out[0], torch.full((2, 2), 0.5), atol=1e-5)   # result's luminance
    assert torch.allclose(yiq_out[1:], yiq_c[1:], atol=1e-5)                # photo's I and Q


def test_match_histogram_matches_mean_and_covariance():
    g = torch.Generator().manual_seed(1)
    content = torch.rand(3, 20, 20, generator=g) * 0.5 + 0.2
    mix = torch.tensor([[0.5, 0.3, 0.0], [0.1, 0.2, 0.1], [0.0, 0.1, 0.3]])
    style = torch.einsum("ij,jhw->ihw", mix, torch.rand(3, 30, 30, generator=g)) + 0.1
    out = color.match_histogram(style, content)
    c, o = content.reshape(3, -1), out.reshape(3, -1)
    assert torch.allclose(o.mean(1), c.mean(1), atol=1e-4)
    assert torch.allclose(torch.cov(o), torch.cov(c), atol=1e-4)
    assert out.shape == style.shape


@pytest.mark.parametrize("mode", ["luminance", "histogram"])
def test_preserve_colors_through_stylize(mode):
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 40), torch.linspace(0, 1, 48), indexing="ij")
    content = torch.stack([0.6 + 0.3 * yy, 0.3 * xx, 0.2 + 0 * xx])          # reddish photo
    style = torch.stack([0.1 + 0 * xx, 0.3 * yy, 0.7 + 0.3 * xx])             # blue painting
    # Starting from the painting: without preservation the result starts blue.
    config = Config(size=48, iterations=5, model="vgg16bn-craft", init="style")
    plain = stylize(content, [style], config)
    kept = stylize(content, [style], config.replace(preserve_colors=mode))
    # The photo's red-over-blue balance survives only with colour preservation.
    def redness(img):
        return (img[0] - img[2]).mean().item()
    assert redness(kept) > redness(plain) + 0.05
    assert abs(redness(kept) - redness(content)) < 0.15
    if mode == "luminance":  # exactly the photo's chroma
        assert torch.allclose(color.rgb_to_yiq(kept)[1:], color.rgb_to_yiq(content)[1:], atol=0.02)


def test_match_colors_takes_the_target_moments():
    g = torch.Generator().manual_seed(1)
    photo = 0.3 + 0.4 * torch.rand(3, 20, 20, generator=g)
    painting = 0.2 + 0.3 * torch.rand(3, 20, 20, generator=g) * torch.tensor([1.0, 0.6, 0.2]).view(3, 1, 1)
    out = color.match_colors(photo, *color.color_stats(painting))
    mean, cov = color.color_stats(out)
    want_mean, want_cov = color.color_stats(painting)
    assert torch.allclose(mean, want_mean, atol=1e-4) and torch.allclose(cov, want_cov, atol=1e-4)
    # an affine map of the photo: its structure (rank order within a channel mixture) stays
    assert torch.corrcoef(torch.stack([photo.mean(0).flatten(), out.mean(0).flatten()]))[0, 1] > 0.5


def test_palette_start_moves_the_photo_toward_the_painting():
    from nstyle.engine import _palette_start
    photo = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(2)) * 0.5 + 0.5  # pale
    painting = torch.zeros(3, 16, 16)
    painting[0] = 0.8  # orange-red ground with some variation
    painting[1] = 0.3 + 0.1 * torch.rand(16, 16, generator=torch.Generator().manual_seed(3))
    starts = [_palette_start(photo, [painting], [1.0], Config(init="palette", style_strength=s), (16, 16))
              for s in (0, 0.5, 1)]
    assert torch.equal(starts[0], photo)
    red = [float(s[0].mean() - s[2].mean()) for s in starts]
    assert red[0] < red[1] < red[2] and red[2] > 0.6  # monotone in the strength, reaching the painting's
    # with --preserve-colors the photo's colours are the point: the photo is the start
    kept = _palette_start(photo, [painting], [1.0], Config(init="palette", preserve_colors="luminance"), (16, 16))
    assert torch.equal(kept, photo)
    # with a layout it is made at the first scale's size, where it is used
    placed = _palette_start(photo, [painting], [1.0], Config(init="palette", palette_layout=1.0), (8, 12))
    assert placed.shape == (3, 8, 12) and float(placed[0].mean() - placed[2].mean()) > 0.6


def _sorted_projection(pixels: torch.Tensor, direction: torch.Tensor, levels: int = 64) -> torch.Tensor:
    return torch.quantile(direction @ pixels.reshape(3, -1).double(), torch.linspace(0, 1, levels, dtype=torch.float64))


def test_transfer_distribution_one_channel_by_hand():
    # Grey pixels 0, 0.25, 0.5, 0.75, 1 onto a target that is two grey levels, 0.2 and 0.6,
    # in equal shares: the map is monotone, so the darker half of the photo goes to 0.2 and
    # the lighter to 0.6 (the middle pixel between them); grey stays grey.
    photo = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0]).expand(3, 1, 5)
    target = torch.tensor([0.2] * 50 + [0.6] * 50).expand(3, 100)
    out = color.transfer_distribution(photo, target)
    assert torch.allclose(out[0], out[1], atol=2e-3) and torch.allclose(out[1], out[2], atol=2e-3)
    grey = out[0, 0]
    assert torch.all(grey[1:] >= grey[:-1] - 1e-6)                     # order kept
    assert torch.allclose(grey[[0, 1, 3, 4]], torch.tensor([0.2, 0.2, 0.6, 0.6]), atol=0.02)
    assert 0.2 <= float(grey[2]) <= 0.6


def test_transfer_distribution_carries_the_whole_distribution():
    # A photo whose colours are bimodal along blue, a painting whose colours are bimodal along
    # red with other proportions: the affine map matches two moments, the transfer matches
    # every projection's quantiles (checked on directions it never drew).
    g = torch.Generator().manual_seed(4)
    photo = torch.rand(3, 40, 40, generator=g) * 0.1 + 0.2
    photo[2, :10] += 0.6                                   # a quarter of the pixels blue
    painting = torch.rand(3, 40, 40, generator=g) * 0.1 + 0.1
    painting[0, :30] += 0.7                                # three quarters red
    out = color.transfer_distribution(photo, painting.reshape(3, -1))
    affine = color.match_colors(photo, *color.color_stats(painting))
    directions = torch.nn.functional.normalize(torch.randn(16, 3, generator=g, dtype=torch.float64), dim=1)
    error = [max(float((_sorted_projection(img, d) - _sorted_projection(painting, d)).abs().mean()) for d in directions)
             for img in (out, affine)]
    assert error[0] < 0.01 and error[0] < 0.5 * error[1]
    # order decides where colours go: the photo's bright blue quarter is among the pixels
    # that turn red (the painting's bright part), where the affine map leaves it apart
    assert float(out[0, :10].mean()) > 0.7 and float(out[2, :10].mean()) < 0.3
    assert torch.equal(out, color.transfer_distribution(photo, painting.reshape(3, -1)))   # deterministic


def test_transfer_distribution_assigns_brightness_by_the_photos_order_first():
    # One iteration is the fixed first one: along R+G+B the photo's pixels take the target's
    # brightness quantiles in their own brightness order (then random rotations refine).
    g = torch.Generator().manual_seed(6)
    photo = torch.rand(3, 20, 20, generator=g)
    target = 0.3 + 0.4 * torch.rand(3, 400, generator=g) ** 2           # darker; no clamping at 0 or 1
    out = color.transfer_distribution(photo, target, iterations=1)
    before, after = photo.reshape(3, -1).sum(0), out.reshape(3, -1).sum(0)
    in_order = after[torch.argsort(before)]
    assert torch.all(in_order[1:] >= in_order[:-1] - 1e-5)                # brightness order kept
    q = torch.linspace(0, 1, 11)
    assert torch.allclose(torch.quantile(after, q), torch.quantile(target.sum(0), q), atol=0.03)


def test_transfer_distribution_leaves_a_photo_in_the_target_distribution_alone():
    photo = torch.rand(3, 30, 30, generator=torch.Generator().manual_seed(5))
    out = color.transfer_distribution(photo, photo.reshape(3, -1))
    assert (out - photo).abs().mean() < 0.01


def test_pixel_sample_takes_each_image_by_its_weight():
    black, white = torch.zeros(3, 4, 4), torch.ones(3, 8, 8)
    sample = color.pixel_sample([black, white], [3.0, 1.0], count=1000)
    assert sample.shape == (3, 1000) and sample.dtype == torch.float32
    assert float(sample.mean()) == pytest.approx(0.25)
    assert torch.equal(sample, color.pixel_sample([black, white], [3.0, 1.0], count=1000))


def test_places_by_hand():
    assert torch.equal(color.places(2, 3), torch.tensor([[0.0, 0.5, 1.0, 0.0, 0.5, 1.0],
                                                         [0.0, 0.0, 0.0, 1.0, 1.0, 1.0]]))
    assert torch.equal(color.places(1, 1), torch.tensor([[0.5], [0.5]]))


def test_pixel_sample_with_places_draws_the_same_pixels_and_says_where():
    # A painting whose red channel is its column and green its row: each drawn pixel's place
    # must read back its own colour, and the colours are those drawn without places.
    h, w = 5, 9
    ys, xs = torch.meshgrid(torch.arange(h) / (h - 1), torch.arange(w) / (w - 1), indexing="ij")
    painting = torch.stack([xs, ys, torch.zeros(h, w)])
    sample = color.pixel_sample([painting], [1.0], count=200, with_places=True)
    assert sample.shape == (5, 200)
    assert torch.allclose(sample[3], sample[0]) and torch.allclose(sample[4], sample[1])
    assert torch.equal(sample[:3], color.pixel_sample([painting], [1.0], count=200))


@pytest.mark.parametrize("side", [40, 300])  # the whole image, and more pixels than the maps are fitted on
def test_transfer_distribution_with_layout_puts_colours_where_the_painting_has_them(side):
    # A flat grey photo onto a painting red in its left half and blue in its right: by colour
    # order alone every pixel takes the same colour; with a layout the photo's left half turns
    # red and its right half blue.
    photo = torch.full((3, side, side), 0.5)
    painting = torch.zeros(3, 20, 20)
    painting[0, :, :10] = 0.9
    painting[2, :, 10:] = 0.9
    target = color.pixel_sample([painting], [1.0], with_places=True)
    plain = color.transfer_distribution(photo, target)
    assert float(plain.reshape(3, -1).std(1).max()) < 0.01
    placed = color.transfer_distribution(photo, target, layout=4.0)
    left, right = placed[:, :, : side // 4].mean((1, 2)), placed[:, :, -side // 4:].mean((1, 2))
    assert float(left[0]) > 0.7 and float(left[2]) < 0.2
    assert float(right[2]) > 0.7 and float(right[0]) < 0.2
    assert torch.equal(placed, color.transfer_distribution(photo, target, layout=4.0))   # deterministic


def test_transfer_distribution_layout_needs_the_targets_places():
    with pytest.raises(ValueError, match="places"):
        color.transfer_distribution(torch.rand(3, 8, 8), torch.rand(3, 100), layout=1.0)


def test_transfer_distribution_with_layout_ends_on_the_paintings_colours(monkeypatch):
    # A random photo onto a painting red on the left and blue on the right: the placement
    # holds, and the last colour-only iterations bring the colours onto the painting's
    # (checked on directions never drawn), which the five-dimensional ones alone leave off.
    g = torch.Generator().manual_seed(8)
    photo = torch.rand(3, 40, 40, generator=g)
    painting = torch.rand(3, 40, 40, generator=g) * 0.2
    painting[0, :, :20] += 0.7
    painting[2, :, 20:] += 0.5
    target = color.pixel_sample([painting], [1.0], with_places=True)
    directions = torch.nn.functional.normalize(torch.randn(16, 3, generator=g, dtype=torch.float64), dim=1)

    def error_and_sides():
        out = color.transfer_distribution(photo, target, layout=2.0)
        error = max(float((_sorted_projection(out, d) - _sorted_projection(painting, d)).abs().mean())
                    for d in directions)
        return error, out[:, :, :10].mean((1, 2)), out[:, :, -10:].mean((1, 2))

    error, left, right = error_and_sides()
    assert error < 0.015
    assert float(left[0] - left[2]) > 0.5 and float(right[2] - right[0]) > 0.3
    monkeypatch.setattr(color, "LAYOUT_REFINE", 0)
    assert error_and_sides()[0] > 3 * error
