"""Shared timing helper for the benchmark scripts (run them from the repository root)."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np


def per_image_ms(
    function: Callable[[np.ndarray], np.ndarray], images: list[np.ndarray], repeats: int = 1
) -> tuple[float, list[np.ndarray]]:
    """Milliseconds per image of ``function`` over ``images`` (the best of ``repeats`` passes,
    which damps the noise of a shared machine), and its outputs."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        outputs = [function(image) for image in images]
        best = min(best, time.perf_counter() - start)
    return best * 1000 / len(images), outputs
