"""Cel-shaded renderings of photographs: the embedded default cartoon set.

No cartoon images ship with the installed packages and none may be downloaded, so the default
pipeline's cartoon domain is drawn by this code from bundled photographs that are NOT in the
photo domain. A cartoon with the same kinds of content as the photos (animals, objects, people,
buildings, plants) teaches a GAN the style and not a layout, which a single synthetic template
cannot (the generator then copies the template's sky and ground bands into every output).

The rendering, deterministic for the same input (no random state):

1. edge-preserving smoothing: ``bilateral_passes`` bilateral filters remove texture and noise
   but keep object boundaries (the flat shading of cel animation);
2. colour quantisation: k-means in CIE Lab with ``colours`` centres, initialised at luminance
   quantiles (no random seed), then a saturation boost, so each region becomes one flat tone
   from a small, vivid palette;
3. dark outlines: Canny edges of the smoothed luminance, thickened to about
   ``outline_px`` pixels and drawn in a dark ink colour.

Rendering happens at twice the requested size and is then area-downsampled, so outlines are
anti-aliased the way downscaled animation frames are.
"""

from __future__ import annotations

import cv2
import numpy as np

INK = np.array([24, 20, 28], np.float32)  # outline colour (dark blue-black, as inked lines)


def _nearest(points: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Index of the nearest centre for each point (squared distance via one matrix product)."""
    return (np.sum(centres**2, 1)[None] - 2 * points @ centres.T).argmin(1)


def _kmeans_lab(lab: np.ndarray, colours: int, iterations: int = 12, sample_every: int = 5) -> np.ndarray:
    """Quantise Lab pixels (N x 3 float32) to ``colours`` centres fitted on every
    ``sample_every``-th pixel; deterministic (centres start at luminance quantiles)."""
    sample = lab[::sample_every]
    order = np.argsort(sample[:, 0], kind="stable")
    centres = sample[order[((np.arange(colours) + 0.5) / colours * len(order)).astype(int)]].copy()
    for _ in range(iterations):
        assign = _nearest(sample, centres)
        sums = np.zeros_like(centres)
        np.add.at(sums, assign, sample)
        counts = np.bincount(assign, minlength=colours)[:, None]
        centres = np.where(counts > 0, sums / np.maximum(counts, 1), centres)
    return centres[_nearest(lab, centres)]


def cel_shade(
    rgb: np.ndarray,
    colours: int = 10,
    bilateral_passes: int = 4,
    saturation: float = 1.25,
    outline_px: float = 1.0,
) -> np.ndarray:
    """A HxWx3 uint8 RGB cel-shaded rendering of a HxWx3 uint8 RGB photo of the same size."""
    height, width = rgb.shape[:2]
    big = cv2.resize(rgb, (width * 2, height * 2), interpolation=cv2.INTER_CUBIC)
    smooth = big
    for _ in range(bilateral_passes):
        smooth = cv2.bilateralFilter(smooth, d=9, sigmaColor=40, sigmaSpace=5)
    lab = cv2.cvtColor(smooth.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB).reshape(-1, 3)
    flat = _kmeans_lab(lab, colours).reshape(height * 2, width * 2, 3)
    flat_rgb = np.clip(cv2.cvtColor(flat.astype(np.float32), cv2.COLOR_LAB2RGB), 0, 1)
    hsv = cv2.cvtColor(flat_rgb, cv2.COLOR_RGB2HSV)
    hsv[..., 1] = np.clip(hsv[..., 1] * saturation, 0, 1)
    shaded = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB) * 255.0
    gray = cv2.cvtColor(smooth, cv2.COLOR_RGB2GRAY)
    edges = cv2.Canny(cv2.GaussianBlur(gray, (3, 3), 0), 60, 140)
    thickness = max(1, int(round(2 * outline_px)))
    if thickness > 1:
        edges = cv2.dilate(edges, np.ones((thickness, thickness), np.uint8))
    shaded[edges > 0] = INK
    small = cv2.resize(shaded, (width, height), interpolation=cv2.INTER_AREA)
    return np.clip(small + 0.5, 0, 255).astype(np.uint8)
