"""Photos of any size in bounded memory: overlapping tiles, blended without seams, normalised
with whole-image statistics.

Instance norm (CartoonGAN) and layer norm (AnimeGANv2's ``GroupNorm(1, C)``) divide each
channel (group) by its mean and variance over the whole input. Run tile by tile, each tile
would be normalised by its own statistics: a sky tile and a street tile come out with
different contrast and colour, and the tile grid shows. So the statistics come from the whole
image and every tile is normalised with them:

1. a statistics pass runs the whole image, scaled down (never up) so its longer side is at
   most ``stats_side``; every such layer records its per-sample, per-channel (per-group) mean
   and variance. Up to that size the statistics are exactly the whole image's; beyond it they
   are those of the downscaled image (README: the error this leaves, measured);
2. the output pass runs tile by tile with those statistics; tiles overlap by ``overlap``
   pixels and are cross-faded (``blend_ramp``) away from the tile borders, whose output still
   feels the border padding (measured: up to about 40 pixels for these generators).

The layers are found by type (``WHOLE_IMAGE_NORMS``), not by method: any generator built from
them tiles the same way. Local post-processing in ``Method.infer`` (White-box's guided filter)
runs per tile; the overlap covers its radius. The palette step (cartoon.palette) is a
whole-image statistic too: it is recorded in the statistics pass and every tile snaps to it,
so tiles share one palette. Tile origins are multiples of the generator's
``size_multiple``, so strided convolutions see the same pixel grid as on the whole image.
Memory is bounded by ``tile`` and ``stats_side``, plus the float input and output images.
"""

from __future__ import annotations

import copy
import threading
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from cartoon.errors import UsageError
from cartoon.inference import to_tensor, to_uint8
from cartoon.palette import Palette

#: Layers that normalise by statistics over the whole spatial extent of their input.
WHOLE_IMAGE_NORMS = (nn.InstanceNorm2d, nn.GroupNorm)


class WholeImageNorm(nn.Module):
    """Stands in for an instance or group norm layer; its statistics can come from elsewhere.

    ``mode`` "own": the wrapped layer unchanged (its input's statistics), "record": the same,
    keeping those statistics; "apply": normalise with the kept ``mean`` and ``var``.
    """

    def __init__(self, norm: nn.Module) -> None:
        super().__init__()
        self.norm = norm
        self.mode = "own"
        self.mean: torch.Tensor | None = None
        self.var: torch.Tensor | None = None

    def _groups(self, x: torch.Tensor) -> int:
        return self.norm.num_groups if isinstance(self.norm, nn.GroupNorm) else x.shape[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "apply":
            return self._normalise(x)
        if self.mode == "record":
            grouped = x.reshape(x.shape[0], self._groups(x), -1).double()  # float64: exact enough for any image size
            self.var, self.mean = (t.float() for t in torch.var_mean(grouped, dim=-1, correction=0))
        return self.norm(x)

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        n, channels = x.shape[:2]
        grouped = x.reshape(n, self._groups(x), -1)
        out = ((grouped - self.mean[..., None]) * torch.rsqrt(self.var[..., None] + self.norm.eps)).reshape(x.shape)
        if self.norm.weight is not None:
            out = out * self.norm.weight.view(1, channels, 1, 1) + self.norm.bias.view(1, channels, 1, 1)
        return out.to(x.dtype)  # the statistics are fp32; a bf16 model goes on in bf16


def wrap_whole_image_norms(model: nn.Module) -> list[WholeImageNorm]:
    """Replace, in place, every whole-image norm layer of ``model`` by a WholeImageNorm around it."""
    wrappers = []
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            running = getattr(child, "track_running_stats", False) and not child.training  # eval with running stats: local
            if isinstance(child, WHOLE_IMAGE_NORMS) and not running:
                wrapper = WholeImageNorm(child)
                setattr(parent, name, wrapper)
                wrappers.append(wrapper)
    return wrappers


@dataclass(frozen=True)
class TileSettings:
    """Tile side and overlap in pixels; ``stats_side`` bounds the statistics pass (longer side)."""

    tile: int = 512
    overlap: int = 128
    stats_side: int = 1024

    def check(self, multiple: int) -> None:
        if self.tile < 4 * multiple or self.tile % multiple:
            raise UsageError(f"--tile must be a multiple of {multiple} and at least {4 * multiple}, got {self.tile}")
        if self.overlap < 0 or self.overlap % multiple or self.overlap > self.tile // 2:
            raise UsageError(f"--overlap must be a multiple of {multiple} between 0 and half the tile ({self.tile // 2}), got {self.overlap}")
        if self.stats_side < self.tile:
            raise UsageError(f"--stats-side must be at least the tile side ({self.tile}), got {self.stats_side}")


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Origins of the tiles along one axis; the last tile ends at ``length``."""
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, tile - overlap))
    return starts + [length - tile]


def blend_ramp(size: int, ramp_before: bool, ramp_after: bool, overlap: int) -> np.ndarray:
    """Weights along one tile axis: 0 over the outer three eighths of an overlap (where the
    output still feels the tile's border), a cosine rise over its middle quarter, 1 inside.
    Sides at the image border keep weight 1."""
    weights = np.ones(size, np.float32)
    margin = 3 * overlap // 8
    width = overlap - 2 * margin
    if width == 0:
        return weights
    distance = np.arange(size, dtype=np.float32) + 0.5
    rise = lambda d: 0.5 - 0.5 * np.cos(np.pi * np.clip((d - margin) / width, 0.0, 1.0))  # noqa: E731
    if ramp_before:
        weights *= rise(distance)
    if ramp_after:
        weights *= rise(size - distance)
    return weights


class TiledCartoonizer:
    """A Cartoonizer (generator + ``Method.infer``) for photos of any size, in bounded memory.

    It works on a private copy whose whole-image norm layers are wrapped, so the model it was
    given is left as it is (and may be shared, e.g. by the MLflow model).
    """

    def __init__(self, cartoonizer: nn.Module, multiple: int, settings: TileSettings = TileSettings(),
                 device: str | torch.device = "cpu", bf16: bool = False) -> None:
        settings.check(multiple)
        self.model = copy.deepcopy(cartoonizer).to(device).eval()
        # bf16 runs the weights themselves in bf16, channels-last (no autocast: its casts around
        # every norm layer cost more than they save; README: Training and inference speed)
        self.dtype = torch.bfloat16 if bf16 else torch.float32
        self.layout = torch.channels_last if bf16 else torch.contiguous_format
        self.model.to(self.dtype, memory_format=self.layout)
        self.whole_image_layers = [*wrap_whole_image_norms(self.model), *(m for m in self.model.modules() if isinstance(m, Palette))]
        self.multiple, self.settings, self.device = multiple, settings, torch.device(device)
        # The norm layers hold one image's statistics between the two passes: calls from several
        # threads (MLflow's scoring server answers requests concurrently) take turns.
        self._lock = threading.Lock()

    @torch.no_grad()
    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        """HxWx3 uint8 photo -> HxWx3 uint8 cartoon."""
        height, width = rgb.shape[:2]
        x = _pad_to_multiple(to_tensor(rgb), self.multiple)
        with self._lock:
            if max(x.shape[-2:]) <= self.settings.tile:
                return to_uint8(self._run(x)[:, :, :height, :width])[0]
            try:
                self._statistics_pass(rgb, x)
                out = self._tiled_pass(x)
            finally:
                self._set_mode("own")
        return to_uint8(out[:, :, :height, :width])[0]

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        """The model on ``x`` in its dtype and layout; the output as fp32 on the CPU."""
        return self.model(x.to(self.device, self.dtype).contiguous(memory_format=self.layout)).float().cpu()

    def _set_mode(self, mode: str) -> None:
        for layer in self.whole_image_layers:
            layer.mode = mode

    def _statistics_pass(self, rgb: np.ndarray, padded: torch.Tensor) -> None:
        """Record each norm layer's statistics and each palette on the whole image, downscaled to ``stats_side`` if larger."""
        if not self.whole_image_layers:
            return
        scale = self.settings.stats_side / max(padded.shape[-2:])
        if scale < 1:
            size = [max(self.multiple, round(n * scale / self.multiple) * self.multiple) for n in rgb.shape[:2]]
            padded = to_tensor(cv2.resize(rgb, (size[1], size[0]), interpolation=cv2.INTER_AREA))
        self._set_mode("record")
        self._run(padded)
        self._set_mode("apply")

    def _tiled_pass(self, x: torch.Tensor) -> torch.Tensor:
        """Run every tile and blend the outputs: sum of weight * tile output, over the sum of weights."""
        s = self.settings
        height, width = x.shape[-2:]
        rows, cols = tile_starts(height, s.tile, s.overlap), tile_starts(width, s.tile, s.overlap)
        tile_h, tile_w = min(s.tile, height), min(s.tile, width)
        out = torch.zeros(1, 3, height, width)
        weight_sum = torch.zeros(1, 1, height, width)
        for i, top in enumerate(rows):
            row_weights = torch.from_numpy(blend_ramp(tile_h, i > 0, i < len(rows) - 1, s.overlap))[:, None]
            for j, left in enumerate(cols):
                weights = row_weights * torch.from_numpy(blend_ramp(tile_w, j > 0, j < len(cols) - 1, s.overlap))[None, :]
                crop = x[:, :, top : top + tile_h, left : left + tile_w]
                out[:, :, top : top + tile_h, left : left + tile_w] += self._run(crop) * weights
                weight_sum[:, :, top : top + tile_h, left : left + tile_w] += weights
        return out / weight_sum


def _pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Reflect-pad right and bottom to a multiple of ``multiple`` (as ``cartoon.inference.cartoonize`` does)."""
    height, width = x.shape[-2:]
    pad_h, pad_w = (-height) % multiple, (-width) % multiple
    if not (pad_h or pad_w):
        return x
    mode = "reflect" if pad_h < height and pad_w < width else "replicate"
    return F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
