"""MLflow wiring: where runs go, what every run carries, and model registration.

The default tracking URI is ``sqlite:///<project root>/mlflow.db`` with artifacts in
``<project root>/mlartifacts``. The project root is found from the working folder, and
``dvc exp run --queue``/``--temp`` copies under ``.dvc/tmp/exps/`` map back to the real
root so every experiment lands in the same database. ``MLFLOW_TRACKING_URI`` overrides.

Queued experiments (``dvc queue start -j N``) open that database at the same moment. MLflow
creates and migrates a fresh SQLite database in whichever process opens it first, with no
lock, so two first openers raced in the schema migration and one run failed. ``configure``
therefore builds the schema once under a file lock beside the database, and gives SQLite a
busy timeout so a process waits for another's write instead of failing.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import sqlalchemy
from filelock import FileLock, Timeout
from mlflow.data.dataset_source_registry import resolve_dataset_source
from mlflow.data.meta_dataset import MetaDataset
from mlflow.models import ModelSignature
from mlflow.types.schema import Schema, TensorSpec
from packaging.version import Version

from cartoon.artifacts import CONFIG_FILE, GENERATOR_FILE
from cartoon.errors import RuntimeFailure, UsageError

SQLITE_BUSY_TIMEOUT_S = 60  # a write waits this long for another process's write to end
SCHEMA_LOCK_TIMEOUT_S = 600  # creating and migrating the schema takes seconds, on a slow disk a minute
EXPS_TMP = os.sep + os.path.join(".dvc", "tmp", "exps") + os.sep
# MLflow 3's experiment kind (the UI's ExperimentKind enum, mlflow/server/js): with this value an
# MLflow 3 UI opens the experiment on its runs, not on the GenAI traces. The UI bundled with 3.17
# reads its sidebar switch (GenAI / Machine learning) instead; the README says how to set it.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
DATASET_DIGEST_CHARS = 32  # MLflow stores at most 36 characters of a dataset digest
MODEL_CODE = Path(__file__).with_name("mlflow_model.py")
CODE_PACKAGE = Path(__file__).parent  # logged with the model as code (code_paths)

# Run by model_requirements in a fresh interpreter: loads and runs the model's code the way the
# pyfunc loader does (load_context, then predict) and prints, as JSON, the top-level modules
# that import statements inside the code package asked for. Modules those in turn import are
# their distributions' own dependencies, which pip resolves.
_IMPORT_PROBE = """
import builtins, importlib, json, sys
from types import SimpleNamespace

package, weights = sys.argv[1:]
asked = set()
plain_import = builtins.__import__


def recording_import(name, globals=None, locals=None, fromlist=(), level=0):
    if level == 0 and (globals or {}).get("__name__", "").partition(".")[0] == package:
        asked.add(name.partition(".")[0])
    return plain_import(name, globals, locals, fromlist, level)


builtins.__import__ = recording_import
import numpy as np

model = importlib.import_module(f"{package}.mlflow_model").CartoonGenerator()
model.load_context(SimpleNamespace(artifacts={"weights": weights}))
model.predict(None, np.zeros((1, 9, 10, 3), np.uint8))
print(json.dumps(sorted(asked)))
"""


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
    if uri.startswith("sqlite:"):
        uri = _prepare_sqlite(uri)
    mlflow.set_tracking_uri(uri)
    return uri


def _prepare_sqlite(uri: str) -> str:
    """The URI with a busy timeout, after creating and migrating its database under a file lock.

    The timeout travels in the URI (``?timeout=``, passed by SQLAlchemy to ``sqlite3.connect``),
    the one way MLflow 3 forwards connection arguments for SQLite; it covers the connections
    MLflow opens outside its sessions (table check, migration, schema check), and MLflow sets
    20 s itself inside each session. A timeout already in the URI is kept.
    """
    url = sqlalchemy.engine.make_url(uri)
    if "timeout" not in url.query:
        url = url.update_query_dict({"timeout": str(SQLITE_BUSY_TIMEOUT_S)})
    uri = url.render_as_string(hide_password=False)
    if url.database in (None, "", ":memory:"):
        return uri  # private to this process: nothing to share
    lock = FileLock(f"{url.database}.lock", timeout=SCHEMA_LOCK_TIMEOUT_S)
    try:
        with lock:
            # Opening the store creates and migrates the schema of a new database; later
            # openers, under the lock in turn, find it complete.
            mlflow.MlflowClient(uri).search_experiments(max_results=1)
    except Timeout:
        raise RuntimeFailure(
            f"waited {SCHEMA_LOCK_TIMEOUT_S} s for {lock.lock_file}, held by another process preparing the MLflow database"
        ) from None
    except OSError as exc:  # the database's folder cannot be created or written
        raise UsageError(f"cannot lock the MLflow database {url.database} (tracking URI {uri}): {exc}") from None
    return uri


def experiment_id(name: str) -> str:
    """Get or create the experiment, keeping its artifacts under the project root, and mark it a
    model-training experiment (an experiment made before the mark gets it on its next use).

    Two first runs may both find no experiment; the one whose create loses reads the winner's.
    """
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is None:
        experiment = _create_experiment(name)
    if experiment.tags.get(EXPERIMENT_KIND_TAG) is None:  # a kind the user chose in the UI stays
        mlflow.MlflowClient().set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    return experiment.experiment_id


def _create_experiment(name: str) -> mlflow.entities.Experiment:
    remote = mlflow.get_tracking_uri().startswith(("http://", "https://", "databricks"))
    location = None if remote else (project_root() / "mlartifacts").as_uri()  # a server picks its own store
    try:
        mlflow.create_experiment(name, artifact_location=location, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
    except mlflow.exceptions.MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    return mlflow.get_experiment_by_name(name)


def log_datasets(paths: dict[str, Path], digests: dict[str, str], context: str) -> None:
    """Log each image set as a dataset input of the active run, named by its role (``photo``,
    ``face_cartoon``...), with its path in the repo (the DVC path) as source and its content
    digest: the runs' Dataset column then tells runs on different data apart. Metadata only, the
    pixels stay in DVC."""
    root = project_root()
    datasets = []
    for name in sorted(paths):
        path = Path(paths[name]).resolve()
        shown = path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)
        with warnings.catch_warnings():  # two registered sources both read local paths; MLflow picks the first
            warnings.filterwarnings("ignore", message=".*interpreted in multiple ways.*")
            source = resolve_dataset_source(shown)
        datasets.append(MetaDataset(source, name=name, digest=digests[name][:DATASET_DIGEST_CHARS]))
    mlflow.log_inputs(datasets, contexts=[context] * len(datasets), tags_list=[None] * len(datasets))


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


CANDIDATE = "candidate"


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
        # The newest version is always the candidate; `cartoon promote` moves the champion.
        mlflow.MlflowClient().set_registered_model_alias(register_as, CANDIDATE, str(result["version"]))
        result["alias"] = CANDIDATE
    return result


def _log_pyfunc(folder: Path, image: TensorSpec, register_as: str | None) -> Any:
    return mlflow.pyfunc.log_model(
        name="generator",
        python_model=str(MODEL_CODE),
        artifacts={"weights": str(folder / GENERATOR_FILE), "config": str(folder / CONFIG_FILE)},
        code_paths=[str(CODE_PACKAGE)],
        signature=ModelSignature(inputs=Schema([image]), outputs=Schema([image])),
        pip_requirements=model_requirements(folder / GENERATOR_FILE),
        registered_model_name=register_as,
    )


def model_requirements(weights: Path) -> list[str]:
    """The logged model's pip requirements, ``name>=major.minor`` of the installed versions.

    Measured, not listed by hand: a fresh interpreter loads ``weights`` through the model's code
    and predicts once, and every distribution that the code package imports on that path is
    required (a hand-written list missed scikit-image and scipy, imported through the method
    registry). MLflow adds its own pin; the code package travels with the model.
    """
    probe = [sys.executable, "-c", _IMPORT_PROBE, CODE_PACKAGE.name, str(Path(weights).resolve())]
    try:
        done = subprocess.run(probe, capture_output=True, text=True, cwd=CODE_PACKAGE.parent, timeout=600)
    except subprocess.TimeoutExpired:
        raise RuntimeFailure(f"loading {weights} through the MLflow model code took over 10 minutes") from None
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or ["no error output"])[-1]
        raise RuntimeFailure(f"the MLflow model code cannot load and run {weights}: {reason}")
    providers = importlib.metadata.packages_distributions()
    distributions = set()
    for module in json.loads(done.stdout.splitlines()[-1]):
        if module in sys.stdlib_module_names or module in (CODE_PACKAGE.name, "mlflow"):  # MLflow pins itself
            continue
        if module not in providers:
            raise RuntimeFailure(f"no installed distribution provides module {module}, which the MLflow model code imports")
        distributions.update(providers[module])
    return sorted(f"{name}>={_major_minor(name)}" for name in distributions)


def _major_minor(distribution: str) -> str:
    return ".".join(map(str, Version(importlib.metadata.version(distribution)).release[:2]))


def registered_name(method: str) -> str:
    return f"cartoon-{method}"
