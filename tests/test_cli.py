"""The CLI layer: help texts, exit codes, and the evaluate command by hand."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from cartoon.cli import app
from cartoon.data.imageio import write_png

runner = CliRunner()
COMMANDS = ["crawl", "resize", "smooth", "pretrain", "train", "evaluate", "methods", "check-params"]


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
    result = runner.invoke(app, ["pretrain", "--photos", "photo"])
    assert result.exit_code == 2
    assert "train.epochz: unknown key" in result.output


def test_missing_input_folder_exits_2(project):
    result = runner.invoke(app, ["smooth", "--cartoons", "nowhere", "--out", "out"])
    assert result.exit_code == 2 and "nowhere" in result.output


def test_runtime_failure_exits_1(project):
    (project / "empty").mkdir()
    result = runner.invoke(app, ["smooth", "--cartoons", "empty", "--out", "out"])
    assert result.exit_code == 1 and "no images" in result.output


def test_methods_lists_paper_defaults():
    result = runner.invoke(app, ["methods"])
    assert result.exit_code == 0
    assert "cartoongan.train.content_weight = 10.0" in result.output


@pytest.mark.filterwarnings("ignore::cartoon.vgg.RandomWeightsWarning")
def test_evaluate_by_hand_skips_bad_files_and_writes_grid(project):
    assert runner.invoke(app, ["pretrain", "--photos", "photo", "--out", "gen"]).exit_code == 0
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
    assert 0 <= metrics["content"]["edge_ssim"] <= 1 and metrics["content"]["perceptual_distance"] > 0
    info = json.loads((project / "res/evaluation.json").read_text())
    assert {row["file"] for row in info["skipped_files"]} == {"empty.jpg", "notes.png"}
    from cartoon.data.imageio import read_rgb

    assert read_rgb(project / "res/images/wide.png").shape == (30, 70, 3)  # same size as the input
    grid = read_rgb(project / "res/grid.png")
    assert grid.shape[0] == 2 * 160 + 4  # inputs over outputs


def test_evaluate_unknown_model_exits_2(project):
    result = runner.invoke(app, ["evaluate", "--model", "models:/no-such-model/1", "--photos", "test"])
    assert result.exit_code == 2 and "no-such-model" in result.output
