"""Shared fixtures: tiny image sets, a tiny params file, and an isolated MLflow store."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from cartoon.data.imageio import write_png
from cartoon.data.store import write_store

TINY_PARAMS = {
    "resize": {"size": 32, "test_fraction": 0.25, "seed": 0},
    "model": {"name": "cartoongan"},
    "cartoongan": {"generator": {"width": 4, "n_blocks": 1, "upsample": "resize", "input_skip": False}, "train": {"disc_width": 4}},
    "animeganv2": {"generator": {"width": 4, "n_blocks": 2, "input_skip": False}, "train": {"disc_width": 4}},
    # White-box's plain L1 pretraining needs width 32 to cut the content loss within the contract test's 15 steps.
    "whitebox": {"generator": {"width": 32, "n_blocks": 1, "input_skip": False}, "train": {"disc_width": 4, "n_segments": 20, "workers": 1}},
    "facecartoon": {"generator": {"width": 32, "n_blocks": 1}, "train": {"disc_width": 4, "n_segments": 20, "workers": 1}},
    "vgg": {"allow_random": True, "seed": 0},
    "pretrain": {"epochs": 1, "batch_size": 4, "log_every": 1, "sample_every": 2, "checkpoint_every": 1},
    "train": {"epochs": 2, "batch_size": 4, "log_every": 1, "sample_every": 2, "checkpoint_every": 1},
    "evaluate": {"grid_images": 2},
    "tracking": {"experiment": "tests", "system_metrics": False},
}


@pytest.fixture(scope="session")
def mlflow_store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One SQLite store for the session (creating one costs seconds)."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mlflow_store: str) -> Path:
    """A throwaway project folder (cwd) with tiny params and random 32x32 image sets: the stores
    photo.npy, cartoon.npy and smooth.npy (as the pipeline writes them) and a folder of PNGs, test/."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_store)
    return make_project(tmp_path)


def make_project(folder: Path) -> Path:
    """Write the ``project`` fixture's files into ``folder`` (for fixtures of a wider scope)."""
    (folder / "dvc.yaml").write_text("stages: {}\n")
    write_params(folder / "params.yaml")
    rng = np.random.default_rng(0)
    for name, count in (("photo", 8), ("cartoon", 6), ("smooth", 6)):
        pixels = rng.integers(0, 256, (count, 32, 32, 3), dtype=np.uint8)
        write_store(folder / f"{name}.npy", [f"{index:03d}" for index in range(count)], pixels)
    for index in range(3):
        write_png(folder / "test" / f"{index:03d}.png", rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    return folder


REPO_PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"


def _merge(base: dict, extra: dict) -> dict:
    merged = dict(base)
    for key, value in extra.items():
        merged[key] = _merge(merged.get(key, {}), value) if isinstance(value, dict) else value
    return merged


def write_params(path: Path, **overrides: dict) -> Path:
    """The repository's params.yaml with the tiny test settings (and ``overrides``) merged in."""
    params = _merge(_merge(yaml.safe_load(REPO_PARAMS.read_text()), TINY_PARAMS), overrides)
    path.write_text(yaml.safe_dump(params))
    return path
