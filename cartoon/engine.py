"""How a phase's steps run on the device: numeric precision and memory layout, through Lightning Fabric.

The method keeps its own networks and optimisers (so checkpoints and saved generators do not
change); the engine only supplies the autocast region of a step, the backward (with fp16's
gradient scaling) and each optimiser's update (fp16: unscaled first, skipped when the scaled
gradients overflowed). At fp32, Fabric's "32-true" changes no op: results are bitwise those of
plain PyTorch.

``precision: auto`` picks bf16 only where bf16 is fast: a CUDA device that supports it, or a
CPU with AMX or AVX512-BF16. Elsewhere bf16 is emulated and slow (a CartoonGAN step on this
project's AVX2-only AMD EPYC took 21.4 s in bf16 against 0.72 s in fp32), so auto is fp32.
"""

from __future__ import annotations

import warnings
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Literal

import torch
from lightning_fabric import Fabric

from cartoon.errors import UsageError
from cartoon.progress import console

if TYPE_CHECKING:
    from cartoon.methods.base import Batch, Method

Precision = Literal["fp32", "bf16", "fp16"]
_FABRIC_PRECISION = {"fp32": "32-true", "bf16": "bf16-mixed", "fp16": "16-mixed"}


def cpu_has_fast_bf16() -> bool:
    """AMX tiles or AVX512-BF16: the CPU instructions that make bf16 faster than fp32, not slower."""
    return any(getattr(torch.cpu, probe, lambda: False)() for probe in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"))


def fast_bf16(device: torch.device) -> bool:
    """Whether bf16 mixed precision speeds ``device`` up (MPS and other devices: not assumed)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and cpu_has_fast_bf16()


def resolve_precision(choice: str, device: torch.device, key: str) -> Precision:
    """The precision a phase runs at: ``auto`` becomes bf16 where bf16 is fast, else fp32.
    fp16 needs CUDA (its gradient scaler and fast kernels are CUDA's); bf16 where it is slow is
    honoured with a warning. ``key`` names the setting in messages (``train.precision``)."""
    if choice == "auto":
        return "bf16" if fast_bf16(device) else "fp32"
    if choice == "fp16" and device.type != "cuda":
        raise UsageError(f"{key}: fp16 needs CUDA (this run is on {device.type}); use bf16 or fp32")
    if choice == "bf16" and not fast_bf16(device):
        console.print(f"{key}: bf16 on {device.type} without fast bf16 support runs emulated and will be much slower than fp32")
    return choice  # type: ignore[return-value]


class Engine:
    """Runs a method's steps at ``precision`` with ``channels_last`` memory layout or not, on one device."""

    def __init__(self, device: torch.device, precision: Precision, channels_last: bool = False) -> None:
        self.device, self.precision, self.channels_last = device, precision, channels_last
        with warnings.catch_warnings():  # Fabric's hints about multi-device setups do not apply to one process
            warnings.simplefilter("ignore")
            self.fabric = Fabric(accelerator=device.type, devices=1, precision=_FABRIC_PRECISION[precision])
        self._optimizers: dict[str, Any] = {}  # Fabric's wrappers (_FabricOptimizer), by optimiser name

    def attach(self, method: Method) -> None:
        """Route ``method``'s backward and updates through this engine; call after ``method.setup``
        so the phase's networks exist. The networks stay the same objects (their layout may change)."""
        method.engine = self
        if self.channels_last:
            for module in (method.features, *method.networks.values()):
                module.to(memory_format=torch.channels_last)

    def batch(self, batch: Batch) -> Batch:
        """The step's images in the engine's memory layout."""
        if not self.channels_last:
            return batch
        return {name: images.contiguous(memory_format=torch.channels_last) for name, images in batch.items()}

    def autocast(self) -> AbstractContextManager:
        """The region a step's forward passes run in: autocast to bf16/fp16, or nothing at fp32."""
        return self.fabric.autocast()

    def backward_and_step(self, loss: torch.Tensor, name: str, optimizer: torch.optim.Optimizer) -> None:
        """Backpropagate ``loss`` (scaled at fp16) and update ``optimizer`` (unscaled first, skipped
        when fp16 gradients overflowed). Outside autocast: gradients take the dtypes the forward chose."""
        wrapped = self._optimizers.get(name)
        if wrapped is None or wrapped.optimizer is not optimizer:  # first use, or a new phase's optimiser
            wrapped = self._optimizers[name] = self.fabric.setup_optimizers(optimizer)
        with torch.autocast(self.device.type, enabled=False):
            self.fabric.backward(loss)
            wrapped.step()
