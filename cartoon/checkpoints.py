"""Bookkeeping of a training phase: what a checkpoint was computed from, saving it, resuming it,
and the guard that keeps a non-finite loss out of every checkpoint.

A checkpoint holds the method's networks, optimisers and schedules, the RNG states (CPU and
CUDA), the engine's precision state (fp16's gradient scaler) and the loop's own state (global
step, loss history, MLflow run id, seconds). It is resumed only if its fingerprint (method,
params, loop settings that change results, the resolved precision, the number of processes,
data, initial weights, VGG) matches the run about to start.

With several processes (data-parallel training), rank 0 alone reads and writes the checkpoint;
it sends what it read to the other ranks, so every rank resumes the same state even when the
nodes share no file system. Every rank runs with the same RNG states: they are seeded alike
(``train.seed``), draw alike (per-batch choices such as White-box's random grayscale are then
one choice for the whole global batch, as in one process), and a resume gives them all rank 0's.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from cartoon.artifacts import load_training_state, save_training_state
from cartoon.errors import RuntimeFailure
from cartoon.methods import method_params
from cartoon.methods.base import Method, NonFiniteLoss
from cartoon.params import LoopParams, Params

if TYPE_CHECKING:
    from cartoon.engine import Engine

# Loop settings that change what is computed; the others (logging cadence, device, memory
# layout) do not invalidate a checkpoint. Precision enters resolved (``auto`` is not a precision).
_RESULT_KEYS = ("epochs", "batch_size", "max_steps_per_epoch", "seed", "face_every")


def fingerprint(phase: str, params: Params, loop: LoopParams, data: str, init_digest: str, vgg: str, precision: str) -> str:
    """Identifies what a checkpoint was computed from; a checkpoint is resumed only if it matches
    (steps taken at bf16 continued at fp32 would give neither run's result; so would steps of
    2 x 8 images continued as 1 x 8: the world size sets the global batch and each rank's share)."""
    config = {
        "phase": phase,
        "method": params.model.name,
        "method_params": method_params(params).model_dump(mode="json"),
        "loop": {k: getattr(loop, k) for k in _RESULT_KEYS},
        "world_size": loop.distributed.world_size,
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
    """Saves and resumes the checkpoint at ``path`` for the run identified by ``run_fingerprint``.
    Only the ``writer`` (rank 0) touches the file; ``share`` hands what it read to every rank
    (identity in one process)."""

    def __init__(self, path: Path, run_fingerprint: str, writer: bool = True,
                 share: Callable[[dict[str, Any] | None], dict[str, Any] | None] = lambda saved: saved) -> None:
        self.path, self.fingerprint, self.writer, self.share = path, run_fingerprint, writer, share

    def _read(self) -> dict[str, Any] | None:
        """The checkpoint when it belongs to this run; a stale one is removed."""
        if not self.path.is_file():
            return None
        saved = load_training_state(self.path)
        if saved.get("fingerprint") != self.fingerprint:
            self.path.unlink()  # inputs or params changed: that progress belongs to another run
            return None
        return saved

    def resume(self, method: Method, engine: Engine) -> dict[str, Any]:
        """The loop state to continue from: the checkpoint's when it belongs to this run (its
        weights, RNG states and ``engine``'s precision state are restored), else a fresh start."""
        state: dict[str, Any] = {"global_step": 0, "history": [], "run_id": None, "seconds": 0.0}
        saved = self.share(self._read() if self.writer else None)
        if saved is None:
            return state
        method.load_state_dict(saved["method"])
        torch.set_rng_state(saved["rng"])
        _restore_cuda_rng(saved.get("cuda_rng", []))
        if saved.get("precision_state"):  # absent from checkpoints written before it was saved
            engine.load_precision_state(saved["precision_state"])
        return {k: saved[k] for k in state}

    def save(self, method: Method, engine: Engine, state: dict[str, Any]) -> None:
        if self.writer:
            save_training_state(
                self.path,
                {**state, "fingerprint": self.fingerprint, "method": method.state_dict(), "rng": torch.get_rng_state(),
                 "cuda_rng": _cuda_rng(), "precision_state": engine.precision_state()},
            )

    def finish(self) -> None:
        """The phase completed: its outputs are written, the checkpoint is no longer needed."""
        if self.writer:
            self.path.unlink(missing_ok=True)

    def stopped(self, phase: str, step: int, why: Exception) -> RuntimeFailure:
        return RuntimeFailure(
            f"{phase} stopped at step {step}: {why}. The last good checkpoint is kept at "
            f"{self.path}; lower the learning rate or check the data, then run again."
        )


class FiniteGuard:
    """Keeps a non-finite loss out of every checkpoint without making any step wait for the device.

    ``watch`` folds a step's losses into a flag per loss term that stays on the device (a few
    tensor ops, no read-back); ``verify``, called where the loop logs, samples, saves and ends,
    reads it once (under data parallelism after summing it over the ranks, so all stop together)
    and raises ``NonFiniteLoss`` naming the terms and the steps since the last check. The loop
    verifies before it saves, so weights updated from a non-finite loss are never saved.
    """

    def __init__(self, verified_through: int = 0,
                 count_across_ranks: Callable[[torch.Tensor], torch.Tensor] = lambda counts: counts) -> None:
        self.verified_through = verified_through  # the last step checked (a resume starts after its checkpoint's)
        self.count_across_ranks = count_across_ranks
        self._names: list[str] = []
        self._non_finite: torch.Tensor | None = None  # per term: steps with a non-finite value since the last check

    def watch(self, losses: dict[str, torch.Tensor]) -> None:
        if self._non_finite is None:
            self._names = list(losses)
        values = torch.stack([losses[name].detach().float() for name in self._names])
        bad = (~torch.isfinite(values)).float()
        self._non_finite = bad if self._non_finite is None else self._non_finite + bad

    def verify(self, step: int) -> None:
        """Raise ``NonFiniteLoss`` if a loss watched since the last check was NaN or infinite."""
        first = self.verified_through + 1
        self.verified_through = step
        if self._non_finite is None:
            return
        counts = self.count_across_ranks(self._non_finite).tolist()  # the one read-back
        self._non_finite.zero_()
        bad = [name for name, count in zip(self._names, counts) if count]
        if bad:
            where = f"at step {step}" if first == step else f"at a step from {first} to {step}"
            raise NonFiniteLoss(f"non-finite loss (NaN or inf) in {', '.join(bad)} {where}")
