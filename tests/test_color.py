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
