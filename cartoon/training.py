"""The training loop every method shares: the `pretrain` and `train` stages.

``run_phase`` wires parts that each have one job: the batch source (``cartoon.batches``:
which images each step draws), the method's step (``cartoon.methods``) run by the engine
(``cartoon.engine``: precision and memory layout; sample grids stay fp32), bookkeeping
(``cartoon.checkpoints``: fingerprint, checkpoint, resume, the non-finite guard), tracking as
callbacks (``MlflowCallback``: params, losses, sample grids) and the outputs (generator,
reports, registered model). Reports are metrics.json and losses.csv, equal on a rerun, and
wall-clock figures apart in timing.json. Checkpoints are written atomically every
``checkpoint_every`` steps and at each epoch end; a NaN/inf loss stops the run with the last
good checkpoint kept.

A step never waits for the device: its batch was drawn in the background while the previous
step ran (``Prefetch``), and its losses stay tensors. The loop reads them back only where it
logs, samples, saves and ends: there the finite guard is checked (one read-back) and, at log
points, the losses become floats (averaged over the ranks).

With several processes (``<phase>.distributed``), every rank trains on its share of each batch;
rank 0 alone tracks to MLflow, draws sample grids, writes checkpoints, reports and the
generator and registers it.
"""

from __future__ import annotations

import csv
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import torch
from torchvision.utils import make_grid

from cartoon import tracking
from cartoon.artifacts import load_generator, save_generator, write_json
from cartoon.batches import BatchSource, ImageSet, Prefetch, load_face_sets, load_image_set
from cartoon.checkpoints import Bookkeeper, FiniteGuard, fingerprint
from cartoon.data.imageio import write_png
from cartoon.engine import Engine, resolve_channels_last, resolve_precision
from cartoon.errors import UsageError
from cartoon.inference import to_uint8
from cartoon.methods import flat_params, get_method, method_params
from cartoon.methods.base import Method, NonFiniteLoss, Phase
from cartoon.params import LoopParams, Params
from cartoon.progress import console, progress
from cartoon.vgg import load_vgg

SAMPLE_COUNT = 4


@dataclass(frozen=True)
class PhaseOutputs:
    """Where a phase writes: the generator folder, the reports folder, the checkpoint file."""

    model_dir: Path
    reports_dir: Path
    checkpoint: Path


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


class MlflowCallback:
    """Tracking as a callback of the loop: the run's params, tags and training sets, losses, sample grids."""

    def __init__(self, params: Params, method: Method, phase: Phase, data_sha: str, face_images: int, engine: Engine,
                 set_paths: dict[str, Path], set_digests: dict[str, str]) -> None:
        self.params, self.method, self.phase = params, method, phase
        self.data_sha, self.face_images = data_sha, face_images
        self.precision, self.channels_last = engine.precision, engine.channels_last
        self.set_paths, self.set_digests = set_paths, set_digests

    def on_start(self, resumed: bool) -> None:
        if resumed:
            return  # the run already holds them
        tracking.log_params({**flat_params(self.params), **self.method.derived_params(), "data.face_photos": self.face_images,
                             f"{self.phase}.precision_resolved": self.precision,
                             f"{self.phase}.channels_last_resolved": self.channels_last})
        mlflow.set_tags(tracking.run_tags(self.phase, self.method.name, self.data_sha, self.method.features.source)
                        | self.method.tags()
                        | {"precision": self.precision})
        tracking.log_datasets(self.set_paths, self.set_digests, "training")

    def on_log(self, step: int, losses: dict[str, float]) -> None:
        mlflow.log_metrics({f"loss/{k}": v for k, v in losses.items()}, step=step)

    def on_sample(self, step: int, grid: np.ndarray) -> None:
        mlflow.log_image(grid, key="samples", step=step)

    def on_end(self, timing: dict[str, float], grid: np.ndarray) -> None:
        mlflow.log_metrics({"train_seconds": timing["seconds"], "images_per_second": timing["images_per_second"]})
        mlflow.log_image(grid, artifact_file="samples/final.png")


def _build_method(params: Params, phase: Phase, data: dict[str, Path | None], device: torch.device,
                  init: Path | None) -> tuple[Method, str]:
    """The selected method on ``device``, its generator initialised from ``init`` when given;
    also returns the initial weights' digest (part of the checkpoint fingerprint)."""
    method_cls = get_method(params.model.name)
    missing = [name for name in method_cls.sets[phase] if name not in data]
    if missing:
        raise UsageError(f"{method_cls.name} {phase} needs image sets {missing}; pass them as options")
    method = method_cls(method_params(params), load_vgg(params.vgg, method_cls.content_layer), device)
    method.load_pretrained(params, phase)
    if init is None:
        return method, ""
    pretrained, config = load_generator(init)
    # Compared as validated params: a generator saved before a key existed (block_convs) has its default.
    same_method = config["method"] == method_cls.name
    if not same_method or method_cls.Params.model_validate(config["params"]).generator != method.params.generator:
        raise UsageError(f"{init} was trained for a different method or architecture; re-run pretrain")
    method.generator.load_state_dict(pretrained.state_dict())
    return method, config.get("weights_sha256", "")


def _face_sets(method: Method, phase: Phase, data: dict[str, Path | None], needed: tuple[str, ...],
               loop: LoopParams) -> dict[str, ImageSet]:
    """The face sets the loop mixes in: none for a method that does not train on face batches
    (said when face images were given); a method that requires them fails without them."""
    if type(method).face_batches:
        faces = load_face_sets(data, needed, loop.face_every)
        if not faces and phase == "train" and type(method).requires_face_batches:
            raise UsageError(f"{method.name} trains on face batches: give the face sets (--face-photos, --face-cartoons) "
                             f"with images, and train.face_every above 0 (now {loop.face_every})")
        return faces
    if any(data.get(f"face_{name}") is not None for name in needed) and loop.face_every:
        console.print(f"faces: {method.name} does not train on face batches; the face sets are not used")
    return {}


def run_phase(
    phase: Phase,
    params: Params,
    data: dict[str, Path | None],
    outputs: PhaseOutputs,
    init: Path | None = None,
) -> dict[str, Any]:
    """Train one phase of the selected method; returns the metrics written to metrics.json and
    the timing written to timing.json (on every rank; rank 0 writes them)."""
    loop: LoopParams = getattr(params, phase)
    device = pick_device(loop.device)
    if loop.threads:
        torch.set_num_threads(loop.threads)
    precision = resolve_precision(loop.precision, device, f"{phase}.precision")
    channels_last = resolve_channels_last(loop.channels_last, precision)
    engine = Engine(device, precision, channels_last, loop.distributed, f"{phase}.distributed", loop.compile)
    torch.manual_seed(loop.seed)  # the same on every rank (cartoon.checkpoints: RNG states)
    method, init_digest = _build_method(params, phase, data, engine.device, init)
    try:
        return _run(phase, params, loop, data, outputs, method, init_digest, engine, precision)
    finally:
        method.close()


def _run(phase: Phase, params: Params, loop: LoopParams, data: dict[str, Path | None], outputs: PhaseOutputs,
         method: Method, init_digest: str, engine: Engine, precision: str) -> dict[str, Any]:
    needed = type(method).sets[phase]
    source = BatchSource({name: load_image_set(data[name], name) for name in needed},
                         _face_sets(method, phase, data, needed, loop), loop, engine.device, engine.rank, engine.world_size)
    method.setup(phase, loop.epochs, source.steps_per_epoch)
    engine.attach(method)
    data_sha, set_digests = source.digest()
    features = method.features
    books = Bookkeeper(outputs.checkpoint, fingerprint(phase, params, loop, data_sha, init_digest,
                                                       f"{features.source}@{features.layer}", precision),
                       writer=engine.is_main, share=engine.from_main)
    state = books.resume(method, engine)
    if engine.is_main and state["global_step"]:
        console.print(f"{phase}: resuming from step {state['global_step']} of its checkpoint {outputs.checkpoint}")
    sample_photos = source.sets["photo"].batch(torch.arange(min(SAMPLE_COUNT, len(source.sets["photo"].names))), engine.device)

    run_context = _start_run(params, state["run_id"], f"{method.name}-{phase}") if engine.is_main else nullcontext()
    with run_context as run:
        callback = None
        if engine.is_main:
            state["run_id"] = run.info.run_id
            callback = MlflowCallback(params, method, phase, data_sha, source.face_images, engine,
                                      {name: data[name] for name in set_digests}, set_digests)
            callback.on_start(resumed=state["global_step"] > 0)
        last, grid = _loop(phase, method, engine, source, loop, books, state, callback, sample_photos)

        metrics = {
            "method": method.name, "phase": phase, "steps": state["global_step"], "epochs": loop.epochs,
            "precision": precision, "vgg_source": features.source, "vgg_layer": features.layer, "final_loss": last,
        }  # fmt: skip
        # Wall-clock figures vary from run to run, so they stay out of metrics.json (whose reruns
        # must compare equal) and go to MLflow and timing.json.
        images = state["global_step"] * loop.batch_size * engine.world_size
        timing = {
            "seconds": round(state["seconds"], 2),
            "images_per_second": round(images / max(state["seconds"], 1e-9), 3),
        }
        if callback is not None:
            final_grid = grid if grid is not None else _sample_grid(method, sample_photos)
            callback.on_end(timing, final_grid)
            _write_outputs(phase, params, method, source, state, run, outputs, metrics, timing, final_grid)
    books.finish()
    return metrics | timing


def _loop(phase: Phase, method: Method, engine: Engine, source: BatchSource, loop: LoopParams, books: Bookkeeper,
          state: dict[str, Any], callback: MlflowCallback | None,
          sample_photos: torch.Tensor) -> tuple[dict[str, float], np.ndarray | None]:
    """Steps from ``state["global_step"]`` to the end, each in the engine's precision; returns the
    last logged losses and sample grid (grids are drawn outside autocast, in fp32, by rank 0).
    ``callback`` is rank 0's tracking (None on the other ranks)."""
    started, seconds_before = time.monotonic(), state["seconds"]
    guard = FiniteGuard(state["global_step"], engine.sum_over_ranks)
    last: dict[str, float] = {}
    grid = None
    with progress(disable=not engine.is_main) as bar, Prefetch(source, state["global_step"]) as batches:
        task = bar.add_task(f"{phase} {method.name}", total=source.total_steps, completed=state["global_step"], status="")
        for batch, epoch_done in batches:
            step = state["global_step"] + 1  # counted from 1 in logs and messages
            with engine.autocast():
                losses = method.step(phase, engine.batch(batch))
            guard.watch(losses)
            state["global_step"] = step
            log_now = step % loop.log_every == 0 or step == source.total_steps
            sample_now = step % loop.sample_every == 0 or step == source.total_steps
            save_now = epoch_done or step % loop.checkpoint_every == 0
            if log_now or sample_now or save_now:
                try:  # before anything is logged or saved: a non-finite loss never reaches a checkpoint
                    guard.verify(step)
                except NonFiniteLoss as exc:
                    raise books.stopped(phase, step, exc) from None
            if log_now:
                values = engine.mean_over_ranks(torch.stack([loss.detach().float() for loss in losses.values()]))
                last = dict(zip(losses, values.tolist()))
                state["history"].append({"step": step, **last})
                if callback is not None:
                    callback.on_log(step, last)
                bar.update(task, status=" ".join(f"{k}={v:.3g}" for k, v in list(last.items())[:3]))
            if sample_now and callback is not None:
                grid = _sample_grid(method, sample_photos)
                callback.on_sample(step, grid)
            if epoch_done:
                method.end_epoch()
            if save_now:
                state["seconds"] = seconds_before + time.monotonic() - started
                books.save(method, engine, state)
            bar.update(task, advance=1)
    state["seconds"] = seconds_before + time.monotonic() - started
    return last, grid


def _write_outputs(phase: Phase, params: Params, method: Method, source: BatchSource, state: dict[str, Any],
                   run: mlflow.ActiveRun, outputs: PhaseOutputs, metrics: dict[str, Any], timing: dict[str, float],
                   grid: np.ndarray) -> None:
    """The generator (with what evaluation compares against), the reports (with the final sample grid,
    a DVC image plot that `dvc plots diff` shows side by side between experiments), the registered model."""
    sets = source.sets
    config = {
        "method": method.name,
        "params": method.params.model_dump(mode="json"),
        "size_multiple": type(method).size_multiple,
        "image_size": int(sets["photo"].pixels.shape[2]),
        "phase": phase,
        "steps": state["global_step"],
        "vgg_source": method.features.source,
        "mlflow_run_id": run.info.run_id,
    }
    if "cartoon" in sets:
        config.update(cartoon_references(sets["cartoon"], sets["photo"], config["image_size"]))
    save_generator(outputs.model_dir, method.generator, config)
    record: dict[str, Any] = {"run_id": run.info.run_id, "experiment_id": run.info.experiment_id,
                              "tracking_uri": mlflow.get_tracking_uri()}
    if phase == "train":
        name = tracking.registered_name(method.name) if params.tracking.register_model else None
        record.update(tracking.log_generator(outputs.model_dir, name))
    _write_history(outputs.reports_dir / "losses.csv", state["history"])
    write_json(outputs.reports_dir / "metrics.json", metrics)
    write_json(outputs.reports_dir / "timing.json", timing)
    write_json(outputs.reports_dir / "mlflow_run.json", record)
    write_png(outputs.reports_dir / "samples.png", grid)
