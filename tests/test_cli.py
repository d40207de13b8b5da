"""The CLI layer: help texts, exit codes, and the evaluate command by hand."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from cartoon.cli import app
from cartoon.data.imageio import write_png
from cartoon.data.store import read_store, write_store

runner = CliRunner()
COMMANDS = ["crawl", "resize", "smooth", "gray", "pretrain", "train", "evaluate", "cartoonize", "export", "methods", "check-params", "web", "compare", "promote"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command):
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0
    assert "Usage" in result.output and len(result.output.splitlines()) > 4


def test_top_level_help_lists_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert all(command in result.output for command in COMMANDS)


def test_unknown_option_is_usage_error():
    assert runner.invoke(app, ["train", "--no-such-option"]).exit_code == 2


def test_bad_params_key_exits_2_naming_it(project):
    (project / "params.yaml").write_text("train: {epochz: 3}\n")
    result = runner.invoke(app, ["pretrain", "--photos", "photo.npy"])
    assert result.exit_code == 2
    assert "train.epochz: unknown key" in result.output


@pytest.mark.parametrize("missing", ["nowhere", "nowhere.npy"])
def test_missing_input_exits_2(project, missing):
    result = runner.invoke(app, ["smooth", "--cartoons", missing, "--out", "out.npy"])
    assert result.exit_code == 2 and missing in result.output


def test_store_output_without_npy_suffix_exits_2(project):
    result = runner.invoke(app, ["smooth", "--cartoons", "cartoon.npy", "--out", "smoothed"])
    assert result.exit_code == 2 and "must end in .npy" in result.output


def test_runtime_failure_exits_1(project):
    (project / "empty").mkdir()
    result = runner.invoke(app, ["smooth", "--cartoons", "empty", "--out", "out.npy"])
    assert result.exit_code == 1 and "no images" in result.output


def test_damaged_store_exits_1_naming_it(project):
    data = (project / "cartoon.npy").read_bytes()
    (project / "cartoon.npy").write_bytes(data[: len(data) // 2])
    result = runner.invoke(app, ["smooth", "--cartoons", "cartoon.npy", "--out", "out.npy"])
    assert result.exit_code == 1 and "cartoon.npy" in result.output and "re-run the stage" in result.output


def test_smooth_then_gray_write_stores_with_the_cartoons_names(project):
    assert runner.invoke(app, ["smooth", "--cartoons", "cartoon.npy", "--out", "smoothed/train.npy"]).exit_code == 0
    result = runner.invoke(app, ["gray", "--cartoons", "cartoon.npy", "--smoothed", "smoothed/train.npy", "--out", "gray"])
    assert result.exit_code == 0, result.output
    names = read_store(project / "cartoon.npy").names
    for path in ("smoothed/train.npy", "gray/cartoon.npy", "gray/smooth.npy"):
        assert read_store(project / path).names == names
    gray = read_store(project / "gray/smooth.npy").pixels
    assert np.array_equal(gray[..., 0], gray[..., 2])


def test_methods_lists_paper_defaults():
    result = runner.invoke(app, ["methods"])
    assert result.exit_code == 0
    assert "cartoongan.train.content_weight = 10.0" in result.output


@pytest.mark.filterwarnings("ignore::cartoon.vgg.RandomWeightsWarning")
def test_evaluate_by_hand_skips_bad_files_and_writes_grid(project, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(project / "no-weights"))  # FID Inception (and VGG) weights absent
    assert runner.invoke(app, ["pretrain", "--photos", "photo.npy", "--out", "gen"]).exit_code == 0
    mine = project / "mine"
    rng = np.random.default_rng(1)
    write_png(mine / "wide.png", rng.integers(0, 256, (30, 70, 3), dtype=np.uint8))
    write_png(mine / "tall.png", rng.integers(0, 256, (50, 21, 3), dtype=np.uint8))
    (mine / "empty.jpg").write_bytes(b"")
    (mine / "notes.png").write_text("not an image")
    result = runner.invoke(app, ["evaluate", "--model", "gen", "--photos", "mine", "--out", "res"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((project / "res/metrics.json").read_text())
    assert metrics["images"] == 2 and metrics["skipped"] == 2
    assert "no FID Inception weights" in metrics["fid_kid"]["absent"]
    assert 0 <= metrics["content"]["edge_ssim"] <= 1 and metrics["content"]["perceptual_distance"] > 0
    info = json.loads((project / "res/evaluation.json").read_text())
    assert {row["file"] for row in info["skipped_files"]} == {"empty.jpg", "notes.png"}
    from cartoon.data.imageio import read_rgb

    assert read_rgb(project / "res/images/wide.png").shape == (30, 70, 3)  # same size as the input
    grid = read_rgb(project / "res/grid.png")
    assert grid.shape[0] == 2 * 160 + 4  # inputs over outputs


@pytest.mark.filterwarnings("ignore::cartoon.vgg.RandomWeightsWarning")
def test_evaluate_a_store_names_outputs_by_its_names(project):
    assert runner.invoke(app, ["pretrain", "--photos", "photo.npy", "--out", "gen"]).exit_code == 0
    write_store(project / "held_out.npy", ["b-item", "a-item"], np.stack([np.full((32, 32, 3), v, np.uint8) for v in (0, 200)]))
    result = runner.invoke(app, ["evaluate", "--model", "gen", "--photos", "held_out.npy", "--out", "res"])
    assert result.exit_code == 0, result.output
    assert json.loads((project / "res/metrics.json").read_text())["images"] == 2
    assert sorted(p.name for p in (project / "res/images").iterdir()) == ["a-item.png", "b-item.png"]


def test_evaluate_unknown_model_exits_2(project):
    result = runner.invoke(app, ["evaluate", "--model", "models:/no-such-model/1", "--photos", "test"])
    assert result.exit_code == 2 and "no-such-model" in result.output


@pytest.mark.filterwarnings("ignore::cartoon.vgg.RandomWeightsWarning")
def test_trained_model_carries_its_cartoon_score_into_evaluate(project):
    rng = np.random.default_rng(2)
    blocks = np.repeat(np.repeat(rng.integers(0, 256, (6, 4, 4, 3), dtype=np.uint8), 8, 1), 8, 2)  # flat 8x8 tiles
    write_store(project / "cartoon.npy", [f"{i:03d}" for i in range(6)], blocks)
    assert runner.invoke(app, ["pretrain", "--photos", "photo.npy", "--out", "pre"]).exit_code == 0
    result = runner.invoke(app, ["train", "--photos", "photo.npy", "--cartoons", "cartoon.npy", "--smoothed", "smooth.npy",
                                 "--init", "pre", "--out", "gen"])  # fmt: skip
    assert result.exit_code == 0, result.output
    config = json.loads((project / "gen/generator.json").read_text())
    assert config["cartoon_score"]["cv_auc"] > 0.9  # flat tiles against noise photos: separable
    result = runner.invoke(app, ["evaluate", "--model", "gen", "--photos", "test", "--out", "res"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((project / "res/metrics.json").read_text())
    assert metrics["cartoon_score_auc"] == config["cartoon_score"]["cv_auc"]
    assert metrics["input_style"]["cartoon_score"] < 0.2  # the noise inputs look like the training photos
    assert 0 <= metrics["style"]["cartoon_score"] <= 1 and -1 <= metrics["content"]["luminance_ssim"] <= 1
    assert set(metrics["style_progress"]) == {"edge_density", "colour_count", "flatness"}
