"""stylize() on tiny images: the plumbing (steps, counts, shapes, interrupts) on a random-weight
network, and what needs real features (loss values, style actually transferred) on the real
vgg16bn-craft network (it ships in a pip package)."""
from pathlib import Path

import pytest
import torch

from nstyle import Config, ConfigError, Diverged, Interrupted, Stylizer, losses, preset, stylize
from nstyle.network import Backbone
from nstyle.objective import Objective
from nstyle.engine import initial_pixels
from nstyle.plan import output_size, resolve_device, style_size

from conftest import tiny



def run(config: Config, styles=None, callback=None):
    record = []

    def cb(p):
        record.append(p)
        if callback:
            callback(p)

    image = stylize(tiny(0), styles or [tiny(1, 48, 40)], config, callback=cb)
    return image, record


SMALL = dict(size=48, model="vgg16bn-craft")


@pytest.mark.parametrize("optimizer", ["lbfgs", "adam", "sgd"])
def test_loss_falls(optimizer):
    lr = {"sgd": 1e-4}.get(optimizer)  # plain SGD on the relative loss needs a small rate
    config = Config(**SMALL, optimizer=optimizer, iterations=8, learning_rate=lr, init="content")
    image, record = run(config)
    assert [p.step for p in record] == list(range(1, 9))  # 48 px: one scale
    assert record[-1].loss < record[0].loss
    assert record[-1].style < record[0].style
    assert image.shape == (3, 40, 48) and 0 <= image.min() and image.max() <= 1
    # Starts from the content image: zero, up to bfloat16 features against float32 targets
    # (a relative error of about 3e-5, times the weight).
    assert record[0].content == pytest.approx(0.0, abs=1e-4 * config.content_weight)


def flat_photo_and_painting() -> tuple[torch.Tensor, torch.Tensor]:
    """A reddish photo and a blue painting of smooth colour gradients (40x48)."""
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 40), torch.linspace(0, 1, 48), indexing="ij")
    return (torch.stack([0.6 + 0.3 * yy, 0.3 * xx, 0.2 + 0 * xx]),
            torch.stack([0.1 + 0 * xx, 0.3 * yy, 0.7 + 0.3 * xx]))


@pytest.mark.parametrize("decay, fall", [(1.0, 0.8), (0.5, 0.9)])
def test_bfloat16_lbfgs_does_not_blow_up_on_a_flat_photo(decay, fall):
    # A photo of smooth colour gradients, whose colour total variation starts at 0. In
    # bfloat16 the network cannot see L-BFGS's tiny first step, so its first curvature pair
    # was the float32 total variations' alone, and the next step sent the loss up 3500x
    # (263 -> 9.27e5, equal style layer weights). loop._forget_first_step drops that pair;
    # loop.BLOWUP is the backstop. With the default layer weights the loss falls more slowly
    # here (952 -> 772 in 12 steps, against 0.8x at decay 1) and must not blow up either.
    content, style = flat_photo_and_painting()
    record = []
    stylize(content, [style], Config(size=48, iterations=12, model="vgg16bn-craft", init="palette",
                                     precision="bfloat16", tv_chroma_weight=3e4, style_layer_decay=decay),
            callback=record.append)
    losses_seen = [p.loss for p in record]
    assert max(losses_seen) < 1.5 * losses_seen[0], losses_seen
    assert losses_seen[-1] < fall * losses_seen[0], losses_seen  # and it gets somewhere


def test_a_blown_up_lbfgs_step_goes_back_to_the_best_pixels(monkeypatch):
    # The same flat photo without the first-step fix: the loss blows up, and the loop goes
    # back to the best pixels so far instead of carrying on from there.
    from nstyle import loop
    monkeypatch.setattr(loop, "_forget_first_step", lambda opt: None)
    content, style = flat_photo_and_painting()
    record = []
    stylize(content, [style], Config(size=48, iterations=6, model="vgg16bn-craft", init="style",
                                     precision="bfloat16", tv_chroma_weight=3e4), callback=record.append)
    seen = [p.loss for p in record]
    assert max(seen) > loop.BLOWUP * seen[0], seen  # it did blow up
    assert seen[-1] <= 1.01 * seen[0], seen          # and came back


def test_lbfgs_under_the_clamp_keeps_lowering_the_loss(random_network):
    # A photo and a painting with black and white areas, where the clamp to 0-255 holds many
    # pixels at a bound. Without loop._project_gradient, L-BFGS kept proposing steps past the
    # bound that the clamp cut, its curvature estimate drifted, and the loss rose on 8 of 40
    # steps, up to 1.44x, ending at 15.9 against a best of 11.0.
    def black_and_white(seed):
        img = tiny(seed)
        img[:, :, :16] = 0.0
        img[:, :12, 30:] = 1.0
        return img

    record = []
    out = stylize(black_and_white(0), [black_and_white(1)],
                  Config(size=48, model="vgg16bn-craft", iterations=40, scales=1), callback=record.append)
    seen = [p.loss for p in record]
    assert max(b / a for a, b in zip(seen, seen[1:])) <= 1.01, seen
    assert seen[-1] < 0.05 * seen[0], seen  # and it got somewhere (9.7 of 367)
    assert float(out.min()) == 0.0 and float(out.max()) == 1.0  # pixels did sit at both bounds


def test_progress_records(random_network):
    engine = Stylizer(Config(**SMALL, iterations=3))
    record, images = [], []

    def cb(p):
        record.append(p)
        images.append(engine.current_image())

    final = engine.stylize(tiny(0), [tiny(1, 48, 40)], callback=cb)
    p = record[-1]
    assert (p.step, p.total, p.size) == (3, 3, (40, 48))
    assert p.loss == pytest.approx(p.content + p.style + p.tv, rel=1e-5)
    assert p.evaluations == 3  # L-BFGS without line search: one evaluation per step
    assert [q.elapsed for q in record] == sorted(q.elapsed for q in record)
    assert all(a.shape == (3, 40, 48) for a in images)
    assert not torch.equal(images[0], images[-1]) and torch.equal(images[-1], final)  # each step's own image
    snapshot = engine.current_image()
    snapshot += 1  # a copy: the run's pixels are untouched
    assert engine.current_image().max() <= 1


def test_line_search_counts_evaluations(random_network, monkeypatch):
    calls = []
    forward = Backbone.forward
    monkeypatch.setattr(Backbone, "forward", lambda self, x: calls.append(x.shape) or forward(self, x))
    _, record = run(Config(**SMALL, iterations=3, line_search=True))
    # Without line search one evaluation per step (test_progress_records); the line search
    # evaluates at least one more point per step, and a point it tried is not evaluated
    # again when the next step starts there.
    assert record[-1].evaluations > record[-1].step == 3
    assert record[-1].evaluations == len(calls) - 2  # every forward pass but the two targets'
    assert record[-1].loss < record[0].loss


def test_same_seed_same_result(random_network):
    config = Config(**SMALL, iterations=3, init="noise")
    a, _ = run(config)
    b, _ = run(config)
    c, _ = run(config.replace(seed=1))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_targets_computed_once(random_network, monkeypatch):
    calls = []
    forward = Backbone.forward
    monkeypatch.setattr(Backbone, "forward", lambda self, x: calls.append(x.shape) or forward(self, x))
    run(Config(**SMALL, iterations=4), styles=[tiny(1), tiny(2)])
    # content + two styles once, then one evaluation per iteration
    assert len(calls) == 3 + 4


def test_style_blend_is_weighted_gram_sum(random_backbone):
    net = random_backbone(["relu1_1", "relu2_1"])
    c, s1, s2 = (t.unsqueeze(0) * 255 for t in (tiny(0), tiny(1), tiny(2)))
    config = Config(**SMALL, content_layers=("relu2_1",), style_layers=("relu1_1",), style_strength=1.0)
    obj = Objective(net, c, [s1, s2], [1.0, 3.0], config)
    with torch.no_grad():
        expected = 0.25 * losses.gram(net(s1)["relu1_1"]) + 0.75 * losses.gram(net(s2)["relu1_1"])
    assert torch.allclose(obj.style_targets["relu1_1"]["gram"], expected, rtol=1e-5)


def test_interrupt_keeps_the_image(random_network):
    engine = Stylizer(Config(**SMALL, iterations=50))
    seen = []

    def stop(p):
        seen.append(engine.current_image())
        if p.step == 2:
            raise KeyboardInterrupt

    with pytest.raises(Interrupted) as info:
        engine.stylize(tiny(0), [tiny(1, 48, 40)], callback=stop)
    assert info.value.progress.step == 2
    assert info.value.image.shape == (3, 40, 48)
    assert torch.equal(info.value.image, seen[-1])


def test_divergence_returns_last_good_image(random_network):
    config = Config(**SMALL, optimizer="sgd", learning_rate=1e30, clamp=False, iterations=20)
    with pytest.raises(Diverged, match="lower the learning rate") as info:
        run(config)
    assert torch.isfinite(info.value.image).all()


def test_initial_images():
    g = torch.Generator().manual_seed(0)
    content = torch.full((1, 3, 4, 4), 200.0)
    style = torch.full((1, 3, 4, 4), 10.0)
    assert torch.equal(initial_pixels(content, style, Config(init="style"), g), style)
    assert torch.equal(initial_pixels(content, style, Config(init="content"), g), content)
    assert torch.equal(initial_pixels(content, style, Config(init="palette"), g), style)  # the recoloured photo
    noise = initial_pixels(content, style, Config(init="noise"), g)
    centre = torch.tensor([123.68, 116.779, 103.939]).view(1, 3, 1, 1)
    assert ((noise - centre).abs() <= 20).all() and noise.std() > 1
    half = initial_pixels(content, style, Config(init="content", noise_ratio=0.5), torch.Generator().manual_seed(0))
    pure = initial_pixels(content, style, Config(init="noise"), torch.Generator().manual_seed(0))
    # r * noise + (1 - r) * content, around the centre: the average of the two.
    assert torch.allclose(half, (pure + content) / 2, atol=1e-4)


def test_sizes():
    assert output_size(768, 1024, Config(size=512)) == (384, 512)
    assert output_size(768, 1024, preset("keras")) == (400, 533)  # the Keras example's rows
    assert style_size((1000, 500), (384, 512), Config(), 0.5) == (256, 128)
    assert style_size((1000, 500), (400, 533), preset("keras"), 1.0) == (400, 533)


def test_keras_preset_fields():
    k = preset("keras")
    assert (k.content_weight, k.style_weight, k.tv_weight) == (2.5e-8, 1e-6, 1e-6)
    assert (k.optimizer, k.lr, k.iterations, k.loss_form) == ("sgd", 100.0, 4000, "keras")
    assert preset("keras", iterations=10).iterations == 10
    assert k.style_layer_decay == 1.0  # the Keras example weights its layers equally


@pytest.mark.parametrize("bad", [
    dict(size=8), dict(iterations=0), dict(style_weight=-1.0), dict(noise_ratio=1.5),
    dict(optimizer="bfgs"), dict(style_scale=0.0), dict(content_weight=float("nan")),
    dict(style_weights=(0.0, 0.0)), dict(learning_rate=0.0), dict(style_layer_decay=-0.5), dict(style_layer_decay=1e100),
    dict(loss_form="keras", tv_chroma_weight=0.0, style_layer_decay=0.5),
    dict(palette_layout=-1.0), dict(palette_layout=11.0), dict(palette_layout=float("inf")),
])
def test_config_refuses(bad):
    with pytest.raises(ConfigError):
        Config(**bad)


def test_style_weight_count_must_match():
    with pytest.raises(ConfigError, match="2 style weights for 1"):
        run(Config(**SMALL, style_weights=(1.0, 2.0)))


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_unavailable_device():
    with pytest.raises(ConfigError, match="not available"):
        resolve_device("cuda")
    assert resolve_device("auto").type in ("cpu", "mps")


@pytest.mark.slow
def test_keras_preset_reproduces_the_reference_trace():
    """The Keras example's own code on this network starts at 10172.77 (DEVELOPERS.md, issue 3),
    on the full-size images it used, which ship in tests/data for this test."""
    trace = []
    data = Path(__file__).resolve().parent / "data"
    stylize(data / "tubingen.jpg", [data / "starry_night.jpg"],
            preset("keras", iterations=2, model="vgg16bn-craft"), callback=lambda p: trace.append(p))
    assert trace[0].size == (400, 533)
    assert trace[0].loss == pytest.approx(10172.77, abs=0.01)
    assert trace[1].loss < trace[0].loss


def test_coarse_to_fine(random_network):
    config = Config(size=96, min_size=48, scales=2, iterations=(3, 2), init="content", precision="float32")
    record = []
    image = stylize(tiny(0, 60, 80), [tiny(1)], config, callback=record.append)
    assert [(p.step, p.total, p.scale, p.scales) for p in record] == [
        (1, 5, 1, 2), (2, 5, 1, 2), (3, 5, 1, 2), (4, 5, 2, 2), (5, 5, 2, 2)]
    assert record[0].size == (36, 48) and record[-1].size == (72, 96)
    assert image.shape == (3, 72, 96)
    # In float32 the photo's features are its content targets exactly: 0 at the photo (each
    # step's loss is the one at its start). The fine scale starts from the upsampled coarse
    # result (plus the photo's detail), not from the photo again.
    assert record[0].content < 1e-6
    assert record[3].content > 1e-3


def test_interrupt_at_a_coarse_scale_gives_the_output_size(random_network):
    def stop(p):
        if p.step == 2:
            raise KeyboardInterrupt

    config = Config(size=96, min_size=48, scales=2, iterations=(3, 2))
    with pytest.raises(Interrupted) as info:
        stylize(tiny(0, 60, 80), [tiny(1)], config, callback=stop)
    assert info.value.image.shape == (3, 72, 96)


def test_tolerance_stops_early(random_network):
    record = []
    config = Config(**SMALL, iterations=200, tolerance=0.5)  # any step that gains < 50 % stops
    stylize(tiny(0), [tiny(1)], config, callback=record.append)
    assert 6 <= len(record) < 200
    assert record[-1].total == record[-1].step


def test_memory_check_refuses_what_cannot_fit(monkeypatch):
    from nstyle import plan
    monkeypatch.setattr(plan, "available_bytes", lambda device: 2**30)  # not even tiles fit
    with pytest.raises(ConfigError, match=r"needs about .* GB .* largest size that fits is about --size (\d+)") as info:
        run(Config(size=4096, model="vgg16bn-craft"))
    fits = int(info.value.args[0].rsplit(" ", 1)[1])
    assert 256 < fits < 4096
    # the size it suggests passes the same check
    from nstyle.network import VGG16BN_CRAFT
    plan.preflight(tiny(0), Config(size=fits, model="vgg16bn-craft"), VGG16BN_CRAFT)


def test_memory_estimate_grows_with_pixels():
    from nstyle.network import VGG16BN_CRAFT, values_per_pixel
    from nstyle.plan import estimate_bytes
    layers = ["relu4_2", "relu5_1"]
    small = estimate_bytes(VGG16BN_CRAFT, layers, 100, 100)
    large = estimate_bytes(VGG16BN_CRAFT, layers, 200, 200)
    assert large - small == pytest.approx(3 * (small - estimate_bytes(VGG16BN_CRAFT, layers, 1, 1)), rel=1e-3)
    # conv1_1 + relu1_1 alone keep 2 x 64 values per pixel
    assert values_per_pixel(["relu1_1"], VGG16BN_CRAFT) == 128
    assert values_per_pixel(["pool1"], VGG16BN_CRAFT) == 4 * 64 + 16
    assert values_per_pixel(["relu1_1", "conv1_2"], VGG16BN_CRAFT) == 3 * 64


def test_each_style_at_its_own_scale(random_network, monkeypatch):
    from nstyle import engine
    seen = []
    real = engine.Objective

    def spy(net, content, styles, weights, config, dtype, masks=None, extra=(), cache=None):
        seen.append([tuple(s.shape[-2:]) for s in styles])
        return real(net, content, styles, weights, config, dtype, masks, extra, cache=cache)

    monkeypatch.setattr(engine, "Objective", spy)
    stylize(tiny(0), [tiny(1, 40, 40), tiny(2, 40, 40)], Config(**SMALL, iterations=1, style_scale=(1.0, 0.5)))
    assert seen == [[(48, 48), (24, 24)]]  # long sides: 1 x 48 and 0.5 x 48
    with pytest.raises(ConfigError, match="3 style scales for 2 style images"):
        stylize(tiny(0), [tiny(1), tiny(2)], Config(**SMALL, style_scale=(1.0, 0.5, 2.0)))


def test_masks_put_each_style_in_its_region():
    g = torch.Generator().manual_seed(3)
    content = 0.5 + 0.05 * torch.randn(3, 40, 48, generator=g)
    red = torch.stack([0.9 + 0.1 * torch.rand(40, 40, generator=g), 0.1 * torch.rand(40, 40, generator=g),
                       0.1 * torch.rand(40, 40, generator=g)])
    blue = red.flip(0)
    left = torch.zeros(20, 24)  # a mask of another size: resized to the photo's
    left[:, :12] = 1.0
    config = Config(**SMALL, iterations=60, content_weight=1e-3)
    out = stylize(content.clamp(0, 1), [red, blue], config, masks=[left, 1 - left])

    def redness(img):
        return (img[0] - img[2]).mean().item()

    # Gray turns red on the left, blue on the right (colour moves slowly from gray: 60 steps).
    assert redness(out[:, :, :20]) > 0.01 and redness(out[:, :, 28:]) < -0.01
    with pytest.raises(ConfigError, match="1 masks for 2 style images"):
        stylize(content, [red, blue], config, masks=[left])


def _objective(**changes):
    from nstyle.weights import choose_weights, load_backbone
    config = Config(**{**SMALL, "content_layers": ("relu2_1",), "style_layers": ("relu1_1", "relu2_1"), **changes})
    net = load_backbone(choose_weights("vgg16bn-craft"), ["relu1_1", "relu2_1"])
    c, s = (t.unsqueeze(0) * 255 for t in (tiny(0), tiny(1, 48, 40)))
    return Objective(net, c, [s], [1.0], config), c


def test_style_layer_weights_by_hand():
    from nstyle.network import BACKBONES
    from nstyle.objective import style_layer_weights
    spec = BACKBONES["vgg16-hed"]
    # decay 0.5 over three layers: 1, 1/2, 1/4 (sum 7/4), times 3 / (7/4) for a mean of 1;
    # ranked by depth, whatever order they are listed in.
    w = style_layer_weights(["relu3_1", "relu1_1", "relu2_1"], spec, 0.5)
    assert list(w) == ["relu3_1", "relu1_1", "relu2_1"]
    assert w["relu1_1"] == pytest.approx(12 / 7) and w["relu2_1"] == pytest.approx(6 / 7)
    assert w["relu3_1"] == pytest.approx(3 / 7)
    assert style_layer_weights(["relu1_1", "relu5_1"], spec, 3.0) == pytest.approx({"relu1_1": 0.5, "relu5_1": 1.5})
    assert all(v == 1.0 for v in style_layer_weights(["relu1_1", "relu2_1", "relu4_1"], spec, 1.0).values())


@pytest.mark.parametrize("kind", ["gram", "histogram"])  # (sliced: directions seeded by list position)
def test_style_term_is_the_layer_weighted_sum(kind):
    # The style term at decay d is style_weight / 2 * (w1 * d1 + w2 * d2), w = 2 / (1 + d) * (1, d),
    # with d1, d2 each layer's own distance (a one-layer objective at weight 1).
    def style(**changes):
        obj, c = _objective(style_loss=kind, style_weight=1.0, **changes)
        x = c.flip(-1)  # not the photo: its distances are not 0 at strength 1 either
        with torch.no_grad():
            return float(obj(x)[1]["style"])

    d1, d2 = style(style_layers=("relu1_1",)), style(style_layers=("relu2_1",))
    assert d1 > 0 and d2 > 0
    assert style(style_layer_decay=1.0) == pytest.approx((d1 + d2) / 2, rel=1e-5)
    assert style(style_layer_decay=0.25) == pytest.approx(0.5 * (1.6 * d1 + 0.4 * d2), rel=1e-5)


@pytest.mark.parametrize("kind", losses.STYLE_LOSSES)
def test_style_strength_goes_from_the_photo_to_the_painting(kind):
    # At strength 0 the target is the photo's own statistics: the photo scores 0. The photo's
    # style term grows with the strength, so the result moves from the photo to the painting.
    # (Real features: the quantile error bounded below is the real network's.)
    scores = []
    for strength in (0.0, 0.3, 0.7, 1.0):
        obj, c = _objective(style_loss=kind, style_strength=strength)
        with torch.no_grad():
            scores.append(float(obj(c)[1]["style"]))
    # (histogram, sliced: not exactly 0, the photo's 1920 positions are kept as 1024 quantiles)
    assert scores[0] < 5e-3 * scores[-1]
    assert scores == sorted(scores) and scores[1] > 1e-3


@pytest.mark.parametrize("kind", losses.STYLE_LOSSES)
def test_every_style_loss_runs_and_lowers_the_loss(kind, random_network):
    # (no colour total variation: on 48 px of random texture it outweighs the style term)
    image, record = run(Config(**SMALL, style_loss=kind, iterations=6, scales=1, tv_chroma_weight=0))
    assert image.shape == (3, 40, 48) and torch.isfinite(image).all()
    assert record[-1].style < 0.8 * record[0].style


@pytest.mark.parametrize("kind", losses.STYLE_LOSSES)
def test_style_losses_with_masks_and_two_styles(kind, request):
    if kind != "histogram":  # histogram on the real network: the case that once looked like a fault
        request.getfixturevalue("random_network")
    left = torch.zeros(40, 48)
    left[:, :24] = 1
    # float32: what is checked here is the losses, not bfloat16's rounding (the next test).
    # From the photo: from the palette start L-BFGS's first full step overshoots on this tiny
    # case with the histogram loss (833 -> 1144 -> 916 -> 764 -> 706 ...), which L-BFGS
    # without a line search may do; that a run recovers is the next test's. Equal style layer
    # weights: at the default 0.5 the sliced loss's third step overshoots here in the same
    # way (600 -> 305 -> 735 -> 131, then falling).
    image, record = run(Config(**SMALL, style_loss=kind, iterations=4, scales=1, style_strength=0.8,
                               precision="float32", init="content", style_layer_decay=1.0),
                        styles=[tiny(1), tiny(2)])
    assert all(b.loss < a.loss for a, b in zip(record[1:], record[2:]))  # step 1 is L-BFGS's tiny probe
    masked = stylize(tiny(0), [tiny(1), tiny(2)], Config(**SMALL, style_loss=kind, iterations=4, scales=1),
                     masks=[left, 1 - left])
    assert torch.isfinite(masked).all()


def test_histogram_loss_in_bfloat16_recovers_from_a_rounded_step():
    """In bfloat16 the histogram loss on this case rose at step 4 (805 -> 904: the curvature
    pair of step 3 is mostly rounding) and was below its start again from step 5, with the
    palette start of an earlier stop; with today's it falls at every step (834 -> 614).
    L-BFGS without line search does not promise a fall at every step; what must hold is
    that the run recovers, without the backstop (loop.BLOWUP) having to undo a step."""
    _, record = run(Config(**SMALL, style_loss="histogram", iterations=8, scales=1, style_strength=0.8,
                           precision="bfloat16"), styles=[tiny(1), tiny(2)])
    losses_seen = [p.loss for p in record]
    assert max(losses_seen) < 1.5 * losses_seen[0]
    assert losses_seen[-1] < 0.9 * losses_seen[0]


def test_style_loss_options_are_checked():
    from nstyle import config as config_module
    assert config_module.STYLE_LOSSES == losses.STYLE_LOSSES  # the config's list is the losses' own
    with pytest.raises(ConfigError, match="style strength must be between 0 and 1"):
        Config(style_strength=1.5)
    with pytest.raises(ConfigError, match="style loss must be one of"):
        Config(style_loss="gramm")
    with pytest.raises(ConfigError, match="Keras objective"):
        preset("keras", style_loss="meancov")


def test_palette_layout_carries_the_paintings_colours_to_their_place():
    # A grey photo with mild texture; a painting red above and blue below. With the layout
    # the result is red at the top and blue at the bottom; by colour order alone it is not.
    photo = 0.45 + 0.1 * torch.rand(3, 40, 48, generator=torch.Generator().manual_seed(7))
    painting = torch.zeros(3, 40, 48)
    painting[0, :20], painting[2, 20:] = 0.9, 0.9

    def red_above_blue(layout):
        out = stylize(photo, [painting], Config(**SMALL, iterations=2, scales=1, palette_layout=layout))
        top, bottom = out[:, :10].mean((1, 2)), out[:, -10:].mean((1, 2))
        return float((top[0] - top[2]) - (bottom[0] - bottom[2]))

    assert red_above_blue(4.0) > 0.8
    assert abs(red_above_blue(0.0)) < 0.3
