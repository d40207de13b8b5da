"""Registry aliases: the candidate on registration, the champion moved by `cartoon promote`."""

import json

import mlflow
from typer.testing import CliRunner

from cartoon import tracking
from cartoon.cli import app

runner = CliRunner()


def _versions(name: str, scores: list[float]) -> mlflow.MlflowClient:
    """A registered model with one version per score, each version's run holding that score."""
    tracking.configure()
    client = mlflow.MlflowClient()
    client.create_registered_model(name)
    for score in scores:
        with mlflow.start_run(experiment_id=tracking.experiment_id("tests")) as run:
            mlflow.log_metric("eval/content/luminance_ssim", score)
        client.create_model_version(name, f"runs:/{run.info.run_id}/generator", run.info.run_id)
    return client


def _promote(*args: str) -> dict:
    result = runner.invoke(app, ["promote", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.output[result.output.index("{"):])


def test_champion_moves_only_to_a_better_version(project):
    client = _versions("promote-test", [0.6, 0.7, 0.65])
    metric = ["--metric", "eval/content/luminance_ssim"]
    first = _promote("models:/promote-test/1", *metric)  # no champion yet: any version becomes it
    assert first["promoted"] and first["holder"] == 1 and first["previous"] is None
    better = _promote("models:/promote-test/2", *metric)
    assert better["promoted"] and better["holder"] == 2 and better["previous_value"] == 0.6
    worse = _promote("models:/promote-test/3", *metric)
    assert not worse["promoted"] and worse["holder"] == 2
    assert str(client.get_model_version_by_alias("promote-test", "champion").version) == "2"
    lower = _promote("models:/promote-test/3", *metric, "--mode", "min")  # lower is better: 0.65 < 0.7
    assert lower["promoted"] and str(client.get_model_version_by_alias("promote-test", "champion").version) == "3"
    forced = _promote("models:/promote-test@champion", "--alias", "stable")  # no metric: always, by alias too
    assert forced["promoted"] and str(client.get_model_version_by_alias("promote-test", "stable").version) == "3"


def test_bad_references_and_missing_metrics_are_usage_errors(project):
    _versions("promote-errors", [0.5])
    for args in (["cartoon.onnx"], ["models:/no-such-model/1"], ["models:/promote-errors@nobody"],
                 ["models:/promote-errors/1", "--metric", "eval/absent"]):  # fmt: skip
        result = runner.invoke(app, ["promote", *args])
        assert result.exit_code == 2 and "Traceback" not in result.output, (args, result.output)
