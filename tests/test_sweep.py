"""A queued sweep end to end: two experiments run at once by two queue workers (``-j 2``)."""

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

from tests.conftest import write_params
from tests.test_e2e import TINY_SOURCES

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.e2e
RATES = {0.001, 0.0005}  # cartoongan.pretrain.lr of the two experiments


def _run(args: list[str], cwd: Path, log: Path | None = None) -> str:
    """Run a command in the repo, the project's default tracking URI (sqlite in the repo root)."""
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    env["DVC_NO_ANALYTICS"] = "1"
    if log is None:
        done = subprocess.run(
            args,
            check=False,
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, (
            f"{' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
        )
        return done.stdout
    # To a file: the queue workers this starts outlive it and would hold captured pipes open.
    with log.open("w") as out:
        done = subprocess.run(
            args,
            check=False,
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=300,
        )
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{log.read_text()}"
    return log.read_text()


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A committed baseline up to ``resize``, then two queued experiments that run ``pretrain``.

    ``pretrain`` is the cheapest stage that opens MLflow (it logs no model) and the one that
    failed in the report; the experiments change its learning rate and stop there, so both
    open the repo's fresh database at the same moment.
    """
    repo = tmp_path_factory.mktemp("sweep")
    for name in ("dvc.yaml", ".gitignore", ".dvcignore"):
        shutil.copy(ROOT / name, repo / name)
    shutil.copytree(
        ROOT / "cartoon", repo / "cartoon", ignore=shutil.ignore_patterns("__pycache__")
    )
    (repo / "pipeline").mkdir()
    (repo / "pipeline/sources.yaml").write_text(yaml.safe_dump(TINY_SOURCES))
    write_params(repo / "params.yaml")
    for args in (
        ["git", "init", "-q"],
        ["git", "config", "user.email", "test@example.com"],
        ["git", "config", "user.name", "test"],
        ["dvc", "init", "-q"],
    ):
        _run(args, repo)
    _run(["dvc", "repro", "resize"], repo)
    _run(["git", "add", "-A"], repo)
    _run(["git", "commit", "-qm", "baseline"], repo)
    assert not (repo / "mlflow.db").exists()
    # A comma list queues one experiment per value (DVC's Hydra sweep syntax).
    values = "cartoongan.pretrain.lr=" + ",".join(map(str, sorted(RATES)))
    _run(["dvc", "exp", "run", "--queue", "-S", values, "pretrain"], repo)
    # `dvc queue start -j 2` starts the two workers and returns; --run-all -j 2 starts the same
    # workers and waits for the experiments.
    out = _run(
        ["dvc", "exp", "run", "--run-all", "-j", "2"],
        repo,
        log=tmp_path_factory.mktemp("log") / "queue.log",
    )
    assert "Failed to reproduce" not in out, out
    return repo


def test_queued_runs_share_one_database_and_show_their_metrics(sweep):
    shown = json.loads(_run(["dvc", "exp", "show", "--json"], sweep))
    experiments = {
        exp["name"]: exp["revs"][0]["data"]
        for rev in shown
        for exp in rev.get("experiments") or []
    }
    names = {
        name: data["params"]["params.yaml"]["data"]["cartoongan"]["pretrain"]["lr"]
        for name, data in experiments.items()
    }
    assert sorted(names.values()) == sorted(RATES)
    for data in experiments.values():
        metrics = data["metrics"]["reports/pretrain/metrics.json"]["data"]
        assert metrics["steps"] >= 1 and "content" in metrics["final_loss"]

    mlflow.set_tracking_uri(f"sqlite:///{sweep / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["tests"])
    rates = runs["params.cartoongan.pretrain.lr"].astype(float)
    assert len(runs) == len(RATES)  # one run each, in the one database
    assert (
        dict(zip(runs["tags.dvc.exp_name"], rates)) == names
    )  # named as DVC names them
