"""The coarse-to-fine schedule: a pure function."""
import pytest

from nstyle import Config, ConfigError
from nstyle.schedule import Scale, auto_scales, default_iterations, plan, sizes


def test_sizes_are_geometric_and_end_at_the_target():
    assert sizes(512, 3, 128) == [128, 256, 512]
    assert sizes(1024, 4, 128) == [128, 256, 512, 1024]
    assert sizes(600, 2, 128) == [128, 600]
    assert sizes(512, 1, 128) == [512]


def test_small_targets_use_fewer_scales():
    assert sizes(100, 3, 128) == [100]
    assert sizes(140, 3, 128) == [140]  # 128 -> 134 -> 140: steps under 16 px are dropped
    s = sizes(200, 5, 128)
    assert s[-1] == 200 and all(b - a >= 16 for a, b in zip(s, s[1:]))


def test_automatic_scales_step_at_most_twofold():
    assert sizes(129, None, 128) == [129]  # steps under 16 px are dropped
    for size in (256, 300, 512, 700, 1024, 3000, 4096, 10000):
        s = sizes(size, None, 128)
        assert s[0] == 128 and s[-1] == size
        assert all(b / a <= 2.0 + 1e-9 for a, b in zip(s, s[1:]))
        if len(s) > 2:  # and no more scales than that needs: one fewer would step more than 2x
            assert (size / 128) ** (1 / (len(s) - 2)) > 2.0
    assert sizes(512, None, 128) == [128, 256, 512]
    assert auto_scales(100, 128) == 1 and sizes(100, None, 128) == [100]


def test_default_iterations_double_towards_coarse_scales():
    assert default_iterations([256, 512]) == [60, 30]
    assert default_iterations([128, 256, 512]) == [100, 60, 30]
    assert default_iterations([128, 256, 512, 1024]) == [100, 100, 60, 30]


def test_a_run_of_one_scale_gets_twice_the_finest_scales_iterations():
    # no coarser scale to start from: 60, not 30 (at 256 px, 30 left fine colour noise
    # 1.5x that of 60 in benchmarks/quality.py, 4 pairs)
    assert default_iterations([512]) == [60] and default_iterations([200]) == [60]
    assert plan(200, None, 256, None) == [Scale(200, 60)]


def test_default_iterations_fall_above_1024_px():
    assert default_iterations([1024, 2048]) == [60, 15]
    assert default_iterations([128, 256, 512, 1024, 2048, 4096]) == [100, 100, 100, 100, 30, 10]
    assert default_iterations([20000]) == [10]  # never below 10
    assert default_iterations([4096]) == [15]


def test_the_default_schedule_starts_at_256_px():
    # a 128-px start laid bands across the picture that the finer scales kept (README, Quality)
    c = Config()
    assert plan(c.size, c.scales, c.min_size, c.iterations) == [Scale(256, 60), Scale(512, 30)]
    assert [sc.size for sc in plan(4096, None, c.min_size, None)] == [256, 512, 1024, 2048, 4096]


def test_plan():
    assert plan(512, 3, 128, None) == [Scale(128, 100), Scale(256, 60), Scale(512, 30)]
    assert plan(512, 3, 128, 7) == [Scale(128, 7), Scale(256, 7), Scale(512, 7)]
    assert plan(512, 3, 128, (5, 6, 7)) == [Scale(128, 5), Scale(256, 6), Scale(512, 7)]
    # Too small for three scales: the finest counts are kept.
    assert plan(100, 3, 128, (5, 6, 7)) == [Scale(100, 7)]
    with pytest.raises(ValueError, match="2 iteration counts for 3 scales"):
        plan(512, 3, 128, (5, 6))
    # automatic scales: as many as the counts given, else as many as 2x steps need
    assert plan(512, None, 128, (5, 6)) == [Scale(128, 5), Scale(512, 6)]
    assert [sc.size for sc in plan(2048, None, 128, 3)] == [128, 256, 512, 1024, 2048]


def test_config_checks_the_counts():
    with pytest.raises(ConfigError, match="2 iteration counts for 3 scales"):
        Config(scales=3, iterations=(5, 6))
    with pytest.raises(ConfigError):
        Config(scales=0)
    # automatic scales: as many as the counts
    for counts in ((5, 6), (1, 2, 3)):
        c = Config(iterations=counts)
        assert [sc.iterations for sc in plan(c.size, c.scales, c.min_size, c.iterations)] == list(counts)
