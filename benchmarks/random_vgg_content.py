"""What a RANDOM VGG19 keeps of a photo, layer by layer: the measurement behind ``vgg.random_layer``.

Run: .venv/bin/python benchmarks/random_vgg_content.py [--images 6] [--size 64] [--steps 200]
For each layer, images are reconstructed from the calibrated random network's features alone
(Adam on the pixels from a near-grey start, L1 between features, the content loss the methods
use), then compared with the originals: luminance SSIM at 64 px (1 = the same picture) and the
mean absolute RGB difference in grey levels. A layer whose features can be inverted carries the
photo's content; one that cannot gives a content loss that holds little in place.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from cartoon.data.builtin import PHOTO_SOURCES, builtin_items  # noqa: E402
from cartoon.inference import to_tensor, to_uint8  # noqa: E402
from cartoon.metrics import luminance_ssim  # noqa: E402
from cartoon.vgg import RandomWeightsWarning, ResolvedWeights, VGGFeatures  # noqa: E402

LAYERS = ("relu1_2", "relu2_2", "relu3_4", "conv4_4")


def invert(features: VGGFeatures, photos: torch.Tensor, steps: int) -> torch.Tensor:
    with torch.no_grad():
        target = features(photos)
    logits = (torch.rand_like(photos) * 0.2 - 0.1).requires_grad_(True)
    optimiser = torch.optim.Adam([logits], lr=0.05)
    for _ in range(steps):
        loss = (features(torch.tanh(logits)) - target).abs().mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return torch.tanh(logits).detach()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=6)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args()
    warnings.simplefilter("ignore", RandomWeightsWarning)
    torch.manual_seed(0)
    photos = [image for _, image in builtin_items("photo", args.images, args.size, seed=1, photos=PHOTO_SOURCES)]
    x = to_tensor(photos)
    print(f"{args.images} bundled photo crops at {args.size} px, {args.steps} Adam steps per layer, random VGG19 (seed 0)")
    print(f"{'layer':8} {'mean |f|':>9} {'lum SSIM':>9} {'|RGB diff|':>11} {'seconds':>8}")
    for layer in LAYERS:
        features = VGGFeatures(ResolvedWeights(None, "random:0"), layer, seed=0)
        start = time.perf_counter()
        rebuilt = to_uint8(invert(features, x, args.steps))
        seconds = time.perf_counter() - start
        ssim = np.mean([luminance_ssim(a, b) for a, b in zip(photos, rebuilt)])
        diff = np.mean([np.abs(a.astype(float) - b).mean() for a, b in zip(photos, rebuilt)])
        with torch.no_grad():
            scale = features(x).abs().mean().item()
        print(f"{layer:8} {scale:9.3f} {ssim:9.3f} {diff:11.1f} {seconds:8.1f}")


if __name__ == "__main__":
    main()
