"""Concurrent runs (``dvc queue start -j N``) share one fresh MLflow database."""

from __future__ import annotations

import multiprocessing
import os
from multiprocessing.synchronize import Barrier
from pathlib import Path

import mlflow
import pytest
from mlflow.store.db.utils import create_sqlalchemy_engine

from cartoon import tracking
from cartoon.errors import UsageError


def _open_run(root: Path, name: str, start: Barrier) -> None:
    """One queued experiment's first contact with tracking: configure, experiment, run."""
    os.chdir(root)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    os.environ["DVC_EXP_NAME"] = name
    # Both processes reach the fresh database at the same moment.
    start.wait(timeout=120)
    tracking.configure()
    with mlflow.start_run(experiment_id=tracking.experiment_id("race")):
        mlflow.set_tags(
            tracking.run_tags("pretrain", "cartoongan", "0" * 64, "random:0")
        )
        mlflow.log_metric("loss/content", 1.0)


def test_two_runs_open_a_fresh_database_at_once(tmp_path):
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    # Fresh interpreters, as DVC's queue workers start them.
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(2)
    workers = [
        context.Process(target=_open_run, args=(tmp_path, name, start))
        for name in ("exp-a", "exp-b")
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=300)
    assert [worker.exitcode for worker in workers] == [0, 0]
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["race"])
    assert sorted(runs["tags.dvc.exp_name"]) == ["exp-a", "exp-b"]


def test_sqlite_connections_wait_for_a_writer(mlflow_store, monkeypatch):
    """The busy timeout reaches the connections MLflow's engine opens (sqlite3's default is 5 s)."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_store)
    uri = tracking.configure()
    engine = create_sqlalchemy_engine(uri)  # how MLflow's stores make theirs
    with engine.connect() as connection:
        timeout_ms = connection.exec_driver_sql("PRAGMA busy_timeout").scalar()
    engine.dispose()
    assert timeout_ms == tracking.SQLITE_BUSY_TIMEOUT_S * 1000
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"{mlflow_store}?timeout=7")
    assert tracking.configure().endswith("?timeout=7")  # the user's own choice stands


def test_an_unusable_database_folder_is_a_usage_error(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("")
    monkeypatch.setenv(
        "MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'file' / 'mlflow.db'}"
    )
    with pytest.raises(UsageError, match="cannot lock the MLflow database"):
        tracking.configure()


def test_experiments_are_marked_model_training_when_created_or_next_used(mlflow_store, monkeypatch):
    """An MLflow 3 UI that reads the kind tag opens an experiment without it on the GenAI traces."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_store)
    tracking.configure()
    created = mlflow.get_experiment(tracking.experiment_id("kind-new"))
    assert created.tags[tracking.EXPERIMENT_KIND_TAG] == "custom_model_development"
    older = mlflow.create_experiment("kind-old")  # made before the project set the tag
    assert tracking.experiment_id("kind-old") == older
    assert mlflow.get_experiment(older).tags[tracking.EXPERIMENT_KIND_TAG] == "custom_model_development"
    client = mlflow.MlflowClient()
    client.set_experiment_tag(older, tracking.EXPERIMENT_KIND_TAG, "genai_development")  # chosen in the UI
    tracking.experiment_id("kind-old")
    assert mlflow.get_experiment(older).tags[tracking.EXPERIMENT_KIND_TAG] == "genai_development"
