"""Image I/O and resizing for nstyle.

Images are handled as float tensors of shape (3, H, W) (or (1, 3, H, W) where noted),
RGB, values in [0, 1]. Reading accepts anything Pillow can decode (detected by content,
not by extension), applies EXIF orientation, converts embedded ICC profiles to sRGB and
composites transparency over white. Writing is atomic: a temporary file in the target's
directory is renamed onto the target only once it is complete.

Every user-facing failure is raised as :class:`ImageError`, whose message is one line
naming the file. The module never prints; warnings go to the ``nstyle.image`` logger.
"""

from __future__ import annotations

import io
import itertools
import logging
import os
import stat
import struct
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError
from PIL.PngImagePlugin import PngInfo

from .errors import ImageError

try:  # ImageCms needs Pillow built with LittleCMS; colour management is optional.
    from PIL import ImageCms
except ImportError:  # pragma: no cover - depends on the Pillow build
    ImageCms = None  # type: ignore[assignment]

__all__ = [
    "ImageError",
    "SUPPORTED_OUTPUT",
    "RESIZE_METHODS",
    "load_image",
    "resize",
    "fit_size",
    "save_image",
    "read_png_text",
    "atomic_path",
    "atomic_write_bytes",
]

logger = logging.getLogger("nstyle.image")

SUPPORTED_OUTPUT = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp")
RESIZE_METHODS = ("area", "bicubic", "bilinear", "nearest")

_PIL_FORMAT = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".webp": "WEBP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".bmp": "BMP",
}
_OUTPUT_HINT = "use .png, .jpg, .webp, .tif or .bmp"

# What Pillow raises on files it cannot identify or decode (plugins are not uniform).
_DECODE_ERRORS = (
    UnidentifiedImageError,
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    struct.error,
    IndexError,
    KeyError,
    TypeError,
)

_HIGH_DEPTH_MODES = ("I", "I;16", "I;16L", "I;16B", "I;16N", "F")


# --------------------------------------------------------------------------- helpers


def _quote(path: str) -> str:
    """Quote a path for a one-line message (control characters are escaped)."""
    if "'" in path or not path.isprintable():
        return repr(path)
    return f"'{path}'"


def _reason(exc: OSError) -> str:
    """A short one-line reason for an OSError."""
    text = exc.strerror or str(exc) or type(exc).__name__
    return " ".join(text.split())


_KINDS = ((stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a directory"))


def _open_binary(path: str) -> io.BufferedReader:
    """Open a regular file for reading (a seam for tests).

    Opened with O_NONBLOCK and checked with fstat before any read, so a FIFO with no writer
    or a device is refused at once instead of blocking forever (as ``rsync`` and ``git``
    refuse special files); O_NONBLOCK means nothing for a regular file.
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = next((text for test, text in _KINDS if test(mode)), "not a regular file")
            raise OSError(f"is {kind}, not a regular file")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


# --------------------------------------------------------------------------- reading


def _check_pixels(img: Image.Image, label: str) -> None:
    """Reject zero-size images and images above Pillow's decompression-bomb limit."""
    width, height = img.size
    if width <= 0 or height <= 0:
        raise ImageError(f"cannot read {label}: image has zero size ({width}x{height})")
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and width * height > limit:
        raise ImageError(
            f"cannot read {label}: image is too large ({width}x{height} pixels; "
            f"the limit is {int(limit)} pixels)"
        )


@contextmanager
def _open_loaded(path: str | os.PathLike) -> Iterator[Image.Image]:
    """Open and fully decode the first frame of an image file; the file stays open inside."""
    name = os.fsdecode(path)
    label = _quote(name)
    if os.path.isdir(name):
        raise ImageError(f"cannot read {label}: is a directory")
    try:
        handle = _open_binary(name)
    except FileNotFoundError:
        raise ImageError(f"cannot read {label}: no such file") from None
    except IsADirectoryError:
        raise ImageError(f"cannot read {label}: is a directory") from None
    except PermissionError:
        raise ImageError(f"cannot read {label}: permission denied") from None
    except OSError as exc:
        raise ImageError(f"cannot read {label}: {_reason(exc) if exc.strerror else exc}") from None
    with handle:
        try:
            info = os.fstat(handle.fileno())
        except (OSError, AttributeError, io.UnsupportedOperation):
            info = None
        if info is not None and stat.S_ISREG(info.st_mode) and info.st_size == 0:
            raise ImageError(f"cannot read {label}: empty file")
        # Pillow warns between MAX_IMAGE_PIXELS and twice that (we raise instead: _check_pixels)
        # and on damaged files ("Truncated File Read"), which then fail to decode anyway: no
        # warning line beside our one-line error.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                img = Image.open(handle)
            except Image.DecompressionBombError:
                raise ImageError(
                    f"cannot read {label}: image is too large "
                    f"(over Pillow's limit of {Image.MAX_IMAGE_PIXELS} pixels)"
                ) from None
            except _DECODE_ERRORS as exc:
                logger.debug("cannot identify %s: %r", name, exc)
                raise ImageError(f"cannot read {label}: not an image file (or a corrupt one)") from None
            _check_pixels(img, label)
            try:
                img.load()  # force a full decode so truncated data is caught here
            except Image.DecompressionBombError:
                raise ImageError(f"cannot read {label}: image is too large") from None
            except _DECODE_ERRORS as exc:
                logger.debug("cannot decode %s: %r", name, exc)
                raise ImageError(f"cannot read {label}: corrupt or truncated image data") from None
        yield img


def _exif_transposed(img: Image.Image, name: str) -> Image.Image:
    """Apply the EXIF Orientation tag; a broken EXIF block is logged and ignored."""
    try:
        return ImageOps.exif_transpose(img)
    except Exception as exc:  # noqa: BLE001 - malformed EXIF must never stop a load
        logger.warning("ignoring the EXIF orientation of %s: %s", name, exc)
        return img


def _scale_to_unit(values: np.ndarray, mode: str) -> np.ndarray:
    """Map a high-bit-depth grayscale array (modes I, I;16*, F) to float64 in [0, 1].

    I;16*: value / 65535. I: value / 65535 when in 0..65535 (16-bit data widened by Pillow),
    otherwise the actual min..max range. F: kept as is when in [0, 1]; integer-valued data in
    0..255 or 0..65535 is divided by that maximum; anything else uses the actual min..max range.
    """
    arr = np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    if arr.size == 0:
        return arr
    lo, hi = float(arr.min()), float(arr.max())
    if mode.startswith("I;16"):
        return arr / 65535.0
    if mode == "F":
        if lo >= 0.0 and hi <= 1.0:
            return arr
        if lo >= 0.0 and np.array_equal(arr, np.round(arr)):
            if hi <= 255.0:
                return arr / 255.0
            if hi <= 65535.0:
                return arr / 65535.0
    elif lo >= 0.0 and hi <= 65535.0:  # mode "I"
        return arr / 65535.0
    if hi > lo:
        return (arr - lo) / (hi - lo)
    return np.clip(arr, 0.0, 1.0)


def _split_alpha(img: Image.Image) -> tuple[Image.Image, Image.Image | None]:
    """Split an 8-bit image into (colour image, alpha channel 'L' or None)."""
    mode = img.mode
    has_trns = img.info.get("transparency") is not None
    if mode in ("LA", "La") or (mode in ("1", "L") and has_trns):
        la = img.convert("LA")
        return la.getchannel("L"), la.getchannel("A")
    if mode in ("RGBA", "RGBa", "PA") or (mode in ("P", "RGB") and has_trns):
        rgba = img.convert("RGBA")
        return rgba.convert("RGB"), rgba.getchannel("A")
    return img, None


@lru_cache(maxsize=1)
def _srgb_profile() -> "ImageCms.ImageCmsProfile":
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


def _to_srgb(colour: Image.Image, icc: bytes | None, name: str) -> Image.Image:
    """Convert a colour image ('L', 'RGB', 'CMYK', 'LAB', ...) to 8-bit sRGB 'RGB'.

    The embedded ICC profile is honoured when ImageCms is available; if the conversion
    fails the profile is ignored (with a warning) and Pillow's plain conversion is used.
    """
    if colour.mode == "1":
        colour = colour.convert("L")
    elif colour.mode not in ("L", "RGB", "CMYK", "LAB"):
        colour = colour.convert("RGB")
    if ImageCms is not None and (icc or colour.mode == "LAB"):
        try:
            if icc:
                source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            else:
                source = ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB"))
            return ImageCms.profileToProfile(colour, source, _srgb_profile(), outputMode="RGB")
        except Exception as exc:  # noqa: BLE001 - a bad profile must never stop a load
            logger.warning("ignoring the ICC profile of %s: %s", name, exc)
    return colour.convert("RGB")


def _to_rgb_array(img: Image.Image, name: str) -> np.ndarray:
    """A decoded PIL image -> float32 array (H, W, 3) in [0, 1], alpha composited over white."""
    if img.mode in _HIGH_DEPTH_MODES:
        # 16/32-bit grayscale and float: scale by the real range (convert("L") would clip).
        # Transparency and ICC profiles are ignored for these rare modes.
        gray = _scale_to_unit(np.asarray(img), img.mode).astype(np.float32)
        return np.repeat(gray[:, :, None], 3, axis=2)
    # Note: Pillow decodes 48/64-bit RGB(A) PNGs to 8-bit 'RGB'/'RGBA'; that precision is lost here.
    icc = img.info.get("icc_profile")
    colour, alpha = _split_alpha(img)
    rgb = np.asarray(_to_srgb(colour, icc or None, name), dtype=np.float32) / np.float32(255.0)
    if alpha is not None:
        a = np.asarray(alpha, dtype=np.float32)[:, :, None] / np.float32(255.0)
        rgb = rgb * a + (np.float32(1.0) - a)
    return rgb


def load_image(path: str | os.PathLike) -> torch.Tensor:
    """Read an image file as a float32 tensor of shape (3, H, W), RGB, values in [0, 1].

    The format is detected from the content. EXIF orientation is applied, an embedded ICC
    profile is converted to sRGB, alpha is composited over white and multi-frame files give
    their first frame. Raises :class:`ImageError` (one line naming the file) on any failure.
    """
    name = os.fsdecode(path)
    label = _quote(name)
    with _open_loaded(path) as img:
        img = _exif_transposed(img, name)
        try:
            rgb = _to_rgb_array(img, name)
        except ValueError as exc:  # Pillow cannot convert this mode
            logger.debug("cannot convert %s: %r", name, exc)
            raise ImageError(f"cannot read {label}: unsupported image mode '{img.mode}'") from None
    rgb = np.clip(rgb, 0.0, 1.0)
    return torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1), dtype=np.float32))


def read_png_text(path: str | os.PathLike) -> dict[str, str]:
    """The text chunks (tEXt/zTXt/iTXt) of a PNG as a dict (PIL's ``Image.text``).

    Images without text chunks (including non-PNG formats) give an empty dict.
    """
    with _open_loaded(path) as img:
        text = getattr(img, "text", None) or {}
        return {str(key): str(value) for key, value in text.items()}


# --------------------------------------------------------------------------- resizing


def _pil_nearest_indices(src: int, dst: int) -> list[int]:
    """Source indices of Pillow's NEAREST resize along one axis of length src -> dst.

    Pillow (ImagingScaleAffine) starts at scale/2 and *accumulates* scale = src/dst in a
    C double, truncating each position; the float drift of that running sum is replicated
    exactly here, since floor((i + 0.5) * scale) differs from it in some cases.
    """
    if src == dst:
        return list(range(src))
    scale = src / dst
    positions = itertools.accumulate(itertools.repeat(scale, dst - 1), initial=scale * 0.5)
    return [min(int(pos), src - 1) for pos in positions]


def _resize_nearest(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    rows = torch.tensor(_pil_nearest_indices(image.shape[-2], height), device=image.device)
    cols = torch.tensor(_pil_nearest_indices(image.shape[-1], width), device=image.device)
    return image.index_select(-2, rows).index_select(-1, cols)


def resize(image: torch.Tensor, size: tuple[int, int], method: str = "area") -> torch.Tensor:
    """Resize a (C, H, W) or (N, C, H, W) tensor to size = (height, width); same rank out.

    Methods:
      * ``'area'``: antialiased bicubic (for downscaling), clamped to [0, 1];
      * ``'bicubic'``: plain bicubic, clamped to [0, 1];
      * ``'bilinear'``: plain bilinear (no clamping needed);
      * ``'nearest'``: bit-exact with PIL ``Image.resize(..., Image.NEAREST)``, as used by
        Keras' ``load_img``; works on any dtype.
    The interpolating methods need a floating-point tensor.
    """
    if image.dim() not in (3, 4):
        raise ValueError(f"resize expects a (C,H,W) or (N,C,H,W) tensor, got shape {tuple(image.shape)}")
    height, width = int(size[0]), int(size[1])
    if height < 1 or width < 1:
        raise ValueError(f"resize target size must be positive, got {tuple(size)}")
    if method not in RESIZE_METHODS:
        raise ValueError(f"unknown resize method {method!r} (use 'area', 'bicubic', 'bilinear' or 'nearest')")
    if method == "nearest":
        return _resize_nearest(image, height, width)
    if not image.is_floating_point():
        raise TypeError(f"resize method {method!r} needs a floating-point tensor, got {image.dtype}")
    if tuple(image.shape[-2:]) == (height, width):
        return image.clone()
    batch = image.unsqueeze(0) if image.dim() == 3 else image
    if method == "bilinear":
        out = F.interpolate(batch, size=(height, width), mode="bilinear", align_corners=False)
    else:
        out = F.interpolate(
            batch, size=(height, width), mode="bicubic", align_corners=False, antialias=(method == "area")
        ).clamp_(0.0, 1.0)
    return out.squeeze(0) if image.dim() == 3 else out


def fit_size(height: int, width: int, long_side: int) -> tuple[int, int]:
    """(height, width) scaled so the longer side equals long_side, keeping the aspect ratio.

    The shorter side is rounded to the nearest integer (halves up), at least 1.
    """
    if min(height, width, long_side) < 1:
        raise ValueError(f"fit_size needs positive sizes, got ({height}, {width}) and {long_side}")
    longest = max(height, width)

    def scaled(side: int) -> int:
        return max(1, (2 * side * long_side + longest) // (2 * longest))  # exact round-half-up

    if height >= width:
        return long_side, scaled(width)
    return scaled(height), long_side


# --------------------------------------------------------------------------- writing


def _umask() -> int:
    """The process umask, read without changing it where the platform allows."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _final_mode(target: str) -> int:
    """Permission bits for the finished file: the existing target's, else 0o666 & ~umask."""
    try:
        return stat.S_IMODE(os.stat(target).st_mode)
    except OSError:
        return 0o666 & ~_umask()


def _remove_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _temp_prefix(target: str) -> str:
    return f".{os.path.basename(target)[:100]}.{os.getpid()}."


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # someone else's process: alive
    return True


def remove_stale_temps(target: str | os.PathLike) -> list[str]:
    """Remove the temporary files of ``target`` (``.<name>.<pid>.XXXX.tmp``, as atomic_path
    makes them) whose process no longer runs, e.g. one killed with SIGKILL while saving;
    another running process's are left alone. Returns the paths removed."""
    target = os.fsdecode(target)
    directory = os.path.dirname(target) or "."
    head = f".{os.path.basename(target)[:100]}."
    removed = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    for name in names:
        if not (name.startswith(head) and name.endswith(".tmp")):
            continue
        pid = name[len(head):].split(".", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            path = os.path.join(directory, name)
            _remove_quietly(path)
            removed.append(path)
    return removed


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary path next to ``path``; on success it is renamed onto ``path``.

    The temporary file is created in the same directory (``.<name>.<pid>.XXXX.tmp``); any
    left there by a process that no longer runs (killed while saving) are removed first. If the body
    raises, the temporary file is removed and the target is left untouched; an ``OSError``
    becomes an :class:`ImageError`. A missing directory raises :class:`ImageError` up front.
    """
    target = os.fsdecode(path)
    label = _quote(target)
    directory = os.path.dirname(target) or "."
    if not os.path.isdir(directory):
        if os.path.exists(directory):
            raise ImageError(f"cannot write {label}: {_quote(directory)} is not a directory")
        raise ImageError(f"cannot write {label}: directory {_quote(directory)} does not exist")
    if os.path.isdir(target):
        raise ImageError(f"cannot write {label}: is a directory")
    prefix = _temp_prefix(target)
    remove_stale_temps(target)
    try:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=prefix, suffix=".tmp")
    except PermissionError:
        raise ImageError(f"cannot write {label}: permission denied") from None
    except OSError as exc:
        raise ImageError(f"cannot write {label}: {_reason(exc)}") from None
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb") as written:
            os.fsync(written.fileno())
        os.chmod(tmp, _final_mode(target))
        os.replace(tmp, target)
    except BaseException as exc:
        _remove_quietly(tmp)
        if isinstance(exc, PermissionError):
            raise ImageError(f"cannot write {label}: permission denied") from exc
        if isinstance(exc, OSError):
            raise ImageError(f"cannot write {label}: {_reason(exc)}") from exc
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temporary file + rename); see :func:`atomic_path`."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as out:
            out.write(data)


def _output_format(path: str) -> str:
    """The Pillow format name for an output path, from its (case-insensitive) extension."""
    ext = os.path.splitext(path)[1].lower()
    if ext not in _PIL_FORMAT:
        if not ext:
            raise ImageError(f"cannot write {_quote(path)}: no file extension ({_OUTPUT_HINT})")
        raise ImageError(f"unsupported output format '{ext}' ({_OUTPUT_HINT})")
    return _PIL_FORMAT[ext]


def _to_uint8(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) or (1, 3, H, W) float tensor -> (H, W, 3) uint8, clipped, round-half-to-even."""
    if image.dim() == 4 and image.shape[0] == 1:
        image = image[0]
    if image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"save_image expects a (3,H,W) tensor, got shape {tuple(image.shape)}")
    if not image.is_floating_point():
        raise TypeError(f"save_image expects a floating-point tensor, got {image.dtype}")
    x = image.detach().to("cpu")
    if x.dtype != torch.float64:
        x = x.float()
    x = torch.round(torch.nan_to_num(x, nan=0.0).clamp(0.0, 1.0) * 255.0)
    return x.to(torch.uint8).permute(1, 2, 0).contiguous().numpy()


def _png_info(metadata: dict[str, str]) -> PngInfo:
    info = PngInfo()
    for key, value in metadata.items():
        key = str(key)
        try:
            key.encode("latin-1")
        except UnicodeEncodeError:
            raise ValueError(f"PNG text key {key!r} must be Latin-1") from None
        if not 1 <= len(key) <= 79:
            raise ValueError(f"PNG text key {key!r} must be 1 to 79 characters long")
        info.add_text(key, str(value))  # Pillow uses iTXt when the value is not Latin-1
    return info


def save_image(
    image: torch.Tensor,
    path: str | os.PathLike,
    metadata: dict[str, str] | None = None,
    quality: int = 95,
) -> None:
    """Write a (3, H, W) float tensor in [0, 1] (outside values clipped) to an image file.

    The format comes from the extension (one of SUPPORTED_OUTPUT, case-insensitive). Values
    are rounded to uint8 with round-half-to-even. ``metadata`` is stored as PNG text chunks
    (ignored for other formats); ``quality`` applies to JPEG and WebP. The write is atomic.
    """
    target = os.fsdecode(path)
    fmt = _output_format(target)
    if not 0 <= int(quality) <= 100:
        raise ValueError(f"quality must be in 0..100, got {quality}")
    pixels = Image.fromarray(_to_uint8(image))
    options: dict[str, object] = {}
    if fmt == "PNG" and metadata:
        options["pnginfo"] = _png_info(metadata)
    elif fmt in ("JPEG", "WEBP"):
        options["quality"] = int(quality)
    if metadata and fmt != "PNG":
        logger.debug("metadata is only stored in PNG files; not written to %s", target)
    with atomic_path(target) as tmp:
        pixels.save(tmp, format=fmt, **options)
