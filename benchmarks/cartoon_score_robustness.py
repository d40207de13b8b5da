"""How much of the cartoon score is exact flatness: the measurement behind the README's caveat.

Run (after `dvc repro`): .venv/bin/python benchmarks/cartoon_score_robustness.py
The run's fitted score (stored with the generator) judges the training cartoons as they are,
after JPEG compression and after faint Gaussian noise (changes a viewer does not see), and the
held-out photos as they are, posterised to 8 levels per channel (a photo with its texture, no
cartoon), and cel-shaded by the cartoon set's own renderer. Two other scores are judged the
same way, with their cross-validated AUCs: one fitted with such perturbations on both sides,
and one that also sees posterised and k-means-quantised copies of the photos as photos.
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
from cartoon.data.celshade import cel_shade  # noqa: E402
from cartoon.data.store import open_images  # noqa: E402

RENDER_SCALE = 2  # the cartoon sources are rendered at twice the training size and downsampled


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


def posterised(rgb: np.ndarray, levels: int) -> np.ndarray:
    step = 256 // levels
    return (rgb // step * step + step // 2).astype(np.uint8)


def quantised(rgb: np.ndarray, colours: int) -> np.ndarray:
    """k-means colour quantisation: the photo's own texture in a few colours."""
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 20, 1.0)
    cv2.setRNGSeed(0)
    _, labels, centres = cv2.kmeans(rgb.reshape(-1, 3).astype(np.float32), colours, None, criteria, 3, cv2.KMEANS_PP_CENTERS)
    return centres[labels.ravel()].reshape(rgb.shape).astype(np.uint8)


def rendered(rgb: np.ndarray) -> np.ndarray:
    """The cartoon set's renderer applied to a photo, at the scale the set is drawn."""
    height, width = rgb.shape[:2]
    big = cv2.resize(rgb, (width * RENDER_SCALE, height * RENDER_SCALE), interpolation=cv2.INTER_CUBIC)
    return cv2.resize(cel_shade(big), (width, height), interpolation=cv2.INTER_AREA)


def hard_photo(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A photo posterised, k-means-quantised or perturbed: still a photo, not a cartoon."""
    draw = rng.random()
    if draw < 0.3:
        return posterised(rgb, int(rng.choice([4, 6, 8, 12, 16])))
    if draw < 0.5:
        return quantised(rgb, int(rng.choice([8, 16, 32])))
    return perturbed(rgb, rng)


def table(score: CartoonScore, cartoons: np.ndarray, photos: np.ndarray) -> dict[str, float]:
    rng = np.random.default_rng(1)
    cartoon_views: dict[str, Callable[[np.ndarray], np.ndarray]] = {
        "cartoons": lambda x: x,
        "cartoons, JPEG 90": lambda x: jpeg(x, 90),
        "cartoons, JPEG 75": lambda x: jpeg(x, 75),
        "cartoons, noise sigma 1.5": lambda x: noisy(x, 1.5, rng),
    }
    photo_views: dict[str, Callable[[np.ndarray], np.ndarray]] = {
        "held-out photos": lambda x: x,
        "held-out photos, posterised 8": lambda x: posterised(x, 8),
        "held-out photos, 16 k-means colours": lambda x: quantised(x, 16),
        "held-out photos, cel-shaded": rendered,
    }
    rows = {name: float(np.mean([score.score(view(x)) for x in cartoons])) for name, view in cartoon_views.items()}
    return rows | {name: float(np.mean([score.score(view(x)) for x in photos])) for name, view in photo_views.items()}


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
    perturbed_cartoons = [*cartoons, *(perturbed(x, rng) for x in cartoons)]
    robust = fit_cartoon_score(perturbed_cartoons, [*train_photos, *(perturbed(x, rng) for x in train_photos)], size)
    hard = fit_cartoon_score(perturbed_cartoons, [*train_photos, *(hard_photo(x, rng) for x in [*train_photos, *train_photos])], size)
    columns = {f"run's score (AUC {stored.cv_auc:.3f})": table(stored, cartoons, test_photos),
               f"perturbed (AUC {robust.cv_auc:.3f})": table(robust, cartoons, test_photos),
               f"+ quantised photos (AUC {hard.cv_auc:.3f})": table(hard, cartoons, test_photos)}  # fmt: skip
    print(f"mean P(cartoon), {len(cartoons)} training cartoons, {len(test_photos)} held-out photos, {size} px")
    print(f"{'':36s}" + "".join(f"{name:>32s}" for name in columns))
    for row in next(iter(columns.values())):
        print(f"{row:36s}" + "".join(f"{values[row]:32.3f}" for values in columns.values()))


if __name__ == "__main__":
    main()
