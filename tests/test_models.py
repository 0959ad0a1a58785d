"""Layer names, both weight loaders on files the tests build, batch-norm folding, weights choice."""
import dataclasses
import hashlib

import h5py
import numpy as np
import pytest
import torch
from torch import nn

from nstyle import models
from nstyle.models import VGG16BN_CRAFT, VGG19, Backbone, LayerError, WeightsError, resolve_layer


# --- layer names -----------------------------------------------------------------------


def test_layer_tables():
    assert sum(k == "conv" for _, k, *_ in VGG19.layers) == 16
    assert VGG19.names[-1] == "pool5"
    assert sum(k == "conv" for _, k, *_ in VGG16BN_CRAFT.layers) == 12
    assert VGG16BN_CRAFT.names[-1] == "relu5_2"  # conv5_3 is not in the CRAFT file
    assert VGG19.names.index("pool1") == VGG19.names.index("relu1_2") + 1


@pytest.mark.parametrize("name, expected", [
    ("relu4_2", "relu4_2"), ("block5_conv2", "relu5_2"), ("block1_conv1", "relu1_1"),
    ("block3_pool", "pool3"), ("CONV2_1", "conv2_1"), (" relu1_1 ", "relu1_1"),
])
def test_resolve_layer(name, expected):
    assert resolve_layer(name, VGG19) == expected


@pytest.mark.parametrize("name, suggestion", [
    ("relu4_5", "relu4_4"), ("rellu3_1", "relu3_1"), ("block4_conv9", "block4_conv[1-4]"),
])
def test_unknown_layer_suggests(name, suggestion):
    with pytest.raises(LayerError, match=f"did you mean '{suggestion}'"):
        resolve_layer(name, VGG19)


def test_layer_missing_from_craft():
    assert resolve_layer("relu5_3", VGG19) == "relu5_3"
    with pytest.raises(LayerError, match="relu5_2"):
        resolve_layer("relu5_3", VGG16BN_CRAFT)


# --- the Keras HDF5 loader ----------------------------------------------------------------


def write_keras_h5(path, convs: dict[str, tuple[np.ndarray, np.ndarray]], extra_layers=("input_1",)):
    """A Keras 2 weights file: root attribute layer_names, per layer weight_names."""
    with h5py.File(path, "w") as f:
        names = list(extra_layers) + list(convs)
        f.attrs["layer_names"] = [n.encode() for n in names]
        for n in extra_layers:
            f.create_group(n).attrs["weight_names"] = []
        for n, (k, b) in convs.items():
            g = f.create_group(n)
            wn = [f"{n}_W_1:0".encode(), f"{n}_b_1:0".encode()]
            g.attrs["weight_names"] = wn
            g.create_dataset(wn[0].decode(), data=k)
            g.create_dataset(wn[1].decode(), data=b)


def test_keras_h5_kernel_layout(tmp_path):
    rng = np.random.default_rng(0)
    kernel = rng.standard_normal((3, 3, 2, 4)).astype(np.float32)  # height, width, in, out
    bias = rng.standard_normal(4).astype(np.float32)
    path = tmp_path / "tiny.h5"
    write_keras_h5(path, {"block1_conv1": (kernel, bias)}, extra_layers=("input_1", "block1_pool"))
    convs = models.read_keras_h5(path)
    assert list(convs) == ["block1_conv1"]
    w, b = convs["block1_conv1"]
    assert w.shape == (4, 2, 3, 3)
    # Keras convolves without flipping (cross-correlation), as torch does: one output
    # pixel by hand, with 'same' zero padding.
    x = rng.standard_normal((1, 2, 5, 6)).astype(np.float32)
    y = torch.nn.functional.conv2d(torch.from_numpy(x), w, b, padding=1)
    padded = np.pad(x[0], ((0, 0), (1, 1), (1, 1)))
    r, c, o = 2, 3, 1
    by_hand = sum(kernel[dy, dx, i, o] * padded[i, r + dy, c + dx]
                  for dy in range(3) for dx in range(3) for i in range(2)) + bias[o]
    assert y[0, o, r, c].item() == pytest.approx(float(by_hand), rel=1e-5)


@pytest.fixture(scope="module")
def vgg19_h5(tmp_path_factory):
    """A full-size VGG19 notop file of random weights (the real one cannot be downloaded here)."""
    rng = np.random.default_rng(1)
    convs = {}
    for name, kind, cin, cout in VGG19.layers:
        if kind == "conv":
            b, i = name[4:].split("_")
            convs[f"block{b}_conv{i}"] = (rng.standard_normal((3, 3, cin, cout), dtype=np.float32) * 0.05,
                                          rng.standard_normal(cout, dtype=np.float32))
    path = tmp_path_factory.mktemp("w") / "random_vgg19.h5"
    write_keras_h5(path, convs)
    return path, convs


def test_vgg19_from_h5(vgg19_h5):
    path, convs = vgg19_h5
    choice = models.choose_weights("auto", path)  # .h5 means vgg19 under auto
    assert choice.spec is VGG19
    net = models.load_backbone(choice, ["relu1_1", "block2_conv1"])
    assert net.names[-1] == "relu2_1"  # cut after the deepest layer asked for
    k, b = convs["block1_conv1"]
    assert torch.allclose(net.layers[0].weight, torch.from_numpy(k).permute(3, 2, 0, 1))
    # Caffe preprocessing: BGR, minus the means. A pure red pixel:
    red = torch.tensor([255.0, 0, 0]).view(1, 3, 1, 1)
    assert torch.allclose(net.preprocess(red).flatten(), torch.tensor([-103.939, -116.779, 255 - 123.68]))
    out = net(torch.rand(1, 3, 16, 16) * 255)
    assert set(out) == {"relu1_1", "relu2_1"} and out["relu2_1"].shape == (1, 128, 8, 8)


def test_vgg19_h5_missing_layer(tmp_path):
    path = tmp_path / "partial.h5"
    write_keras_h5(path, {"block1_conv1": (np.zeros((3, 3, 3, 64), np.float32), np.zeros(64, np.float32))})
    with pytest.raises(WeightsError, match="block1_conv2"):
        models.read_weights(VGG19, path)


def test_garbage_weights(tmp_path):
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not hdf5 at all")
    with pytest.raises(WeightsError, match="cannot read"):
        models.read_weights(VGG19, bad)
    with pytest.raises(WeightsError, match="cannot read"):
        models.read_weights(VGG16BN_CRAFT, bad)


# --- the CRAFT loader and batch-norm folding --------------------------------------------


def craft_state(width: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    """A CRAFT-layout state dict with tiny channel counts: keys module.basenet.sliceK.N.*"""
    g = torch.Generator().manual_seed(seed)
    state, cin = {}, 3
    for name, index in models._CRAFT_CONV_INDEX.items():
        part = next(s for s, lo, hi in models._CRAFT_SLICE_BOUNDS if lo <= index < hi)
        p = f"module.basenet.slice{part}."
        state[p + f"{index}.weight"] = torch.randn(width, cin, 3, 3, generator=g)
        state[p + f"{index}.bias"] = torch.randn(width, generator=g)
        state[p + f"{index + 1}.weight"] = torch.rand(width, generator=g) + 0.5
        state[p + f"{index + 1}.bias"] = torch.randn(width, generator=g)
        state[p + f"{index + 1}.running_mean"] = torch.randn(width, generator=g)
        state[p + f"{index + 1}.running_var"] = torch.rand(width, generator=g) + 0.1
        state[p + f"{index + 1}.num_batches_tracked"] = torch.tensor(7)
        cin = width
    return state


def test_craft_loader_folds_batch_norm(tmp_path):
    state = craft_state()
    path = tmp_path / "tiny_craft.pth"
    torch.save(state, path)
    convs = models.read_craft(path)
    assert list(convs) == list(models._CRAFT_CONV_INDEX)
    # conv4_2 is features[27], its batch norm features[28], both in slice3.
    p = "module.basenet.slice3."
    conv = nn.Conv2d(4, 4, 3, padding=1)
    bn = nn.BatchNorm2d(4).eval()
    conv.load_state_dict({"weight": state[p + "27.weight"], "bias": state[p + "27.bias"]})
    bn.load_state_dict({k: state[p + f"28.{k}"] for k in
                        ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")})
    x = torch.randn(2, 4, 6, 5)
    w, b = convs["conv4_2"]
    assert torch.allclose(torch.nn.functional.conv2d(x, w, b, padding=1), bn(conv(x)), atol=1e-5)


def test_craft_loader_refuses_other_files(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"module.basenet.slice1.0.weight": torch.zeros(1)}, path)
    with pytest.raises(WeightsError, match="not a CRAFT checkpoint"):
        models.read_craft(path)
    torch.save([1, 2, 3], path)
    with pytest.raises(WeightsError, match="not a CRAFT state dict"):
        models.read_craft(path)


def test_real_craft_file_matches_unfolded_network():
    """The installed CRAFT file: folded convolutions equal conv -> BN(eval) -> ReLU."""
    choice = models.choose_weights("vgg16bn-craft")
    assert choice.md5 == VGG16BN_CRAFT.md5
    net = models.load_backbone(choice, ["relu2_1"])
    state = torch.load(choice.path, map_location="cpu", weights_only=True)
    p = "module.basenet.slice1."
    ref = nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU()).eval()
    ref[0].load_state_dict({k: state[p + "0." + k] for k in ("weight", "bias")})
    ref[1].load_state_dict({k: state[p + "1." + k] for k in
                            ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")})
    x = torch.rand(1, 3, 12, 12) * 255
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = ref((x / 255 - mean) / std)
        got = net.layers[1](net.layers[0](net.preprocess(x)))
    assert torch.allclose(got, expected, atol=1e-4)


# --- choosing and downloading weights -------------------------------------------------------


def test_pooling_choice():
    convs = {n: (torch.zeros(co, ci, 3, 3), torch.zeros(co)) for n, k, ci, co in VGG19.layers if k == "conv"}
    avg = Backbone(VGG19, convs, ["relu2_1"], pooling="avg")
    assert any(isinstance(m, nn.AvgPool2d) for m in avg.layers)
    assert not any(isinstance(m, nn.MaxPool2d) for m in avg.layers)
    with pytest.raises(ValueError):
        Backbone(VGG19, convs, ["relu2_1"], pooling="median")


def test_missing_vgg19_without_download(tmp_path, monkeypatch):
    monkeypatch.setenv("NSTYLE_CACHE", str(tmp_path))
    assert models.choose_weights("auto").spec is VGG16BN_CRAFT  # nothing cached: the offline backbone
    with pytest.raises(WeightsError, match="nstyle download vgg19"):
        models.choose_weights("vgg19", allow_download=False)


def test_unknown_model():
    with pytest.raises(WeightsError, match="did you mean 'vgg19'"):
        models.choose_weights("vgg91")


def _local_spec(tmp_path, monkeypatch, payload: bytes, md5: str):
    src = tmp_path / "mirror.bin"
    src.write_bytes(payload)
    cache = tmp_path / "cache"
    monkeypatch.setenv("NSTYLE_CACHE", str(cache))
    monkeypatch.setenv("NSTYLE_VGG19_URL", src.as_uri())
    return dataclasses.replace(VGG19, md5=md5), cache


def test_download_checks_md5_and_writes_atomically(tmp_path, monkeypatch):
    payload = b"weights" * 1000
    spec, cache = _local_spec(tmp_path, monkeypatch, payload, hashlib.md5(payload).hexdigest())
    seen = []
    path = models.download(spec, progress=lambda done, total: seen.append((done, total)))
    assert path == cache / VGG19.filename and path.read_bytes() == payload
    assert seen[-1][0] == len(payload)
    assert sorted(p.name for p in cache.iterdir()) == [VGG19.filename]


def test_download_refuses_wrong_checksum(tmp_path, monkeypatch):
    spec, cache = _local_spec(tmp_path, monkeypatch, b"corrupt", "0" * 32)
    with pytest.raises(WeightsError, match="expected 0000"):
        models.download(spec)
    assert list(cache.iterdir()) == []  # no partial file, no temporary left


def test_download_without_network_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("NSTYLE_CACHE", str(tmp_path))
    monkeypatch.setenv("NSTYLE_VGG19_URL", (tmp_path / "absent").as_uri())
    with pytest.raises(WeightsError, match="--weights FILE"):
        models.choose_weights("vgg19")
    assert list(tmp_path.iterdir()) == []


def test_corrupt_cached_file_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("NSTYLE_CACHE", str(tmp_path))
    (tmp_path / VGG19.filename).write_bytes(b"half a file")
    with pytest.raises(WeightsError, match="expected 253f8cb5"):
        models.choose_weights("vgg19")
