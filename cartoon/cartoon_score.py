"""The cartoon score: "does this look like the cartoon set?", answered without any download.

A classifier two-sample test. A logistic regression is fitted on hand-made style statistics of
image patches (flatness, gradient levels, colour counts, saturation, high-frequency energy,
ink share), cartoons of the run's training set against its training photos. Its image-level
cross-validated AUC says whether the statistics separate the two sets at all (a score from a
classifier at AUC 0.6 means little). The two classes are weighted equally whatever the sets'
sizes, so 0.5 means "as much cartoon as photo", not the share of cartoons in the training
data. An image's score is the mean P(cartoon) over its patches,
on a regular grid after scaling the image so its shorter side is the training size, so a
512 px photo and a 64 px training crop are judged at the same scale.

The fitted classifier is plain numbers (standardisation, coefficients, intercept) stored as
JSON with the generator; scoring needs only numpy and OpenCV, never a pickle.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import cv2
import numpy as np

from cartoon.metrics import FLAT_GRADIENT, gradient_magnitude, luminance, scale_short_side

FEATURES = (
    "flat_share", "log_gradient_mean", "log_gradient_median", "log_gradient_p90", "colours16_share",
    "colours8_share", "log_laplacian", "laplacian_zero_share", "saturation_mean", "saturation_std",
    "value_std", "ink_share", "log_residual",
)  # fmt: skip
MIN_PATCH = 16
CV_FOLDS = 5


def _maps(rgb: np.ndarray) -> dict[str, np.ndarray]:
    """Per-pixel maps the patch statistics average."""
    gray = luminance(rgb)
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV_FULL).astype(np.float32) / 255.0
    laplacian = np.abs(cv2.Laplacian(gray, cv2.CV_32F, ksize=3, borderType=cv2.BORDER_REFLECT_101))
    residual = np.abs(gray.astype(np.float32) - cv2.GaussianBlur(gray, (0, 0), 1.0).astype(np.float32))
    return {
        "gradient": gradient_magnitude(gray),
        "laplacian": laplacian,
        "residual": residual,
        "saturation": hsv[..., 1],
        "value": hsv[..., 2],
        "codes16": _colour_codes(rgb, 16),
        "codes8": _colour_codes(rgb, 8),
    }


def _colour_codes(rgb: np.ndarray, levels: int) -> np.ndarray:
    q = rgb.astype(np.int32) * levels // 256
    return (q[..., 0] * levels + q[..., 1]) * levels + q[..., 2]


def _patch_features(maps: dict[str, np.ndarray], top: int, left: int, size: int) -> list[float]:
    window = (slice(top, top + size), slice(left, left + size))
    gradient, laplacian = maps["gradient"][window], maps["laplacian"][window]
    saturation, value = maps["saturation"][window], maps["value"][window]
    pixels = float(size * size)
    return [
        float(np.mean(gradient < FLAT_GRADIENT)),
        float(np.log1p(gradient.mean())),
        float(np.log1p(np.median(gradient))),
        float(np.log1p(np.percentile(gradient, 90))),
        len(np.unique(maps["codes16"][window])) / pixels,
        len(np.unique(maps["codes8"][window])) / pixels,
        float(np.log1p(laplacian.mean())),
        float(np.mean(laplacian < 2.0)),
        float(saturation.mean()),
        float(saturation.std()),
        float(value.std()),
        float(np.mean(value < 0.2)),
        float(np.log1p(maps["residual"][window].mean())),
    ]


def patch_size(side: int) -> int:
    return max(MIN_PATCH, side // 4)


def image_features(rgb: np.ndarray, side: int) -> np.ndarray:
    """Patch statistics (n_patches x len(FEATURES)) of one image on a regular grid of
    ``patch_size(side)`` patches, after scaling its shorter side to ``side``."""
    scaled = scale_short_side(rgb, side)
    maps = _maps(scaled)
    size = patch_size(side)
    height, width = scaled.shape[:2]
    rows = [
        _patch_features(maps, top, left, size)
        for top in range(0, height - size + 1, size)
        for left in range(0, width - size + 1, size)
    ]
    return np.asarray(rows, np.float64)


@dataclass(frozen=True)
class CartoonScore:
    """A fitted patch classifier: standardisation, logistic coefficients, and how well it separates."""

    side: int
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    coef: tuple[float, ...]
    intercept: float
    cv_auc: float
    features: tuple[str, ...] = FEATURES

    def patch_probabilities(self, features: np.ndarray) -> np.ndarray:
        z = (features - np.asarray(self.mean)) / np.asarray(self.scale)
        return 1.0 / (1.0 + np.exp(-(z @ np.asarray(self.coef) + self.intercept)))

    def score(self, rgb: np.ndarray) -> float:
        """P(cartoon) of one HxWx3 uint8 image: the mean over its patches."""
        return float(self.patch_probabilities(image_features(rgb, self.side)).mean())

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> CartoonScore:
        features = tuple(data.get("features", ()))
        if features != FEATURES:
            raise ValueError(f"cartoon score was fitted on features {features}, this version computes {FEATURES}")
        return cls(**{**data, **{k: tuple(data[k]) for k in ("mean", "scale", "coef")}, "features": features})


def fit_cartoon_score(cartoons: Iterable[np.ndarray], photos: Iterable[np.ndarray], side: int) -> CartoonScore:
    """Fit on cartoon (label 1) against photo (label 0) patches; the AUC is cross-validated by image."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold

    cartoon_features = [image_features(image, side) for image in cartoons]
    photo_features = [image_features(image, side) for image in photos]
    if len(cartoon_features) < 2 or len(photo_features) < 2:
        raise ValueError("the cartoon score needs at least two cartoons and two photos")
    per_image = cartoon_features + photo_features
    labels = np.array([1] * len(cartoon_features) + [0] * len(photo_features))

    def fit(indices: Sequence[int]) -> CartoonScore:
        x = np.concatenate([per_image[i] for i in indices])
        y = np.concatenate([np.full(len(per_image[i]), labels[i]) for i in indices])
        mean, scale = x.mean(0), np.where(x.std(0) > 1e-12, x.std(0), 1.0)
        model = LogisticRegression(C=1.0, max_iter=2000, class_weight="balanced").fit((x - mean) / scale, y)
        return CartoonScore(side, tuple(mean), tuple(scale), tuple(model.coef_[0]), float(model.intercept_[0]), float("nan"))

    folds = StratifiedKFold(n_splits=min(CV_FOLDS, int(labels.sum()), int((1 - labels).sum())), shuffle=True, random_state=0)
    held_out = np.zeros(len(per_image))
    for train, test in folds.split(np.zeros(len(labels)), labels):
        fold = fit(train)
        held_out[test] = [fold.patch_probabilities(per_image[i]).mean() for i in test]
    final = fit(range(len(per_image)))
    return CartoonScore(**{**asdict(final), "cv_auc": float(roc_auc_score(labels, held_out))})
