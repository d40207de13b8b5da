"""VGG19 feature extractor for content losses and the perceptual metric.

Weights are never downloaded. They are resolved in this order:
1. ``vgg.weights`` in params (a torchvision-layout ``.pth`` or ``.safetensors`` file);
2. torchvision's hub cache (``$TORCH_HOME/hub/checkpoints/vgg19-dcbb9e9d.pth``);
3. only if ``vgg.allow_random`` is true: a seeded random initialisation, with a loud warning.
   Its convolutions are rescaled so every layer's output has unit standard deviation on a
   seeded noise image: raw random weights give features so small (mean |f| about 0.1 at
   conv4_4) that a content loss weighted for ImageNet VGG barely constrains the generator.
The source is reported as ``imagenet:<sha256 prefix>`` or ``random:<seed>`` so every run and
metric says which network measured it.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torchvision.models import vgg19

from cartoon.errors import RuntimeFailure, UsageError
from cartoon.params import VggParams
from cartoon.weights import check_state, file_sha256, read_state_dict

TORCHVISION_FILE = "vgg19-dcbb9e9d.pth"
# Index just past each named layer in torchvision's vgg19().features.
LAYER_END = {"relu1_2": 4, "relu2_2": 9, "relu3_4": 18, "conv4_4": 26, "relu4_4": 27, "relu5_4": 36}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class RandomWeightsWarning(UserWarning):
    """VGG features come from random weights: perceptual losses and metrics are not ImageNet ones."""


@dataclass(frozen=True)
class ResolvedWeights:
    state: dict[str, torch.Tensor] | None
    source: str


def torchvision_cache_path() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / TORCHVISION_FILE


def resolve_weights(params: VggParams) -> ResolvedWeights:
    """Find VGG19 weights without touching the network; see the module docstring for the order."""
    if params.weights:
        path = Path(params.weights).expanduser()
        if not path.is_file():
            raise UsageError(f"vgg.weights: file not found: {path}")
        return ResolvedWeights(read_state_dict(path, "VGG19"), f"imagenet:{file_sha256(path)[:12]}")
    cached = torchvision_cache_path()
    if cached.is_file():
        return ResolvedWeights(read_state_dict(cached, "VGG19"), f"imagenet:{file_sha256(cached)[:12]}")
    if params.allow_random:
        warnings.warn(
            f"No VGG19 weights found (vgg.weights unset, {cached} missing): using RANDOM weights "
            f"(seed {params.seed}). Content losses and perceptual metrics are NOT ImageNet-based; "
            "set vgg.weights or place torchvision's file in the cache for real results.",
            RandomWeightsWarning,
            stacklevel=2,
        )
        return ResolvedWeights(None, f"random:{params.seed}")
    raise RuntimeFailure(
        "No VGG19 weights found and downloads are disabled. Put torchvision's "
        f"{TORCHVISION_FILE} at {cached}, or set vgg.weights to a file, "
        "or set vgg.allow_random: true for a labelled random fallback."
    )


def _calibrate(features: nn.Sequential, seed: int, size: int = 64) -> None:
    """Scale each random conv so its output has unit std on a seeded noise image (data-free)."""
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        for layer in features:
            if isinstance(layer, nn.Conv2d):
                layer.weight.div_(layer(x).std())
            x = layer(x)


class VGGFeatures(nn.Module):
    """Frozen VGG19 prefix up to ``layer``; takes images in [-1, 1], applies ImageNet normalisation."""

    def __init__(self, weights: ResolvedWeights, layer: str = "conv4_4", seed: int = 0, fp32: bool = False) -> None:
        super().__init__()
        if layer not in LAYER_END:
            raise UsageError(f"unknown VGG layer {layer!r} (known: {', '.join(LAYER_END)})")
        end = LAYER_END[layer]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            features = vgg19(weights=None).features[:end]
        if weights.state is not None:
            wanted = {k.removeprefix("features."): v for k, v in weights.state.items() if k.startswith("features.")}
            own = features.state_dict()
            check_state(own, wanted, "VGG19", weights.source, allow_extra=True)
            features.load_state_dict({k: wanted[k] for k in own})
        else:
            _calibrate(features, seed)
        self.features = features.eval().requires_grad_(False)
        self.source = weights.source
        self.layer = layer
        self.fp32 = fp32  # run outside autocast, in fp32 (vgg.precision: fp32)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> VGGFeatures:  # stays in eval mode: it is a fixed measure
        return super().train(False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if not self.fp32:
            return self.features(((images + 1) / 2 - self.mean) / self.std)
        with torch.autocast(images.device.type, enabled=False):
            return self.features(((images.float() + 1) / 2 - self.mean) / self.std)


def load_vgg(params: VggParams, layer: str = "conv4_4") -> VGGFeatures:
    """The feature extractor at ``layer``; with random weights at ``vgg.random_layer`` when that is set."""
    weights = resolve_weights(params)
    if weights.state is None and params.random_layer:
        layer = params.random_layer
    return VGGFeatures(weights, layer=layer, seed=params.seed, fp32=params.precision == "fp32")
