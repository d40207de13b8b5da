"""Video cartoonization: frames per second and flicker, with and without --temporal, every method.

Run: .venv/bin/python benchmarks/bench_video.py [--frames 36] [--size 256x192] [--strengths 0.5]
     .venv/bin/python benchmarks/bench_video.py --model models/train   (a trained generator; with
     a palette step, also without it: what the per-frame palette adds to the flicker)

The clip is made here: a 256x192 window panning over skimage's astronaut (3 px right, 1 px down
per frame) with Gaussian noise (sigma 3, new each frame, like a camera sensor), H.264 at 24 fps
with a 440 Hz AAC track. Generators are the methods' default sizes from params.yaml, randomly
initialised (as in bench_tiling.py), run by the tiler `cartoon cartoonize` uses; each clip goes
through ``cartoon.cartoonize_video.cartoonize_video``, the command's own path (decode, cartoonize,
DIS flow, flicker meter, encode, audio copy). Flicker: mean |frame - previous frame warped by the
input flow| over tracked pixels, 0-255 (see cartoon/temporal.py). "Change" is the mean absolute
difference between the temporal and the plain output frames: how much the blend alters the look.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import av
import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.bench_tiling import default_cartoonizer
from cartoon.artifacts import load_cartoonizer
from cartoon.cartoonize_video import cartoonize_video
from cartoon.inference import Cartoonizer
from cartoon.palette import Palette
from cartoon.progress import progress
from cartoon.temporal import FlowEstimator
from cartoon.tiling import TiledCartoonizer

FPS, SAMPLE_RATE = 24, 48_000


def panned_frames(count: int, width: int, height: int, seed: int = 0) -> list[np.ndarray]:
    """A window moving over the astronaut photograph, with fresh sensor-like noise per frame."""
    import skimage.data

    picture = skimage.data.astronaut()
    rng = np.random.default_rng(seed)
    frames = []
    for index in range(count):
        left, top = 40 + 3 * index, 60 + index
        window = picture[top : top + height, left : left + width].astype(np.float32)
        frames.append(np.clip(window + rng.normal(0, 3, window.shape), 0, 255).astype(np.uint8))
    return frames


def write_clip(path: Path, frames: list[np.ndarray]) -> None:
    """H.264 (crf 18) at FPS with a sine AAC track as long as the video."""
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=FPS, options={"crf": "18"})
        video.height, video.width = frames[0].shape[:2]
        video.pix_fmt = "yuv420p"
        audio = container.add_stream("aac", rate=SAMPLE_RATE)
        audio.layout = "stereo"
        for index, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = index
            container.mux(video.encode(frame))
        container.mux(video.encode())
        tone = np.sin(2 * np.pi * 440 * np.arange(SAMPLE_RATE * len(frames) // FPS) / SAMPLE_RATE).astype(np.float32) * 0.3
        for start in range(0, len(tone), 1024):
            chunk = np.ascontiguousarray(np.repeat(tone[None, start : start + 1024], 2, axis=0))
            samples = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="stereo")
            samples.sample_rate, samples.pts = SAMPLE_RATE, start
            container.mux(audio.encode(samples))
        container.mux(audio.encode())


class Timed:
    """``run`` with the seconds spent in it summed: the model's share of a video's time."""

    def __init__(self, run: TiledCartoonizer) -> None:
        self.run, self.seconds = run, 0.0

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        start = time.perf_counter()
        cartoon = self.run(rgb)
        self.seconds += time.perf_counter() - start
        return cartoon


def decoded(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def models(args: argparse.Namespace) -> Iterator[tuple[str, tuple[Cartoonizer, int]]]:
    """(label, (cartoonizer, size multiple)) of each model to measure."""
    if args.model is None:
        yield from ((name, default_cartoonizer(name)) for name in args.methods)
        return
    model, config = load_cartoonizer(args.model)
    yield f"{args.model} ({config['method']})", (model, config["size_multiple"])
    if isinstance(model.generator.palette, Palette):
        plain = copy.deepcopy(model)
        plain.generator.palette = torch.nn.Identity()
        yield f"{args.model} without its palette step", (plain, config["size_multiple"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=["cartoongan", "animeganv2", "whitebox"])
    parser.add_argument("--frames", type=int, default=36)
    parser.add_argument("--size", default="256x192")
    parser.add_argument("--strengths", type=float, nargs="+", default=[0.5])
    parser.add_argument("--model", type=Path, help="a trained generator folder instead of the random default-size ones")
    args = parser.parse_args()
    width, height = map(int, args.size.split("x"))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; PyAV {av.__version__}; OpenCV {cv2.__version__}")
    frames = panned_frames(args.frames, width, height)
    flow = FlowEstimator()
    start = time.perf_counter()
    for previous, current in itertools.pairwise(frames):
        flow(previous, current)
    print(
        f"clip {width}x{height}, {args.frames} frames at {FPS} fps; DIS flow both ways + checks: "
        f"{(time.perf_counter() - start) * 1000 / (args.frames - 1):.1f} ms per frame pair"
    )
    with tempfile.TemporaryDirectory() as folder, progress(disable=True) as bar:
        clip = Path(folder) / "clip.mp4"
        write_clip(clip, frames)
        for name, (model, multiple) in models(args):
            rows = []
            for strength in [None, *args.strengths]:
                run = Timed(TiledCartoonizer(model, multiple))
                target = Path(folder) / f"{name}-{strength}.mp4"
                start = time.perf_counter()
                result = cartoonize_video(clip, target, run, 40_000_000, strength, bar, name)
                seconds = time.perf_counter() - start
                speed = (
                    f"{result.frames / seconds:.2f} frames/s ({1000 * run.seconds / result.frames:.0f} ms/frame in the model, "
                    f"{1000 * (seconds - run.seconds) / result.frames:.0f} ms/frame the rest)"
                )
                rows.append((strength, result, speed, target))
            plain = decoded(rows[0][3])
            print(f"{name}: flicker of the input {rows[0][1].flicker_input:.2f}; {rows[0][1].describe()}")
            print(f"  plain: {rows[0][2]}, flicker {rows[0][1].flicker_output:.2f}")
            for strength, result, speed, target in rows[1:]:
                change = np.mean([np.abs(a.astype(np.float32) - b).mean() for a, b in zip(decoded(target), plain)])
                print(f"  temporal {strength:g}: {speed}, flicker {result.flicker_output:.2f}, change from plain {change:.2f}")


if __name__ == "__main__":
    main()
