"""The training loop every method shares: the `pretrain` and `train` stages.

It loads the image sets the method asks for, resumes from the last checkpoint when the
inputs and params are unchanged, runs the method's steps with a progress bar, logs losses
and sample grids to MLflow, and finally writes the generator, reports (metrics.json and
losses.csv, equal on a rerun; wall-clock figures apart in timing.json) and (for `train`) a
registered model version. Checkpoints are written atomically every ``checkpoint_every``
steps and at each epoch end; a NaN/inf loss stops the run with the last good checkpoint kept.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import torch
from torchvision.utils import make_grid

from cartoon import tracking
from cartoon.artifacts import (
    load_generator,
    load_training_state,
    save_generator,
    save_training_state,
    write_json,
)
from cartoon.data.store import Images, open_images, row_chunks
from cartoon.errors import RuntimeFailure, UsageError
from cartoon.inference import to_uint8
from cartoon.methods import flat_params, get_method, method_params
from cartoon.methods.base import Method, NonFiniteLoss, Phase
from cartoon.params import LoopParams, Params
from cartoon.progress import console, progress
from cartoon.vgg import load_vgg

# Loop settings that change what is computed; the others (logging cadence, device) do not
# invalidate a checkpoint.
_RESULT_KEYS = ("epochs", "batch_size", "max_steps_per_epoch", "seed", "face_every")
SAMPLE_COUNT = 4


@dataclass(frozen=True)
class PhaseOutputs:
    """Where a phase writes: the generator folder, the reports folder, the checkpoint file."""

    model_dir: Path
    reports_dir: Path
    checkpoint: Path


class ImageSet(Images):
    """An image set a phase trains on; a store stays memory-mapped and only batches are read."""

    def rows(self, index: torch.Tensor) -> np.ndarray:
        """Rows ``index`` as uint8 N x H x W x 3, read in file order (each once) for locality,
        then put back in the order asked for."""
        unique, inverse = np.unique(index.numpy(), return_inverse=True)
        return self.pixels[unique][inverse]

    def batch(self, index: torch.Tensor, device: torch.device) -> torch.Tensor:
        """Rows ``index`` as float N x 3 x H x W in [-1, 1]; only uint8 goes to the device."""
        pixels = torch.from_numpy(self.rows(index)).permute(0, 3, 1, 2).contiguous()
        return pixels.to(device).float().div_(127.5).sub_(1.0)


def load_image_set(path: Path, label: str, allow_empty: bool = False) -> ImageSet | None:
    """An image set from a store or a folder of same-size images; an empty set is an error unless
    ``allow_empty`` (then None)."""
    images = open_images(path, label)
    if not images.names:
        if allow_empty:
            return None
        raise RuntimeFailure(f"no images in {label} set {path}")
    return ImageSet(images.names, images.pixels)


def load_face_sets(data: dict[str, Path | None], needed: tuple[str, ...], every: int) -> dict[str, ImageSet]:
    """``face_<set>`` for every set a phase needs, or {} when faces are off, not given or empty.

    White-box (Wang and Yu 2020) mixes a face batch into the scenery batches; the resize stage
    always writes the face stores, empty when sources.yaml has no face source. Turning faces
    off is said out loud, never silent.
    """
    given = {name: data[f"face_{name}"] for name in needed if data.get(f"face_{name}") is not None}
    if every == 0 or not given:
        return {}
    loaded = {name: load_image_set(path, f"face_{name}", allow_empty=True) for name, path in given.items()}
    present = {name: image_set for name, image_set in loaded.items() if image_set is not None}
    if not present:
        console.print("faces: the face sets are empty; training on the other images only")
        return {}
    lacking = [f"face_{name}" for name in needed if name not in present]
    if lacking:
        console.print(f"faces: ignored, this phase also needs {', '.join(lacking)}, which has no images or was not given")
        return {}
    return {f"face_{name}": image_set for name, image_set in present.items()}


def pick_device(choice: str) -> torch.device:
    if choice == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if choice == "cuda" and not torch.cuda.is_available():
        raise UsageError("device 'cuda' requested but CUDA is not available")
    return torch.device(choice)


def data_digest(sets: dict[str, ImageSet]) -> str:
    """sha256 over the exact pixels and names of every image set a phase trains on.

    Stores are read slice by slice, never whole. Pixels are hashed in the N x 3 x H x W order of
    the tensors the networks see, the order of earlier runs, so their ``data.sha256`` tags compare.
    """
    digest = hashlib.sha256()
    with progress() as bar:
        task = bar.add_task("hash data", total=sum(len(image_set.names) for image_set in sets.values()), status="")
        for name in sorted(sets):
            digest.update(name.encode())
            digest.update("\n".join(sets[name].names).encode())
            for rows in row_chunks(sets[name].pixels):
                digest.update(np.ascontiguousarray(sets[name].pixels[rows].transpose(0, 3, 1, 2)))
                bar.update(task, advance=rows.stop - rows.start)
    return digest.hexdigest()


def _fingerprint(phase: str, params: Params, loop: LoopParams, data: str, init_digest: str, vgg: str) -> str:
    """Identifies what a checkpoint was computed from; a checkpoint is resumed only if it matches."""
    config = {
        "phase": phase,
        "method": params.model.name,
        "method_params": method_params(params).model_dump(mode="json"),
        "loop": {k: getattr(loop, k) for k in _RESULT_KEYS},
        "vgg": vgg,
        "init": init_digest,
        "data": data,
    }
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()


def _cuda_rng() -> list[torch.Tensor]:
    """The CUDA generators' states, one per device ([] without CUDA): a resumed GPU run must
    continue the killed run's random stream (dropout, sampling), not start a new one."""
    return torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []


def _restore_cuda_rng(states: list[torch.Tensor]) -> None:
    if states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states)


def _epoch_order(n: int, seed: int, epoch: int, salt: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch * 7919 + salt)
    return torch.randperm(n, generator=generator)


@dataclass(frozen=True)
class _Slot:
    faces: bool  # a face batch
    epoch: int  # the scenery epoch, or the pass over the face set
    index: int  # the batch within it
    epoch_done: bool  # this batch completes a scenery epoch


def _slot(step: int, per_epoch: int, face_every: int, face_batches: int) -> _Slot:
    """What global step ``step`` draws. With faces, every ``face_every``-th step is a face batch
    (the cadence runs across epochs); the other steps walk through the scenery epochs in order,
    so every epoch still sees all its photos. Depends on the step alone, so a resume redraws
    exactly the batches the killed run would have."""
    if face_every and (step + 1) % face_every == 0:
        drawn = step // face_every  # face batches before this one
        return _Slot(True, drawn // face_batches, drawn % face_batches, False)
    scenery = step - (step // face_every if face_every else 0)
    return _Slot(False, scenery // per_epoch, scenery % per_epoch, scenery % per_epoch == per_epoch - 1)


def _total_steps(epochs: int, per_epoch: int, face_every: int) -> int:
    """All scenery batches of all epochs, with the face batches that fall between them."""
    scenery = epochs * per_epoch
    return scenery + ((scenery - 1) // (face_every - 1) if face_every else 0)


def _epoch_orders(
    group: dict[str, ImageSet], prefix: str, style_sets: list[str], seed: int, epoch: int, salt: int
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Shuffles of one epoch for a group of sets (scenery, or faces with ``prefix`` face_): photos, and the style sets together."""
    photo = _epoch_order(len(group[f"{prefix}photo"].names), seed, epoch, salt)
    style = _epoch_order(len(group[prefix + style_sets[0]].names), seed, epoch, salt + 1) if style_sets else None
    return photo, style


def _sample_grid(method: Method, photos: torch.Tensor) -> np.ndarray:
    """Inputs on the top row, the method's test-time outputs below, as one uint8 image."""
    generator = method.generator
    was_training = generator.training
    generator.eval()
    with torch.no_grad():
        outputs = method.infer(generator, photos)
    generator.train(was_training)
    grid = make_grid(torch.cat([photos, outputs]).clamp(-1, 1), nrow=len(photos), padding=2, pad_value=1.0)
    return to_uint8(grid[None])[0]


def cartoon_references(cartoons: ImageSet, photos: ImageSet, side: int) -> dict[str, Any]:
    """What evaluation compares outputs with, stored with the generator: the cartoon set's style
    statistics and the cartoon score fitted on this run's cartoons against its photos."""
    from cartoon.cartoon_score import fit_cartoon_score
    from cartoon.metrics import style_statistics

    return {
        "cartoon_reference": style_statistics(np.asarray(image) for image in cartoons.pixels),
        "cartoon_score": fit_cartoon_score(cartoons.pixels, photos.pixels, side).to_json(),
    }


def _write_history(path: Path, history: list[dict[str, float]]) -> None:
    keys = sorted({k for row in history for k in row} - {"step"})
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["step", *keys])
        writer.writeheader()
        writer.writerows(history)


def _start_run(params: Params, run_id: str | None, run_name: str) -> mlflow.ActiveRun:
    tracking.configure()
    experiment = tracking.experiment_id(params.tracking.experiment)
    if run_id is not None:
        try:
            return mlflow.start_run(run_id=run_id, log_system_metrics=params.tracking.system_metrics)
        except mlflow.exceptions.MlflowException:
            pass  # the run is gone (database deleted): start a new one below
    return mlflow.start_run(experiment_id=experiment, run_name=run_name, log_system_metrics=params.tracking.system_metrics)


def run_phase(
    phase: Phase,
    params: Params,
    data: dict[str, Path | None],
    outputs: PhaseOutputs,
    init: Path | None = None,
) -> dict[str, Any]:
    """Train one phase of the selected method; returns the metrics written to metrics.json."""
    loop: LoopParams = getattr(params, phase)
    method_cls = get_method(params.model.name)
    missing = [name for name in method_cls.sets[phase] if name not in data]
    if missing:
        raise UsageError(f"{method_cls.name} {phase} needs image sets {missing}; pass them as options")
    device = pick_device(loop.device)
    if loop.threads:
        torch.set_num_threads(loop.threads)
    torch.manual_seed(loop.seed)

    sets = {name: load_image_set(data[name], name) for name in method_cls.sets[phase]}
    faces = load_face_sets(data, method_cls.sets[phase], loop.face_every)
    style_sets = [name for name in sets if name != "photo"]  # drawn together: index-aligned, file by file
    for group in (style_sets, [f"face_{name}" for name in style_sets] if faces else []):
        for name in group[1:]:
            if (faces | sets)[name].names != (faces | sets)[group[0]].names:
                raise RuntimeFailure(f"image set {name} does not match {group[0]} file by file; re-run the stages making them")
    features = load_vgg(params.vgg, method_cls.content_layer)
    method = method_cls(method_params(params), features, device)
    init_digest = ""
    if init is not None:
        pretrained, config = load_generator(init)
        same_architecture = config["params"].get("generator") == method.params.generator.model_dump(mode="json")
        if config["method"] != method_cls.name or not same_architecture:
            raise UsageError(f"{init} was trained for a different method or architecture; re-run pretrain")
        method.generator.load_state_dict(pretrained.state_dict())
        init_digest = config.get("weights_sha256", "")

    n_photos = len(sets["photo"].names)
    steps_per_epoch = math.ceil(n_photos / loop.batch_size)
    if loop.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, loop.max_steps_per_epoch)
    face_every = loop.face_every if faces else 0
    face_batches = math.ceil(len(faces["face_photo"].names) / loop.batch_size) if faces else 0
    total_steps = _total_steps(loop.epochs, steps_per_epoch, face_every)
    method.setup(phase, loop.epochs, steps_per_epoch)
    data_sha = data_digest(sets | faces)
    fingerprint = _fingerprint(phase, params, loop, data_sha, init_digest, f"{features.source}@{features.layer}")

    state = {"global_step": 0, "history": [], "run_id": None, "seconds": 0.0}
    if outputs.checkpoint.is_file():
        saved = load_training_state(outputs.checkpoint)
        if saved.get("fingerprint") == fingerprint:
            method.load_state_dict(saved["method"])
            torch.set_rng_state(saved["rng"])
            _restore_cuda_rng(saved.get("cuda_rng", []))
            state = {k: saved[k] for k in state}
        else:
            outputs.checkpoint.unlink()  # inputs or params changed: that progress belongs to another run

    sample_photos = sets["photo"].batch(torch.arange(min(SAMPLE_COUNT, n_photos)), device)
    run_name = f"{method_cls.name}-{phase}"
    with _start_run(params, state["run_id"], run_name) as run:
        state["run_id"] = run.info.run_id
        resumed = state["global_step"] > 0
        if not resumed:
            face_images = len(faces["face_photo"].names) if faces else 0
            tracking.log_params({**flat_params(params), **method.derived_params(), "data.face_photos": face_images})
            mlflow.set_tags(tracking.run_tags(phase, method_cls.name, data_sha, features.source))

        def save_checkpoint() -> None:
            save_training_state(
                outputs.checkpoint,
                {**state, "fingerprint": fingerprint, "method": method.state_dict(), "rng": torch.get_rng_state(),
                 "cuda_rng": _cuda_rng()},
            )

        started = time.monotonic()
        seconds_before = state["seconds"]
        last: dict[str, float] = {}
        orders: dict[str, tuple[int, tuple[torch.Tensor, torch.Tensor | None]]] = {}  # per kind: (epoch, shuffles)
        grid = None
        with progress() as bar:
            task = bar.add_task(f"{phase} {method_cls.name}", total=total_steps, completed=state["global_step"], status="")
            while state["global_step"] < total_steps:
                step = state["global_step"]
                slot = _slot(step, steps_per_epoch, face_every, face_batches)
                prefix, group, salt = ("face_", faces, 2) if slot.faces else ("", sets, 0)
                if orders.get(prefix, (None,))[0] != slot.epoch:  # shuffles depend on (seed, epoch) only: a resume rebuilds them
                    orders[prefix] = (slot.epoch, _epoch_orders(group, prefix, style_sets, loop.seed, slot.epoch, salt))
                photo_order, style_order = orders[prefix][1]
                positions = torch.arange(slot.index * loop.batch_size, (slot.index + 1) * loop.batch_size)
                batch = {"photo": group[f"{prefix}photo"].batch(photo_order[positions % len(photo_order)], device)}
                if style_sets:
                    pick = style_order[positions % len(style_order)]
                    batch.update({name: group[prefix + name].batch(pick, device) for name in style_sets})
                try:
                    losses = method.step(phase, batch)
                except NonFiniteLoss as exc:
                    raise RuntimeFailure(
                        f"{phase} stopped at step {step + 1}: {exc}. The last good checkpoint is kept at "
                        f"{outputs.checkpoint}; lower the learning rate or check the data, then run again."
                    ) from None
                state["global_step"] = step + 1
                last = {k: float(v) for k, v in losses.items()}
                if not all(math.isfinite(v) for v in last.values()):
                    raise RuntimeFailure(f"{phase} stopped at step {step + 1}: non-finite loss {last}")
                if state["global_step"] % loop.log_every == 0 or state["global_step"] == total_steps:
                    state["history"].append({"step": state["global_step"], **last})
                    mlflow.log_metrics({f"loss/{k}": v for k, v in last.items()}, step=state["global_step"])
                if state["global_step"] % loop.sample_every == 0 or state["global_step"] == total_steps:
                    grid = _sample_grid(method, sample_photos)
                    mlflow.log_image(grid, key="samples", step=state["global_step"])
                epoch_done = slot.epoch_done
                if epoch_done:
                    method.end_epoch()
                if epoch_done or state["global_step"] % loop.checkpoint_every == 0:
                    state["seconds"] = seconds_before + time.monotonic() - started
                    save_checkpoint()
                bar.update(task, advance=1, status=" ".join(f"{k}={v:.3g}" for k, v in list(last.items())[:3]))
        state["seconds"] = seconds_before + time.monotonic() - started

        config = {
            "method": method_cls.name,
            "params": method.params.model_dump(mode="json"),
            "size_multiple": method_cls.size_multiple,
            "image_size": int(sets["photo"].pixels.shape[2]),
            "phase": phase,
            "steps": state["global_step"],
            "vgg_source": features.source,
            "mlflow_run_id": run.info.run_id,
        }
        if "cartoon" in sets:
            config.update(cartoon_references(sets["cartoon"], sets["photo"], config["image_size"]))
        save_generator(outputs.model_dir, method.generator, config)

        metrics = {
            "method": method_cls.name,
            "phase": phase,
            "steps": state["global_step"],
            "epochs": loop.epochs,
            "vgg_source": features.source,
            "vgg_layer": features.layer,
            "final_loss": last,
        }
        # Wall-clock figures vary from run to run, so they stay out of metrics.json (whose reruns
        # must compare equal) and go to MLflow and timing.json.
        timing = {
            "seconds": round(state["seconds"], 2),
            "images_per_second": round(state["global_step"] * loop.batch_size / max(state["seconds"], 1e-9), 3),
        }
        mlflow.log_metrics({"train_seconds": timing["seconds"], "images_per_second": timing["images_per_second"]})
        mlflow.log_image(grid if grid is not None else _sample_grid(method, sample_photos), artifact_file="samples/final.png")
        record: dict[str, Any] = {"run_id": run.info.run_id, "experiment_id": run.info.experiment_id,
                                  "tracking_uri": mlflow.get_tracking_uri()}
        if phase == "train":
            name = tracking.registered_name(method_cls.name) if params.tracking.register_model else None
            record.update(tracking.log_generator(outputs.model_dir, name))
        _write_history(outputs.reports_dir / "losses.csv", state["history"])
        write_json(outputs.reports_dir / "metrics.json", metrics)
        write_json(outputs.reports_dir / "timing.json", timing)
        write_json(outputs.reports_dir / "mlflow_run.json", record)
    outputs.checkpoint.unlink(missing_ok=True)
    return metrics | timing
