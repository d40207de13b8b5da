"""Data throughput: the resize stage into an image store, and the training loader on that store
versus a folder of JPEGs.

Run: .venv/bin/python benchmarks/bench_data.py [--images 2000] [--size 256] [--batches 300] [--repeats 3]
Everything runs in one process on the same images: builtin photo crops written as JPEGs
(quality 90) to a temp folder laid out like the crawl stage's output. The crops are already
``--size`` square, so resize decodes and stores them without scaling, and the JPEG loader reads
files of the training size (what a per-file Dataset would read). Both loaders see the same random
batches, with the page cache warm (the files were just written).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from cartoon.data.builtin import builtin_items  # noqa: E402
from cartoon.data.imageio import read_rgb  # noqa: E402
from cartoon.data.resize import resize  # noqa: E402
from cartoon.params import load_params  # noqa: E402
from cartoon.batches import ImageSet, load_image_set  # noqa: E402

BATCH = 16


def write_raw(raw: Path, images: list[tuple[str, str, np.ndarray]]) -> list[Path]:
    """(domain, name, pixels) as JPEGs plus a crawl-style manifest; returns the files in item_id order."""
    rows = []
    for domain, name, rgb in images:
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
        assert ok
        sha = hashlib.sha256(buf.tobytes()).hexdigest()
        path = f"images/{domain}/{sha[:16]}.jpg"
        (raw / path).parent.mkdir(parents=True, exist_ok=True)
        (raw / path).write_bytes(buf.tobytes())
        rows.append({"item_id": sha[:16], "domain": domain, "sha256": sha, "source": "bench",
                     "origin": f"builtin:{name}", "status": "ok", "path": path})  # fmt: skip
    pd.DataFrame(rows).to_csv(raw / "manifest.csv", index=False)
    return [raw / row["path"] for row in sorted(rows, key=lambda row: row["item_id"]) if row["domain"] == "photo"]


def seconds(work: Callable[[], object], repeats: int) -> float:
    """The best of ``repeats`` timings, which damps the noise of a shared machine."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batches", type=int, default=300, help="random batches of 16 timed per loader")
    parser.add_argument("--repeats", type=int, default=3, help="timings per figure; the best is shown")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="resize.workers is taken from here")
    args = parser.parse_args()
    defaults = load_params(args.params).resize
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw"
        photos = [("photo", name, rgb) for name, rgb in builtin_items("photo", args.images, args.size, seed=0)]
        cartoon = [("cartoon", name, rgb) for name, rgb in builtin_items("cartoon", 1, args.size, seed=0)]  # resize needs one
        files = write_raw(raw, photos + cartoon)
        jpeg_mb = sum(f.stat().st_size for f in (raw / "images").rglob("*.jpg")) / 1e6
        print(f"{args.images} builtin photo crops, {args.size}x{args.size}, JPEG quality 90: "
              f"{jpeg_mb:.1f} MB in {args.images + 1} files; {cv2.getNumberOfCPUs()} CPUs")  # fmt: skip

        for workers in sorted({1, defaults.workers}):
            params = defaults.model_copy(update={"size": args.size, "test_fraction": 0.0, "workers": workers})
            out = Path(tmp) / f"resized-{workers}"
            took = seconds(lambda: resize(raw, out, params), args.repeats)  # noqa: B023
            print(f"resize stage, JPEG folder -> store, workers {workers:2d}: {(args.images + 1) / took:9.1f} images/s")
        store = out / "photo" / "train.npy"
        print(f"store: {store.stat().st_size / 1e6:.1f} MB uncompressed in {store.name} + {store.stem}.names.txt")

        images = load_image_set(store, "photo")
        assert images is not None and images.names == [file.stem for file in files]  # row i is file i
        rng = np.random.default_rng(0)
        batches = [torch.from_numpy(rng.choice(len(files), BATCH, replace=False)) for _ in range(args.batches)]
        cpu = torch.device("cpu")

        def jpeg_rows(index: torch.Tensor) -> np.ndarray:
            return np.stack([read_rgb(files[i]) for i in index.tolist()])

        def jpeg_batch(index: torch.Tensor) -> torch.Tensor:  # converted exactly as training converts
            return ImageSet(index.tolist(), jpeg_rows(index)).batch(torch.arange(len(index)), cpu)

        total = args.batches * BATCH
        rate = {name: total / seconds(lambda: [read(index) for index in batches], args.repeats)  # noqa: B023
                for name, read in (("jpeg uint8", jpeg_rows), ("jpeg float", jpeg_batch),
                                   ("store uint8", images.rows), ("store float", lambda i: images.batch(i, cpu)))}  # fmt: skip
        print(f"training loader, {args.batches} batches of {BATCH} random images, one process (images/s):")
        print(f"  {'':32} {'uint8 batch':>12} {'float tensor':>13}")
        for label, key in (("JPEG folder, decoded per batch", "jpeg"), (".npy store, memory-mapped", "store")):
            print(f"  {label:32} {rate[key + ' uint8']:12.1f} {rate[key + ' float']:13.1f}")
        print(f"  {'store / JPEG':32} {rate['store uint8'] / rate['jpeg uint8']:11.1f}x "
              f"{rate['store float'] / rate['jpeg float']:12.1f}x")  # fmt: skip


if __name__ == "__main__":
    main()
