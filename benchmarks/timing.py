"""Shared timing helper for the benchmark scripts (run them from the repository root)."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np


def per_image_ms(function: Callable[[np.ndarray], np.ndarray], images: list[np.ndarray]) -> tuple[float, list[np.ndarray]]:
    """Milliseconds per image of ``function`` over ``images``, and its outputs."""
    start = time.perf_counter()
    outputs = [function(image) for image in images]
    return (time.perf_counter() - start) * 1000 / len(images), outputs
