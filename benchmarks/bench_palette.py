"""What the palette step costs at inference, beside the generator it follows, in one run.

Run: .venv/bin/python benchmarks/bench_palette.py [--sizes 64 512 1024] [--colours 8] [--repeats 5]

For each square size: the default method's generator with its inference step (params.yaml's
size, randomly initialised as in bench_tiling.py, palette off), the palette step alone on
that output (k-means of the image's colours, ``--colours`` centres, then nearest colour), and
the two together. Times are the best of --repeats interleaved rounds, in ms per image, on the
current torch thread count; the photo is bench_tiling.py's mosaic of bundled photographs.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.bench_tiling import ROOT, default_cartoonizer, mosaic  # noqa: E402
from cartoon.inference import to_tensor  # noqa: E402
from cartoon.palette import Palette  # noqa: E402


def best_ms(functions: dict[str, Callable[[], torch.Tensor]], repeats: int) -> dict[str, float]:
    """Best wall time of each function over ``repeats`` interleaved rounds, in ms."""
    best = dict.fromkeys(functions, float("inf"))
    for _ in range(repeats):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            best[name] = min(best[name], (time.perf_counter() - start) * 1000)
    return best


@torch.no_grad()
def measure(sizes: list[int], colours: int, repeats: int, method: str) -> list[dict[str, float]]:
    cartoonizer, _ = default_cartoonizer(method)
    palette = Palette(colours)
    rows = []
    for size in sizes:
        photo = to_tensor(mosaic(size, size))
        output = cartoonizer(photo)
        times = best_ms({"generator": lambda: cartoonizer(photo), "palette": lambda: palette(output),
                         "both": lambda: palette(cartoonizer(photo))}, repeats)
        rows.append({"size": size, **times, "share": times["palette"] / times["both"]})
    return rows


def main(argv: list[str] | None = None) -> list[dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 512, 1024])
    parser.add_argument("--colours", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--method", default=yaml.safe_load((ROOT / "params.yaml").read_text())["model"]["name"])
    args = parser.parse_args(argv)
    rows = measure(args.sizes, args.colours, args.repeats, args.method)
    print(f"{args.method}, palette of {args.colours} colours, {torch.get_num_threads()} threads, best of {args.repeats}")
    print("| size | generator + inference step | palette step | both | palette share |")
    print("| --- | --- | --- | --- | --- |")
    for row in rows:
        print(f"| {row['size']} px | {row['generator']:.1f} ms | {row['palette']:.1f} ms | {row['both']:.1f} ms | {row['share']:.0%} |")
    return rows


if __name__ == "__main__":
    main()
