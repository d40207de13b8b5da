"""The `evaluate` stage, also meant for users' own held-out photos.

Photos come from a folder (any size, untrusted: unreadable files are skipped and listed) or an
image store (the resize stage's held-out ``photo/test.npy``). For every photo it writes the
cartoonized image, then one comparison grid (inputs over outputs) and ``metrics.json``: how much
content the output keeps, how cartoon-like it is, how far its style statistics are from the
cartoon training set's (stored with the model), and FID/KID to a cartoon set and to the inputs.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import cv2
import mlflow
import numpy as np
import torch

from cartoon import tracking
from cartoon.artifacts import load_cartoonizer, write_json
from cartoon.cartoon_score import CartoonScore
from cartoon.data.imageio import ImageRejected, decode_image, list_images, write_png
from cartoon.data.store import is_store, read_store
from cartoon.data.faces import FaceDetector
from cartoon.errors import RuntimeFailure, UsageError
from cartoon.face_metrics import FaceMeter, load_dlib68
from cartoon.inception import InceptionFeatures, absent_reason, distances, find_weights
from cartoon.inference import cartoonize, limit_side, to_tensor
from cartoon.landmarks import load_onet
from cartoon.metrics import STYLE_KEYS, edge_ssim, luminance_ssim, paired, style_of
from cartoon.params import Params
from cartoon.progress import track
from cartoon.vgg import load_vgg

GRID_TILE = 160
REGISTRY_SCHEMES = ("models:/", "runs:/")


def resolve_model(reference: str) -> Path:
    """A local generator folder/file, or an MLflow ``models:/NAME/VERSION``, ``models:/NAME@ALIAS`` or ``runs:/`` URI."""
    if reference.startswith(REGISTRY_SCHEMES):
        tracking.configure()
        try:
            local = Path(mlflow.artifacts.download_artifacts(reference))
        except mlflow.exceptions.MlflowException as exc:
            raise UsageError(f"cannot resolve model {reference}: {exc.message}") from None
        return local / "artifacts" if (local / "artifacts").is_dir() else local
    path = Path(reference)
    if not path.exists():
        raise UsageError(f"model not found: {path}")
    return path


def comparison_grid(pairs: list[tuple[np.ndarray, np.ndarray]], tile: int = GRID_TILE) -> np.ndarray:
    """Inputs on the top row, outputs on the bottom row, each tile scaled to ``tile`` pixels high."""

    def fit(image: np.ndarray) -> np.ndarray:
        height, width = image.shape[:2]
        return cv2.resize(image, (max(1, round(width * tile / height)), tile), interpolation=cv2.INTER_AREA)

    gap = np.full((tile, 4, 3), 255, np.uint8)
    rows = []
    for column in zip(*pairs):
        tiles = [part for image in column for part in (fit(image), gap)][:-1]
        rows.append(np.concatenate(tiles, axis=1))
    return np.concatenate([rows[0], np.full((4, rows[0].shape[1], 3), 255, np.uint8), rows[1]], axis=0)


#: A photo to evaluate: its name in reports, the stem of its output file, and how to load it.
Photo = tuple[str, str, Callable[[], np.ndarray]]


def photo_items(photos: Path, max_pixels: int) -> list[Photo]:
    """The rows of a store, or the image files of a folder decoded as untrusted input one at a
    time (loading raises ImageRejected for an unusable file)."""
    if is_store(photos):
        store = read_store(photos, "photos")
        return [(name, name, partial(np.asarray, store.pixels[index])) for index, name in enumerate(store.names)]
    if not photos.is_dir():
        raise UsageError(f"photos not found: {photos} (expected a folder of photos or a .npy image store)")
    paths = list_images(photos)
    stems = [path.stem for path in paths]
    # a.jpg beside a.png: both keep their full names, so neither's output overwrites the other's
    return [(path.name, path.stem if stems.count(path.stem) == 1 else path.name, partial(_decode, path, max_pixels))
            for path in paths]


def _decode(path: Path, max_pixels: int) -> np.ndarray:
    return decode_image(path.read_bytes(), max_pixels)


def style_progress(photo: float, output: float, cartoon: float) -> float:
    """How far the outputs moved from the photos toward the cartoon set on one statistic:
    0 = unchanged, 1 = at the cartoon set's value, negative = away from it."""
    return (output - photo) / (cartoon - photo) if cartoon != photo else 0.0


def _mean(rows: list[dict[str, float]]) -> dict[str, float]:
    return {key: float(np.mean([row[key] for row in rows])) for key in rows[0]}


def evaluate(
    model: str,
    photos: Path,
    out_dir: Path,
    params: Params,
    log_to_run: str | None = None,
    cartoons: Path | None = None,
    references: Path | None = None,
) -> dict[str, Any]:
    """Cartoonize every photo of ``photos`` (a folder or a store); write images, grid.png and
    metrics.json to ``out_dir``. ``cartoons`` (a folder or a store) is the set FID/KID compare
    the outputs with, beside the inputs; ``references`` (a folder or a store) holds the expected
    output of each photo under the photo's file stem (a hazy photo's clear original) for PSNR/SSIM."""
    items = photo_items(photos, params.resize.max_pixels)
    if not items:
        raise UsageError(f"no images in {photos}")
    cartoon_items = photo_items(cartoons, params.resize.max_pixels) if cartoons else []
    if cartoons and not cartoon_items:
        raise UsageError(f"no images in {cartoons}")
    inception, inception_absent = _inception(params)
    expected, references_note = _references(references, items, params) if references else ({}, "none given (--references)")
    generator, config = load_cartoonizer(resolve_model(model))
    scorer = CartoonScore.from_json(config["cartoon_score"]) if config.get("cartoon_score") else None
    features = load_vgg(params.vgg, "conv4_4")
    faces, faces_absent, dlib68_absent = _face_meter(params)
    images_dir = out_dir / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    for stale in list_images(images_dir):
        stale.unlink()

    content_rows, style_rows, input_rows, skipped, pairs = [], [], [], [], []
    output_features, photo_features, paired_rows, paired_input_rows = [], [], [], []
    for label, stem, load in track(items, "evaluate"):
        try:
            photo = limit_side(load(), params.evaluate.max_side)
        except ImageRejected as exc:
            skipped.append({"file": label, "reason": exc.reason})
            continue
        output = cartoonize(generator, photo, config["size_multiple"])
        write_png(images_dir / f"{stem}.png", output)
        with torch.no_grad():
            distance = (features(to_tensor(output)) - features(to_tensor(photo))).abs().mean().item()
        content_rows.append(
            {"perceptual_distance": distance, "edge_ssim": edge_ssim(photo, output), "luminance_ssim": luminance_ssim(photo, output)}
        )
        style_rows.append(style_of(output) | ({"cartoon_score": scorer.score(output)} if scorer else {}))
        input_rows.append(style_of(photo) | ({"cartoon_score": scorer.score(photo)} if scorer else {}))
        if faces is not None:
            faces.add(photo, output)
        if stem in expected:
            try:
                expected_output = expected[stem]()
            except ImageRejected as exc:
                skipped.append({"file": f"reference of {label}", "reason": exc.reason})
            else:
                paired_rows.append(paired(output, expected_output))
                paired_input_rows.append(paired(photo, expected_output))
        if inception is not None:
            output_features.append(inception(output))
            photo_features.append(inception(photo))
        if len(pairs) < params.evaluate.grid_images:
            pairs.append((photo, output))
    if not content_rows:
        raise RuntimeFailure(f"none of the {len(items)} files in {photos} could be read: {skipped[:3]}")
    write_png(out_dir / "grid.png", comparison_grid(pairs))

    style = _mean(style_rows)
    metrics: dict[str, Any] = {
        "vgg_source": features.source,
        "vgg_layer": features.layer,
        "images": len(content_rows),
        "skipped": len(skipped),
        "content": _mean(content_rows),
        "style": style,
        "input_style": _mean(input_rows),
    }
    reference = config.get("cartoon_reference")
    if reference:
        inputs = metrics["input_style"]
        metrics["cartoon_reference"] = reference
        metrics["style_gap"] = {key: abs(style[key] - reference[key]) for key in STYLE_KEYS}
        metrics["style_progress"] = {key: style_progress(inputs[key], style[key], reference[key]) for key in STYLE_KEYS}
    if scorer:
        metrics["cartoon_score_auc"] = scorer.cv_auc
    if paired_rows:
        metrics["paired"] = _mean(paired_rows) | {"images": len(paired_rows)}
        metrics["paired_input"] = _mean(paired_input_rows)
    elif expected:
        metrics["paired"] = {"absent": "no photo with a readable reference was evaluated"}
    metrics["fid_kid"] = (
        _fid_kid(inception, np.array(output_features), np.array(photo_features), cartoon_items, params, skipped)
        if inception is not None
        else {"absent": inception_absent}
    )
    metrics["skipped"] = len(skipped)  # photos, references and cartoons that could not be read (listed in evaluation.json)
    face_figures = faces.summary() if faces is not None else None
    if face_figures:
        metrics["faces"] = face_figures
    elif faces is not None:
        faces_absent = "no face found in the photos" if params.evaluate.faces == "auto" else "no face measured"
    if not face_figures and not dlib68_absent:
        dlib68_absent = faces_absent  # the 68-point check was ready, but there was no face to measure
    info = {"model": model, "method": config["method"], "vgg_source": features.source, "vgg_layer": features.layer,
            "inception": inception.source if inception is not None else f"absent: {inception_absent}",
            "skipped_files": skipped, "faces": faces.landmarks.source if face_figures else f"absent: {faces_absent}",
            "faces_dlib68": faces.dlib68.source if face_figures and faces.dlib68 else f"absent: {dlib68_absent}",
            "references": references_note if not paired_rows else f"{references}: {len(paired_rows)} photos matched"}
    write_json(out_dir / "metrics.json", metrics)
    write_json(out_dir / "evaluation.json", info)
    if log_to_run:
        _log(log_to_run, metrics, out_dir)
    return metrics


def _face_meter(params: Params) -> tuple[FaceMeter | None, str, str]:
    """The face meter the settings ask for, or None and why (off, or no O-Net weights); and why
    its 68-point check is off (no dlib or no model: the faces68 extra), empty when it is on."""
    if params.evaluate.faces == "off":
        return None, "evaluate.faces is off", "evaluate.faces is off"
    try:
        landmarks = load_onet(params.landmarks.weights)
    except RuntimeFailure as exc:
        return None, str(exc), str(exc)
    dlib68, dlib68_absent = load_dlib68(params.evaluate.dlib_predictor)
    detector = FaceDetector(params.evaluate.face_min_size, min_score=0.9)
    return FaceMeter(landmarks, detector, aligned=params.evaluate.faces == "aligned", dlib68=dlib68), "", dlib68_absent


def _references(references: Path, items: list[Photo], params: Params) -> tuple[dict[str, Callable[[], np.ndarray]], str]:
    """The reference loader of each photo, by stem, and a note for evaluation.json. An empty
    store means no references (the resize stage writes one when the data has none, so one stage
    graph serves every profile); references that match no photo are a usage error."""
    if is_store(references) and not read_store(references, "references").names:
        return {}, f"none: {references} is empty (the data has no references)"
    by_stem = {stem: load for _label, stem, load in photo_items(references, params.resize.max_pixels)}
    matched = {stem: by_stem[stem] for _label, stem, _load in items if stem in by_stem}
    if not matched:
        raise UsageError(
            f"no reference in {references} matches a photo by file stem (photos e.g. {items[0][1]!r}, "
            f"references e.g. {next(iter(by_stem), 'none')!r})"
        )
    return matched, ""


def _inception(params: Params) -> tuple[InceptionFeatures | None, str]:
    """The FID Inception, or None and why (off, or no weights)."""
    if not params.evaluate.fid:
        return None, "evaluate.fid is off"
    path = find_weights(params.evaluate.inception_weights)
    if path is None:
        return None, absent_reason()
    return InceptionFeatures(path), ""


def _fid_kid(inception: InceptionFeatures, outputs: np.ndarray, photos: np.ndarray, cartoons: list[Photo],
             params: Params, skipped: list[dict[str, str]]) -> dict[str, Any]:
    """FID/KID of the outputs to the inputs and, when a cartoon set is given, to it; with the number
    of images each figure rests on (few dozen images give biased FIDs: compare runs at equal counts)
    and the weights that measured them (a file DVC does not track: its digest shows a change).
    Unreadable cartoons join ``skipped``."""
    if len(outputs) < 2:
        return {"absent": f"FID and KID need at least two images; {len(outputs)} evaluated"}
    figures: dict[str, Any] = {"inception": inception.source, "images": len(outputs)}
    figures |= {f"{key}_to_photos": value for key, value in distances(outputs, photos).items()}
    if not cartoons:
        figures["to_cartoons"] = "absent: no cartoon set given (--cartoons)"
        return figures
    reference = []
    for label, _stem, load in track(cartoons, "inception features of the cartoon set"):
        try:
            reference.append(inception(limit_side(load(), params.evaluate.max_side)))
        except ImageRejected as exc:
            skipped.append({"file": f"cartoon set: {label}", "reason": exc.reason})
    figures["cartoon_images"] = len(reference)
    if len(reference) < 2:
        figures["to_cartoons"] = f"absent: {len(reference)} readable cartoon images"
        return figures
    figures |= {f"{key}_to_cartoons": value for key, value in distances(outputs, np.array(reference)).items()}
    return figures


def _log(run_id: str, metrics: dict[str, Any], out_dir: Path) -> None:
    """Add the evaluation to the training run, so runs compare side by side in `mlflow ui`
    (numbers only: an absent figure's reason stays in metrics.json)."""
    number = (int, float)
    flat = {f"eval/{group}/{key}": value for group, values in metrics.items() if isinstance(values, dict)
            for key, value in values.items() if isinstance(value, number)}
    flat |= {f"eval/{key}": value for key, value in metrics.items() if isinstance(value, number)}
    tracking.configure()
    with mlflow.start_run(run_id=run_id):
        mlflow.log_metrics(flat)
        mlflow.log_artifact(str(out_dir / "grid.png"), "evaluate")
        mlflow.log_artifact(str(out_dir / "metrics.json"), "evaluate")
