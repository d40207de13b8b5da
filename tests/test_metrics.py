import numpy as np
import pytest

from cartoon.data.builtin import builtin_items
from cartoon.metrics import colour_count, edge_density, edge_ssim, flatness, style_of, style_statistics


def test_flat_image():
    flat = np.full((64, 64, 3), (200, 40, 90), np.uint8)
    assert edge_density(flat) == 0.0
    assert flatness(flat) == 1.0
    assert colour_count(flat) == 1.0


def test_two_colour_split_has_edges_only_at_the_boundary():
    image = np.zeros((64, 64, 3), np.uint8)
    image[:, 32:] = 255
    density = edge_density(image)
    assert 0 < density <= 2 * 64 / (64 * 64)
    assert colour_count(image) == 2.0
    assert flatness(image) == pytest.approx(1 - 2 * 64 / (64 * 64))  # two gradient columns at the step


def test_colour_count_is_per_64x64_block():
    rng = np.random.default_rng(0)
    tile = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    assert colour_count(np.tile(tile, (2, 3, 1))) == pytest.approx(colour_count(tile))


def test_edge_ssim():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
    assert edge_ssim(image, image) == pytest.approx(1.0)
    flat = np.full_like(image, 128)
    assert edge_ssim(image, flat) < 0.1
    with pytest.raises(ValueError, match="one size"):
        edge_ssim(image, image[:20])


def test_synthetic_cartoons_score_more_cartoon_like_than_photos():
    photos = style_statistics(image for _, image in builtin_items("photo", 8, 96, 0))
    cartoons = style_statistics(image for _, image in builtin_items("cartoon", 8, 96, 0))
    assert cartoons["flatness"] > photos["flatness"]
    assert cartoons["colour_count"] < photos["colour_count"]
    noise = np.random.default_rng(2).integers(0, 256, (96, 96, 3), dtype=np.uint8)
    assert style_of(noise)["flatness"] < photos["flatness"]


def test_style_statistics_needs_images():
    with pytest.raises(ValueError):
        style_statistics([])
