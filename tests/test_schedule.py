"""The coarse-to-fine schedule: a pure function."""
import pytest

from nstyle import Config, ConfigError
from nstyle.schedule import Scale, default_iterations, plan, sizes


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


def test_default_iterations_double_towards_coarse_scales():
    assert default_iterations(1) == [30]
    assert default_iterations(3) == [100, 60, 30]
    assert default_iterations(4) == [100, 100, 60, 30]


def test_plan():
    assert plan(512, 3, 128, None) == [Scale(128, 100), Scale(256, 60), Scale(512, 30)]
    assert plan(512, 3, 128, 7) == [Scale(128, 7), Scale(256, 7), Scale(512, 7)]
    assert plan(512, 3, 128, (5, 6, 7)) == [Scale(128, 5), Scale(256, 6), Scale(512, 7)]
    # Too small for three scales: the finest counts are kept.
    assert plan(100, 3, 128, (5, 6, 7)) == [Scale(100, 7)]
    with pytest.raises(ValueError, match="2 iteration counts for 3 scales"):
        plan(512, 3, 128, (5, 6))


def test_config_checks_the_counts():
    with pytest.raises(ConfigError, match="2 iteration counts for 3 scales"):
        Config(iterations=(5, 6))
    with pytest.raises(ConfigError):
        Config(scales=0)
    assert Config(iterations=(1, 2, 3)).iterations == (1, 2, 3)
