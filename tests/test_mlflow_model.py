"""The logged MLflow model runs in an environment holding only its declared requirements."""

import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path

import mlflow
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from cartoon import tracking
from cartoon.artifacts import save_generator
from cartoon.methods.cartoongan import CartoonGAN, CartoonGANParams

# Loads the model at argv[2] and predicts once, with the top-level modules of the JSON list
# argv[1] made unimportable, as if their distributions had not been installed.
RESTRICTED_LOAD = """
import json, sys

blocked = set(json.loads(sys.argv[1]))


class NotInstalled:
    def find_spec(self, name, path=None, target=None):
        if name in blocked:
            raise ModuleNotFoundError(f"No module named {name!r} (not in the model's requirements)", name=name)
        return None


sys.meta_path.insert(0, NotInstalled())
import mlflow
import numpy as np

out = mlflow.pyfunc.load_model(sys.argv[2]).predict(np.zeros((1, 20, 28, 3), np.uint8))
assert out.shape == (1, 20, 28, 3) and out.dtype == np.uint8, (out.shape, out.dtype)
"""


def _installed_closure(requirements: list[str]) -> set[str]:
    """Canonical names of the installed distributions that ``pip install`` of ``requirements`` would bring."""
    found: set[str] = set()
    pending = [Requirement(line) for line in requirements]
    while pending:
        requirement = pending.pop()
        name = canonicalize_name(requirement.name)
        if name in found:
            continue
        try:
            dependencies = importlib.metadata.requires(requirement.name) or []
        except importlib.metadata.PackageNotFoundError:
            continue  # not installed here: nothing of it can be imported anyway
        found.add(name)
        extras = requirement.extras or {""}
        for text in dependencies:
            dependency = Requirement(text)
            if dependency.marker is None or any(dependency.marker.evaluate({"extra": extra}) for extra in extras):
                pending.append(dependency)
    return found


def _not_required(requirements: list[str], code_package: str) -> set[str]:
    """Top-level modules of installed distributions that neither ``requirements`` bring nor the model's code is."""
    closure = _installed_closure(requirements)
    return {
        module
        for module, distributions in importlib.metadata.packages_distributions().items()
        if module != code_package and not any(canonicalize_name(d) in closure for d in distributions)
    }


def test_logged_model_loads_and_predicts_with_only_its_requirements(project):
    params = CartoonGANParams.model_validate({"generator": {"width": 4, "n_blocks": 1, "upsample": "resize"}})
    config = {"method": "cartoongan", "params": params.model_dump(mode="json"), "size_multiple": CartoonGAN.size_multiple}
    save_generator(project / "gen", CartoonGAN.build_generator(params), config)
    tracking.configure()
    with mlflow.start_run(experiment_id=tracking.experiment_id("tests")):
        info = tracking.log_generator(project / "gen", None)
    model = Path(mlflow.artifacts.download_artifacts(info["model_uri"], dst_path=str(project / "logged")))
    requirements = (model / "requirements.txt").read_text().split()

    assert [line for line in requirements if line.startswith("mlflow==")], requirements  # MLflow's own pin
    assert all(">=" in line for line in requirements if not line.startswith("mlflow==")), requirements
    blocked = sorted(_not_required(requirements, tracking.CODE_PACKAGE.name))
    command = [sys.executable, "-c", RESTRICTED_LOAD, json.dumps(blocked), str(model)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=project, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
