"""Registry aliases: every registered version is the ``candidate`` when it arrives; ``cartoon promote``
moves another alias (``champion`` by default) to a version, always or only when a metric of its
run beats the current holder's. Every command that takes a model reference accepts
``models:/NAME@ALIAS``, so ``--model models:/cartoon-cartoongan@champion`` follows the promotions.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Literal

import mlflow

from cartoon import tracking
from cartoon.errors import UsageError

_REFERENCE = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<version>\d+)|@(?P<alias>[\w-]+))$")


@dataclass(frozen=True)
class Promotion:
    """What ``promote`` decided: ``alias`` pointed at ``previous`` and now points at ``holder``;
    ``promoted`` when it moved to the ``requested`` version."""

    name: str
    alias: str
    requested: int
    previous: int | None
    holder: int | None
    promoted: bool
    metric: str | None = None
    value: float | None = None
    previous_value: float | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def resolve_version(client: mlflow.MlflowClient, reference: str) -> tuple[str, int]:
    """(name, version) of ``models:/NAME/VERSION`` or ``models:/NAME@ALIAS``; a usage error otherwise."""
    match = _REFERENCE.match(reference)
    if not match:
        raise UsageError(f"not a registered model reference: {reference} (use models:/NAME/VERSION or models:/NAME@ALIAS)")
    name = match["name"]
    try:
        if match["alias"]:
            return name, int(client.get_model_version_by_alias(name, match["alias"]).version)
        return name, int(client.get_model_version(name, match["version"]).version)
    except mlflow.exceptions.MlflowException as exc:
        raise UsageError(f"cannot resolve {reference}: {exc.message}") from None


def _metric(client: mlflow.MlflowClient, name: str, version: int, metric: str) -> float:
    run_id = client.get_model_version(name, str(version)).run_id
    value = client.get_run(run_id).data.metrics.get(metric) if run_id else None
    if value is None:
        raise UsageError(f"version {version} of {name} has no metric {metric!r} on its run (evaluate it with --mlflow-run first)")
    return float(value)


def promote(reference: str, alias: str = "champion", metric: str | None = None,
            mode: Literal["max", "min"] = "max") -> Promotion:
    """Point ``alias`` at the version ``reference`` names. With ``metric`` (a run metric, e.g.
    ``eval/content/luminance_ssim``), only if that version's value beats the current holder's
    (higher with ``mode`` max, lower with min); a version without the metric is a usage error."""
    tracking.configure()
    client = mlflow.MlflowClient()
    name, version = resolve_version(client, reference)
    try:
        previous: int | None = int(client.get_model_version_by_alias(name, alias).version)
    except mlflow.exceptions.MlflowException:
        previous = None
    value = previous_value = None
    better = True
    if metric is not None:
        value = _metric(client, name, version, metric)
        if previous is not None and previous != version:
            previous_value = _metric(client, name, previous, metric)
            better = value > previous_value if mode == "max" else value < previous_value
    promoted = better and previous != version
    if promoted:
        client.set_registered_model_alias(name, alias, str(version))
    holder = version if promoted else previous
    return Promotion(name, alias, version, previous, holder, promoted, metric, value, previous_value)
