"""MLflow wiring: where runs go, what every run carries, and model registration.

The default tracking URI is ``sqlite:///<project root>/mlflow.db`` with artifacts in
``<project root>/mlartifacts``. The project root is found from the working folder, and
``dvc exp run --queue``/``--temp`` copies under ``.dvc/tmp/exps/`` map back to the real
root so every experiment lands in the same database. ``MLFLOW_TRACKING_URI`` overrides.
"""

from __future__ import annotations

import logging
import os
import subprocess
import warnings
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from mlflow.models import ModelSignature
from mlflow.types.schema import Schema, TensorSpec

from cartoon.artifacts import CONFIG_FILE, GENERATOR_FILE

EXPS_TMP = os.sep + os.path.join(".dvc", "tmp", "exps") + os.sep
MODEL_CODE = Path(__file__).with_name("mlflow_model.py")


def project_root(start: Path | None = None) -> Path:
    """The folder holding dvc.yaml (or .dvc), seen through DVC's temporary experiment copies."""
    here = (start or Path.cwd()).resolve()
    text = str(here)
    if EXPS_TMP in text:
        return Path(text.split(EXPS_TMP, 1)[0])
    for folder in (here, *here.parents):
        if (folder / "dvc.yaml").is_file() or (folder / ".dvc").is_dir():
            return folder
    return here


def configure() -> str:
    """Point MLflow at the project's database unless the user chose another; return the URI."""
    logging.getLogger("alembic").setLevel(logging.WARNING)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # keep stage logs readable
    root = project_root()
    uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{root / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    return uri


def experiment_id(name: str) -> str:
    """Get or create the experiment, keeping its artifacts under the project root."""
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    remote = mlflow.get_tracking_uri().startswith(("http://", "https://", "databricks"))
    location = None if remote else (project_root() / "mlartifacts").as_uri()  # a server picks its own store
    return mlflow.create_experiment(name, artifact_location=location)


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def run_tags(phase: str, method: str, data_digest: str, vgg_source: str) -> dict[str, str]:
    tags = {
        "phase": phase,
        "method": method,
        "data.sha256": data_digest,
        "vgg.source": vgg_source,
    }
    commit = git_commit()
    if commit:
        tags["mlflow.source.git.commit"] = commit
    if os.environ.get("DVC_EXP_NAME"):
        tags["dvc.exp_name"] = os.environ["DVC_EXP_NAME"]
    if os.environ.get("DVC_EXP_BASELINE_REV"):
        tags["dvc.baseline_rev"] = os.environ["DVC_EXP_BASELINE_REV"]
    return tags


def log_params(flat: dict[str, Any]) -> None:
    """Log params in chunks (MLflow caps a batch at 100) with values as strings."""
    items = [(k, "" if v is None else str(v)) for k, v in flat.items()]
    for start in range(0, len(items), 100):
        mlflow.log_params(dict(items[start : start + 100]))


def log_generator(folder: Path, register_as: str | None) -> dict[str, Any]:
    """Log the generator as an MLflow pyfunc model (code + safetensors, no pickle) and register it.

    The pyfunc takes uint8 RGB arrays of any height and width (N, H, W, 3) and returns the
    cartoonized arrays; ``cartoon evaluate --model models:/NAME/VERSION`` reads the same files.
    """
    image = TensorSpec(np.dtype(np.uint8), (-1, -1, -1, 3))
    with warnings.catch_warnings():
        # The signature is explicit, and an input example would make MLflow run the model while logging.
        warnings.filterwarnings("ignore", message=".*(type hints|input example).*")
        info = _log_pyfunc(folder, image, register_as)
    result: dict[str, Any] = {"model_uri": info.model_uri}
    if register_as:
        result.update(registered_model=register_as, version=int(info.registered_model_version))
        result["registered_uri"] = f"models:/{register_as}/{result['version']}"
    return result


def _log_pyfunc(folder: Path, image: TensorSpec, register_as: str | None) -> Any:
    return mlflow.pyfunc.log_model(
        name="generator",
        python_model=str(MODEL_CODE),
        artifacts={"weights": str(folder / GENERATOR_FILE), "config": str(folder / CONFIG_FILE)},
        code_paths=[str(Path(__file__).parent)],
        signature=ModelSignature(inputs=Schema([image]), outputs=Schema([image])),
        pip_requirements=["torch", "numpy", "safetensors", "opencv-python-headless", "pydantic", "pyyaml"],
        registered_model_name=register_as,
    )


def registered_name(method: str) -> str:
    return f"cartoon-{method}"
