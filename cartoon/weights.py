"""Reading pretrained weights that ship as files (VGG19, MTCNN's O-Net): never downloaded,
never unpickled beyond plain tensors, and checked against the network before use."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from cartoon.errors import RuntimeFailure


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_state_dict(path: Path, what: str) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` file or a torch file of plain tensors (``weights_only``:
    a pickle holding anything else is refused, not run). ``what`` names the network in errors."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any decoder error means the same thing to the user
        raise RuntimeFailure(f"cannot read {what} weights from {path}: {exc}") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise RuntimeFailure(f"{path} does not hold a state dict of tensors ({what} weights)")
    return state


def check_state(expected: dict[str, torch.Tensor], given: dict[str, torch.Tensor], what: str, path: Path | str,
                allow_extra: bool = False) -> None:
    """Fail with one line naming the first missing, unexpected or mis-shaped tensor."""
    missing = [k for k in expected if k not in given]
    if missing:
        raise RuntimeFailure(f"{what} weights in {path} lack {len(missing)} tensors, e.g. {missing[0]}")
    extra = [k for k in given if k not in expected]
    if extra and not allow_extra:
        raise RuntimeFailure(f"{what} weights in {path} have {len(extra)} unexpected tensors, e.g. {extra[0]}")
    for key, value in expected.items():
        if given[key].shape != value.shape:
            raise RuntimeFailure(f"{what} weight {key} in {path} has shape {tuple(given[key].shape)}, expected {tuple(value.shape)}")
