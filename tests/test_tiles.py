"""Tiles: their geometry (pure), and tile-by-tile refinement (mostly on a random-weight network:
what is checked is the tiling, which any VGG-shaped network shows)."""
import pytest
import torch

from nstyle import Config, ConfigError, Interrupted, Stylizer, losses, plan, preset, stylize, tiled, tiles
from nstyle.network import VGG16BN_CRAFT, layer_strides
from nstyle.tiles import Rect

from conftest import NARROW, tiny


def covered(grid, height, width, rect="core"):
    count = torch.zeros(height, width, dtype=torch.int64)
    for t in grid:
        getattr(t, rect).crop(count).add_(1)
    return count


@pytest.mark.parametrize("hw, shape", [((300, 400), (2, 3)), ((100, 1000), (1, 4)), ((513, 97), (3, 1))])
def test_cores_partition_the_image_and_nest(hw, shape):
    h, w = hw
    grid = tiles.grid(h, w, *shape)
    assert len(grid) == shape[0] * shape[1]
    assert bool((covered(grid, h, w) == 1).all())  # every pixel in exactly one core
    for t in grid:
        c, f, win = t.core, t.free, t.window
        assert win.y0 <= f.y0 <= c.y0 < c.y1 <= f.y1 <= win.y1 and win.x0 <= f.x0 <= c.x0 < c.x1 <= f.x1 <= win.x1
        # inner edges on the 16-pixel grid; the free region reaches overlap/2 past the core,
        # the window a margin past that, both clipped to the image
        for v in (c.y0, c.x0, f.y0, f.x0, win.y0, win.x0):
            assert v % tiles.ALIGN == 0
        assert f.y0 == max(0, c.y0 - tiles.OVERLAP // 2) and f.x1 == min(w, c.x1 + tiles.OVERLAP // 2)
        assert win.y0 == max(0, f.y0 - tiles.MARGIN) and win.x1 == min(w, f.x1 + tiles.MARGIN)


def test_splits_and_grid_shape():
    assert tiles.splits(100, 1) == [0, 100]
    assert tiles.splits(64, 2) == [0, 32, 64]
    with pytest.raises(ValueError):
        tiles.splits(20, 2)  # parts under 16 px
    assert tiles.grid_shape(3072, 4096, 2048) == (2, 2)
    assert tiles.grid_shape(100, 100, 2048) == (1, 1)


def test_feathering_cross_fades_and_covers_everything():
    h, w = 200, 260
    grid = tiles.grid(h, w, 2, 2)
    # Pasting 1 into 0 in raster order leaves 1 everywhere: each pixel's first writer has weight 1.
    image = torch.zeros(h, w)
    for t in grid:
        region = t.free.crop(image)
        region.mul_(1 - tiles.feather(t)).add_(tiles.feather(t))
    assert torch.allclose(image, torch.ones(h, w))
    # Two tiles side by side, of values 0 and 1: a linear ramp over the overlap, centred on the seam.
    left, right = tiles.grid(64, 256, 1, 2)
    image = torch.zeros(64, 256)
    left.free.crop(image).copy_(torch.zeros(1))
    wr = tiles.feather(right)
    right.free.crop(image).mul_(1 - wr).add_(wr)
    row = image[10]
    seam = right.core.x0
    band = row[seam - tiles.OVERLAP // 2: seam + tiles.OVERLAP // 2]
    assert bool((row[: seam - tiles.OVERLAP // 2] == 0).all()) and bool((row[seam + tiles.OVERLAP // 2:] == 1).all())
    assert torch.allclose(band[1:] - band[:-1], torch.full((tiles.OVERLAP - 1,), 1 / tiles.OVERLAP))
    assert float(band.mean()) == pytest.approx(0.5)


def test_choose_grid():
    assert tiles.choose_grid(300, 400, lambda h, w: True) is None  # fits whole
    fits = lambda h, w: h * w <= 600 * 600  # noqa: E731
    rows, cols = tiles.choose_grid(1000, 1500, fits)
    assert all(fits(t.window.height, t.window.width) for t in tiles.grid(1000, 1500, rows, cols))
    # Tile sides tried: 1200, 960, 768, 615, 492 (3x4 tiles: inner windows 589x631, too large), 394 (the
    # same), 316: 4x5 tiles, inner windows 506x556.
    assert (rows, cols) == (4, 5)
    assert tiles.choose_grid(1000, 1500, lambda h, w: True, tile_size=512) == (2, 3)
    assert tiles.choose_grid(400, 500, lambda h, w: False, tile_size=512) is None  # no larger than a tile
    with pytest.raises(ValueError, match="not even tiles"):
        tiles.choose_grid(1000, 1500, lambda h, w: False)


def test_rect_on_features_lines_up_with_the_whole_image(random_backbone):
    # relu1_1 to relu3_1 see at most 40 px, less than the margin: a window's features at its
    # core positions are the whole image's, so the Gram sums over cores are the whole image's.
    net = random_backbone(["relu1_1", "relu2_1", "relu3_1"], NARROW)
    image = tiny(3, 150, 230).unsqueeze(0) * 255
    grid = tiles.grid(150, 230, 2, 3, margin=48)
    assert any(t.window != Rect(0, 150, 0, 230) for t in grid)  # real crops
    strides = layer_strides(NARROW)  # vgg16bn-craft's
    layers = ["relu1_1", "relu2_1", "relu3_1"]
    with torch.no_grad():
        by_tiles = tiled.tiled_gram(net, image, grid, strides, layers)
        whole = net(image)
    for n in layers:
        assert torch.allclose(by_tiles[n], losses.gram(whole[n]), rtol=1e-4, atol=1e-3), n


SMALL = dict(model="vgg16bn-craft", scales=1)


@pytest.mark.parametrize("strength", [1.0, 0.4])
def test_one_tile_is_the_whole_image_optimisation(monkeypatch, strength):
    # A 1x1 grid reduces every tile formula to the whole image's: the same losses, step by step.
    # (The real network: on random weights the loss falls steeply enough that L-BFGS
    # amplifies the rounding below past the tolerance.)
    content, style = tiny(0, 96, 128), tiny(1, 80, 80)
    config = Config(**SMALL, size=128, iterations=6, precision="float32", style_strength=strength)
    whole = []
    stylize(content, [style], config, callback=whole.append)
    monkeypatch.setattr(plan, "tiling", lambda *a: (1, 1))
    parts = []
    stylize(content, [style], config, callback=parts.append)
    assert [p.tiles for p in parts] == [1] * 6
    # (up to rounding: the tile target is T + (G(x0) - G(x0)), and L-BFGS amplifies it)
    assert [p.loss for p in parts] == pytest.approx([p.loss for p in whole], rel=1e-3)


def test_tiled_refinement_runs_every_tile_and_lowers_each_loss(random_network):
    content, style = tiny(0, 150, 200), tiny(1, 120, 100)
    record, shapes = [], []
    engine = Stylizer(Config(**SMALL, size=200, tile_size=100, iterations=5))

    def cb(p):
        record.append(p)
        shapes.append(tuple(engine.current_image().shape))

    image = engine.stylize(content, [style], callback=cb)
    assert image.shape == (3, 150, 200) and 0 <= image.min() and image.max() <= 1
    assert [p.tile for p in record] == [t for t in (1, 2, 3, 4) for _ in range(5)]
    assert {p.tiles for p in record} == {4} and record[-1].total == 20 and record[-1].step == 20
    assert record[-1].fraction == pytest.approx(1.0)
    assert all(p.size == (150, 200) for p in record)
    for k in (1, 2, 3, 4):
        losses = [p.loss for p in record if p.tile == k]
        assert losses[-1] < losses[0]
    assert set(shapes) == {(3, 150, 200)}  # the whole image while a tile is refined
    # every tile changed the image
    start = content
    changed = (image - start).abs().sum(0)
    for t in tiles.grid(150, 200, 2, 2):
        assert float(t.core.crop(changed).mean()) > 1e-3


def test_tiled_run_with_masks_and_two_styles(random_network):
    content = tiny(0, 120, 160)
    left = torch.zeros(120, 160)
    left[:, :80] = 1
    record = []
    image = stylize(content, [tiny(1), tiny(2)], Config(**SMALL, size=160, tile_size=80, iterations=3),
                    callback=record.append, masks=[left, 1 - left])
    assert image.shape == (3, 120, 160) and record[-1].tiles == 4
    assert all(torch.isfinite(torch.tensor(p.loss)) for p in record)


def test_interrupt_in_a_tile_keeps_the_whole_image(random_network):
    content = tiny(0, 150, 200)

    def stop(p):
        if p.tile == 2 and p.step == 5:
            raise KeyboardInterrupt

    with pytest.raises(Interrupted) as info:
        stylize(content, [tiny(1)], Config(**SMALL, size=200, tile_size=100, iterations=3), callback=stop)
    image = info.value.image
    assert image.shape == (3, 150, 200)
    first = tiles.grid(150, 200, 2, 2)[0].core
    assert float((first.crop(image) - first.crop(content)).abs().mean()) > 1e-3  # tile 1's work is kept


def test_plan_tiles_what_does_not_fit(monkeypatch):
    monkeypatch.setattr(plan, "available_bytes", lambda device: 3 * 2**30)
    run_plan = plan.preflight(tiny(0, 300, 400), Config(size=4096, model="vgg16bn-craft"), VGG16BN_CRAFT)
    assert run_plan.grids[0] is None and run_plan.grids[-1] is not None  # coarse scales whole, the finest in tiles
    rows, cols = run_plan.grids[-1]
    assert rows * cols > 1 and run_plan.steps == sum(sc.iterations * len(run_plan.tiles(i) or [0])
                                                 for i, sc in enumerate(run_plan.scales))
    # explicit tiles, and the Keras objective, which is not split
    run_plan = plan.preflight(tiny(0, 300, 400), Config(size=400, tile_size=256, model="vgg16bn-craft"), VGG16BN_CRAFT)
    assert run_plan.grids[-1] == (2, 2)
    with pytest.raises(ConfigError, match="only the Gram style loss of the default objective"):
        plan.preflight(tiny(0), preset("keras", tile_size=128, size=400, model="vgg16bn-craft"),
                           VGG16BN_CRAFT)
    # nor the style losses that are not sums over positions
    with pytest.raises(ConfigError, match="only the Gram style loss"):
        plan.preflight(tiny(0), Config(tile_size=128, size=400, style_loss="meancov"), VGG16BN_CRAFT)


def test_refuses_what_does_not_fit_even_in_tiles(monkeypatch):
    monkeypatch.setattr(plan, "available_bytes", lambda device: 300 * 2**20)  # below the fixed cost
    with pytest.raises(ConfigError, match="largest size that fits"):
        plan.preflight(tiny(0, 300, 400), Config(size=4096, model="vgg16bn-craft"), VGG16BN_CRAFT)
    monkeypatch.setattr(plan, "available_bytes", lambda device: 3 * 2**30)
    with pytest.raises(ConfigError, match="leave --tile-size out"):
        plan.preflight(tiny(0, 300, 400), Config(size=4096, tile_size=4000, model="vgg16bn-craft"),
                           VGG16BN_CRAFT)
