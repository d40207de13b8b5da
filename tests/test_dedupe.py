"""Near-duplicate detection: hashes that survive re-encoding, and a dedupe equal to the plain greedy."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from cartoon.data import dedupe
from cartoon.data.dedupe import hamming, hash_array, near_duplicates, perceptual_hash

THRESHOLDS = [0, 1, 4, 10, 20]


def shapes(seed: int, height: int = 120, width: int = 160) -> np.ndarray:
    """A smooth picture: a colour ramp under a few random blurred ellipses."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width] / max(height, width)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(angle) * xx + np.sin(angle) * yy)[..., None]
    rgb = np.clip(rng.uniform(40, 215, 3) + rng.uniform(-80, 80, 3) * ramp, 0, 255).astype(np.uint8)
    for _ in range(6):
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        center = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        axes = (int(rng.integers(8, width // 2)), int(rng.integers(8, height // 2)))
        cv2.ellipse(rgb, center, axes, float(rng.uniform(0, 180)), 0, 360, color, -1)
    return cv2.GaussianBlur(rgb, (0, 0), 2)


def jpeg(rgb: np.ndarray, quality: int) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", rgb, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)


def greedy_reference(hashes: np.ndarray, threshold: int) -> np.ndarray:
    """The definition, one pair at a time: each item against the kept items before it."""
    values = [int(h) for h in hashes]
    kept: list[int] = []
    result = []
    for i, value in enumerate(values):
        match = next((j for j in kept if (value ^ values[j]).bit_count() <= threshold), -1)
        result.append(match)
        if match < 0:
            kept.append(i)
    return np.array(result, dtype=np.int64)


def planted(n: int, seed: int) -> np.ndarray:
    """Random hashes, a third of them copies of earlier ones with 0-7 bits flipped, some in chains."""
    rng = np.random.default_rng(seed)
    values = [int(h) for h in rng.integers(0, 2**64, n, dtype=np.uint64)]
    for i in rng.choice(np.arange(1, n), n // 3, replace=False):
        source = values[int(rng.integers(0, i))]
        for bit in rng.choice(64, int(rng.integers(0, 8)), replace=False):
            source ^= 1 << int(bit)
        values[i] = source
    return hash_array(values)


def flip(value: int, *bits: int) -> int:
    for bit in bits:
        value ^= 1 << bit
    return value


def test_hash_is_a_64_bit_int_of_any_image_size():
    hashes = [perceptual_hash(shapes(0)), perceptual_hash(np.full((1, 1, 3), 9, np.uint8))]
    hashes.append(perceptual_hash(np.zeros((3, 500, 3), np.uint8)))
    assert all(type(h) is int and 0 <= h < 2**64 for h in hashes)
    assert perceptual_hash(shapes(0)) == hashes[0]
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        perceptual_hash(np.zeros((8, 8), np.uint8))


@pytest.mark.parametrize("seed", range(5))
def test_hash_survives_rescaling_jpeg_and_brightening(seed):
    rgb = shapes(seed)
    copies = [
        cv2.resize(rgb, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA),
        cv2.resize(rgb, None, fx=1.7, fy=1.7, interpolation=cv2.INTER_CUBIC),
        jpeg(rgb, 70),
        np.clip(rgb.astype(np.int16) + 20, 0, 255).astype(np.uint8),
    ]
    original = perceptual_hash(rgb)
    distances = [int(hamming(original, perceptual_hash(copy))) for copy in copies]
    assert max(distances) <= 6, distances


def test_different_pictures_are_far_apart():
    hashes = hash_array(perceptual_hash(shapes(1000 + seed)) for seed in range(20))
    distances = hamming(hashes[:, None], hashes[None, :])[np.triu_indices(20, k=1)]
    assert distances.min() > 10


def test_hamming_broadcasts_over_uint64_and_python_ints():
    a = hash_array([0, 2**64 - 1, 0b1011])
    assert hamming(a, 0).tolist() == [0, 64, 3]
    assert hamming(a[:, None], a[None, :]).tolist() == [[0, 64, 3], [64, 0, 61], [3, 61, 0]]
    assert int(hamming(2**63, 1)) == 2 and hamming(a, a).dtype == np.int64
    values = np.random.default_rng(0).integers(0, 2**64, 1000, dtype=np.uint64)
    assert (dedupe._popcount_table(values) == [int(v).bit_count() for v in values]).all()


@pytest.mark.parametrize("threshold", THRESHOLDS)
def test_near_duplicates_equals_the_plain_greedy(threshold):
    hashes = planted(1200, seed=threshold)
    expected = greedy_reference(hashes, threshold)
    assert (expected >= 0).sum() >= 40  # planted copies are found (at threshold 0 only the exact ones)
    assert near_duplicates(hashes, threshold).tolist() == expected.tolist()
    # Both exact routes, whichever the cost model would pick, with multi-index and probing plans.
    assert dedupe._greedy_against_kept(hashes, threshold).tolist() == expected.tolist()
    for chunks in {max(3, threshold + 1), max(3, (threshold + 2) // 2)}:
        plan = dedupe._pigeonhole_plan(chunks, threshold)
        assert sum(radius + 1 for _, radius in plan) > threshold
        assert dedupe._greedy_over_pairs(hashes, threshold, plan).tolist() == expected.tolist()


def test_routes_agree_when_work_is_cut_into_small_blocks(monkeypatch):
    monkeypatch.setattr(dedupe, "_BLOCK", 1 << 8)
    hashes = planted(800, seed=7)
    for threshold in (3, 12):
        expected = greedy_reference(hashes, threshold)
        assert dedupe._greedy_against_kept(hashes, threshold).tolist() == expected.tolist()
        plan = dedupe._pigeonhole_plan(threshold + 1, threshold)
        assert dedupe._greedy_over_pairs(hashes, threshold, plan).tolist() == expected.tolist()


@pytest.mark.parametrize("threshold", [2, 8])
def test_kept_items_are_pairwise_farther_than_the_threshold(threshold):
    hashes = planted(1000, seed=100 + threshold)
    result = near_duplicates(hashes, threshold)
    kept = hashes[result < 0]
    distances = hamming(kept[:, None], kept[None, :])
    assert distances[np.triu_indices(len(kept), k=1)].min() > threshold
    dups = np.flatnonzero(result >= 0)
    assert (result[dups] < dups).all() and (result[result[dups]] == -1).all()
    assert (hamming(hashes[dups], hashes[result[dups]]) <= threshold).all()


def test_order_is_priority_and_closeness_is_not_transitive():
    a = 0x0123_4567_89AB_CDEF
    b, c = flip(a, 0), flip(a, 0, 1)  # b is 1 from a and from c; c is 2 from a
    assert near_duplicates(hash_array([a, b]), 1).tolist() == [-1, 0]
    assert near_duplicates(hash_array([b, a]), 1).tolist() == [-1, 0]
    assert near_duplicates(hash_array([a, b, c]), 1).tolist() == [-1, 0, -1]  # c's only close item was dropped
    assert near_duplicates(hash_array([b, a, c]), 1).tolist() == [-1, 0, 0]


def test_identical_hashes_and_signed_storage():
    far = 2**64 - 1
    hashes = hash_array([5, far, 5, far, 5])
    assert near_duplicates(hashes, 0).tolist() == [-1, -1, 0, 1, 0]
    assert near_duplicates(hashes.view(np.int64), 0).tolist() == [-1, -1, 0, 1, 0]
    assert near_duplicates([5, 4, 5], 1).tolist() == [-1, 0, 0]


def test_bad_threshold_and_empty_input():
    for threshold in (-1, 64, 2.5):
        with pytest.raises(ValueError, match=str(threshold)):
            near_duplicates(hash_array([1, 2]), threshold)
    with pytest.raises(ValueError, match="1-D"):
        near_duplicates(np.zeros((2, 2), np.uint64), 3)
    result = near_duplicates(np.empty(0, np.uint64), 5)
    assert result.dtype == np.int64 and result.shape == (0,)
    assert near_duplicates(hash_array([]), 0).shape == (0,)


def test_many_hashes_find_their_planted_copies():
    rng = np.random.default_rng(3)
    hashes = rng.integers(0, 2**64, 20_000, dtype=np.uint64)
    sources = rng.choice(10_000, 50, replace=False)
    copies = rng.choice(np.arange(10_000, 20_000), 50, replace=False)
    for source, copy in zip(sources, copies):
        hashes[copy] = flip(int(hashes[source]), *rng.choice(64, 3, replace=False).tolist())
    result = near_duplicates(hashes, 8)
    assert result[copies].tolist() == sources.tolist()
    assert (result >= 0).sum() == 50
