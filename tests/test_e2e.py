"""End to end: the real dvc.yaml on tiny synthetic data in a temporary git repository."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
import yaml

from cartoon.data.store import read_store
from tests.conftest import write_params

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.e2e

TINY_SOURCES = {
    "sources": [
        {"name": "photos", "kind": "builtin", "domain": "photo", "count": 10, "size": 64, "seed": 1},
        {"name": "cartoons", "kind": "builtin", "domain": "cartoon", "count": 8, "size": 64, "seed": 1},
    ]
}


def _run(args: list[str], cwd: Path) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("MLFLOW_TRACKING_URI", None)  # use the project default: sqlite in the repo root
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("repo")
    shutil.copy(ROOT / "dvc.yaml", repo / "dvc.yaml")
    shutil.copy(ROOT / ".gitignore", repo / ".gitignore")
    shutil.copytree(ROOT / "cartoon", repo / "cartoon", ignore=shutil.ignore_patterns("__pycache__"))  # stage deps
    (repo / "pipeline").mkdir()
    (repo / "pipeline/sources.yaml").write_text(yaml.safe_dump(TINY_SOURCES))
    write_params(repo / "params.yaml", train={"epochs": 2, "batch_size": 4, "log_every": 1, "sample_every": 2,
                                              "checkpoint_every": 1})
    _run(["git", "init", "-q"], repo)
    _run(["git", "config", "user.email", "test@example.com"], repo)
    _run(["git", "config", "user.name", "test"], repo)
    _run(["dvc", "init", "-q"], repo)
    shutil.copy(ROOT / ".dvcignore", repo / ".dvcignore")
    _run(["dvc", "config", "core.analytics", "false"], repo)
    _run(["git", "add", "-A"], repo)
    _run(["git", "commit", "-qm", "init"], repo)
    _run(["dvc", "repro"], repo)
    return repo


def test_repro_writes_documented_metrics(repo):
    metrics = json.loads((repo / "reports/evaluate/metrics.json").read_text())
    assert metrics["images"] >= 1
    assert set(metrics["content"]) == {"perceptual_distance", "edge_ssim", "luminance_ssim"}
    assert set(metrics["style"]) == {"edge_density", "colour_count", "flatness", "cartoon_score"}
    assert set(metrics["style_gap"]) == set(metrics["style_progress"]) == set(metrics["style"]) - {"cartoon_score"}
    assert 0 <= metrics["cartoon_score_auc"] <= 1 and metrics["vgg_layer"] == "relu2_2"
    assert (repo / "reports/evaluate/grid.png").stat().st_size > 0
    train = json.loads((repo / "reports/train/metrics.json").read_text())
    assert train["vgg_source"] == "random:0"


def test_images_are_stored_as_a_few_large_files(repo):
    resized = sorted(str(p.relative_to(repo / "data/resized")) for p in (repo / "data/resized").rglob("*") if p.is_file())
    stores = ["cartoon/train", "face_cartoon/train", "face_photo/train", "photo/test", "photo/train", "reference/test"]
    assert resized == sorted(["manifest.csv", *(f"{s}.npy" for s in stores), *(f"{s}.names.txt" for s in stores)])
    for derived in ("data/smoothed/train.npy", "data/gray/cartoon.npy", "data/gray/smooth.npy"):
        assert read_store(repo / derived).names == read_store(repo / "data/resized/cartoon/train.npy").names
    held_out = read_store(repo / "data/resized/photo/test.npy").names
    assert sorted(p.stem for p in (repo / "reports/evaluate/images").iterdir()) == sorted(held_out)


def test_mlflow_run_has_metrics_and_registered_version(repo):
    record = json.loads((repo / "reports/train/mlflow_run.json").read_text())
    mlflow.set_tracking_uri(f"sqlite:///{repo / 'mlflow.db'}")
    run = mlflow.get_run(record["run_id"])
    assert "loss/g_total" in run.data.metrics
    assert "eval/content/edge_ssim" in run.data.metrics  # evaluate logged to the training run
    version = mlflow.MlflowClient().get_model_version("cartoon-cartoongan", str(record["version"]))
    assert version.run_id == record["run_id"]
    artifacts = Path(mlflow.artifacts.download_artifacts(f"models:/cartoon-cartoongan/{record['version']}"))
    assert (artifacts / "artifacts/generator.safetensors").is_file()


def test_second_repro_runs_nothing(repo):
    out = _run(["dvc", "repro"], repo)
    assert "Running stage" not in out
    assert json.loads(_run(["dvc", "status", "--json"], repo)) == {}


def test_experiment_with_changed_loss_weight(repo, tmp_path):
    out = _run(["dvc", "exp", "run", "-S", "cartoongan.train.content_weight=5"], repo)
    assert "Running stage 'train'" in out and "Running stage 'pretrain'" not in out
    table = json.loads(_run(["dvc", "exp", "show", "--json"], repo))
    text = json.dumps(table)
    assert '"content_weight": 5' in text
    mlflow.set_tracking_uri(f"sqlite:///{repo / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["tests"], filter_string="tags.phase = 'train'")
    assert len(runs) >= 2
    assert set(runs["params.cartoongan.train.content_weight"]) >= {"10.0", "5.0"}
    experiment_runs = runs[runs["params.cartoongan.train.content_weight"] == "5.0"]
    assert experiment_runs["tags.dvc.exp_name"].notna().all()  # the DVC experiment's name is on its run
    assert (runs["tags.data.sha256"].nunique()) == 1  # both saw exactly the same training images

    # the experiment by its DVC name beside the baseline's registered version, in one page
    name = experiment_runs["tags.dvc.exp_name"].iloc[0]
    _run(["cartoon", "compare", name, "models:/cartoon-cartoongan/1", "--count", "2", "--out", str(tmp_path / "cmp")], repo)
    page = json.loads((tmp_path / "cmp/compare.json").read_text())
    assert page["params"]["cartoongan.train.content_weight"] == ["5.0", "10.0"] and len(page["photos"]) == 2
    assert page["candidates"][0]["run_id"] == experiment_runs["run_id"].iloc[0]


SWITCHES = {
    "animeganv2": (("g_adv", "content", "style", "colour", "tv", "d_real", "d_fake", "d_gray", "d_smooth"),
                   ("animeganv2.train.resolved.colour", "15.0")),  # the Hayao preset
    "whitebox": (("d_surface", "d_texture", "g_surface", "g_texture", "content", "structure", "tv", "g_total"),
                 ("whitebox.train.superpixel", "slic")),
}  # fmt: skip


@pytest.mark.parametrize("method", sorted(SWITCHES))
def test_switch_method_with_one_key(repo, method):
    terms, (param, value) = SWITCHES[method]
    out = _run(["dvc", "exp", "run", "-S", f"model.name={method}"], repo)
    assert "Running stage 'pretrain'" in out and "Running stage 'train'" in out
    assert "Running stage 'crawl'" not in out and "Running stage 'gray'" not in out  # the data is shared
    record = json.loads((repo / "reports/train/mlflow_run.json").read_text())
    assert record["registered_model"] == f"cartoon-{method}"
    mlflow.set_tracking_uri(f"sqlite:///{repo / 'mlflow.db'}")
    run = mlflow.get_run(record["run_id"])
    assert run.data.tags["method"] == method
    for term in terms:
        assert f"loss/{term}" in run.data.metrics
    assert {"eval/style/flatness", "eval/style/cartoon_score", "eval/content/luminance_ssim"} <= set(run.data.metrics)
    assert run.data.params[param] == value
    methods = set(mlflow.search_runs(experiment_names=["tests"])["tags.method"])
    assert methods >= {"cartoongan", method}
    metrics = json.loads((repo / "reports/evaluate/metrics.json").read_text())
    assert set(metrics["style"]) == {"edge_density", "colour_count", "flatness", "cartoon_score"}
    shown = _run(["dvc", "exp", "show", "--csv"], repo)
    assert f",{method}," in shown and ",cartoongan," in shown  # side by side in dvc exp show


def test_evaluate_by_hand_on_new_photos(repo, tmp_path):
    import numpy as np

    from cartoon.data.imageio import write_png

    photos = tmp_path / "mine"
    rng = np.random.default_rng(3)
    write_png(photos / "a.png", rng.integers(0, 256, (37, 51, 3), dtype=np.uint8))
    (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff not really")
    record = json.loads((repo / "reports/train/mlflow_run.json").read_text())
    mlflow.set_tracking_uri(f"sqlite:///{repo / 'mlflow.db'}")
    mlflow.MlflowClient().set_registered_model_alias(record["registered_model"], "champion", str(record["version"]))
    out = _run(["cartoon", "evaluate", "--model", f"models:/{record['registered_model']}@champion",
                "--photos", str(photos), "--out", str(tmp_path / "eval")], repo)
    metrics = json.loads((tmp_path / "eval/metrics.json").read_text())
    assert metrics["images"] == 1 and metrics["skipped"] == 1
    assert "perceptual_distance" in out
    assert (tmp_path / "eval/images/a.png").is_file() and (tmp_path / "eval/grid.png").is_file()
