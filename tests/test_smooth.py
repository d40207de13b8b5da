"""Edge smoothing: the vectorised stage against a plain per-pixel reference."""

import cv2
import numpy as np
import pytest

from cartoon.data.imageio import write_png
from cartoon.data.smooth import smooth_edges, smooth_store
from cartoon.data.store import StoreWriter, read_store, write_store
from cartoon.errors import RuntimeFailure
from cartoon.params import SmoothParams


def reflect101(index: int, size: int) -> int:
    """OpenCV's BORDER_REFLECT_101 index rule (gfedcb|abcdefgh|gfedcba), written out."""
    while index < 0 or index >= size:
        index = -index if index < 0 else 2 * size - 2 - index
    return index


def reference_smooth(rgb: np.ndarray, low: int = 100, high: int = 200, k: int = 5) -> np.ndarray:
    """CartoonGAN's reference procedure, pixel by pixel: Gaussian average at dilated edges, truncated."""
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    edges = cv2.Canny(gray, low, high)
    dilated = cv2.dilate(edges, np.ones((k, k), np.uint8))
    g = cv2.getGaussianKernel(k, 0)
    weights = g @ g.T
    out = rgb.copy()
    height, width = gray.shape
    half = k // 2
    for y in range(height):
        for x in range(width):
            if dilated[y, x] == 0:
                continue
            for c in range(3):
                total = 0.0
                for dy in range(-half, half + 1):
                    for dx in range(-half, half + 1):
                        total += weights[dy + half, dx + half] * rgb[reflect101(y + dy, height), reflect101(x + dx, width), c]
                out[y, x, c] = int(total)  # the reference stores into uint8: truncation
    return out


def shapes_image(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = np.full((40, 48, 3), rng.integers(0, 256, 3), np.uint8)
    for _ in range(4):
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        centre = tuple(int(v) for v in rng.integers(5, 40, 2))
        cv2.circle(image, centre, int(rng.integers(4, 14)), colour, -1)
    cv2.rectangle(image, (3, 3), (20, 15), (0, 0, 0), 2)
    return image


@pytest.mark.parametrize("seed", range(3))
def test_matches_per_pixel_reference_on_random_images(seed):
    image = np.random.default_rng(seed).integers(0, 256, (24, 30, 3), dtype=np.uint8)
    assert np.abs(smooth_edges(image).astype(int) - reference_smooth(image).astype(int)).max() <= 1


@pytest.mark.parametrize("seed", range(3))
def test_matches_reference_on_drawn_edges_and_only_touches_edges(seed):
    image = shapes_image(seed)
    ours, ref = smooth_edges(image), reference_smooth(image)
    assert np.abs(ours.astype(int) - ref.astype(int)).max() <= 1
    dilated = cv2.dilate(cv2.Canny(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), 100, 200), np.ones((5, 5), np.uint8))
    assert np.array_equal(ours[dilated == 0], image[dilated == 0])
    assert np.count_nonzero(np.any(ours != image, axis=2)) > 20  # the edges really are blurred


def test_flat_image_is_unchanged():
    flat = np.full((16, 16, 3), 90, np.uint8)
    assert np.array_equal(smooth_edges(flat), flat)


def test_smooth_store_keeps_names_and_order(tmp_path):
    images = np.stack([shapes_image(index) for index in range(3)])
    write_store(tmp_path / "in.npy", ["c2", "c0", "c1"], images)
    assert smooth_store(tmp_path / "in.npy", tmp_path / "out" / "train.npy", SmoothParams()) == 3
    out = read_store(tmp_path / "out" / "train.npy")
    assert out.names == ["c2", "c0", "c1"]
    assert all(np.array_equal(out.pixels[index], smooth_edges(images[index])) for index in range(3))


def test_smooth_reads_a_folder_too(tmp_path):
    for index in range(2):
        write_png(tmp_path / "in" / f"c{index}.png", shapes_image(index))
    assert smooth_store(tmp_path / "in", tmp_path / "out.npy", SmoothParams(kernel_size=3)) == 2
    out = read_store(tmp_path / "out.npy")
    assert out.names == ["c0", "c1"] and np.array_equal(out.pixels[1], smooth_edges(shapes_image(1), kernel_size=3))


def test_smooth_without_images_fails(tmp_path):
    (tmp_path / "in").mkdir()
    with pytest.raises(RuntimeFailure, match="no images"):
        smooth_store(tmp_path / "in", tmp_path / "out.npy", SmoothParams())
    with StoreWriter(tmp_path / "empty.npy", 0, 8, 8) as writer:
        writer.commit([])
    with pytest.raises(RuntimeFailure, match="no images"):
        smooth_store(tmp_path / "empty.npy", tmp_path / "out.npy", SmoothParams())
    assert not (tmp_path / "out.npy").exists()
