"""ONNX export of a trained generator with its method's inference step, and an onnxruntime runner.

The exported graph is ``Method.infer(generator, photo)`` (White-box's guided filter included:
box filters are average pools), float NCHW in [-1, 1], with dynamic batch, height and width;
height and width must be multiples of the ``size_multiple`` stored in the file's metadata
(``OnnxCartoonizer`` pads and crops as the PyTorch path does). At export, onnxruntime runs the
file at three sizes (one not square) against PyTorch; a max abs difference above the tolerance
fails the export and leaves no file. A generator that ends in a palette layer (cartoon.palette)
may differ at a few pixels whose colour is almost equally near two palette entries: float sums
taken in another order pick the other one; for those the check allows up to
``PALETTE_FLIP_SHARE`` of the pixels beyond the tolerance (measured: at most 2.2 % on random
noise, 1 % on smooth photos, for tiny random generators). The ONNX runner takes whole images: memory grows with the
image (tiling needs the whole-image norm statistics, which the graph computes itself).
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cartoon.artifacts import atomic_write
from cartoon.errors import RuntimeFailure, UsageError
from cartoon.inference import to_tensor, to_uint8
from cartoon.palette import Palette

OPSET = 17
PARITY_TOLERANCE = 1e-3
PALETTE_FLIP_SHARE = 0.05
#: Parity sizes in units of size_multiple (height, width): small, not square, larger.
PARITY_SIZES = ((16, 16), (18, 30), (40, 24))


def export_onnx(model: torch.nn.Module, config: dict[str, Any], path: Path, tolerance: float = PARITY_TOLERANCE) -> dict[str, Any]:
    """Write ``model`` (a Cartoonizer) to ``path`` and check it with onnxruntime; returns the parity report."""
    import onnx

    multiple = config["size_multiple"]
    example = torch.zeros(1, 3, PARITY_SIZES[0][0] * multiple, PARITY_SIZES[0][1] * multiple)
    axes = {0: "batch", 2: "height", 3: "width"}
    with warnings.catch_warnings():  # the TorchScript exporter's deprecation and tracer notes
        warnings.simplefilter("ignore")
        proto = _export_bytes(model.cpu().eval(), example, axes)
    graph = onnx.load_from_string(proto)
    metadata = {"method": config["method"], "size_multiple": str(multiple), "weights_sha256": config.get("weights_sha256", "")}
    for key, value in metadata.items():
        graph.metadata_props.add(key=key, value=value)
    data = graph.SerializeToString()
    parity = parity_report(model, data, multiple, tolerance)
    worst = max(row["max_abs_diff"] for row in parity)
    flips = max(row["share_beyond_tolerance"] for row in parity)
    allowed = PALETTE_FLIP_SHARE if any(isinstance(layer, Palette) for layer in model.modules()) else 0.0
    if flips > allowed:
        raise RuntimeFailure(
            f"ONNX export of {config['method']} differs from PyTorch by {worst:.2e} (max abs) at {flips:.2%} of the pixels "
            f"(> {tolerance:g} at more than {allowed:.0%} allowed); no file written"
        )
    atomic_write(path, lambda tmp: tmp.write_bytes(data))
    return {"file": str(path), "sha256": hashlib.sha256(data).hexdigest(), "opset": OPSET, "tolerance": tolerance,
            "max_abs_diff": worst, "share_beyond_tolerance": flips, "sizes": parity, **metadata}


def _export_bytes(model: torch.nn.Module, example: torch.Tensor, axes: dict[int, str]) -> bytes:
    """The TorchScript-based exporter: about a second for these generators where the dynamo
    exporter took 10 to 23 s on tiny ones here (and needs onnxscript)."""
    import io

    buffer = io.BytesIO()
    torch.onnx.export(model, (example,), buffer, dynamo=False, opset_version=OPSET, input_names=["photo"],
                      output_names=["cartoon"], dynamic_axes={"photo": axes, "cartoon": axes})
    return buffer.getvalue()


def parity_report(
    model: torch.nn.Module, onnx_bytes: bytes, multiple: int, tolerance: float = PARITY_TOLERANCE, seed: int = 0
) -> list[dict[str, Any]]:
    """Max abs difference ([-1, 1] scale) of onnxruntime against PyTorch on random photos at
    PARITY_SIZES, and the share of pixels where some channel differs by more than ``tolerance``."""
    session = _session(onnx_bytes, "cpu")
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for height, width in PARITY_SIZES:
        photo = torch.rand(1, 3, height * multiple, width * multiple, generator=generator) * 2 - 1
        with torch.no_grad():
            expected = model(photo).numpy()
        found = session.run(None, {"photo": photo.numpy()})[0]
        difference = np.abs(found - expected).max(axis=1)
        rows.append({"height": height * multiple, "width": width * multiple, "max_abs_diff": float(difference.max()),
                     "share_beyond_tolerance": float(np.mean(difference > tolerance))})
    return rows


def _session(model: bytes | str, device: str):  # noqa: ANN202 - onnxruntime is imported lazily
    import onnxruntime

    providers = ["CPUExecutionProvider"]
    if device != "cpu" and "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    elif device == "cuda":
        raise UsageError("--device cuda: this onnxruntime has no CUDA provider (install onnxruntime-gpu, or use cpu)")
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only: no provider notes on the console
    try:
        return onnxruntime.InferenceSession(model, options, providers=providers)
    except Exception as exc:  # noqa: BLE001 - a damaged or foreign file: one line, no traceback
        name = model if isinstance(model, str) else "the exported graph"
        raise RuntimeFailure(f"onnxruntime cannot load {name}: {' '.join(str(exc).split())}") from None


class OnnxCartoonizer:
    """An exported cartoonizer run by onnxruntime: HxWx3 uint8 photo -> cartoon, whole image."""

    def __init__(self, path: Path, device: str = "auto") -> None:
        if not path.is_file():
            raise UsageError(f"ONNX model not found: {path}")
        self.session = _session(str(path), device)
        metadata = self.session.get_modelmeta().custom_metadata_map
        if "size_multiple" not in metadata:
            raise RuntimeFailure(f"{path} was not written by `cartoon export` (no size_multiple in its metadata)")
        self.multiple = int(metadata["size_multiple"])
        self.method = metadata.get("method", "?")

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        height, width = rgb.shape[:2]
        pad = ((0, (-height) % self.multiple), (0, (-width) % self.multiple), (0, 0))
        mode = "reflect" if pad[0][1] < height and pad[1][1] < width else "edge"
        photo = to_tensor(np.pad(rgb, pad, mode=mode)).numpy()
        cartoon = self.session.run(None, {"photo": photo})[0]
        return to_uint8(torch.from_numpy(cartoon[:, :, :height, :width]))[0]


def registry_run(reference: str) -> str | None:
    """The MLflow run behind a ``models:/NAME/VERSION`` (or ``@ALIAS``) or ``runs:/ID/...``
    reference (None for a folder), found before anything is exported."""
    import mlflow

    from cartoon import tracking
    from cartoon.registry import resolve_version

    if reference.startswith("runs:/"):
        return reference.removeprefix("runs:/").split("/", 1)[0]
    if not reference.startswith("models:/"):
        return None
    tracking.configure()
    client = mlflow.MlflowClient()
    name, version = resolve_version(client, reference)
    return client.get_model_version(name, str(version)).run_id


def log_to_run(run_id: str, path: Path, reference: str) -> None:
    """Log the exported file to ``run_id`` under ``onnx/``."""
    import mlflow

    try:
        mlflow.MlflowClient().log_artifact(run_id, str(path), "onnx")
    except mlflow.exceptions.MlflowException as exc:
        raise RuntimeFailure(f"exported {path}, but cannot log it to the run of {reference}: {exc.message}") from None


def export_model(reference: str, path: Path, tolerance: float = PARITY_TOLERANCE) -> dict[str, Any]:
    """`cartoon export`: resolve the model, export and check it, log the file to its MLflow run."""
    from cartoon.artifacts import load_cartoonizer
    from cartoon.evaluate import resolve_model

    if path.suffix != ".onnx":
        raise UsageError(f"--out must name an .onnx file, got {path}")
    model, config = load_cartoonizer(resolve_model(reference))
    run_id = registry_run(reference)
    result = export_onnx(model, config, path, tolerance)
    if run_id:
        log_to_run(run_id, path, reference)
    return result | ({"mlflow_run": run_id} if run_id else {})
