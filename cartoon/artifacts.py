"""Files the pipeline writes and reads back: generators, resumable training state, JSON reports.

Nothing here unpickles arbitrary objects: generators are safetensors plus a JSON config, and
training state is read with ``torch.load(weights_only=True)``. Every write is atomic (temp
file in the same folder, then rename), so a kill never leaves a half-written file behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from cartoon.errors import RuntimeFailure, UsageError

GENERATOR_FILE = "generator.safetensors"
CONFIG_FILE = "generator.json"


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` then rename tmp onto ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json(path: Path, data: Any) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=_json_default) + "\n"))


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def save_training_state(path: Path, state: dict[str, Any]) -> None:
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_training_state(path: Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - corrupt or foreign file: report, do not guess
        raise RuntimeFailure(f"cannot read checkpoint {path}: {exc}") from None


def save_generator(folder: Path, generator: nn.Module, config: dict[str, Any]) -> None:
    """``generator.safetensors`` + ``generator.json`` (method, params to rebuild it, weights digest)."""
    state = {k: v.detach().cpu().contiguous() for k, v in generator.state_dict().items()}
    atomic_write(folder / GENERATOR_FILE, lambda tmp: save_file(state, str(tmp)))
    digest = hashlib.sha256((folder / GENERATOR_FILE).read_bytes()).hexdigest()
    write_json(folder / CONFIG_FILE, {**config, "weights_sha256": digest})


def load_generator(folder: Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a generator from a folder written by ``save_generator`` (or the weights file in it)."""
    from cartoon.methods import get_method

    folder = Path(folder)
    if folder.is_file():
        folder = folder.parent
    weights, config_path = folder / GENERATOR_FILE, folder / CONFIG_FILE
    for required in (weights, config_path):
        if not required.is_file():
            raise UsageError(f"not a cartoon generator: {required} is missing")
    config = json.loads(config_path.read_text())
    method = get_method(config["method"])
    generator = method.build_generator(method.Params.model_validate(config["params"]))
    try:
        generator.load_state_dict(load_file(str(weights)))
    except (RuntimeError, OSError) as exc:
        raise RuntimeFailure(f"{weights} does not fit method {config['method']}: {exc}") from None
    return generator.eval(), config


def load_cartoonizer(folder: Path) -> tuple[nn.Module, dict[str, Any]]:
    """A saved generator wrapped with its method's test-time step (``cartoon.inference.Cartoonizer``)."""
    from cartoon.inference import Cartoonizer
    from cartoon.methods import get_method

    generator, config = load_generator(folder)
    return Cartoonizer(get_method(config["method"]), generator).eval(), config
