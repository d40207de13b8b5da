"""Structure representation speed: vectorised superpixels against a straightforward reference.

Run: .venv/bin/python benchmarks/bench_superpixel.py [--images 8] [--size 256] [--segments 200,50]

On the same builtin photos, in one process, milliseconds per image of
  (a) reference   felzenszwalb + hierarchical merging and adaptive colouring written the plain
                  way (written here): per-region boolean masks for statistics, neighbours and
                  colours, Python loops over regions and pairs, label image rewritten per merge;
  (b) felzenszwalb  cartoon.superpixel's vectorised version of the same algorithm;
  (c) slic          cartoon.superpixel's default (SLIC regions painted with their mean);
and the speed-up of (b) over (a). felzenszwalb(scale=10, min_size=100) gives about 70-180
regions on 256 px builtin photos, so at 200 segments nothing merges; smaller targets time the
merge loop too. Outputs of (a) and (b) are compared (they may differ where similarity ties
are broken differently).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from skimage.segmentation import felzenszwalb

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.timing import per_image_ms  # noqa: E402
from cartoon.data.builtin import builtin_items  # noqa: E402
from cartoon.superpixel import HIST_BINS, STD_HIGH, STD_LOW, structure_image  # noqa: E402


def reference_felzenszwalb(image: np.ndarray, n_segments: int) -> np.ndarray:
    labels = felzenszwalb(image, scale=10, sigma=0.8, min_size=100, channel_axis=-1).astype(np.int64)
    area = float(labels.size)
    regions: dict[int, dict] = {}
    for label in np.unique(labels).tolist():
        mask = labels == label
        ys, xs = np.nonzero(mask)
        pixels = image[mask]
        hist = np.concatenate([np.histogram(pixels[:, c], bins=HIST_BINS, range=(0, 256))[0] for c in range(3)])
        regions[label] = {
            "size": float(mask.sum()),
            "hist": hist / (3.0 * mask.sum()),
            "box": (float(ys.min()), float(xs.min()), float(ys.max() + 1), float(xs.max() + 1)),
        }
    neighbours: dict[int, set[int]] = {}
    for label in regions:
        mask = labels == label
        grown = mask.copy()
        grown[1:] |= mask[:-1]
        grown[:-1] |= mask[1:]
        grown[:, 1:] |= mask[:, :-1]
        grown[:, :-1] |= mask[:, 1:]
        neighbours[label] = set(np.unique(labels[grown & ~mask]).tolist())

    def sim(i: int, j: int) -> float:
        a, b = regions[i], regions[j]
        colour = float(np.minimum(a["hist"], b["hist"]).sum())
        box = (min(a["box"][0], b["box"][0]), min(a["box"][1], b["box"][1]), max(a["box"][2], b["box"][2]), max(a["box"][3], b["box"][3]))
        merged = (box[2] - box[0]) * (box[3] - box[1])
        both = a["size"] + b["size"]
        return colour + (1 - both / area) + (1 - (merged - both) / area)

    pairs = {(i, j): sim(i, j) for i in regions for j in neighbours[i] if i < j}
    while len(regions) > n_segments and pairs:
        i, j = max(pairs, key=lambda pair: (pairs[pair], -pair[0], -pair[1]))
        a, b = regions[i], regions[j]
        size = a["size"] + b["size"]
        a["hist"] = (a["size"] * a["hist"] + b["size"] * b["hist"]) / size
        a["box"] = (min(a["box"][0], b["box"][0]), min(a["box"][1], b["box"][1]), max(a["box"][2], b["box"][2]), max(a["box"][3], b["box"][3]))
        a["size"] = size
        del regions[j]
        labels[labels == j] = i
        neighbours[i] = (neighbours[i] | neighbours.pop(j)) - {i, j}
        for m in neighbours[i]:
            neighbours[m].discard(j)
            neighbours[m].add(i)
        pairs = {pair: value for pair, value in pairs.items() if i not in pair and j not in pair}
        for m in neighbours[i]:
            pairs[(min(i, m), max(i, m))] = sim(i, m)
    out = np.zeros_like(image)
    for label in regions:
        mask = labels == label
        for c in range(3):
            values = image[..., c][mask].astype(np.float64)
            mean, std, median = values.mean(), values.std(), np.median(values)
            if std < STD_LOW:
                colour = mean
            elif std > STD_HIGH:
                colour = median
            else:
                alpha = (std - STD_LOW) / (STD_HIGH - STD_LOW)
                colour = (1 - alpha) * mean + alpha * median
            out[..., c][mask] = np.clip(np.rint(colour), 0, 255)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--segments", default="200,50", help="comma-separated n_segments values")
    args = parser.parse_args()
    images = [image for _, image in builtin_items("photo", args.images, args.size, 0)]
    counts = [len(np.unique(felzenszwalb(image, scale=10, sigma=0.8, min_size=100, channel_axis=-1))) for image in images]
    print(f"{args.images} builtin photos, {args.size}x{args.size}; felzenszwalb regions before merging: {counts}")
    for n_segments in (int(value) for value in args.segments.split(",")):
        ref_ms, ref = per_image_ms(lambda image: reference_felzenszwalb(image, n_segments), images)
        fz_ms, fz = per_image_ms(lambda image: structure_image(image, "felzenszwalb", n_segments), images)
        slic_ms, _ = per_image_ms(lambda image: structure_image(image, "slic", n_segments), images)
        fz_only_ms, _ = per_image_ms(lambda image: felzenszwalb(image, scale=10, sigma=0.8, min_size=100, channel_axis=-1), images)
        same = np.mean([np.mean(np.all(a == b, axis=-1)) for a, b in zip(ref, fz)])
        print(f"n_segments {n_segments}")
        print(f"  (a) reference felzenszwalb  {ref_ms:9.2f} ms/image")
        print(f"  (b) felzenszwalb            {fz_ms:9.2f} ms/image")
        print(f"  (c) slic                    {slic_ms:9.2f} ms/image")
        print(f"  speed-up (b) over (a)       {ref_ms / fz_ms:9.1f} x   ({same:.2%} of pixels identical)")
        print(f"  of which skimage felzenszwalb (shared by (a) and (b)): {fz_only_ms:.2f} ms/image")
        print(f"  merging + colouring alone: (a) {ref_ms - fz_only_ms:.2f}, (b) {fz_ms - fz_only_ms:.2f} ms/image, "
              f"speed-up {(ref_ms - fz_only_ms) / max(fz_ms - fz_only_ms, 1e-9):.1f} x")


if __name__ == "__main__":
    main()
