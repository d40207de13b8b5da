"""Bookkeeping of a training phase: what a checkpoint was computed from, saving it, resuming it,
and the guard that keeps a non-finite loss out of every checkpoint.

A checkpoint holds the method's networks, optimisers and schedules, the RNG states (CPU and
CUDA) and the loop's own state (global step, loss history, MLflow run id, seconds). It is
resumed only if its fingerprint (method, params, loop settings that change results, the
resolved precision, data, initial weights, VGG) matches the run about to start.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import torch

from cartoon.artifacts import load_training_state, save_training_state
from cartoon.errors import RuntimeFailure
from cartoon.methods import method_params
from cartoon.methods.base import Method
from cartoon.params import LoopParams, Params

# Loop settings that change what is computed; the others (logging cadence, device, memory
# layout) do not invalidate a checkpoint. Precision enters resolved (``auto`` is not a precision).
_RESULT_KEYS = ("epochs", "batch_size", "max_steps_per_epoch", "seed", "face_every")


def fingerprint(phase: str, params: Params, loop: LoopParams, data: str, init_digest: str, vgg: str, precision: str) -> str:
    """Identifies what a checkpoint was computed from; a checkpoint is resumed only if it matches
    (steps taken at bf16 continued at fp32 would give neither run's result)."""
    config = {
        "phase": phase,
        "method": params.model.name,
        "method_params": method_params(params).model_dump(mode="json"),
        "loop": {k: getattr(loop, k) for k in _RESULT_KEYS},
        "precision": precision,
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


class Bookkeeper:
    """Saves and resumes the checkpoint at ``path`` for the run identified by ``run_fingerprint``."""

    def __init__(self, path: Path, run_fingerprint: str) -> None:
        self.path, self.fingerprint = path, run_fingerprint

    def resume(self, method: Method) -> dict[str, Any]:
        """The loop state to continue from: the checkpoint's when it belongs to this run (its
        weights and RNG states are restored), else a fresh start (a stale checkpoint is removed)."""
        state: dict[str, Any] = {"global_step": 0, "history": [], "run_id": None, "seconds": 0.0}
        if not self.path.is_file():
            return state
        saved = load_training_state(self.path)
        if saved.get("fingerprint") != self.fingerprint:
            self.path.unlink()  # inputs or params changed: that progress belongs to another run
            return state
        method.load_state_dict(saved["method"])
        torch.set_rng_state(saved["rng"])
        _restore_cuda_rng(saved.get("cuda_rng", []))
        return {k: saved[k] for k in state}

    def save(self, method: Method, state: dict[str, Any]) -> None:
        save_training_state(
            self.path,
            {**state, "fingerprint": self.fingerprint, "method": method.state_dict(), "rng": torch.get_rng_state(),
             "cuda_rng": _cuda_rng()},
        )

    def finish(self) -> None:
        """The phase completed: its outputs are written, the checkpoint is no longer needed."""
        self.path.unlink(missing_ok=True)

    def checked(self, phase: str, step: int, losses: dict[str, torch.Tensor]) -> dict[str, float]:
        """The losses of step ``step`` as floats; a non-finite one stops the phase, leaving the
        last good checkpoint (the method itself refuses to apply a non-finite update)."""
        values = {k: float(v) for k, v in losses.items()}
        if not all(math.isfinite(v) for v in values.values()):
            raise RuntimeFailure(f"{phase} stopped at step {step}: non-finite loss {values}")
        return values

    def stopped(self, phase: str, step: int, why: Exception) -> RuntimeFailure:
        return RuntimeFailure(
            f"{phase} stopped at step {step}: {why}. The last good checkpoint is kept at "
            f"{self.path}; lower the learning rate or check the data, then run again."
        )
