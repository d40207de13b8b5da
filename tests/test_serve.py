"""`mlflow models serve` of a registered generator answers an image request with its cartoon."""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
from typer.testing import CliRunner

from cartoon import tracking
from cartoon.cli import app
from cartoon.data.imageio import read_rgb, write_png
from tests.local_server import free_port, start_server, stop_server, wait_until_up
from tests.test_cartoonize import photo, save_tiny

runner = CliRunner()
# A cold start takes about 13 s on this 2-core machine; loaded CI machines may be slower.
STARTUP_DEADLINE_S = 120


def _post_json(url: str, body: dict) -> dict:
    request = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise AssertionError(
            f"{url} answered {exc.code}: {exc.read()[:2000]!r}"
        ) from None


def test_served_model_answers_with_the_cartoon(project, monkeypatch):
    gen = save_tiny(project / "gen", "cartoongan")
    # `--env-manager local` serves from this environment and never installs the model's
    # requirements; measuring them (a fresh interpreter, about 7 s) is test_mlflow_model's part.
    monkeypatch.setattr(tracking, "model_requirements", lambda weights: ["torch"])
    tracking.configure()
    with mlflow.start_run(experiment_id=tracking.experiment_id("tests")):
        registered = tracking.log_generator(gen, "cartoon-serve-test")["registered_uri"]

    port, log = free_port(), project / "serve.log"
    # The console scripts of this interpreter's environment (mlflow, and the uvicorn it runs) first on PATH.
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    command = [
        "mlflow",
        "models",
        "serve",
        "-m",
        registered,
        "--env-manager",
        "local",
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
    ]
    server = start_server(command, env, log)
    try:
        # Not square, and not a multiple of the generator's size_multiple.
        image = photo(36, 52)
        write_png(project / "photos" / "a.png", image)
        # While the server starts: the same image through `cartoon cartoonize` and through the pyfunc in process.
        result = runner.invoke(
            app, ["cartoonize", "photos", "--model", registered, "--out", "cartoons"]
        )
        assert result.exit_code == 0, result.output
        expected = read_rgb(project / "cartoons" / "a.png")
        predicted = mlflow.pyfunc.load_model(registered).predict(image[None])

        wait_until_up(f"http://127.0.0.1:{port}/ping", server, log, STARTUP_DEADLINE_S)
        answer = _post_json(
            f"http://127.0.0.1:{port}/invocations", {"inputs": image[None].tolist()}
        )
        served = np.asarray(answer["predictions"])
        assert served.shape == (1, *image.shape)
        assert served.min() >= 0 and served.max() <= 255
        np.testing.assert_array_equal(served, predicted)
        np.testing.assert_array_equal(served[0], expected)
        assert not np.array_equal(served[0], image)  # the generator did something
    finally:
        stop_server(server)
