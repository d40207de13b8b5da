"""FID and KID of the outputs against the cartoon set and against the input photos.

Both are computed by torch-fidelity (the implementation torchmetrics also builds on) on the
standard FID Inception: the 2015-12-05 TensorFlow graph converted to PyTorch, the network behind
every published FID (the White-box paper's 101.31 to cartoons and 28.79 to photos among them).
torchvision's ImageNet Inception gives other values, so it is never substituted.

The weights are never downloaded. They come from ``evaluate.inception_weights`` or torch's hub
cache under either published file name; without them the figures are absent, with the reason in
metrics.json. torch-fidelity unpickles its weights file in full, so the file is first read as
plain tensors (``weights_only``) and what reaches torch-fidelity is a copy of those tensors
re-saved by this module, never the user's file itself.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

from cartoon.errors import RuntimeFailure, UsageError
from cartoon.weights import file_sha256, read_state_dict

#: The published file names of the FID Inception weights (torch-fidelity's, pytorch-fid's).
CACHE_FILES = ("weights-inception-2015-12-05-6726825d.pth", "pt_inception-2015-12-05-6726825d.pth")
#: KID is averaged over this many random subsets; their spread is reported beside the mean.
KID_SUBSETS = 100
#: Fixed seed of the KID subsets, so a rerun gives the same figure.
KID_SEED = 2020
#: FID's spread is its standard deviation over this many bootstrap resamples of both sets (seeded).
FID_BOOTSTRAPS = 50
FID_SEED = 2020


def cache_paths() -> list[Path]:
    return [Path(torch.hub.get_dir()) / "checkpoints" / name for name in CACHE_FILES]


def find_weights(configured: str | None) -> Path | None:
    """The configured file (missing is a usage error), else the first cached one, else None."""
    if configured:
        path = Path(configured).expanduser()
        if not path.is_file():
            raise UsageError(f"evaluate.inception_weights: file not found: {path}")
        return path
    return next((path for path in cache_paths() if path.is_file()), None)


def absent_reason() -> str:
    return (
        "no FID Inception weights (evaluate.inception_weights unset; none of "
        f"{', '.join(str(path) for path in cache_paths())} exists)"
    )


class InceptionFeatures:
    """The 2048-d pool features of the FID Inception for uint8 RGB images of any size."""

    def __init__(self, path: Path) -> None:
        from torch_fidelity.feature_extractor_inceptionv3 import (
            FeatureExtractorInceptionV3,
        )

        state = read_state_dict(path, "FID Inception")
        with tempfile.TemporaryDirectory() as scratch:
            copy = Path(scratch) / "inception.pth"
            torch.save(state, copy)
            try:
                self.network = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(copy))
            except RuntimeError as exc:
                first = str(exc).strip().splitlines()[0]
                raise RuntimeFailure(f"{path} does not hold FID Inception weights: {first}") from None
        self.source = f"fid-inception:{file_sha256(path)[:12]}"

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            (features,) = self.network(torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None])
        return features[0].double().numpy()


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """FID between two feature sets (rows), exactly as torch-fidelity defines it, computed through
    the sets' cross-product: with centred features X (n x d) and Y (m x d), the non-zero
    eigenvalues of cov(X) cov(Y) are the squared singular values of X Y^T / sqrt((n-1)(m-1)), so
    the trace of the matrix square root needs an n x m SVD instead of the eigenvalues of a 2048 x
    2048 product (82 s on a 2-core machine, against milliseconds for a few hundred images)."""
    x, y = a - a.mean(axis=0), b - b.mean(axis=0)
    scale_x, scale_y = len(a) - 1, len(b) - 1
    cross = np.linalg.svd(x @ y.T / np.sqrt(scale_x * scale_y), compute_uv=False)
    mean_gap = a.mean(axis=0) - b.mean(axis=0)
    return float(mean_gap @ mean_gap + (x * x).sum() / scale_x + (y * y).sum() / scale_y - 2 * cross.sum())


def fid_spread(a: np.ndarray, b: np.ndarray) -> float:
    """Standard deviation of the FID over ``FID_BOOTSTRAPS`` resamples (with replacement) of both
    feature sets: how much a figure resting on this few images moves with the sample."""
    rng = np.random.default_rng(FID_SEED)
    resampled = [frechet_distance(a[rng.integers(0, len(a), len(a))], b[rng.integers(0, len(b), len(b))])
                 for _ in range(FID_BOOTSTRAPS)]  # fmt: skip
    return float(np.std(resampled, ddof=1))


def distances(outputs: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """FID and KID between two sets of Inception features, each with its spread: FID's over
    bootstrap resamples, KID's over its subsets.

    KID's subsets hold half the smaller set (at most 1000, torch-fidelity's default size): subsets
    as large as a set would all be that set, and their spread zero. The spreads say how much a
    figure moves between resamplings of these images, not between data sets."""
    from torch_fidelity.metric_kid import kid_features_to_metric

    if min(len(outputs), len(reference)) < 2:
        raise ValueError("FID and KID need at least two images on each side")
    kid = kid_features_to_metric(
        torch.from_numpy(outputs), torch.from_numpy(reference), kid_subsets=KID_SUBSETS,
        kid_subset_size=min(max(2, min(len(outputs), len(reference)) // 2), 1000), rng_seed=KID_SEED, verbose=False,
    )  # fmt: skip
    return {
        "fid": frechet_distance(outputs, reference),
        "fid_std": fid_spread(outputs, reference),
        "kid": kid["kernel_inception_distance_mean"],
        "kid_std": kid["kernel_inception_distance_std"],
    }
