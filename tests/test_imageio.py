"""decode_image must turn any untrusted bytes into RGB uint8 or a short, groupable rejection reason."""

from __future__ import annotations

import hashlib
import os
import stat
from io import BytesIO

import numpy as np
import pytest
from PIL import Image

from cartoon.data.imageio import ImageRejected, decode_image, decode_image_with_format, sha256_bytes, write_atomic

CAP = 10_000_000


def encode(img: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    buf = BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def noise(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def reason_of(data: bytes, max_pixels: int = CAP) -> str:
    with pytest.raises(ImageRejected) as info:
        decode_image(data, max_pixels)
    return info.value.reason


def test_rgb_png_round_trips_exactly():
    img = noise(7, 5)
    rgb, fmt = decode_image_with_format(encode(img), CAP)
    assert fmt == "PNG"
    assert rgb.dtype == np.uint8 and rgb.shape == (5, 7, 3) and rgb.flags.writeable
    np.testing.assert_array_equal(rgb, np.asarray(img))


def test_gray_l_becomes_equal_channels():
    gray = np.arange(0, 250, 10, dtype=np.uint8).reshape(5, 5)
    rgb = decode_image(encode(Image.fromarray(gray, "L")), CAP)
    for channel in range(3):
        np.testing.assert_array_equal(rgb[..., channel], gray)


def test_one_bit_becomes_black_and_white():
    bits = np.indices((4, 6)).sum(axis=0) % 2 == 0
    rgb = decode_image(encode(Image.fromarray(bits)), CAP)
    assert set(np.unique(rgb)) == {0, 255}
    np.testing.assert_array_equal(rgb[..., 0], np.where(bits, 255, 0))


def test_la_composites_on_white():
    la = Image.new("LA", (2, 1))
    la.putpixel((0, 0), (40, 0))  # fully transparent -> white
    la.putpixel((1, 0), (40, 255))  # opaque -> its gray value
    rgb = decode_image(encode(la), CAP)
    assert rgb[0, 0].tolist() == [255, 255, 255]
    assert rgb[0, 1].tolist() == [40, 40, 40]


def test_rgba_composites_on_white():
    rgba = Image.new("RGBA", (3, 1))
    rgba.putpixel((0, 0), (200, 10, 10, 0))
    rgba.putpixel((1, 0), (200, 10, 10, 255))
    rgba.putpixel((2, 0), (0, 0, 0, 128))
    rgb = decode_image(encode(rgba), CAP)
    assert rgb[0, 0].tolist() == [255, 255, 255]
    assert rgb[0, 1].tolist() == [200, 10, 10]
    assert np.all(np.abs(rgb[0, 2].astype(int) - 127) <= 1)  # half black over white


def test_palette_with_transparency_composites_on_white():
    pal = Image.new("P", (2, 1))
    pal.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    pal.putpixel((0, 0), 0)
    pal.putpixel((1, 0), 1)
    data = encode(pal, transparency=0)  # palette index 0 (red) is transparent
    rgb = decode_image(data, CAP)
    assert rgb[0, 0].tolist() == [255, 255, 255]
    assert rgb[0, 1].tolist() == [0, 0, 255]


def test_gif_palette_decodes():
    rgb, fmt = decode_image_with_format(encode(noise(6, 4).convert("P"), "GIF"), CAP)
    assert fmt == "GIF" and rgb.shape == (4, 6, 3)


def test_cmyk_converts_to_rgb():
    cmyk = Image.new("CMYK", (4, 4), (0, 0, 0, 0))  # no ink: white
    cmyk.paste((0, 255, 255, 0), (0, 0, 2, 4))  # magenta + yellow: red
    for fmt in ("JPEG", "TIFF"):
        rgb = decode_image(encode(cmyk, fmt), CAP).astype(int)
        assert np.all(rgb[:, 3] >= 240), fmt
        assert rgb[0, 0, 0] >= 240 and rgb[0, 0, 1] <= 15 and rgb[0, 0, 2] <= 15, fmt


def test_sixteen_bit_is_scaled_not_clipped():
    values = np.linspace(0, 65535, 256).round().astype(np.uint16).reshape(16, 16)
    values[0, 0], values[0, 1], values[0, 2] = 0, 32896, 65535  # 32896 = 128 * 257
    img = Image.fromarray(values)
    assert img.mode == "I;16"
    rgb = decode_image(encode(img), CAP)
    gray = rgb[..., 0]
    assert gray[0, 0] == 0 and gray[0, 1] == 128 and gray[0, 2] == 255
    flat = gray.ravel()[3:]
    assert np.all(np.diff(flat.astype(int)) >= 0)  # monotone: the ramp stays a ramp
    assert len(np.unique(gray)) > 200  # a clip to 255 would collapse almost everything


def test_thirty_two_bit_int_in_sixteen_bit_range_scales_like_sixteen_bit():
    values = np.array([[0, 257 * 100, 65535]], dtype=np.int32)
    rgb = decode_image(encode(Image.fromarray(values, "I"), "TIFF"), CAP)
    assert rgb[0, :, 0].tolist() == [0, 100, 255]


def test_float_image_scales_unit_range():
    values = np.array([[0.0, 0.5, 1.0]], dtype=np.float32)
    rgb = decode_image(encode(Image.fromarray(values, "F"), "TIFF"), CAP)
    assert rgb[0, :, 0].tolist() == [0, 128, 255]


def test_exif_orientation_is_applied():
    img = noise(40, 20)  # landscape on disk
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 CW to display
    rgb, fmt = decode_image_with_format(encode(img, "JPEG", exif=exif.tobytes()), CAP)
    assert fmt == "JPEG"
    assert rgb.shape == (40, 20, 3)  # portrait once upright


def test_empty_bytes():
    assert reason_of(b"") == "empty file"


def test_text_is_not_an_image():
    assert reason_of(b"<html><body>not found</body></html>\n") == "not an image"


def test_formats_outside_the_allowlist_are_refused():
    assert reason_of(encode(noise(8, 8), "PPM")) == "not an image"


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_file(fmt):
    data = encode(noise(64, 64), fmt)
    assert reason_of(data[: len(data) // 2]) == "corrupt or truncated"


def test_garbage_after_valid_header():
    data = encode(noise(32, 32))
    broken = data[:60] + bytes(reversed(data[60:]))
    assert reason_of(broken) == "corrupt or truncated"


def test_pixel_cap_is_checked_before_decoding():
    data = encode(Image.new("1", (4000, 3000)))  # 12 Mpx but only a few KB on disk
    assert len(data) < 50_000
    assert reason_of(data, max_pixels=1_000_000) == "too many pixels (4000 x 3000 > 1000000)"


def test_pillow_bomb_limits_become_rejections(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    warning_size = encode(Image.new("L", (40, 40)))  # 1600 px: Pillow warns
    error_size = encode(Image.new("L", (100, 100)))  # 10000 px > 2x limit: Pillow raises
    assert reason_of(warning_size).startswith("too many pixels")
    assert reason_of(error_size).startswith("too many pixels")


def test_sha256_bytes_matches_hashlib():
    assert sha256_bytes(b"abc") == hashlib.sha256(b"abc").hexdigest()
    assert sha256_bytes(b"abc").startswith("ba7816bf")


def test_write_atomic_replaces_whole_files_and_leaves_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "sub" / "names.txt"
    write_atomic(target, b"old\n")
    write_atomic(target, b"new\n")
    assert target.read_bytes() == b"new\n"

    def full_disk(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(OSError, match="disk full"):
        write_atomic(target, b"lost\n")
    assert target.read_bytes() == b"new\n" and [p.name for p in target.parent.iterdir()] == ["names.txt"]


def test_write_atomic_gives_the_mode_of_any_new_file(tmp_path):
    """Not mkstemp's 0600: what a stage writes is shared data, readable as the umask allows."""
    previous = os.umask(0o022)
    try:
        write_atomic(tmp_path / "out.csv", b"a,b\n")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "out.csv").stat().st_mode) == 0o644
