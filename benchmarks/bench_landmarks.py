"""The landmark term's share of a face-method training step (issue: aim below 15 %).

Run: .venv/bin/python benchmarks/bench_landmarks.py [--size 128] [--batch 4] [--steps 5] [--model-size paper|default]
One process times, interleaved, the `facecartoon` train step on a face batch (which carries the
landmark term: two O-Net passes through differentiable crops, one of them backpropagated) and the
same step on the same images as a scenery batch (no landmark term), and prints the medians and
the share. fp32, this machine's threads; VGG19 random (ImageNet weights cost the same).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from cartoon.batches import face_boxes  # noqa: E402
from cartoon.data.faces import align, cartoon_face  # noqa: E402
from cartoon.methods import get_method, load_run_params, method_params  # noqa: E402
from cartoon.vgg import load_vgg  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=128, help="face crop size in pixels (the report: 128)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=5, help="timed steps of each kind, after one warm-up each")
    parser.add_argument("--model-size", choices=("paper", "default"), default="paper",
                        help="paper: pipeline/profiles/face-paper-gpu.yaml's networks; default: params.yaml's")
    args = parser.parse_args()

    profile = ROOT / ("pipeline/profiles/face-paper-gpu.yaml" if args.model_size == "paper" else "params.yaml")
    params = load_run_params(profile)
    params = params.model_copy(update={"model": params.model.model_copy(update={"name": "facecartoon"}),
                                       "vgg": params.vgg.model_copy(update={"allow_random": True})})  # fmt: skip
    method_cls = get_method("facecartoon")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        method = method_cls(method_params(params), load_vgg(params.vgg, method_cls.content_layer), torch.device("cpu"))
    method.load_pretrained(params, "train")
    method.setup("train", 1, 1)
    rng = np.random.default_rng(0)
    faces = [align(*cartoon_face(rng, 2 * args.size), args.size)[0] for _ in range(args.batch)]
    photos = torch.from_numpy(np.stack(faces)).permute(0, 3, 1, 2).float() / 127.5 - 1
    scenery = {"photo": photos, "cartoon": photos.flip(-1)}
    face = {**scenery, "face_boxes": face_boxes(photos)}

    def timed(batch: dict) -> float:
        started = time.perf_counter()
        method.step("train", batch)
        return time.perf_counter() - started

    timed(face), timed(scenery)  # warm-up
    with_term, without = [], []
    for _ in range(args.steps):  # interleaved, so load on the machine hits both alike
        with_term.append(timed(face))
        without.append(timed(scenery))
    method.close()
    a, b = statistics.median(with_term), statistics.median(without)
    print(f"{cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}; facecartoon ({args.model_size} networks), "
          f"{args.size} px, batch {args.batch}, fp32, median of {args.steps}")
    print(f"  step on a face batch (with the landmark term):    {a:8.3f} s")
    print(f"  step on the same images as scenery (no landmarks): {b:8.3f} s")
    print(f"  landmark term: {a - b:+.3f} s = {100 * (a - b) / a:.1f} % of the face step")


if __name__ == "__main__":
    main()
