"""Near-duplicate search speed: multi-index hashing against a plain blocked all-pairs greedy.

Run: .venv/bin/python benchmarks/bench_dedupe.py [--n 100000] [--thresholds 4,8,12] [--check 20000]

Random 64-bit hashes with 1 % planted near-copies (a few bits flipped). For each threshold:
seconds for ``cartoon.data.dedupe.near_duplicates`` on all n, and for the straightforward
method (each hash compared with every kept one, vectorised in blocks) on the first ``--check``
hashes, where both results are also compared.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from cartoon.data.dedupe import hamming, near_duplicates  # noqa: E402


def planted(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    hashes = rng.integers(0, 2**63, n, dtype=np.int64).astype(np.uint64) * np.uint64(2) + rng.integers(0, 2, n).astype(np.uint64)
    copies = rng.choice(n, n // 100, replace=False)
    for index in copies:
        source = hashes[rng.integers(0, n)]
        flips = rng.choice(64, rng.integers(0, 6), replace=False)
        hashes[index] = source ^ np.uint64(sum(1 << int(bit) for bit in flips))
    return hashes


def all_pairs_greedy(hashes: np.ndarray, threshold: int) -> np.ndarray:
    """Each hash against every kept one, one vectorised comparison per hash."""
    result = np.full(len(hashes), -1, dtype=np.int64)
    kept: list[int] = []
    kept_values = np.empty(0, dtype=np.uint64)
    for index, value in enumerate(hashes):
        if kept:
            close = np.nonzero(hamming(kept_values, value) <= threshold)[0]
            if close.size:
                result[index] = kept[close[0]]
                continue
        kept.append(index)
        kept_values = np.append(kept_values, value)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--thresholds", default="4,8,12")
    parser.add_argument("--check", type=int, default=20_000, help="hashes for the all-pairs comparison")
    args = parser.parse_args()
    hashes = planted(args.n)
    print(f"{args.n} hashes (1 % planted near-copies); all-pairs on the first {args.check}")
    for threshold in (int(value) for value in args.thresholds.split(",")):
        start = time.perf_counter()
        result = near_duplicates(hashes, threshold)
        fast_s = time.perf_counter() - start
        start = time.perf_counter()
        fast_small = near_duplicates(hashes[: args.check], threshold)
        fast_small_s = time.perf_counter() - start
        start = time.perf_counter()
        slow_small = all_pairs_greedy(hashes[: args.check], threshold)
        slow_small_s = time.perf_counter() - start
        same = np.array_equal(fast_small, slow_small)
        print(f"threshold {threshold:2d}: multi-index {fast_s:7.3f} s for {args.n} ({int((result >= 0).sum())} duplicates); "
              f"on {args.check}: multi-index {fast_small_s:6.3f} s, all-pairs {slow_small_s:7.3f} s, "
              f"{slow_small_s / fast_small_s:6.1f} x, identical: {same}")


if __name__ == "__main__":
    main()
