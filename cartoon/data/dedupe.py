"""Near-duplicate detection: 64-bit DCT perceptual hashes and a greedy, order-respecting dedupe.

The same picture crawled from two sources rarely has the same bytes (rescaled, re-encoded,
re-toned), so a domain is deduplicated on perceptual hashes before the train/test split;
otherwise a test photo's twin in the training set would flatter held-out scores.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from itertools import combinations

import cv2
import numpy as np

HASH_BITS = 64
_BLOCK = 1 << 22  # candidate pairs or hash comparisons materialised at once (tens of MB)
_BYTE_BITS = np.array([byte.bit_count() for byte in range(256)], dtype=np.uint8)

# Rough nanoseconds per step (numpy, one core) that `_chunk_plan` weighs to pick the faster exact route.
_NS_PAIR = 9  # candidate pair of the chunk search: expand, gather, compare
_NS_PROBE = 20  # hash looking up one bucket
_NS_PASS = 20_000  # fixed overhead of one probe pass over all hashes
_NS_BUCKET = 2  # bucket table entry
_NS_EDGE = 300  # close pair in the greedy pass
_NS_SCAN = 1.1  # hash compared with one kept hash
_NS_SETTLE = 6_000  # hash settled one by one inside its block (those not close to an earlier block's kept)


def perceptual_hash(rgb: np.ndarray) -> int:
    """64-bit DCT hash of an HxWx3 uint8 RGB image, as an int in [0, 2**64).

    Grayscale, area-resized to 32x32 in float32 (no rounding noise), 2-D DCT, top-left 8x8 low
    frequencies; coefficient (row, col) gives bit 63 - (8 * row + col), set when the coefficient
    exceeds the median of the 63 non-DC ones (the DC term is mean brightness, not structure).
    Low frequencies survive rescaling and JPEG re-compression, a brightness shift moves only
    the DC term, and unrelated pictures differ in about half of the bits.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8 or rgb.size == 0:
        raise ValueError(f"expected a non-empty HxWx3 uint8 image, got {rgb.dtype} {rgb.shape}")
    gray = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY).astype(np.float32)
    low = cv2.dct(cv2.resize(gray, (32, 32), interpolation=cv2.INTER_AREA))[:8, :8].ravel()
    bits = low > np.median(low[1:])
    return int.from_bytes(np.packbits(bits).tobytes(), "big")


def hash_array(hashes: Iterable[int]) -> np.ndarray:
    """Python-int hashes as a uint64 array (the form `hamming` and `near_duplicates` work on)."""
    return np.fromiter(hashes, dtype=np.uint64)


def hamming(a: np.ndarray | int, b: np.ndarray | int) -> np.ndarray:
    """Bitwise Hamming distance between uint64 hashes, broadcasting like any numpy operator."""
    return _popcount(np.bitwise_xor(np.asarray(a, dtype=np.uint64), np.asarray(b, dtype=np.uint64))).astype(np.int64)


def near_duplicates(hashes: np.ndarray, threshold: int) -> np.ndarray:
    """For each hash, -1 if its item is kept, else the index of the kept item it duplicates.

    Greedy in the given order, which is the caller's priority: item i duplicates the first kept
    item j < i with hamming(i, j) <= threshold, and is kept if there is none. Kept items are
    therefore pairwise more than ``threshold`` apart; 0 merges identical hashes only. Signed
    int64 hashes (as stored by pandas or parquet) are read bit for bit.

    Identical hashes are merged first (a later copy shares its first copy's fate). The distinct
    ones go to whichever exact route `_chunk_plan` expects to be faster: a chunked search for
    all close pairs, then the greedy pass over them (small thresholds, where nearly every item is
    kept), or a blocked comparison of each item against the kept set (large thresholds, where
    chunks would be tiny but the kept set is small).
    """
    if not isinstance(threshold, (int, np.integer)) or not 0 <= threshold < HASH_BITS:
        raise ValueError(f"threshold must be an integer in 0..{HASH_BITS - 1}, got {threshold!r}")
    values = np.asarray(hashes, dtype=np.uint64)
    if values.ndim != 1:
        raise ValueError(f"expected a 1-D array of hashes, got shape {values.shape}")
    if values.size == 0:
        return np.empty(0, dtype=np.int64)
    distinct, first, inverse = np.unique(values, return_index=True, return_inverse=True)
    by_first = np.argsort(first)  # distinct hashes in order of first appearance
    rank = np.empty_like(by_first)
    rank[by_first] = np.arange(len(by_first))
    first = first[by_first]
    ordered = distinct[by_first]

    threshold = int(threshold)
    if threshold == 0:  # distinct hashes are never within 0
        parent = np.full(len(ordered), -1, dtype=np.int64)
    elif (plan := _chunk_plan(len(ordered), threshold)) is None:
        parent = _greedy_against_kept(ordered, threshold)
    else:
        parent = _greedy_over_pairs(ordered, threshold, plan)

    kept_as = np.where(parent >= 0, first[np.maximum(parent, 0)], first)  # the kept item each hash maps to
    result = kept_as[rank[inverse]]
    result[first] = np.where(parent >= 0, kept_as, -1)
    return result


def _popcount(x: np.ndarray) -> np.ndarray:
    """Set bits per uint64 element (uint8); numpy < 2.0 lacks np.bitwise_count, so a byte table."""
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(x)
    return _popcount_table(x)


def _popcount_table(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.uint64)
    return _BYTE_BITS[x.view(np.uint8)].reshape(*x.shape, 8).sum(axis=-1, dtype=np.uint8)


def _ball_size(width: int, radius: int) -> int:
    return sum(math.comb(width, k) for k in range(radius + 1))


def _chunk_plan(n: int, threshold: int) -> list[tuple[int, int]] | None:
    """(width, radius) per chunk for the pair search, or None when scanning the kept set is cheaper.

    Generalised pigeonhole: cut the 64 bits into chunks with radii r_k where sum(r_k + 1) >
    threshold; two hashes within the threshold then differ by at most r_k bits in some chunk k,
    so probing every hash's radius-r_k neighbourhood in chunk k's buckets finds every close pair.
    All radii 0 with threshold + 1 chunks is classic multi-index hashing; fewer, wider chunks
    with small radii meet far fewer chance collisions (100k hashes at threshold 8: nine 7-bit
    chunks give ~330M candidate pairs and take ~3.4 s, four 16-bit ones with radii 2,1,1,1 ~14M
    and ~0.4 s). At least 3 chunks keep bucket tables at <= 2**22 entries.

    Both routes are costed for uniformly spread hashes: the pair search by its probes and chance
    collisions, the scan by the expected kept set, which stays small once the threshold is large
    enough for most hashes to find a close kept one (from about 16 at 100k hashes). Estimates
    only choose the route, never the result.
    """
    close = sum(math.comb(HASH_BITS, k) for k in range(threshold + 1)) / 2.0**HASH_BITS  # P(a pair is close)
    kept = math.log1p(close * n) / close  # greedy kept-set size after n uniform hashes
    best, best_cost = None, _NS_SCAN * n * math.log1p(close * n / 2) / close + _NS_SETTLE * kept
    for chunks in range(3, max(3, threshold + 1) + 1):
        plan = _pigeonhole_plan(chunks, threshold)
        cost = _NS_EDGE * close * n * n / 2
        for width, radius in plan:
            passes = _ball_size(width, radius)
            pairs = passes * n * n / 2 ** (width + 1)
            cost += _NS_BUCKET * 2**width + passes * (_NS_PASS + _NS_PROBE * n / 2) + _NS_PAIR * pairs
        if cost < best_cost:
            best, best_cost = plan, cost
    return best


def _pigeonhole_plan(chunks: int, threshold: int) -> list[tuple[int, int]]:
    """(width, radius) for 64 bits cut into near-equal chunks, radii as even as sum(r_k + 1) > threshold allows.

    Wider chunks (listed first) take the larger radii: their buckets are the emptier ones.
    """
    widths = [HASH_BITS // chunks + (k < HASH_BITS % chunks) for k in range(chunks)]
    extra = max(0, threshold + 1 - chunks)
    return [(width, extra // chunks + (k < extra % chunks)) for k, width in enumerate(widths)]


def _greedy_over_pairs(values: np.ndarray, threshold: int, plan: list[tuple[int, int]]) -> np.ndarray:
    """The greedy dedupe, from the list of all close pairs found by the chunk search.

    Pairs are visited by later index, then earlier: when (j, i) comes up, j's fate is final, so
    i takes the first kept j and ignores the rest.
    """
    n = len(values)
    found = []  # later * n + earlier, one entry per close pair and chunk that found it
    shift = 0
    for width, radius in plan:
        keys = ((values >> np.uint64(shift)) & np.uint64((1 << width) - 1)).astype(np.int64)
        shift += width
        order = np.argsort(keys, kind="stable")
        bounds = np.zeros((1 << width) + 1, dtype=np.int64)
        np.cumsum(np.bincount(keys, minlength=1 << width), out=bounds[1:])
        # Same chunk value: each position against the later positions of its bucket, so each pair once.
        found += _close_pairs(values, threshold, order, order, np.arange(1, n + 1), bounds[keys[order] + 1])
        # Chunks differing in a flip pattern: only the hash with a 0 at the flip's top bit asks, so each pair once.
        for top in range(width if radius else 0):
            askers = np.flatnonzero(((keys >> top) & 1) == 0)
            asker_keys = keys[askers]
            for extra in range(radius):
                for bits in combinations(range(top), extra):
                    target = asker_keys ^ ((1 << top) | sum(1 << bit for bit in bits))
                    found += _close_pairs(values, threshold, askers, order, bounds[target], bounds[target + 1])

    codes = np.unique(np.concatenate(found)) if found else np.empty(0, dtype=np.int64)
    later, earlier = np.divmod(codes, n)
    parent = [-1] * n
    for j, i in zip(earlier.tolist(), later.tolist()):
        if parent[i] < 0 and parent[j] < 0:
            parent[i] = j
    return np.array(parent, dtype=np.int64)


def _close_pairs(
    values: np.ndarray, threshold: int, askers: np.ndarray, order: np.ndarray, start: np.ndarray, stop: np.ndarray
) -> list[np.ndarray]:
    """Pairs (asker, order[p]) for p in each asker's [start, stop) that are within threshold.

    Returned as later * n + earlier codes, in slices of about _BLOCK candidates to bound memory.
    """
    n = len(values)
    counts = stop - start
    ends = np.cumsum(counts)
    if not len(ends) or ends[-1] == 0:
        return []
    cuts = np.searchsorted(ends, np.arange(_BLOCK, ends[-1], _BLOCK), side="right").tolist()
    found = []
    for lo, hi in zip([0, *cuts], [*cuts, len(askers)]):
        size = counts[lo:hi]
        total = int(size.sum())
        if total == 0:
            continue
        asker = np.repeat(askers[lo:hi], size)
        partner = order[np.arange(total) + np.repeat(start[lo:hi] - (np.cumsum(size) - size), size)]
        close = _popcount(values[asker] ^ values[partner]) <= threshold
        asker, partner = asker[close], partner[close]
        found.append(np.maximum(asker, partner) * n + np.minimum(asker, partner))
    return found


def _greedy_against_kept(values: np.ndarray, threshold: int) -> np.ndarray:
    """The greedy dedupe, comparing each block of items with all items kept before it.

    Every kept item before a block precedes all of it, so an item close to any of them takes the
    first; the rest are settled in order against the block's own newly kept items.
    """
    n = len(values)
    parent = np.full(n, -1, dtype=np.int64)
    kept = np.empty(0, dtype=np.int64)
    start = 0
    while start < n:
        stop = min(n, start + max(1, min(math.isqrt(_BLOCK), _BLOCK // max(len(kept), 1))))
        block = values[start:stop]
        near = _popcount(block[:, None] ^ values[kept]) <= threshold
        hit = near.any(axis=1)
        if len(kept):
            parent[start:stop][hit] = kept[near.argmax(axis=1)[hit]]
        inner = _popcount(block[:, None] ^ block) <= threshold
        fresh = np.zeros(len(block), dtype=bool)
        for i in np.flatnonzero(~hit).tolist():
            earlier = np.flatnonzero(inner[i, :i] & fresh[:i])
            if len(earlier):
                parent[start + i] = start + earlier[0]
            else:
                fresh[i] = True
        kept = np.concatenate([kept, start + np.flatnonzero(fresh)])
        start = stop
    return parent
