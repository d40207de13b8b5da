"""How a phase's steps run on the devices: numeric precision, memory layout and data-parallel
processes, through Lightning Fabric.

The method keeps its own networks and optimisers (so checkpoints and saved generators do not
change); the engine only supplies the autocast region of a step, the backward (with fp16's
gradient scaling) and each optimiser's update (fp16: unscaled first, skipped when the scaled
gradients overflowed). At fp32, Fabric's "32-true" changes no op: results are bitwise those of
plain PyTorch.

With several processes (``distributed``, started by torchrun: ``cartoon.launch``), Fabric's DDP
strategy wraps every network separately (a GAN's networks update at different moments from
different losses): a step's forward through ``Method.synced`` and its backward average the
gradients over the processes, so W processes of batch B update like one of batch W x B when
the losses are batch means and no layer mixes samples (the methods use instance, group and
layer norms, never batch norm). Buffers are not broadcast (``broadcast_buffers=False``): the
only buffers are spectral norm's power-iteration vectors (CartoonGAN has none; the AnimeGANv2
and White-box discriminators do), which every rank updates from the same weights by the same
iteration, so they stay equal without a broadcast before every forward, which would add a
collective to each of the several discriminator passes a step makes.

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
from lightning_fabric.strategies import DDPStrategy
from torch import nn

from cartoon.errors import UsageError
from cartoon.launch import torchrun_world_size
from cartoon.params import DistributedParams
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


def resolve_channels_last(choice: bool | Literal["auto"], precision: Precision) -> bool:
    """The memory layout a phase runs in: ``auto`` is channels-last under mixed precision, whose
    fast kernels (tensor cores, oneDNN's AMX convolutions) want it, and NCHW at fp32, where it
    gained nothing measurable (README: Training and inference speed)."""
    return precision != "fp32" if choice == "auto" else choice


class Engine:
    """Runs a method's steps at ``precision`` with ``channels_last`` memory layout or not, in one
    process or in each of ``distributed.world_size`` data-parallel ones."""

    def __init__(self, device: torch.device, precision: Precision, channels_last: bool = False,
                 distributed: DistributedParams | None = None, key: str = "train.distributed", compile: bool = False) -> None:
        self.precision, self.channels_last, self.compile = precision, channels_last, compile
        self.world_size = distributed.world_size if distributed else 1
        with warnings.catch_warnings():  # Fabric's hints about multi-device setups do not apply to one process
            warnings.simplefilter("ignore")
            if self.world_size == 1:
                self.fabric = Fabric(accelerator=device.type, devices=1, precision=_FABRIC_PRECISION[precision])
            else:
                self.fabric = _data_parallel_fabric(device, precision, distributed, key)  # type: ignore[arg-type]
                self.fabric.launch()  # joins the processes torchrun started
        self.device = device if self.world_size == 1 else self.fabric.device  # each rank its own GPU
        self.rank = self.fabric.global_rank
        self.is_main = self.rank == 0
        self._optimizers: dict[str, Any] = {}  # Fabric's wrappers (_FabricOptimizer), by optimiser name
        self._wrapped: dict[str, nn.Module] = {}  # Fabric's DDP wrappers, by network name

    def attach(self, method: Method) -> None:
        """Route ``method``'s backward and updates through this engine; call after ``method.setup``
        so the phase's networks exist. The networks stay the same objects (their layout may change);
        with several processes each is also wrapped for data parallelism (``Method.synced``)."""
        method.engine = self
        if self.channels_last:
            for module in (method.features, *method.networks.values()):
                module.to(memory_format=torch.channels_last)
        if self.compile:  # in place: the modules, their state_dict keys and checkpoints stay the same
            for module in (method.features, *method.networks.values()):
                module.compile()
        if self.world_size > 1:
            self._wrapped = {name: self.fabric.setup_module(network) for name, network in method.networks.items()}

    def wrapped(self, name: str, network: nn.Module) -> nn.Module:
        """What a step calls to train ``network``: its data-parallel wrapper, or itself in one process."""
        return self._wrapped.get(name, network)

    def sum_over_ranks(self, values: torch.Tensor) -> torch.Tensor:
        return values if self.world_size == 1 else self.fabric.all_reduce(values, reduce_op="sum")

    def mean_over_ranks(self, values: torch.Tensor) -> torch.Tensor:
        return values if self.world_size == 1 else self.fabric.all_reduce(values, reduce_op="mean")

    def from_main(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (``obj`` itself in one process)."""
        return obj if self.world_size == 1 else self.fabric.broadcast(obj, src=0)

    def batch(self, batch: Batch) -> Batch:
        """The step's images in the engine's memory layout (other tensors, such as face boxes, as they are)."""
        if not self.channels_last:
            return batch
        return {name: value.contiguous(memory_format=torch.channels_last) if value.dim() == 4 else value
                for name, value in batch.items()}  # fmt: skip

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

    def precision_state(self) -> dict[str, Any]:
        """fp16's gradient scaler (scale, growth tracker; ``{}`` at other precisions): the checkpoint
        keeps it, or a resumed fp16 run would start again from the initial scale."""
        return self.fabric.strategy.precision.state_dict()

    def load_precision_state(self, state: dict[str, Any]) -> None:
        """Restore ``precision_state``. Valid before the first step: Fabric builds the scaler with the
        engine, and the scaler starts from the loaded scale when it first scales a loss."""
        self.fabric.strategy.precision.load_state_dict(state)


def _data_parallel_fabric(device: torch.device, precision: Precision, distributed: DistributedParams, key: str) -> Fabric:
    """Fabric's DDP strategy for this process of a torchrun group that matches ``distributed``."""
    if device.type not in ("cpu", "cuda"):
        raise UsageError(f"{key}: data-parallel training runs on CUDA or the CPU, not {device.type}")
    started = torchrun_world_size()
    if started is None:
        raise UsageError(f"{key} asks for {distributed.world_size} processes: start the phase with `cartoon` "
                         "(it launches them) or under torchrun")
    if started != distributed.world_size:
        raise UsageError(f"{key}: torchrun started {started} processes, the params ask for {distributed.world_size} "
                         "(nproc_per_node x nnodes)")
    backend = {"auto": "nccl" if device.type == "cuda" else "gloo"}.get(distributed.backend, distributed.backend)
    strategy = DDPStrategy(process_group_backend=backend, broadcast_buffers=False)
    return Fabric(accelerator=device.type, devices=distributed.nproc_per_node, num_nodes=distributed.nnodes,
                  strategy=strategy, precision=_FABRIC_PRECISION[precision])
