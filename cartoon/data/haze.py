"""Hazy images by the atmospheric scattering model: the embedded data of the dehaze profile.

A hazy image is ``I = J t + A (1 - t)`` with ``t = exp(-beta d)`` (Koschmieder's law as used
by RESIDE): ``J`` the clear image in [0, 1], ``d`` a depth map, ``beta`` the scattering
coefficient and ``A`` the airlight (atmospheric light). We have no depth for the bundled
photographs, so ``d`` is made up: a smooth random map per image, a vertical ramp (the top of a
picture is usually farther away) plus a heavily blurred random field, normalised to [0, 1].

Two settings, after the two sets of the CartoonGAN experiment report:

- ``thin``, RESIDE-like: RESIDE's indoor training set (Li et al., "Benchmarking Single-Image
  Dehazing and Beyond", IEEE TIP 2019) draws A uniformly in [0.7, 1.0] and beta in
  [0.6, 1.8]; we keep its A and the lower part of its beta, [0.6, 1.2], on depth in [0, 1]:
  mean transmission about 0.6.
- ``dense``, O-HAZE-like: O-HAZE (Ancuti et al., CVPRW 2018) is real haze from haze machines
  and documents no A or beta, so the setting is ours: A in [0.8, 1.0], beta in [2.0, 3.0],
  mean transmission about 0.3; the far half of a picture is mostly airlight.

The airlight is near white with a slight tint: each channel is A times a factor within
``TINT`` of 1 (clipped to 1). Everything is drawn from the generator passed in, so an image
is the same for the same seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

TINT = 0.04  # airlight channels differ from the grey level by up to 4 %
FIELD_CELLS = 4  # the random depth field is drawn on a 4x4 grid, then smoothed up to the image


@dataclass(frozen=True)
class HazeSetting:
    """Ranges the airlight level and the scattering coefficient are drawn from, uniformly."""

    airlight: tuple[float, float]
    beta: tuple[float, float]


SETTINGS = {
    "thin": HazeSetting(airlight=(0.7, 1.0), beta=(0.6, 1.2)),
    "dense": HazeSetting(airlight=(0.8, 1.0), beta=(2.0, 3.0)),
}


@dataclass(frozen=True)
class Haze:
    """The haze of one image: transmission t (HxW float32 in (0, 1]) and airlight A (3 floats in [0, 1])."""

    transmission: np.ndarray
    airlight: np.ndarray
    beta: float


def depth_map(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A smooth HxW float32 depth in [0, 1]: a top-to-bottom ramp (far to near) weighted 50-80 %,
    plus a random field on a coarse grid, enlarged smoothly, so haze thickens upward in uneven
    banks rather than in straight lines."""
    ramp = np.linspace(1.0, 0.0, height, dtype=np.float32)[:, None].repeat(width, axis=1)
    field = rng.random((FIELD_CELLS, FIELD_CELLS)).astype(np.float32)
    field = cv2.resize(field, (width, height), interpolation=cv2.INTER_CUBIC)
    field = cv2.GaussianBlur(field, (0, 0), sigmaX=max(1.0, min(height, width) / 8))
    weight = rng.uniform(0.5, 0.8)
    depth = weight * ramp + (1 - weight) * (field - field.min()) / max(float(np.ptp(field)), 1e-6)
    return ((depth - depth.min()) / max(float(np.ptp(depth)), 1e-6)).astype(np.float32)


def draw_haze(rng: np.random.Generator, height: int, width: int, setting: str) -> Haze:
    """A random haze for an image of the given size, drawn from ``SETTINGS[setting]``."""
    ranges = SETTINGS[setting]
    beta = float(rng.uniform(*ranges.beta))
    level = rng.uniform(*ranges.airlight)
    airlight = np.clip(level * rng.uniform(1 - TINT, 1 + TINT, 3), 0.0, 1.0).astype(np.float32)
    transmission = np.exp(-beta * depth_map(rng, height, width)).astype(np.float32)
    return Haze(transmission, airlight, beta)


def apply_haze(clear: np.ndarray, haze: Haze) -> np.ndarray:
    """``I = J t + A (1 - t)`` for an HxWx3 uint8 clear image; HxWx3 uint8 hazy image
    (where t = 1 the pixel is unchanged)."""
    t = haze.transmission[..., None]
    hazy = clear.astype(np.float32) * t + 255.0 * haze.airlight * (1.0 - t)
    return np.clip(np.rint(hazy), 0, 255).astype(np.uint8)
