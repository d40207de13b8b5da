import numpy as np
import pytest
import torch
from skimage.segmentation import slic

from cartoon.superpixel import (
    adaptive_colours,
    adjacent_pairs,
    merge_regions,
    region_stats,
    rgb_to_lab,
    slic_tensor,
    structure,
)


def _two_regions() -> tuple[np.ndarray, np.ndarray]:
    """Left half: low-spread values (std < 20); right half: a spread-out, skewed set (std > 40)."""
    labels = np.zeros((4, 8), dtype=np.int64)
    labels[:, 4:] = 1
    image = np.zeros((4, 8, 3), dtype=np.uint8)
    image[:, :4] = np.array([100, 102, 104, 110] * 4).reshape(4, 4)[..., None]
    image[:, 4:] = np.array([0, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 200, 200, 250, 250]).reshape(4, 4)[..., None]
    return labels, image


def test_region_stats_match_numpy():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, (12, 13))
    image = rng.integers(0, 256, (12, 13, 3), dtype=np.uint8)
    stats = region_stats(labels, image)
    for region in range(5):
        values = image[labels == region]
        assert stats["count"][region] == len(values)
        np.testing.assert_allclose(stats["mean"][region], values.mean(axis=0))
        np.testing.assert_allclose(stats["std"][region], values.std(axis=0), rtol=1e-9, atol=1e-9)
        np.testing.assert_array_equal(stats["median"][region], np.median(values, axis=0))


def test_adaptive_colouring_mean_median_and_blend():
    labels, image = _two_regions()
    stats = region_stats(labels, image)
    low, high = image[:, :4, 0].ravel(), image[:, 4:, 0].ravel()
    assert low.std() < 20 and high.std() > 40 and abs(high.mean() - np.median(high)) > 30
    colours = adaptive_colours(stats["mean"], stats["std"], stats["median"])
    np.testing.assert_allclose(colours[0], low.mean())  # std < 20: mean
    np.testing.assert_allclose(colours[1], np.median(high))  # std > 40: median
    # In between: the linear blend, alpha = (std - 20) / 20 towards the median.
    blend = adaptive_colours(np.array([10.0]), np.array([25.0]), np.array([50.0]))
    assert blend[0] == pytest.approx(0.75 * 10 + 0.25 * 50)
    assert adaptive_colours(np.array([10.0]), np.array([20.0]), np.array([50.0]))[0] == pytest.approx(10)
    assert adaptive_colours(np.array([10.0]), np.array([40.0]), np.array([50.0]))[0] == pytest.approx(50)


def _photo(size=64, seed=0) -> np.ndarray:
    """A smooth synthetic scene with a few shapes and noise: many felzenszwalb regions."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:size, :size] / size
    image = np.stack([200 * x, 150 * y + 50, 120 * (1 - x) * y + 60], axis=-1)
    for _ in range(6):
        cy, cx, radius = rng.uniform(0, 1, 2).tolist() + [rng.uniform(0.08, 0.25)]
        image[(y - cy) ** 2 + (x - cx) ** 2 < radius**2] = rng.uniform(0, 255, 3)
    image += rng.normal(0, 12, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def _tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 127.5 - 1


@pytest.mark.parametrize("method", ["slic", "slic_tensor", "felzenszwalb"])
def test_structure_has_one_colour_per_region(method, monkeypatch):
    """On the CPU path (slic, felzenszwalb) and the device path (slic_tensor, run here on the CPU)."""
    import cartoon.superpixel as sp

    seen = {}
    name = {"slic": "slic_labels", "slic_tensor": "slic_tensor", "felzenszwalb": "felzenszwalb_labels"}[method]
    original = getattr(sp, name)

    def spy(*args, **kwargs):
        result = original(*args, **kwargs)
        seen["labels"] = result[0] if method == "slic_tensor" else result
        return result

    monkeypatch.setattr(sp, name, spy)
    images = _tensor(_photo()[None])
    if method == "slic_tensor":
        labels, k = sp.slic_tensor(images, 12)
        out = sp.paint_mean(images, labels, k)
    else:
        out = structure(images, method, 12, workers=1)
    labels = np.asarray(seen["labels"]).reshape(64, 64)
    assert out.shape == images.shape and out.dtype == images.dtype
    assert len(np.unique(labels)) > 1
    pixels = out[0].permute(1, 2, 0).numpy()
    for region in np.unique(labels):
        assert len(np.unique(pixels[labels == region], axis=0)) == 1


def test_lab_conversion_matches_scikit_image():
    from skimage.color import rgb2lab

    rgb = np.random.default_rng(0).random((5, 7, 3))
    ours = rgb_to_lab(torch.from_numpy(rgb).permute(2, 0, 1)[None].float())[0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(ours, rgb2lab(rgb), atol=2e-3)


def test_slic_tensor_segments_like_scikit_image():
    """Same algorithm, same parameters: on a scene of flat shapes both find the shapes' borders.

    Measured as boundary agreement: the share of our label boundaries lying within one pixel of
    a scikit-image boundary, and the mean colour error of painting with either segmentation."""
    image = _photo(96, seed=3)
    labels, k = slic_tensor(_tensor(image[None]), n_segments=50)
    labels = labels[0].numpy()
    reference = slic(image, n_segments=50, compactness=10, sigma=1, convert2lab=True, start_label=0, channel_axis=-1)
    assert 40 <= k <= 60 and 0 <= labels.min() and labels.max() < k

    def edges(lab):
        edge = np.zeros(lab.shape, bool)
        edge[:, 1:] |= lab[:, 1:] != lab[:, :-1]
        edge[1:] |= lab[1:] != lab[:-1]
        return edge

    from scipy.ndimage import binary_dilation

    ours, theirs = edges(labels), edges(reference)
    assert (ours & binary_dilation(theirs, iterations=1)).sum() / ours.sum() > 0.6

    def paint_error(lab):
        stats = region_stats(lab, image)
        return np.abs(stats["mean"][lab] - image).mean()

    assert paint_error(labels) < 1.2 * paint_error(reference)


def test_slic_tensor_is_per_image_and_deterministic():
    batch = np.stack([_photo(48, seed) for seed in range(3)])
    together, k = slic_tensor(_tensor(batch), n_segments=20)
    for i in range(3):
        alone, _ = slic_tensor(_tensor(batch[i : i + 1]), n_segments=20)
        assert torch.equal(alone[0], together[i])
    assert torch.equal(slic_tensor(_tensor(batch), n_segments=20)[0], together)
    # a size that is not a multiple of the cell side: padding never leaks into the labels
    odd, k = slic_tensor(_tensor(batch[:, :45, :37]), n_segments=20)
    assert odd.shape == (3, 45, 37) and odd.max() < k


def test_merging_reaches_the_requested_count():
    rng = np.random.default_rng(1)
    labels = np.repeat(np.repeat(np.arange(64).reshape(8, 8), 4, axis=0), 4, axis=1)  # 64 blocks of 4x4
    image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    for target in (40, 10, 1):
        merged = merge_regions(labels, image, target)
        assert merged.max() + 1 == target and len(np.unique(merged)) == target
        # merging only unites whole initial regions
        assert all(len(np.unique(merged[labels == region])) == 1 for region in range(64))
    assert len(np.unique(merge_regions(labels, image, 100))) == 64  # fewer than asked: unchanged


def test_merging_prefers_similar_neighbours():
    labels = np.repeat(np.arange(4)[None], 4, axis=0).repeat(4, axis=1)  # four vertical stripes 0..3
    image = np.zeros((4, 16, 3), dtype=np.uint8)
    image[:, :4] = 10
    image[:, 4:8] = 12
    image[:, 8:12] = 200
    image[:, 12:] = 202
    merged = merge_regions(labels, image, 2)
    assert len(np.unique(merged[:, :8])) == 1 and len(np.unique(merged[:, 8:])) == 1
    assert merged[0, 0] != merged[0, 15]


def test_adjacent_pairs():
    labels = np.array([[0, 0, 1], [2, 2, 1], [2, 3, 3]])
    assert adjacent_pairs(labels).tolist() == [[0, 1], [0, 2], [1, 2], [1, 3], [2, 3]]


def test_structure_batch_threads_match_serial():
    batch = _tensor(np.stack([_photo(48, seed) for seed in range(3)]))
    for method in ("slic", "felzenszwalb"):
        assert torch.equal(structure(batch, method, 10, workers=3), structure(batch, method, 10, workers=1))
    with pytest.raises(ValueError):
        structure(batch, "watershed", 10, workers=1)  # type: ignore[arg-type]


def test_gaussian_blur_matches_scipy_including_borders():
    from scipy.ndimage import gaussian_filter

    from cartoon.superpixel import gaussian_blur

    image = np.random.default_rng(0).random((2, 3, 9, 13))
    ours = gaussian_blur(torch.from_numpy(image), 1.0).numpy()
    for n in range(2):
        for c in range(3):
            np.testing.assert_allclose(ours[n, c], gaussian_filter(image[n, c], 1.0, truncate=4.0), atol=1e-12)
