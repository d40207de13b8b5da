"""`cartoon compare`: several trained models side by side, on the same photos, by pictures and numbers.

A candidate is a DVC experiment name (its ``reports/train/mlflow_run.json`` names the training
run), an MLflow run id, or a registered model version (``models:/NAME/VERSION`` or ``@ALIAS``).
Every candidate is resolved to its MLflow training run: the run's params give the table of
differences and its ``eval/...`` metrics (logged by the evaluate stage) the table of figures,
so DVC experiments, runs and versions compare alike. The page (HTML and Markdown, images beside
them) is also logged to MLflow as a run of its own.
"""

from __future__ import annotations

import html
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np

from cartoon import tracking
from cartoon.artifacts import atomic_write, load_cartoonizer, write_json
from cartoon.data.imageio import ImageRejected, write_png
from cartoon.errors import UsageError
from cartoon.evaluate import photo_items, resolve_model
from cartoon.inference import cartoonize, limit_side
from cartoon.progress import track

_RUN_ID = re.compile(r"^[0-9a-f]{32}$")
#: Metrics of the evaluation that a comparison shows (the inputs' own figures and the cartoon set's
#: reference values are the same for every candidate evaluated on the same photos).
HIDDEN_METRICS = ("eval/input_style/", "eval/cartoon_reference/", "eval/paired_input/")
RUN_RECORD = "reports/train/mlflow_run.json"
PAGE_FILES = ("compare.html", "compare.md", "compare.json")


@dataclass(frozen=True)
class Candidate:
    """One model to compare: how the user named it, its training run and a loadable reference."""

    label: str
    run_id: str
    model: str
    params: dict[str, str]
    metrics: dict[str, float]


def resolve(reference: str) -> Candidate:
    """The training run and model behind a registered version, a run id or a DVC experiment name."""
    tracking.configure()
    client = mlflow.MlflowClient()
    if reference.startswith("models:/"):
        from cartoon.registry import resolve_version

        name, version = resolve_version(client, reference)
        run_id, model = client.get_model_version(name, str(version)).run_id, f"models:/{name}/{version}"
    elif _RUN_ID.match(reference):
        run_id, model = reference, _registered_model_of(client, reference)
    else:
        record = _experiment_record(reference)
        run_id, model = record["run_id"], record.get("registered_uri") or record["model_uri"]
    try:
        run = client.get_run(run_id)
    except mlflow.exceptions.MlflowException as exc:
        raise UsageError(f"{reference}: no MLflow run {run_id} in {mlflow.get_tracking_uri()} ({exc.message})") from None
    return Candidate(reference, run_id, model, dict(run.data.params), dict(run.data.metrics))


def _registered_model_of(client: mlflow.MlflowClient, run_id: str) -> str:
    versions = client.search_model_versions(f"run_id = '{run_id}'")
    if not versions:
        raise UsageError(f"MLflow run {run_id} has no registered model version to cartoonize with")
    newest = max(versions, key=lambda version: int(version.version))
    return f"models:/{newest.name}/{newest.version}"


def _experiment_record(name: str) -> dict:
    """The training run record (``reports/train/mlflow_run.json``) of the DVC experiment ``name``
    (or an experiment commit's sha prefix), found among the experiments of every commit, not only
    HEAD's: committing after a sweep must not make its experiments unknown."""
    import dvc.api
    from dvc.repo import Repo

    not_found = f"{name!r} is not a registered model (models:/...), an MLflow run id or a DVC experiment of this repository"
    try:
        with Repo() as repo:
            listed = repo.experiments.ls(all_commits=True)
    except Exception as exc:  # noqa: BLE001 - not a DVC/git repository: the name is unknown here
        raise UsageError(f"{not_found} ({type(exc).__name__}: {exc})") from None
    found = [sha for experiments in listed.values() for exp_name, sha in experiments
             if name == exp_name or (len(name) >= 7 and sha.startswith(name))]  # fmt: skip
    if not found:
        raise UsageError(not_found)
    try:
        return json.loads(dvc.api.read(RUN_RECORD, rev=found[0]))
    except Exception as exc:  # noqa: BLE001 - any DVC/git error means the experiment has no usable record
        raise UsageError(f"DVC experiment {name}: cannot read {RUN_RECORD} ({exc})") from None


def differing_params(candidates: list[Candidate]) -> dict[str, list[str]]:
    """The params whose values are not the same for every candidate ("-" where one lacks it)."""
    keys = sorted(set().union(*(candidate.params for candidate in candidates)))
    rows = {key: [candidate.params.get(key, "-") for candidate in candidates] for key in keys}
    return {key: values for key, values in rows.items() if len(set(values)) > 1}


def shown_metrics(candidates: list[Candidate]) -> dict[str, list[float | None]]:
    keys = sorted(
        key for key in set().union(*(candidate.metrics for candidate in candidates))
        if key.startswith("eval/") and not key.startswith(HIDDEN_METRICS)
    )  # fmt: skip
    return {key: [candidate.metrics.get(key) for candidate in candidates] for key in keys}


def compare(references: list[str], photos: Path, out_dir: Path, count: int, max_side: int, max_pixels: int,
            log: bool = True) -> dict:
    """Cartoonize the first ``count`` photos with every candidate and write ``compare.html`` and
    ``compare.md`` (with ``images/``) to ``out_dir``; returns what the page shows."""
    if len(references) < 2:
        raise UsageError("compare needs at least two models")
    candidates = [resolve(reference) for reference in references]
    chosen = photo_items(photos, max_pixels)[:count]
    if not chosen:
        raise UsageError(f"no images in {photos}")
    cartoonizers = [load_cartoonizer(resolve_model(candidate.model)) for candidate in candidates]
    shutil.rmtree(out_dir / "images", ignore_errors=True)  # a former comparison's pictures
    rows, skipped = [], []
    for label, stem, load in track(chosen, "compare"):
        try:
            photo = limit_side(load(), max_side)
        except ImageRejected as exc:
            skipped.append({"file": label, "reason": exc.reason})
            continue
        cells = [_save(out_dir / "images" / "input" / f"{stem}.png", photo, out_dir)]
        for index, (generator, config) in enumerate(cartoonizers):
            output = cartoonize(generator, photo, config["size_multiple"])
            cells.append(_save(out_dir / "images" / f"model-{index + 1}" / f"{stem}.png", output, out_dir))
        rows.append((label, cells))
    page = {
        "candidates": [{"label": c.label, "run_id": c.run_id, "model": c.model} for c in candidates],
        "params": differing_params(candidates),
        "metrics": shown_metrics(candidates),
        "photos": [label for label, _cells in rows],
        "skipped_files": skipped,
    }
    for name, text in (("compare.md", _markdown(page, rows)), ("compare.html", _html(page, rows))):
        atomic_write(out_dir / name, lambda tmp, text=text: tmp.write_text(text))
    write_json(out_dir / "compare.json", page)
    if log:  # the local compare.json also names the MLflow run that holds the page
        page["mlflow_run_id"] = _log(candidates, out_dir)
        write_json(out_dir / "compare.json", page)
    return page


def _save(path: Path, image: np.ndarray, root: Path) -> str:
    write_png(path, image)
    return path.relative_to(root).as_posix()


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _headers(page: dict) -> list[str]:
    return [f"{index + 1}: {candidate['label']}" for index, candidate in enumerate(page["candidates"])]


def _markdown(page: dict, rows: list[tuple[str, list[str]]]) -> str:
    def cell(text: str) -> str:  # a | or line break inside a value would end the table cell
        return text.replace("|", "\\|").replace("\n", " ")

    def table(first: str, body: dict[str, list[str]]) -> list[str]:
        lines = [f"| {first} | " + " | ".join(cell(h) for h in _headers(page)) + " |", "|---" * (len(page["candidates"]) + 1) + "|"]
        return lines + [f"| `{cell(key)}` | " + " | ".join(cell(v) for v in values) + " |" for key, values in body.items()]

    lines = ["# Model comparison", ""]
    lines += [f"- {header}: run `{c['run_id']}`, model `{c['model']}`" for header, c in zip(_headers(page), page["candidates"])]
    lines += ["", "## Held-out photos", "", "| photo | input | " + " | ".join(_headers(page)) + " |",
              "|---" * (len(page["candidates"]) + 2) + "|"]  # fmt: skip
    lines += [f"| {label} | " + " | ".join(f"![]({cell})" for cell in cells) + " |" for label, cells in rows]
    lines += ["", "## Params that differ", ""]
    lines += table("param", page["params"]) if page["params"] else ["(none: the runs' params are identical)"]
    lines += ["", "## Metrics", ""]
    metrics = {key: [_number(value) for value in values] for key, values in page["metrics"].items()}
    lines += table("metric", metrics) if metrics else ["(no eval/ metrics: run `cartoon evaluate --mlflow-run` first)"]
    return "\n".join(lines) + "\n"


def _html(page: dict, rows: list[tuple[str, list[str]]]) -> str:
    escape = html.escape

    def table(first: str, body: dict[str, list[str]]) -> str:
        head = "".join(f"<th>{escape(h)}</th>" for h in [first, *_headers(page)])
        cells = "".join(
            "<tr><td><code>" + escape(key) + "</code></td>" + "".join(f"<td>{escape(v)}</td>" for v in values) + "</tr>"
            for key, values in body.items()
        )
        return f"<table><tr>{head}</tr>{cells}</table>"

    header = "".join(f"<th>{escape(h)}</th>" for h in ["photo", "input", *_headers(page)])
    pictures = "".join(
        f"<tr><td>{escape(label)}</td>" + "".join(f'<td><img src="{escape(cell)}" alt="{escape(cell)}"></td>' for cell in cells) + "</tr>"
        for label, cells in rows
    )
    sources = "".join(
        f"<li>{escape(h)}: run <code>{escape(c['run_id'])}</code>, model <code>{escape(c['model'])}</code></li>"
        for h, c in zip(_headers(page), page["candidates"])
    )
    metrics = {key: [_number(value) for value in values] for key, values in page["metrics"].items()}
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>Model comparison</title><style>"
        "body{font-family:sans-serif}table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;"
        "padding:4px;text-align:center}img{max-width:256px}</style></head><body><h1>Model comparison</h1>"
        f"<ul>{sources}</ul><h2>Held-out photos</h2><table><tr>{header}</tr>{pictures}</table>"
        f"<h2>Params that differ</h2>{table('param', page['params']) if page['params'] else '<p>none</p>'}"
        f"<h2>Metrics</h2>{table('metric', metrics) if metrics else '<p>no eval/ metrics</p>'}</body></html>\n"
    )


def _log(candidates: list[Candidate], out_dir: Path) -> str:
    """Log the page as an MLflow run of the ``compare`` experiment, tagged with the runs it compares."""
    with mlflow.start_run(experiment_id=tracking.experiment_id("compare"), run_name=" vs ".join(c.label for c in candidates)) as run:
        mlflow.set_tags({"compare.runs": ",".join(c.run_id for c in candidates),
                         "compare.candidates": json.dumps([c.label for c in candidates])})
        for name in PAGE_FILES:
            mlflow.log_artifact(str(out_dir / name), "compare")
        mlflow.log_artifacts(str(out_dir / "images"), "compare/images")  # only the page's own files, whatever else --out holds
    return run.info.run_id
