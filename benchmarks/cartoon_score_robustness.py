"""How much of the cartoon score is exact flatness: the measurement behind the README's caveat.

Run (after `dvc repro`): .venv/bin/python benchmarks/cartoon_score_robustness.py
The run's fitted score (stored with the generator) judges the training cartoons as they are,
after JPEG compression and after faint Gaussian noise (changes a viewer does not see), and the
held-out photos. A score fitted with such perturbations on both sides (the same statistics, the
same logistic regression) is judged the same way, with its cross-validated AUC.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from cartoon.cartoon_score import CartoonScore, fit_cartoon_score  # noqa: E402
from cartoon.data.store import open_images  # noqa: E402


def jpeg(rgb: np.ndarray, quality: int) -> np.ndarray:
    ok, encoded = cv2.imencode(".jpg", rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return cv2.imdecode(encoded, cv2.IMREAD_COLOR)[..., ::-1]


def noisy(rgb: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    return np.clip(rgb + rng.normal(0, sigma, rgb.shape), 0, 255).astype(np.uint8)


def perturbed(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """JPEG at quality 75-97 (or none), then noise of sigma 0-2 grey levels."""
    quality = int(rng.integers(75, 101))
    return noisy(jpeg(rgb, quality) if quality <= 97 else rgb, float(rng.uniform(0, 2)), rng)


def table(score: CartoonScore, cartoons: np.ndarray, photos: np.ndarray) -> dict[str, float]:
    rng = np.random.default_rng(1)
    views: dict[str, Callable[[np.ndarray], np.ndarray]] = {
        "cartoons": lambda x: x,
        "cartoons, JPEG 90": lambda x: jpeg(x, 90),
        "cartoons, JPEG 75": lambda x: jpeg(x, 75),
        "cartoons, noise sigma 1.5": lambda x: noisy(x, 1.5, rng),
    }
    rows = {name: float(np.mean([score.score(view(x)) for x in cartoons])) for name, view in views.items()}
    rows["held-out photos"] = float(np.mean([score.score(x) for x in photos]))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=Path("models/train"), help="generator folder holding the fitted score")
    parser.add_argument("--data", type=Path, default=Path("data/resized"), help="the resize stage's output")
    args = parser.parse_args()
    config = json.loads(next(args.model.glob("*.json")).read_text())
    size = int(config["image_size"])
    cartoons = np.asarray(open_images(args.data / "cartoon/train.npy", "cartoon").pixels)
    train_photos = np.asarray(open_images(args.data / "photo/train.npy", "photo").pixels)
    test_photos = np.asarray(open_images(args.data / "photo/test.npy", "photo").pixels)

    stored = CartoonScore.from_json(config["cartoon_score"])
    rng = np.random.default_rng(0)
    robust = fit_cartoon_score([*cartoons, *(perturbed(x, rng) for x in cartoons)],
                               [*train_photos, *(perturbed(x, rng) for x in train_photos)], size)  # fmt: skip
    columns = {f"run's score (AUC {stored.cv_auc:.3f})": table(stored, cartoons, test_photos),
               f"fitted with perturbations (AUC {robust.cv_auc:.3f})": table(robust, cartoons, test_photos)}  # fmt: skip
    print(f"mean P(cartoon), {len(cartoons)} training cartoons, {len(test_photos)} held-out photos, {size} px")
    print(f"{'':28s}" + "".join(f"{name:>40s}" for name in columns))
    for row in next(iter(columns.values())):
        print(f"{row:28s}" + "".join(f"{values[row]:40.3f}" for values in columns.values()))


if __name__ == "__main__":
    main()
