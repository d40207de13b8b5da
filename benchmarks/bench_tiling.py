"""Tiled against whole-image inference: difference, seams, time and peak memory.

Run: .venv/bin/python benchmarks/bench_tiling.py [--size 1024] [--tile 512] [--overlap 128] [--stats-side 1024 512]
     .venv/bin/python benchmarks/bench_tiling.py --large 3840x2160 --methods cartoongan   (time + peak memory only)

A --stats-side below --size measures what statistics from a downscaled image cost (the case
of every image larger than --stats-side).

Generators are the methods' default sizes from params.yaml, randomly initialised (seed 0);
every method's input_skip is turned off, since its zeroed last conv would make the random
generator the identity, and so is the palette step (timed by bench_palette.py). The photo is a 2x2 mosaic of bundled photographs (astronaut, coffee,
chelsea, rocket) scaled to the size: tiles of very different content, the hard case for
per-tile statistics.
Seam measure: mean |tiled - whole| within 2 px of the tiles' interior edges divided by the same
outside that band (1.0: no more difference at the tile edges than elsewhere).
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from cartoon.inference import Cartoonizer, cartoonize  # noqa: E402
from cartoon.methods import get_method  # noqa: E402
from cartoon.tiling import TiledCartoonizer, TileSettings, tile_starts  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def default_cartoonizer(name: str, seed: int = 0) -> tuple[Cartoonizer, int]:
    """The method's generator at its params.yaml size, randomly initialised, with its inference step."""
    method = get_method(name)
    section = yaml.safe_load((ROOT / "params.yaml").read_text())[name]
    generator_params = dict(section["generator"])
    if "input_skip" in generator_params:
        generator_params["input_skip"] = False
    generator_params.pop("palette_colours", None)  # the networks alone; the palette step: bench_palette.py
    torch.manual_seed(seed)
    generator = method.build_generator(method.Params.model_validate({"generator": generator_params}))
    return Cartoonizer(method, generator).eval(), method.size_multiple


def mosaic(height: int, width: int) -> np.ndarray:
    import skimage.data

    parts = [getattr(skimage.data, name)() for name in ("astronaut", "coffee", "chelsea", "rocket")]
    half_h, half_w = height // 2, width // 2
    rows = [np.concatenate([cv2.resize(parts[2 * r + c], (half_w if c == 0 else width - half_w, half_h if r == 0 else height - half_h),
                                       interpolation=cv2.INTER_AREA) for c in range(2)], axis=1) for r in range(2)]
    return np.ascontiguousarray(np.concatenate(rows, axis=0))


def seam_band(height: int, width: int, settings: TileSettings, band: int = 2) -> np.ndarray:
    """Mask of the pixels within ``band`` of an interior tile edge."""
    mask = np.zeros((height, width), bool)
    for length, axis in ((height, 0), (width, 1)):
        starts = tile_starts(length, settings.tile, settings.overlap)
        edges = [start for start in starts[1:]] + [start + settings.tile for start in starts[:-1]]
        for edge in edges:
            index = slice(max(0, edge - band), edge + band)
            if axis == 0:
                mask[index, :] = True
            else:
                mask[:, index] = True
    return mask


def compare(tiled: np.ndarray, whole: np.ndarray, settings: TileSettings) -> dict[str, float]:
    diff = np.abs(tiled.astype(np.float64) - whole.astype(np.float64)).mean(axis=2)
    band = seam_band(*diff.shape, settings)
    return {"mad_255": float(diff.mean()), "max_255": float(diff.max()), "seam_mad_255": float(diff[band].mean()),
            "elsewhere_mad_255": float(diff[~band].mean()),
            "seam_ratio": float(diff[band].mean() / max(diff[~band].mean(), 1e-9))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=["cartoongan", "animeganv2", "whitebox"])
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--overlap", type=int, default=128)
    parser.add_argument("--stats-side", type=int, nargs="+", default=[1024, 512])
    parser.add_argument("--large", default=None, help="WxH: only time the tiled run at this size and report peak memory")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    if args.large:
        width, height = map(int, args.large.split("x"))
        photo = mosaic(height, width)
        for name in args.methods:
            model, multiple = default_cartoonizer(name)
            settings = TileSettings(args.tile, args.overlap, args.stats_side[0])
            start = time.perf_counter()
            out = TiledCartoonizer(model, multiple, settings)(photo)
            seconds = time.perf_counter() - start
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            print(f"{name} {width}x{height} tile {args.tile} overlap {args.overlap} stats side {settings.stats_side}: "
                  f"{seconds:.1f} s, peak RSS {peak:.0f} MiB (process so far), output {out.shape}")
        return
    photo = mosaic(args.size, args.size)
    for name in args.methods:
        model, multiple = default_cartoonizer(name)
        start = time.perf_counter()
        whole = cartoonize(model, photo, multiple)
        whole_s = time.perf_counter() - start
        spread = float(whole.astype(np.float64).std())
        print(f"{name} {args.size}x{args.size}: whole {whole_s:.1f} s (output std {spread:.1f}/255)")
        for stats_side in args.stats_side:
            settings = TileSettings(args.tile, args.overlap, stats_side)
            start = time.perf_counter()
            tiled = TiledCartoonizer(model, multiple, settings)(photo)
            seconds = time.perf_counter() - start
            figures = ", ".join(f"{key} {value:.3f}" for key, value in compare(tiled, whole, settings).items())
            print(f"  tile {args.tile} overlap {args.overlap} stats side {stats_side}: {seconds:.1f} s; {figures}")


if __name__ == "__main__":
    main()
