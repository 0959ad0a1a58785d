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
