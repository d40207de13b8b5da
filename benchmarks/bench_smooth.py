"""Edge smoothing speed: the vectorised stage against the per-pixel reference procedure.

Run: .venv/bin/python benchmarks/bench_smooth.py [--images 5] [--size 256]
Both run on the same builtin cartoon images in one process; the outputs are also compared.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.timing import per_image_ms  # noqa: E402
from cartoon.data.builtin import builtin_items  # noqa: E402
from cartoon.data.smooth import smooth_edges  # noqa: E402
from tests.test_smooth import reference_smooth  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5)
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args()
    images = [image for _, image in builtin_items("cartoon", args.images, args.size, seed=0)]
    fast_ms, fast = per_image_ms(smooth_edges, images)
    ref_ms, ref = per_image_ms(reference_smooth, images)
    worst = max(int(np.abs(a.astype(int) - b.astype(int)).max()) for a, b in zip(fast, ref))
    print(f"{args.images} synthetic cartoons, {args.size}x{args.size}")
    print(f"vectorised   {fast_ms:10.2f} ms/image")
    print(f"per-pixel    {ref_ms:10.2f} ms/image")
    print(f"speed-up     {ref_ms / fast_ms:10.1f} x   (max difference {worst} grey level)")


if __name__ == "__main__":
    main()
