"""Structure representation speed: vectorised superpixels against a straightforward reference.

Run: .venv/bin/python benchmarks/bench_superpixel.py [--images 16] [--size 256] [--segments 200,50] [--device cuda]

On the same builtin photos, in one process, milliseconds per image of
  (a) reference   felzenszwalb + hierarchical merging and adaptive colouring written the plain
                  way (written here): per-region boolean masks for statistics, neighbours and
                  colours, Python loops over regions and pairs, label image rewritten per merge;
  (b) felzenszwalb  cartoon.superpixel's vectorised version of the same algorithm (CPU);
  (c) slic_tensor   the default's GPU path: SLIC batched in torch on --device (the whole batch
                    in one call, as training runs it; CUDA when available, else the CPU);
  (d) skimage slic  the default's CPU path (scikit-image's SLIC, as the reference code runs it,
                    then the regions painted with their mean), one image at a time;
  (e) the CPU path as training calls it: the batch spread over 4 threads;
and the speed-ups. felzenszwalb(scale=10, min_size=100) gives about 70-180
regions on 256 px builtin photos, so at 200 segments nothing merges; smaller targets time the
merge loop too. Outputs of (a) and (b) are compared (they may differ where similarity ties
are broken differently).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from skimage.segmentation import felzenszwalb

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.timing import per_image_ms  # noqa: E402
from cartoon.data.builtin import builtin_items  # noqa: E402
from cartoon.superpixel import HIST_BINS, STD_HIGH, STD_LOW, paint_mean, slic_tensor, structure, structure_image  # noqa: E402


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
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--segments", default="200,50", help="comma-separated n_segments values")
    parser.add_argument("--repeats", type=int, default=3, help="passes per measurement; the best is reported")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="device of the batched SLIC")
    args = parser.parse_args()
    device = torch.device(args.device)
    images = [image for _, image in builtin_items("photo", args.images, args.size, 0)]
    batch = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div(127.5).sub(1).to(device)
    counts = [len(np.unique(felzenszwalb(image, scale=10, sigma=0.8, min_size=100, channel_axis=-1))) for image in images]
    print(f"{args.images} builtin photos, {args.size}x{args.size}, torch threads {torch.get_num_threads()}, batched SLIC on {device}")
    print(f"felzenszwalb regions before merging: {counts}")

    def batch_ms(function: Callable[[], torch.Tensor]) -> float:
        """ms per image of one call on the whole batch (the way training runs it), best of the repeats."""
        def run() -> None:
            function()
            if device.type == "cuda":
                torch.cuda.synchronize()

        run()  # warm-up (CUDA kernels, allocator)
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
        return 1000 * min(times) / len(images)

    cpu_batch = batch.cpu()
    repeats = args.repeats
    for n_segments in (int(value) for value in args.segments.split(",")):
        ref_ms, ref = per_image_ms(lambda image: reference_felzenszwalb(image, n_segments), images, repeats)
        fz_ms, fz = per_image_ms(lambda image: structure_image(image, "felzenszwalb", n_segments), images, repeats)
        fz_only_ms, _ = per_image_ms(lambda image: felzenszwalb(image, scale=10, sigma=0.8, min_size=100, channel_axis=-1), images, repeats)
        skimage_slic_ms, _ = per_image_ms(lambda image: structure_image(image, "slic", n_segments), images, repeats)
        slic_ms = batch_ms(lambda: paint_mean(batch, *slic_tensor(batch, n_segments)))
        threaded_ms = batch_ms(lambda: structure(cpu_batch, "slic", n_segments, workers=4))
        same = np.mean([np.mean(np.all(a == b, axis=-1)) for a, b in zip(ref, fz)])
        print(f"n_segments {n_segments}")
        print(f"  (a) reference felzenszwalb + merging     {ref_ms:9.2f} ms/image")
        print(f"  (b) ours, felzenszwalb + merging         {fz_ms:9.2f} ms/image   {ref_ms / fz_ms:6.1f} x (a)   ({same:.2%} of pixels identical)")
        print(f"  (c) ours, slic batched on {device.type:<4}           {slic_ms:9.2f} ms/image   {ref_ms / slic_ms:6.1f} x (a)   {skimage_slic_ms / slic_ms:5.1f} x (d)")
        print(f"  (d) scikit-image slic (CPU path, reference) {skimage_slic_ms:7.2f} ms/image   {ref_ms / skimage_slic_ms:6.1f} x (a)")
        print(f"  (e) (d) as training runs it, 4 threads   {threaded_ms:9.2f} ms/image   {ref_ms / threaded_ms:6.1f} x (a)")
        print(f"  skimage felzenszwalb alone (in (a) and (b)): {fz_only_ms:.2f} ms/image; merging + colouring alone: "
              f"(a) {ref_ms - fz_only_ms:.2f}, (b) {fz_ms - fz_only_ms:.2f} ms/image")


if __name__ == "__main__":
    main()
