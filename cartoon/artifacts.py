"""Files the pipeline writes and reads back: generators, resumable training state, JSON reports.

Nothing here unpickles arbitrary objects: generators are safetensors plus a JSON config, and
training state is read with ``torch.load(weights_only=True)``. Every write is atomic (temp
file in the same folder, then rename), so a kill never leaves a half-written file behind.
A generator folder that is missing files is a usage error; one whose files are damaged or do
not belong together is a runtime failure whose one-line message names the file and the fault.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from pydantic import ValidationError
from safetensors.torch import load_file, save_file
from torch import nn

from cartoon.errors import RuntimeFailure, UsageError

if TYPE_CHECKING:
    from cartoon.methods.base import Method

GENERATOR_FILE = "generator.safetensors"
CONFIG_FILE = "generator.json"


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` then rename tmp onto ``path``.

    mkstemp creates the temp file as 0600; it is given the mode of a plainly created file
    (0666 less the umask) so other users of a shared machine can read the outputs.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_current_umask())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _current_umask() -> int:
    """The process umask. Linux reports it in /proc; elsewhere it can only be read by setting
    it, so it is swapped with a restrictive value for that instant, never an open one."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


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
    """Rebuild a generator from a folder written by ``save_generator`` (or the weights file in it).

    Missing files are a UsageError; a damaged or mismatched file is a RuntimeFailure whose one
    line names the file and what is wrong with it, so the CLI never shows a traceback.
    """
    folder = Path(folder)
    if folder.is_file():
        folder = folder.parent
    weights, config_path = folder / GENERATOR_FILE, folder / CONFIG_FILE
    missing = [path.name for path in (weights, config_path) if not path.is_file()]
    if missing:
        raise UsageError(f"not a cartoon generator: {folder} has no {' and no '.join(missing)}")
    config = _read_config(config_path)
    method = _config_method(config, config_path)
    try:
        generator = method.build_generator(method.Params.model_validate(config["params"]))
    except ValidationError as exc:
        problems = "; ".join(f"params.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise RuntimeFailure(f"{config_path} has invalid {method.name} params: {problems}") from None
    state = _read_safetensors(weights)
    mismatch = _state_mismatch(generator.state_dict(), state)
    if mismatch:
        raise RuntimeFailure(f"{weights} does not fit the {method.name} generator that {config_path.name} describes: {mismatch}")
    generator.load_state_dict(state)
    return generator.eval(), config


def _read_config(path: Path) -> dict[str, Any]:
    """``generator.json`` as a dict holding at least the keys loading and inference read."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise RuntimeFailure(f"cannot read {path}: {_one_line(exc)}") from None
    try:
        config = json.loads(data)
    except ValueError as exc:  # JSONDecodeError, or UnicodeDecodeError for binary content
        raise RuntimeFailure(f"{path} is not valid JSON: {_one_line(exc)}") from None
    if not isinstance(config, dict):
        raise RuntimeFailure(f"{path} is not a generator config: expected a JSON object, found {type(config).__name__}")
    absent = [key for key in ("method", "params", "size_multiple") if key not in config]
    if absent:
        raise RuntimeFailure(f"{path} lacks the key(s) {', '.join(absent)}")
    if not isinstance(config["params"], dict):
        raise RuntimeFailure(f"{path}: params must be a JSON object")
    multiple = config["size_multiple"]
    if not isinstance(multiple, int) or isinstance(multiple, bool) or multiple < 1:
        raise RuntimeFailure(f"{path}: size_multiple must be a positive integer, found {multiple!r}")
    return config


def _config_method(config: dict[str, Any], path: Path) -> type[Method]:
    """The method class a config names; an unknown name is a fault of the file, not of the command line."""
    from cartoon.methods import available_methods

    methods, name = available_methods(), config["method"]
    if not isinstance(name, str) or name not in methods:
        raise RuntimeFailure(f"{path} names unknown method {name!r} (known: {', '.join(methods)})")
    return methods[name]


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file; anything else (a pickle, a truncated copy) is refused."""
    try:
        return load_file(str(path))
    except Exception as exc:  # noqa: BLE001 - corrupt or foreign file: report, do not guess
        raise RuntimeFailure(f"{path} is not a readable safetensors file: {_one_line(exc)}") from None


def _state_mismatch(expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor]) -> str:
    """What keeps ``found`` from loading into a module whose state is ``expected`` ('' if nothing)."""
    problems = []
    reshaped = [key for key in expected if key in found and found[key].shape != expected[key].shape]
    if reshaped:
        key = reshaped[0]
        shapes = f"{_shape(found[key])} in the file but {_shape(expected[key])} for these params"
        problems.append(f"{len(reshaped)} tensor(s) have other shapes, e.g. {key} is {shapes}")
    absent = [key for key in expected if key not in found]
    if absent:
        problems.append(f"{len(absent)} tensor(s) missing, e.g. {absent[0]}")
    extra = [key for key in found if key not in expected]
    if extra:
        problems.append(f"{len(extra)} unexpected tensor(s), e.g. {extra[0]}")
    return "; ".join(problems)


def _shape(tensor: torch.Tensor) -> str:
    return "x".join(map(str, tensor.shape)) or "a scalar"


def _one_line(exc: BaseException) -> str:
    """A foreign library's error text folded onto one line."""
    return " ".join(str(exc).split()) or type(exc).__name__


def load_cartoonizer(folder: Path) -> tuple[nn.Module, dict[str, Any]]:
    """A saved generator wrapped with its method's test-time step (``cartoon.inference.Cartoonizer``)."""
    from cartoon.inference import Cartoonizer
    from cartoon.methods import get_method

    generator, config = load_generator(folder)
    return Cartoonizer(get_method(config["method"]), generator).eval(), config
