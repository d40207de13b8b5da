"""The interface every method implements, and the pieces methods share.

The training loop (``cartoon.training``) knows only this interface: it builds the method,
calls ``setup`` for a phase, feeds batches to ``step`` and checkpoints ``state_dict``.
Images are float tensors in [-1, 1], NCHW.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Annotated, Any, ClassVar, Literal, Protocol

import torch
from pydantic import AfterValidator, Field
from torch import nn

from cartoon.palette import Palette
from cartoon.params import Params, Section

Phase = Literal["pretrain", "train"]


class MethodParams(Section):
    """A method's params section: three groups, so DVC re-runs only the stages a change touches.

    ``generator`` (architecture: pretrain, train and evaluation depend on it), ``pretrain``
    (the initialisation phase) and ``train`` (adversarial phase: losses, discriminators).
    """

    generator: Section
    pretrain: Section
    train: Section
Batch = dict[str, torch.Tensor]


class StepEngine(Protocol):
    """What a method needs of the training engine (``cartoon.engine.Engine``): a protocol, so the
    methods, which evaluation imports too, do not depend on the engine and Lightning."""

    def backward_and_step(self, loss: torch.Tensor, name: str, optimizer: torch.optim.Optimizer) -> None: ...

    def wrapped(self, name: str, network: nn.Module) -> nn.Module: ...


class NonFiniteLoss(ArithmeticError):
    """A loss became NaN or infinite. Steps never wait on the device to find out: the training
    loop's guard (``cartoon.checkpoints.FiniteGuard``) keeps an all-finite flag on the device and
    raises this at its next check (log, sample and checkpoint points, the end), before anything is
    logged or saved. The steps in between may have applied non-finite updates; since the phase
    stops before any save, those weights never reach a checkpoint or a saved generator."""


class Method(ABC):
    """A photo-to-cartoon method: its networks, its losses and one optimisation step per phase."""

    name: ClassVar[str]
    title: ClassVar[str]
    reference: ClassVar[str]
    Params: ClassVar[type[MethodParams]]
    content_layer: ClassVar[str] = "conv4_4"
    size_multiple: ClassVar[int] = 4  # the generator maps HxW to HxW when both are multiples of this
    # Image sets each phase consumes; the loop loads exactly these (see cartoon.training.IMAGE_SETS).
    sets: ClassVar[dict[str, tuple[str, ...]]] = {"pretrain": ("photo",), "train": ("photo", "cartoon", "smooth")}
    # Whether the loop mixes face batches (cartoon.batches) into this method's steps when face
    # sets have images: White-box does (its paper mixes FFHQ faces in), CartoonGAN and AnimeGANv2 do not.
    face_batches: ClassVar[bool] = False
    # A method whose train phase is pointless without them (the face method's landmark term) says so.
    requires_face_batches: ClassVar[bool] = False

    def __init__(self, params: MethodParams, features: nn.Module, device: torch.device) -> None:
        self.params = params
        self.features = features.to(device)
        self.device = device
        self.generator = self.build_generator(params).to(device)
        self.networks: dict[str, nn.Module] = {"generator": self.generator}
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.schedulers: dict[str, torch.optim.lr_scheduler.LRScheduler] = {}
        self.engine: StepEngine | None = None  # set by Engine.attach: precision and layout of the training loop

    @classmethod
    @abstractmethod
    def build_generator(cls, params: MethodParams) -> nn.Module:
        """The generator alone, so evaluation can rebuild it from a saved config."""

    @classmethod
    def infer(cls, generator: nn.Module, photo: torch.Tensor) -> torch.Tensor:
        """The method's test-time step, photos in [-1, 1] to cartoons: the generator, then its
        palette step (the identity unless ``generator.palette_colours`` is set), unless a method
        adds post-processing. Evaluation, sample grids and the registered model all call it."""
        return generator.palette(generator(photo))

    @abstractmethod
    def setup(self, phase: Phase, epochs: int, steps_per_epoch: int) -> None:
        """Create the discriminators, optimisers and schedules this phase needs."""

    def setup_pretrain(self) -> None:
        """The initialisation phase the methods share: Adam on the generator, ``pretrain.lr`` and ``betas``."""
        p = self.params.pretrain
        self.optimizers = {"generator": torch.optim.Adam(self.generator.parameters(), lr=p.lr, betas=p.betas)}
        self.schedulers = {}

    @abstractmethod
    def step(self, phase: Phase, batch: Batch) -> dict[str, torch.Tensor]:
        """One optimisation step; returns every loss term (detached scalars) for logging."""

    def load_pretrained(self, params: Params, phase: Phase) -> None:
        """Load the pretrained networks besides VGG that ``phase`` needs, from shared params
        sections (the face method's O-Net, from ``landmarks``); none by default."""

    def tags(self) -> dict[str, str]:
        """What identifies those networks (e.g. their weights' sha256), set as run tags like ``vgg.source``."""
        return {}

    def derived_params(self) -> dict[str, Any]:
        """Values the method derives from its params (e.g. preset loss weights), logged with the run."""
        return {}

    def close(self) -> None:
        """Release what ``setup`` started besides tensors (worker pools); the loop calls it when the
        phase ends, however it ends."""

    def end_epoch(self) -> None:
        for scheduler in self.schedulers.values():
            scheduler.step()

    def state_dict(self) -> dict[str, Any]:
        groups = {"net": self.networks, "opt": self.optimizers, "sched": self.schedulers}
        return {f"{kind}.{name}": obj.state_dict() for kind, objs in groups.items() for name, obj in objs.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        groups = {"net": self.networks, "opt": self.optimizers, "sched": self.schedulers}
        expected = {f"{kind}.{name}" for kind, objs in groups.items() for name in objs}
        if set(state) != expected:
            raise KeyError(f"checkpoint holds {sorted(state)}, this method expects {sorted(expected)}")
        for kind, objs in groups.items():
            for name, obj in objs.items():
                obj.load_state_dict(state[f"{kind}.{name}"])

    def synced(self, name: str) -> nn.Module:
        """Network ``name`` as a step calls it when the loss updates that network: under
        data-parallel training, the engine's wrapper, whose backward averages the gradients over
        the processes; otherwise the network itself. A forward whose loss must not update the
        network (a frozen discriminator under the generator's loss) calls the network itself: a
        wrapper would wait for gradients that never come."""
        network = self.networks[name]
        return network if self.engine is None else self.engine.wrapped(name, network)

    def optimise(self, name: str, loss: torch.Tensor) -> None:
        """Backpropagate ``loss`` into optimiser ``name``. No check here: reading the loss would make
        the step wait for the device (``NonFiniteLoss`` says where non-finite losses are caught).
        With an engine attached, its precision handles the backward and the update (fp16 scaling)."""
        optimizer = self.optimizers[name]
        optimizer.zero_grad(set_to_none=True)
        if self.engine is None:
            loss.backward()
            optimizer.step()
        else:
            self.engine.backward_and_step(loss, name, optimizer)

    def content_loss(self, generated: torch.Tensor, photo: torch.Tensor) -> torch.Tensor:
        """L1 between VGG features of the output and of the input photo (semantic content kept);
        the difference is taken in fp32, so bf16 features lose no precision in the mean."""
        with torch.no_grad():
            target = self.features(photo)
        return (self.features(generated).float() - target.float()).abs().mean()


def init_normal(module: nn.Module, std: float = 0.02) -> None:
    """DCGAN-style N(0, std) initialisation of conv weights, zero biases (used by the papers' code)."""
    for layer in module.modules():
        if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(layer.weight, 0.0, std)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)


def input_skip_field() -> Any:
    """The ``generator.input_skip`` key every method with a tanh output offers (off = the paper)."""
    return Field(
        False,
        description="false = paper; true = the network predicts a change to the photo, tanh(f(p) + atanh(p)), with its last "
        "conv zeroed so training starts from the identity (no parameter added; the default profile's short CPU runs)",
    )


def _palette_colours(value: int) -> int:
    if value == 1:
        raise ValueError("palette_colours must be 0 (off) or at least 2")
    return value


PaletteColours = Annotated[int, Field(ge=0, le=256), AfterValidator(_palette_colours)]


def palette_field() -> Any:
    """The ``generator.palette_colours`` key of every method (0 = off = the paper)."""
    return Field(
        0,
        description="0 = paper; K >= 2 = inference ends in a palette step: each output's colours snapped to its own K "
        "k-means colours (cartoon.palette; not in training; the default profile's short CPU runs)",
    )


def output_palette(colours: int) -> nn.Module:
    """The generator's ``palette`` module, applied by ``Method.infer``: a Palette of ``colours``
    colours, or the identity when 0. Kept on the generator so the setting travels with it."""
    return Palette(colours) if colours else nn.Identity()


def tanh_output(change: torch.Tensor, photo: torch.Tensor, input_skip: bool) -> torch.Tensor:
    """tanh of the last conv's output, added to the photo's atanh (clamped off the poles) under
    ``input_skip``: the network then predicts a change to the photo, the identity when it is 0."""
    return torch.tanh(change + torch.atanh(photo.clamp(-0.99, 0.99)) if input_skip else change)


# RGB -> YUV, BT.601 (the matrix of TensorFlow's tf.image.rgb_to_yuv); rows give Y, U, V.
_RGB_TO_YUV = (
    (0.299, 0.587, 0.114),
    (-0.14714119, -0.28886916, 0.43601035),
    (0.61497538, -0.51496512, -0.10001026),
)


def rgb_to_yuv(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] RGB images (N,3,H,W) to YUV of the [0, 1] image, channels Y, U, V (AnimeGANv2's
    colour loss, White-box's chroma term)."""
    matrix = torch.tensor(_RGB_TO_YUV, dtype=images.dtype, device=images.device)
    return torch.einsum("yc,nchw->nyhw", matrix, (images + 1) / 2)


def lrelu() -> nn.Module:
    """LeakyReLU(0.2), the activation of every method's discriminator (and some generators)."""
    return nn.LeakyReLU(0.2, inplace=True)


def lsgan(scores: torch.Tensor, target: float) -> torch.Tensor:
    """Least-squares GAN loss: mean squared distance of the scores to the target label (in fp32:
    bf16 scores near the label would round the distance away)."""
    return (scores.float() - target).pow(2).mean()


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def set_requires_grad(module: nn.Module, flag: bool) -> None:
    for parameter in module.parameters():
        parameter.requires_grad_(flag)
