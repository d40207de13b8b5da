"""Image statistics for `cartoon evaluate`: content kept, and how cartoon-like an image is.

All take HxWx3 uint8 RGB and need no download. Style statistics are compared with the
cartoon training set's (``style_statistics``), stored with each trained generator.
"""

from __future__ import annotations

from collections.abc import Iterable

import cv2
import numpy as np
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

STYLE_KEYS = ("edge_density", "colour_count", "flatness")
COLOUR_LEVELS = 16
BLOCK_PIXELS = 64 * 64
FLAT_GRADIENT = 8.0  # Sobel magnitude on 0..255 luminance below which a pixel counts as flat
SSIM_SIDE = 64  # luminance SSIM is taken at this scale (shorter side, pixels)


def luminance(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)


def gradient_magnitude(gray: np.ndarray) -> np.ndarray:
    gx = cv2.Sobel(gray, cv2.CV_32F, 1, 0, ksize=3, borderType=cv2.BORDER_REFLECT_101)
    gy = cv2.Sobel(gray, cv2.CV_32F, 0, 1, ksize=3, borderType=cv2.BORDER_REFLECT_101)
    return np.sqrt(gx * gx + gy * gy) / 4.0  # a unit step between neighbours gives about 1


def edge_density(rgb: np.ndarray) -> float:
    """Share of Canny(100, 200) edge pixels; compare with the cartoon set (closer is more on-style)."""
    return float(np.count_nonzero(cv2.Canny(luminance(rgb), 100, 200)) / (rgb.shape[0] * rgb.shape[1]))


def colour_count(rgb: np.ndarray, levels: int = COLOUR_LEVELS) -> float:
    """Distinct colours after quantising each channel to ``levels`` levels, averaged per 64x64
    block of pixels so images of any size compare; lower is a flatter, more cartoon-like palette."""
    quantised = (rgb.astype(np.uint16) * levels // 256).reshape(-1, 3)
    codes = (quantised[:, 0] * levels + quantised[:, 1]) * levels + quantised[:, 2]
    height, width = rgb.shape[:2]
    block = int(np.sqrt(BLOCK_PIXELS))
    if height < block or width < block:
        return float(len(np.unique(codes)))
    codes = codes.reshape(height, width)
    counts = [
        len(np.unique(codes[top : top + block, left : left + block]))
        for top in range(0, height - block + 1, block)
        for left in range(0, width - block + 1, block)
    ]
    return float(np.mean(counts))


def flatness(rgb: np.ndarray, threshold: float = FLAT_GRADIENT) -> float:
    """Share of pixels whose luminance gradient is below ``threshold``; higher is flatter, more cartoon-like."""
    return float(np.mean(gradient_magnitude(luminance(rgb)) < threshold))


def edge_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM between the Sobel edge maps of two same-size images' luminance; 1 = structure kept, higher is better."""
    if a.shape != b.shape:
        raise ValueError(f"edge_ssim needs images of one size, got {a.shape} and {b.shape}")
    ga, gb = gradient_magnitude(luminance(a)), gradient_magnitude(luminance(b))
    if min(a.shape[:2]) < 3:  # too small for an SSIM window
        return float(np.allclose(ga, gb))
    data_range = float(max(ga.max(), gb.max(), 1e-6))
    return float(structural_similarity(ga, gb, data_range=data_range, win_size=_ssim_window(ga.shape)))


def _ssim_window(shape: tuple[int, ...]) -> int:
    """SSIM's window side: 7, or the largest odd side that fits a smaller image."""
    return min(7, *[side if side % 2 else side - 1 for side in shape[:2]])


def luminance_ssim(a: np.ndarray, b: np.ndarray, side: int = SSIM_SIDE) -> float:
    """SSIM of the luminance of two same-size images, both scaled so the shorter side is ``side``
    pixels: the content a viewer sees at thumbnail scale (1 = identical), blind to fine texture."""
    if a.shape != b.shape:
        raise ValueError(f"luminance_ssim needs images of one size, got {a.shape} and {b.shape}")
    ga, gb = (luminance(scale_short_side(image, side)) for image in (a, b))
    window = _ssim_window(ga.shape)
    if window < 3:
        return float(np.array_equal(ga, gb))
    return float(structural_similarity(ga, gb, data_range=255, win_size=window))


def paired(output: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """PSNR (dB) and colour SSIM of an output against its reference (e.g. a hazy photo's clear
    original), by scikit-image; a reference of another size is scaled to the output's first.
    Identical images get PSNR 100 dB rather than infinity, so means stay finite."""
    if reference.shape != output.shape:
        reference = cv2.resize(reference, output.shape[1::-1], interpolation=cv2.INTER_AREA)
    window = _ssim_window(output.shape)
    if np.array_equal(output, reference) or window < 3:
        same = float(np.array_equal(output, reference))
        return {"psnr": 100.0 if same else float(peak_signal_noise_ratio(reference, output, data_range=255)), "ssim": same}
    return {
        "psnr": float(peak_signal_noise_ratio(reference, output, data_range=255)),
        "ssim": float(structural_similarity(reference, output, data_range=255, channel_axis=2, win_size=window)),
    }


def scale_short_side(rgb: np.ndarray, side: int) -> np.ndarray:
    """Scale (area filter down, cubic up) so the shorter side is ``side`` pixels."""
    height, width = rgb.shape[:2]
    if min(height, width) == side:
        return rgb
    scale = side / min(height, width)
    size = (max(side, round(width * scale)), max(side, round(height * scale)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)


def style_of(rgb: np.ndarray) -> dict[str, float]:
    """The cartoon-likeness statistics of one image (keys: ``STYLE_KEYS``)."""
    return {"edge_density": edge_density(rgb), "colour_count": colour_count(rgb), "flatness": flatness(rgb)}


def style_statistics(images: Iterable[np.ndarray]) -> dict[str, float]:
    """Mean style statistics over a set of images (e.g. the cartoon training set)."""
    rows = [style_of(image) for image in images]
    if not rows:
        raise ValueError("style_statistics needs at least one image")
    return {key: float(np.mean([row[key] for row in rows])) for key in STYLE_KEYS}
