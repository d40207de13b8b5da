"""The cartoon score (a classifier two-sample test) and luminance SSIM."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cartoon.cartoon_score import FEATURES, CartoonScore, fit_cartoon_score, image_features
from cartoon.data.builtin import load_builtin_photo, random_crop
from cartoon.data.celshade import cel_shade
from cartoon.data.imageio import read_rgb, write_png
from cartoon.metrics import luminance_ssim


def textured_photo(rng: np.random.Generator, size: int = 64) -> np.ndarray:
    """A photo-like test image: smooth colour gradients, a few soft blobs and sensor-like noise."""
    ys, xs = np.mgrid[0:size, 0:size] / size
    base = np.stack([np.cos(xs * rng.uniform(1, 4) + c) * 60 + 120 + ys * rng.uniform(-40, 40) for c in (0, 2, 4)], -1)
    for _ in range(4):
        cy, cx, r = rng.uniform(0, 1, 2).tolist() + [rng.uniform(0.1, 0.3)]
        blob = np.exp(-((ys - cy) ** 2 + (xs - cx) ** 2) / (2 * r * r))[..., None]
        base += blob * rng.uniform(-90, 90, 3)
    base += rng.normal(0, 9, base.shape)
    return np.clip(base, 0, 255).astype(np.uint8)


def folders(tmp_path, rng, count):
    photos = [textured_photo(rng) for _ in range(count)]
    cartoons = [cel_shade(textured_photo(rng)) for _ in range(count)]  # other photos, as the default set does
    for kind, images in (("photos", photos), ("cartoons", cartoons)):
        for index, image in enumerate(images):
            write_png(tmp_path / kind / f"{index:02d}.png", image)
    return photos, cartoons


def test_score_separates_cel_shaded_folder_from_photo_folder(tmp_path):
    rng = np.random.default_rng(0)
    train_photos, train_cartoons = folders(tmp_path / "train", rng, 16)
    score = fit_cartoon_score(train_cartoons, train_photos, side=64)
    assert score.cv_auc >= 0.95
    folders(tmp_path / "held", rng, 8)
    held = {kind: [score.score(read_rgb(path)) for path in sorted((tmp_path / "held" / kind).glob("*.png"))]
            for kind in ("photos", "cartoons")}  # fmt: skip
    assert np.mean(held["cartoons"]) > 0.8 and np.mean(held["photos"]) < 0.2
    assert min(held["cartoons"]) > max(held["photos"])


def test_score_round_trips_through_json_and_judges_any_size_at_training_scale():
    rng = np.random.default_rng(1)
    photos = [textured_photo(rng) for _ in range(6)]
    score = fit_cartoon_score([cel_shade(image) for image in photos[:3]], photos[3:], side=64)
    again = CartoonScore.from_json(json.loads(json.dumps(score.to_json())))
    assert again == score
    big = np.repeat(np.repeat(photos[0], 4, 0), 4, 1)  # 256 px: scored after scaling back to 64
    assert image_features(big, 64).shape == image_features(photos[0], 64).shape == (16, len(FEATURES))
    with pytest.raises(ValueError, match="features"):
        CartoonScore.from_json({**score.to_json(), "features": ["flat_share"]})


def test_too_few_images_is_an_error():
    rng = np.random.default_rng(2)
    with pytest.raises(ValueError, match="at least two"):
        fit_cartoon_score([textured_photo(rng)], [textured_photo(rng), textured_photo(rng)], side=64)


def test_luminance_ssim_at_64_px():
    rng = np.random.default_rng(3)
    image = random_crop(load_builtin_photo("coffee"), rng, 128)
    assert luminance_ssim(image, image) == pytest.approx(1.0)
    assert luminance_ssim(image, random_crop(load_builtin_photo("astronaut"), rng, 128)) < 0.3
    noisy = np.clip(image + rng.normal(0, 25, image.shape), 0, 255).astype(np.uint8)
    assert luminance_ssim(image, noisy) > 0.5  # the same picture under heavy noise still scores far above another
    flat = np.full_like(image, int(image.mean()))
    assert luminance_ssim(image, flat) < 0.5  # all structure gone
    with pytest.raises(ValueError, match="one size"):
        luminance_ssim(image, image[:64])
