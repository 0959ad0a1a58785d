"""Tests for nstyle.image: loading, saving (atomic), resizing and size fitting."""

from __future__ import annotations

import io
import logging
import os
import struct

import numpy as np
import pytest
import torch
from PIL import Image, ImageCms

from nstyle import image as nimg
from nstyle.image import (
    SUPPORTED_OUTPUT,
    ImageError,
    atomic_path,
    atomic_write_bytes,
    fit_size,
    load_image,
    read_png_text,
    resize,
    save_image,
)

RNG = np.random.default_rng(1234)


def _rgb(arr: np.ndarray) -> Image.Image:
    return Image.fromarray(arr.astype(np.uint8))


def _chw(t: torch.Tensor) -> np.ndarray:
    """(3,H,W) tensor -> (H,W,3) float64 array."""
    return t.permute(1, 2, 0).double().numpy()


def _pil_mode(path) -> str:
    with Image.open(path) as im:
        return im.mode


def _assert_one_line_error(excinfo: pytest.ExceptionInfo, name: str, fragment: str) -> None:
    message = str(excinfo.value)
    assert name in message
    assert fragment in message
    assert "\n" not in message


# --------------------------------------------------------------------------- round trip


def test_png_round_trip_is_exact(tmp_path):
    arr = RNG.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    arr[0, 0] = (0, 128, 255)
    path = tmp_path / "a.png"
    save_image(torch.from_numpy(arr).permute(2, 0, 1).float() / 255.0, path)
    out = load_image(path)
    assert out.dtype == torch.float32 and out.shape == (3, 5, 7)
    assert torch.equal(out, torch.from_numpy(arr).permute(2, 0, 1).float() / 255.0)
    assert torch.equal(out[:, 0, 0], torch.tensor([0.0, 128 / 255, 1.0]))


def test_save_rounds_half_to_even_and_clips(tmp_path):
    # 0.5/255 -> 0 (tie to even), 1.5/255 -> 2, 2.5/255 -> 2, -3 -> 0, 7 -> 255
    values = torch.tensor([0.5, 1.5, 2.5], dtype=torch.float64) / 255.0
    img = torch.zeros(3, 1, 5, dtype=torch.float64)
    img[0, 0, :3] = values
    img[0, 0, 3] = -3.0
    img[0, 0, 4] = 7.0
    path = tmp_path / "r.png"
    save_image(img, path)
    with Image.open(path) as im:
        got = np.asarray(im)[0, :, 0].tolist()
    assert got == [0, 2, 2, 0, 255]


# --------------------------------------------------------------------------- input formats

_COLOURS = np.array(
    [[[220, 30, 30], [30, 220, 30]], [[30, 30, 220], [200, 200, 40]]], dtype=np.uint8
).repeat(8, axis=0).repeat(8, axis=1)  # 16x16, four flat 8x8 quadrants


@pytest.mark.parametrize("fmt,tol", [("JPEG", 0.08), ("PNG", 0.0), ("WEBP", 0.08), ("TIFF", 0.0), ("BMP", 0.0)])
def test_each_input_format_loads(tmp_path, fmt, tol):
    path = tmp_path / "img.bin"  # no extension on purpose: detection is by content
    save_kwargs = {"quality": 95} if fmt in ("JPEG", "WEBP") else {}
    _rgb(_COLOURS).save(path, format=fmt, **save_kwargs)
    out = load_image(path)
    assert out.shape == (3, 16, 16)
    centres = _chw(out)[[4, 4, 12, 12], [4, 12, 4, 12]]
    expected = _COLOURS[[4, 4, 12, 12], [4, 12, 4, 12]] / 255.0
    assert np.abs(centres - expected).max() <= tol + 1e-7


def test_multi_frame_gif_gives_first_frame(tmp_path):
    frames = [Image.new("RGB", (4, 3), (255, 0, 0)), Image.new("RGB", (4, 3), (0, 0, 255))]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    out = load_image(path)
    assert out.shape == (3, 3, 4)
    assert torch.allclose(out[:, 1, 1], torch.tensor([1.0, 0.0, 0.0]))


# --------------------------------------------------------------------------- EXIF orientation


@pytest.mark.parametrize("orientation,expected", [
    (6, [[40, 10], [50, 20], [60, 30]]),  # displayed = stored turned 90 degrees clockwise
    (8, [[30, 60], [20, 50], [10, 40]]),  # ... counter-clockwise
])
def test_exif_orientation_is_applied(tmp_path, orientation, expected):
    # 2x3 (H x W) with distinct grey levels per pixel, stored in PNG (lossless) with EXIF.
    grid = np.array([[10, 20, 30], [40, 50, 60]], dtype=np.uint8)
    arr = np.repeat(grid[:, :, None], 3, axis=2)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "o.png"
    _rgb(arr).save(path, exif=exif)
    out = load_image(path)
    assert out.shape == (3, 3, 2)
    assert np.round(out[0].numpy() * 255).astype(int).tolist() == expected


def test_exif_orientation_jpeg_shape(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "o.jpg"
    Image.new("RGB", (30, 20), (128, 128, 128)).save(path, exif=exif)
    assert load_image(path).shape == (3, 30, 20)


# --------------------------------------------------------------------------- modes


def test_rgba_half_transparent_red_over_white(tmp_path):
    path = tmp_path / "rgba.png"
    Image.new("RGBA", (3, 2), (255, 0, 0, 128)).save(path)
    px = load_image(path)[:, 1, 2]
    # 1*a + (1-a) with a = 128/255 -> red 1; green/blue = 1 - 128/255 = 127/255
    assert torch.allclose(px, torch.tensor([1.0, 127 / 255, 127 / 255]), atol=1e-6)


def test_fully_transparent_is_white_not_black(tmp_path):
    path = tmp_path / "clear.png"
    Image.new("RGBA", (2, 2), (0, 0, 0, 0)).save(path)
    assert torch.equal(load_image(path), torch.ones(3, 2, 2))


def test_palette(tmp_path):
    im = Image.new("P", (2, 1))
    im.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    im.putpixel((1, 0), 1)
    path = tmp_path / "p.png"
    im.save(path)
    assert _pil_mode(path) == "P"
    out = load_image(path)
    assert torch.equal(out[:, 0, 0], torch.tensor([1.0, 0.0, 0.0]))
    assert torch.equal(out[:, 0, 1], torch.tensor([0.0, 0.0, 1.0]))


def test_palette_with_transparency(tmp_path):
    im = Image.new("P", (2, 1))
    im.putpalette([255, 0, 0, 0, 0, 0] + [0] * 762)
    im.putpixel((1, 0), 1)
    im.info["transparency"] = 1  # index 1 (black) is transparent
    path = tmp_path / "pt.png"
    im.save(path)
    with Image.open(path) as reread:
        assert reread.mode == "P" and "transparency" in reread.info
    out = load_image(path)
    assert torch.equal(out[:, 0, 0], torch.tensor([1.0, 0.0, 0.0]))
    assert torch.equal(out[:, 0, 1], torch.ones(3))


def test_grayscale_l(tmp_path):
    path = tmp_path / "l.png"
    Image.fromarray(np.array([[0, 51, 255]], dtype=np.uint8)).save(path)
    out = load_image(path)
    assert out.shape == (3, 1, 3)
    for c in range(3):
        assert torch.allclose(out[c, 0], torch.tensor([0.0, 0.2, 1.0]))


def test_one_bit(tmp_path):
    im = Image.new("1", (2, 1), 0)
    im.putpixel((1, 0), 1)
    path = tmp_path / "b.png"
    im.save(path)
    assert _pil_mode(path) == "1"
    out = load_image(path)
    assert torch.equal(out[:, 0, 0], torch.zeros(3))
    assert torch.equal(out[:, 0, 1], torch.ones(3))


def test_cmyk(tmp_path):
    path = tmp_path / "c.tif"
    Image.new("CMYK", (2, 2), (0, 255, 255, 0)).save(path)  # pure red ink-wise
    assert _pil_mode(path) == "CMYK"
    assert torch.equal(load_image(path)[:, 0, 0], torch.tensor([1.0, 0.0, 0.0]))


def test_la_half_transparent_black(tmp_path):
    path = tmp_path / "la.png"
    Image.new("LA", (2, 2), (0, 51)).save(path)  # black at alpha 0.2 -> 0.8 grey
    assert _pil_mode(path) == "LA"
    assert torch.allclose(load_image(path), torch.full((3, 2, 2), 0.8), atol=1e-6)


def test_i16_png_scales_full_range(tmp_path):
    path = tmp_path / "g16.png"
    Image.fromarray(np.array([[0, 32768, 65535]], dtype=np.uint16)).save(path)
    assert _pil_mode(path).startswith("I")
    out = load_image(path)
    assert out[0, 0, 0] == 0.0 and out[0, 0, 2] == 1.0
    assert abs(float(out[0, 0, 1]) - 0.5) < 1e-4
    assert torch.equal(out[0], out[1]) and torch.equal(out[1], out[2])


def test_i16_tiff_low_values_are_dark(tmp_path):
    # PIL's convert("L") would clip 1000 to 255 (white); the real value is 1000/65535.
    path = tmp_path / "g16.tif"
    Image.fromarray(np.array([[1000, 65535]], dtype=np.uint16)).save(path)
    out = load_image(path)
    assert abs(float(out[0, 0, 0]) - 1000 / 65535) < 1e-6


def test_float_image_in_unit_range_kept(tmp_path):
    path = tmp_path / "f.tif"
    Image.fromarray(np.array([[0.0, 0.25, 1.0]], dtype=np.float32), mode="F").save(path)
    out = load_image(path)
    assert torch.allclose(out[1, 0], torch.tensor([0.0, 0.25, 1.0]))


# --------------------------------------------------------------------------- ICC profiles


def _swapped_srgb_profile() -> bytes:
    """sRGB with the rXYZ and bXYZ tags swapped: stored red means displayed blue."""
    data = bytearray(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())
    count = struct.unpack(">I", data[128:132])[0]
    entries = {bytes(data[132 + 12 * i: 136 + 12 * i]): 132 + 12 * i for i in range(count)}
    r, b = entries[b"rXYZ"], entries[b"bXYZ"]
    data[r + 4: r + 12], data[b + 4: b + 12] = data[b + 4: b + 12], data[r + 4: r + 12]
    return bytes(data)


def test_icc_profile_converted_to_srgb(tmp_path):
    path = tmp_path / "icc.png"
    Image.new("RGB", (2, 2), (200, 100, 50)).save(path, icc_profile=_swapped_srgb_profile())
    px = np.round(load_image(path)[:, 0, 0].numpy() * 255).astype(int).tolist()
    assert px == [50, 100, 200]


def test_srgb_profile_keeps_values(tmp_path):
    path = tmp_path / "srgb.png"
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    _rgb(_COLOURS).save(path, icc_profile=srgb)
    assert torch.equal(load_image(path), torch.from_numpy(_COLOURS).permute(2, 0, 1).float() / 255)


def test_broken_icc_profile_is_ignored_with_warning(tmp_path, caplog):
    path = tmp_path / "bad_icc.png"
    Image.new("RGB", (2, 2), (10, 20, 30)).save(path, icc_profile=b"not a profile at all")
    with caplog.at_level(logging.WARNING, logger="nstyle.image"):
        out = load_image(path)
    assert np.round(out[:, 0, 0].numpy() * 255).astype(int).tolist() == [10, 20, 30]
    assert any(r.name == "nstyle.image" and "ICC" in r.getMessage() for r in caplog.records)


# --------------------------------------------------------------------------- read errors


def _real_jpeg_bytes() -> bytes:
    buf = io.BytesIO()
    _rgb(RNG.integers(0, 256, (32, 32, 3))).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def test_corrupt_file(tmp_path):
    path = tmp_path / "noise.png"
    path.write_bytes(RNG.integers(0, 256, 500, dtype=np.uint8).tobytes())
    with pytest.raises(ImageError) as excinfo:
        load_image(path)
    _assert_one_line_error(excinfo, "noise.png", "not an image file")


def test_truncated_jpeg(tmp_path):
    data = _real_jpeg_bytes()
    path = tmp_path / "half.jpg"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError) as excinfo:
        load_image(path)
    _assert_one_line_error(excinfo, "half.jpg", "truncated")


def test_empty_file(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    with pytest.raises(ImageError) as excinfo:
        load_image(path)
    _assert_one_line_error(excinfo, "empty.png", "empty file")


def test_missing_file(tmp_path):
    with pytest.raises(ImageError) as excinfo:
        load_image(tmp_path / "nope.png")
    _assert_one_line_error(excinfo, "nope.png", "no such file")


def test_directory(tmp_path):
    folder = tmp_path / "adir.png"
    folder.mkdir()
    with pytest.raises(ImageError) as excinfo:
        load_image(folder)
    _assert_one_line_error(excinfo, "adir.png", "is a directory")


def test_permission_denied(tmp_path, monkeypatch):
    path = tmp_path / "locked.png"
    Image.new("RGB", (1, 1)).save(path)

    def deny(name):
        raise PermissionError(13, "Permission denied", name)

    monkeypatch.setattr(nimg, "_open_binary", deny)
    with pytest.raises(ImageError) as excinfo:
        load_image(path)
    _assert_one_line_error(excinfo, "locked.png", "permission denied")


def test_image_above_bomb_limit(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    Image.new("RGB", (20, 10)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 150)  # 200 px: Pillow would only warn
    with pytest.raises(ImageError) as excinfo:
        load_image(path)
    _assert_one_line_error(excinfo, "big.png", "too large")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 50)  # 200 px > 2x limit: Pillow raises
    with pytest.raises(ImageError, match="too large"):
        load_image(path)


def test_zero_size_image(tmp_path, monkeypatch):
    path = tmp_path / "zero.png"
    Image.new("RGB", (1, 1)).save(path)
    monkeypatch.setattr(Image, "open", lambda fp, *a, **k: Image.new("RGB", (0, 3)))
    with pytest.raises(ImageError) as excinfo:
        load_image(path)
    _assert_one_line_error(excinfo, "zero.png", "zero size")


def test_newline_in_filename_keeps_message_one_line(tmp_path):
    with pytest.raises(ImageError) as excinfo:
        load_image(tmp_path / "a\nb.png")
    assert "\n" not in str(excinfo.value)


# --------------------------------------------------------------------------- saving


def _gray_tensor(h: int = 4, w: int = 6) -> torch.Tensor:
    return torch.full((3, h, w), 0.5)


def test_save_failure_leaves_nothing_behind(tmp_path, monkeypatch):
    def broken_save(self, fp, format=None, **params):
        with open(fp, "wb") as handle:
            handle.write(b"\x89PNG partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    target = tmp_path / "out.png"
    with pytest.raises(ImageError) as excinfo:
        save_image(_gray_tensor(), target)
    _assert_one_line_error(excinfo, "out.png", "No space left on device")
    assert list(tmp_path.iterdir()) == []


def test_save_failure_keeps_existing_target(tmp_path, monkeypatch):
    target = tmp_path / "keep.png"
    target.write_bytes(b"original contents")

    def broken_save(self, fp, format=None, **params):
        with open(fp, "wb") as handle:
            handle.write(b"half")
        raise RuntimeError("boom")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(RuntimeError, match="boom"):
        save_image(_gray_tensor(), target)
    assert target.read_bytes() == b"original contents"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.png"]


def test_save_replaces_existing_target_without_temp_files(tmp_path):
    target = tmp_path / "x.png"
    target.write_bytes(b"old")
    save_image(_gray_tensor(), target)
    assert load_image(target).shape == (3, 4, 6)
    assert [p.name for p in tmp_path.iterdir()] == ["x.png"]


def test_unsupported_extension(tmp_path):
    with pytest.raises(ImageError) as excinfo:
        save_image(_gray_tensor(), tmp_path / "x.xyz")
    assert str(excinfo.value) == "unsupported output format '.xyz' (use .png, .jpg, .webp, .tif or .bmp)"
    assert list(tmp_path.iterdir()) == []


def test_missing_output_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ImageError) as excinfo:
        save_image(_gray_tensor(), os.path.join("out", "x.png"))
    assert str(excinfo.value) == f"cannot write '{os.path.join('out', 'x.png')}': directory 'out' does not exist"


def test_png_metadata_round_trip(tmp_path):
    meta = {"Software": "nstyle", "nstyle:params": '{"style_weight": 1e4}', "Comment": "caf\u00e9 \u2192 \u6f22"}
    path = tmp_path / "m.png"
    save_image(_gray_tensor(), path, metadata=meta)
    assert read_png_text(path) == meta


def test_read_png_text_without_chunks(tmp_path):
    path = tmp_path / "plain.png"
    save_image(_gray_tensor(), path)
    assert read_png_text(path) == {}


@pytest.mark.parametrize("ext", [".jpg", ".JPEG", ".webp", ".tif", ".tiff", ".bmp", ".PNG"])
def test_other_outputs_reload(tmp_path, ext):
    arr = torch.zeros(3, 5, 9)
    arr[0] = 1.0  # red
    path = tmp_path / f"o{ext}"
    save_image(arr, path, quality=90)
    out = load_image(path)
    assert out.shape == (3, 5, 9)
    assert torch.allclose(out[:, 2, 4], torch.tensor([1.0, 0.0, 0.0]), atol=0.06)
    assert ext.lower() in SUPPORTED_OUTPUT


def test_save_accepts_batch_of_one(tmp_path):
    path = tmp_path / "b.png"
    save_image(torch.zeros(1, 3, 2, 2), path)
    assert load_image(path).shape == (3, 2, 2)


def test_atomic_write_bytes(tmp_path):
    target = tmp_path / "side.json"
    atomic_write_bytes(target, b'{"a": 1}')
    atomic_write_bytes(target, b'{"a": 2}')
    assert target.read_bytes() == b'{"a": 2}'
    assert [p.name for p in tmp_path.iterdir()] == ["side.json"]
    assert (target.stat().st_mode & 0o777) == (0o666 & ~_current_umask())


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_atomic_path_temp_name_and_cleanup(tmp_path):
    target = tmp_path / "side.json"
    with pytest.raises(KeyError):
        with atomic_path(target) as tmp:
            name = os.path.basename(tmp)
            assert os.path.dirname(tmp) == str(tmp_path)
            assert name.startswith(".side.json.") and name.endswith(".tmp")
            raise KeyError("fail")
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- resize


@pytest.mark.parametrize("size", [(5, 4), (13, 17), (7, 11), (1, 1), (3, 22)])
def test_nearest_matches_pil_exactly(size):
    arr = np.random.default_rng(7).integers(0, 256, (7, 11, 3), dtype=np.uint8)
    h, w = size
    expected = np.asarray(Image.fromarray(arr).resize((w, h), Image.NEAREST))
    tensor = torch.from_numpy(arr).permute(2, 0, 1)
    got = resize(tensor, size, method="nearest")
    assert got.shape == (3, h, w) and got.dtype == torch.uint8
    assert np.array_equal(got.permute(1, 2, 0).numpy(), expected)
    batched = resize(tensor.float().unsqueeze(0) / 255, size, method="nearest")
    assert batched.shape == (1, 3, h, w)
    assert torch.equal(batched[0], got.float() / 255)


def test_nearest_matches_pil_where_naive_formula_does_not():
    # 2 -> 7: the closed form floor((3 + 0.5) * 2/7) is exactly 1, but PIL accumulates 2/7 in a
    # double and lands just below 1, so output pixel 3 still takes source pixel 0.
    two = resize(torch.tensor([[[0, 1]]]), (1, 7), method="nearest")[0, 0].tolist()
    assert two == [0, 0, 0, 0, 1, 1, 1]
    assert np.asarray(Image.fromarray(np.array([[0, 1]], dtype=np.uint8)).resize((7, 1), Image.NEAREST))[0].tolist() == two
    # ...and a sweep of sizes, exhaustively.
    for src in range(1, 40):
        row = np.arange(src, dtype=np.int32).reshape(1, src)
        pil_img = Image.fromarray(row)
        for dst in range(1, 40):
            expected = np.asarray(pil_img.resize((dst, 1), Image.NEAREST))[0]
            got = resize(torch.from_numpy(row).unsqueeze(0), (1, dst), method="nearest")[0, 0]
            assert got.tolist() == expected.tolist(), (src, dst)


def test_area_keeps_constant_image_constant():
    img = torch.full((3, 40, 30), 0.3)
    out = resize(img, (7, 5), method="area")
    assert out.shape == (3, 7, 5)
    assert torch.allclose(out, torch.full_like(out, 0.3), atol=1e-6)


def test_area_is_antialiased_and_clamped():
    # One-pixel stripes shrunk 7x: plain sampling hits pixel centres and gives 0/1 columns;
    # the antialiased filter averages ~28 neighbours to about 0.5.
    stripes = torch.zeros(1, 3, 8, 63)
    stripes[..., ::2] = 1.0
    out = resize(stripes, (8, 9), method="area")
    assert out.shape == (1, 3, 8, 9)
    assert torch.allclose(out, torch.full_like(out, 0.5), atol=0.1)
    step = torch.zeros(3, 4, 16)
    step[:, :, 8:] = 1.0
    up = resize(step, (4, 40), method="area")
    assert float(up.min()) >= 0.0 and float(up.max()) <= 1.0


@pytest.mark.parametrize("method", ["bicubic", "bilinear"])
def test_other_methods_shape_and_range(method):
    img = torch.rand(3, 9, 12)
    out = resize(img, (20, 5), method=method)
    assert out.shape == (3, 20, 5)
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


def test_resize_rejects_unknown_method():
    with pytest.raises(ValueError, match="unknown resize method"):
        resize(torch.zeros(3, 2, 2), (1, 1), method="lanczos")


# --------------------------------------------------------------------------- fit_size


def test_fit_size():
    assert fit_size(768, 1024, 512) == (384, 512)
    assert fit_size(1024, 768, 512) == (512, 384)
    assert fit_size(1, 4000, 512) == (1, 512)
    assert fit_size(4000, 1, 512) == (512, 1)
    assert fit_size(300, 300, 512) == (512, 512)
    assert fit_size(3, 4, 6) == (5, 6)  # 4.5 rounds half up
    assert fit_size(1000, 333, 100) == (100, 33)
