"""`cartoon compare`: registered versions and run ids side by side, by pictures, params and metrics."""

import json

import mlflow
import numpy as np
from typer.testing import CliRunner

from cartoon import tracking
from cartoon.artifacts import save_generator
from cartoon.cli import app
from cartoon.data.imageio import read_rgb
from cartoon.methods.cartoongan import CartoonGAN, CartoonGANParams

runner = CliRunner()


def _register(project, width: int, ssim: float) -> str:
    """A tiny generator registered as a version of compare-test, its run holding params and an eval metric."""
    params = CartoonGANParams.model_validate({"generator": {"width": width, "n_blocks": 1, "upsample": "resize"}})
    config = {"method": "cartoongan", "params": params.model_dump(mode="json"), "size_multiple": CartoonGAN.size_multiple}
    save_generator(project / f"gen{width}", CartoonGAN.build_generator(params), config)
    tracking.configure()
    with mlflow.start_run(experiment_id=tracking.experiment_id("tests")) as run:
        mlflow.log_params({"cartoongan.generator.width": width, "train.epochs": 2})
        mlflow.log_metrics({"eval/content/luminance_ssim": ssim, "eval/input_style/flatness": 0.3})
        tracking.log_generator(project / f"gen{width}", "compare-test")
    return run.info.run_id


def test_compare_versions_and_runs_side_by_side(project, monkeypatch):
    monkeypatch.setattr(tracking, "model_requirements", lambda weights: ["torch"])  # measuring them takes seconds
    _register(project, 4, 0.61)
    second_run = _register(project, 8, 0.72)
    result = runner.invoke(app, ["compare", "models:/compare-test/1", second_run, "--photos", "test", "--out", "cmp", "--count", "2"])
    assert result.exit_code == 0, result.output
    page = json.loads((project / "cmp/compare.json").read_text())
    assert [c["model"] for c in page["candidates"]] == ["models:/compare-test/1", "models:/compare-test/2"]
    assert page["params"] == {"cartoongan.generator.width": ["4", "8"]}  # train.epochs is equal: not shown
    assert page["metrics"] == {"eval/content/luminance_ssim": [0.61, 0.72]}  # the inputs' figures are hidden
    assert page["photos"] == ["000.png", "001.png"]
    first, second = (read_rgb(project / "cmp/images" / f"model-{i}/000.png") for i in (1, 2))
    assert first.shape == second.shape == (32, 32, 3) and not np.array_equal(first, second)
    html = (project / "cmp/compare.html").read_text()
    assert html.count("<img ") == 2 * 3 and "cartoongan.generator.width" in html and "0.72" in html
    markdown = (project / "cmp/compare.md").read_text()
    assert "![](images/model-2/001.png)" in markdown and "| `eval/content/luminance_ssim` | 0.61 | 0.72 |" in markdown
    logged = mlflow.MlflowClient().get_run(page["mlflow_run_id"])
    assert logged.data.tags["compare.runs"].endswith(second_run)
    assert "compare/compare.html" in [a.path for a in mlflow.MlflowClient().list_artifacts(logged.info.run_id, "compare")]


def test_compare_needs_two_known_models(project, monkeypatch):
    monkeypatch.setattr(tracking, "model_requirements", lambda weights: ["torch"])
    _register(project, 4, 0.5)
    assert runner.invoke(app, ["compare", "models:/compare-test/1", "--photos", "test", "--no-log"]).exit_code == 2
    result = runner.invoke(app, ["compare", "models:/compare-test/1", "no-such-experiment", "--photos", "test", "--no-log"])
    assert result.exit_code == 2 and "no-such-experiment" in result.output and "Traceback" not in result.output
