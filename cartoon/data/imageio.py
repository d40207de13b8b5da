"""Reading and writing the pipeline's own images (trusted files it wrote itself).

Untrusted input (crawled bytes, user folders) goes through ``decode_image`` instead.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import threading
import warnings
from io import BytesIO
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".gif")


def read_rgb(path: Path | str) -> np.ndarray:
    """HxWx3 uint8 RGB from an image file the pipeline wrote."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise OSError(f"cannot read image {path}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def write_png(path: Path | str, rgb: np.ndarray) -> None:
    """Write HxWx3 uint8 RGB as PNG atomically, creating parent folders."""
    ok, buf = cv2.imencode(".png", cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR))
    if not ok:
        raise OSError(f"cannot encode PNG for {path}")
    write_atomic(path, buf.tobytes())


def create_temp(folder: Path | str, prefix: str = "", suffix: str = ".tmp") -> tuple[int, str]:
    """Create a new, empty file with a random name in ``folder``: (open descriptor, path).

    Unlike ``tempfile.mkstemp``, whose files are mode 0600, the file gets the mode any new file
    gets (0666 less the umask, 0644 as a rule): the temp file is renamed into a stage output,
    which the other users of a shared data folder must be able to read.
    """
    path = os.path.join(folder, f"{prefix}{secrets.token_hex(8)}{suffix}")
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666), path


def write_atomic(path: Path | str, data: bytes) -> None:
    """Write bytes to a temp file beside ``path``, then rename it: a kill never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = create_temp(path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def gray3(rgb: np.ndarray) -> np.ndarray:
    """Grayscale replicated to three channels (AnimeGAN's gray cartoon sets)."""
    return np.repeat(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2)


def list_images(folder: Path | str) -> list[Path]:
    """Image files directly inside a folder, sorted by name for determinism."""
    folder = Path(folder)
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


#: Formats accepted from untrusted bytes. Anything else (EPS, which runs Ghostscript; PSD; ICO; ...)
#: is refused before a decoder runs, keeping the attack surface to common, well-fuzzed decoders.
ALLOWED_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF")

#: File suffix to store each accepted format under (MPO is a multi-picture JPEG from cameras).
FORMAT_SUFFIXES = {
    "PNG": ".png",
    "JPEG": ".jpg",
    "MPO": ".jpg",
    "GIF": ".gif",
    "BMP": ".bmp",
    "WEBP": ".webp",
    "TIFF": ".tif",
}

_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")
_open_lock = threading.Lock()


class ImageRejected(Exception):
    """Untrusted bytes that are not a usable image; ``reason`` is short and groupable in reports."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def sha256_bytes(data: bytes) -> str:
    """Hex SHA-256 of raw bytes: the content address of a crawled file."""
    return hashlib.sha256(data).hexdigest()


def decode_image(data: bytes, max_pixels: int) -> np.ndarray:
    """HxWx3 uint8 RGB from untrusted bytes, upright per EXIF; raises ImageRejected if unusable."""
    return decode_image_with_format(data, max_pixels)[0]


def decode_image_with_format(data: bytes, max_pixels: int) -> tuple[np.ndarray, str]:
    """Like ``decode_image`` but also returns Pillow's format name (``"PNG"``, ``"JPEG"``, ...).

    The pixel count is checked from the header before any pixel is decoded, so a small file that
    claims huge dimensions costs nothing. Truncated files are errors (LOAD_TRUNCATED_IMAGES stays
    off): a half-grey image is worse training data than no image.
    """
    if not data:
        raise ImageRejected("empty file")
    img = _open(data)
    width, height = img.size
    if width <= 0 or height <= 0:
        raise ImageRejected("corrupt or truncated")
    if width * height > max_pixels:
        raise ImageRejected(f"too many pixels ({width} x {height} > {max_pixels})")
    fmt = img.format or "unknown"
    try:
        img.load()
    except Exception:  # Pillow raises OSError, SyntaxError, ValueError, struct.error... on bad data
        raise ImageRejected("corrupt or truncated") from None
    try:
        img = ImageOps.exif_transpose(img)
    except Exception:  # a malformed EXIF block does not spoil good pixels: keep them unrotated
        pass
    return _to_rgb(img), fmt


def _open(data: bytes) -> Image.Image:
    """Identify the image from its header, with Pillow's bomb warning turned into an error.

    ``warnings.catch_warnings`` swaps process-global state, hence the lock; opening only parses
    the header, so holding it is cheap.
    """
    try:
        with _open_lock, warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(BytesIO(data), formats=ALLOWED_FORMATS)
    except UnidentifiedImageError:
        raise ImageRejected("not an image") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageRejected(f"too many pixels (> Pillow limit {Image.MAX_IMAGE_PIXELS})") from None
    except Exception:  # a recognised format whose header is broken
        raise ImageRejected("corrupt or truncated") from None


def _to_rgb(img: Image.Image) -> np.ndarray:
    """Any Pillow mode to RGB: alpha over white, high bit depths scaled (never clipped) to 8 bits."""
    if img.mode in _SIXTEEN_BIT_MODES or img.mode in ("I", "F"):
        gray = _gray_to_uint8(np.asarray(img), img.mode)
        return np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2))
    try:
        if img.mode in _ALPHA_MODES or "transparency" in img.info:
            rgba = img.convert("RGBA")
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            img = Image.alpha_composite(white, rgba)
        rgb = img.convert("RGB")
    except (ValueError, OSError):
        raise ImageRejected(f"unsupported mode ({img.mode})") from None
    return np.array(rgb, dtype=np.uint8)


def _gray_to_uint8(values: np.ndarray, mode: str) -> np.ndarray:
    """Map 16-bit, 32-bit int and float gray levels onto 0..255.

    16-bit data (and 32-bit ints that fit in 0..65535, which is how Pillow hands over 16-bit PNG
    and TIFF) are divided by 257 so 65535 -> 255; floats in 0..1 are multiplied by 255; anything
    else is stretched from its own min..max.
    """
    values = np.nan_to_num(values.astype(np.float32))
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if mode in _SIXTEEN_BIT_MODES or (mode == "I" and low >= 0 and high <= 65535):
        scaled = values / 257.0
    elif mode == "F" and low >= 0 and high <= 1:
        scaled = values * 255.0
    elif high > low:
        scaled = (values - low) * (255.0 / (high - low))
    else:
        scaled = np.zeros_like(values)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
