"""Running a trained generator on photos of any size."""

from __future__ import annotations

import cv2
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


class Cartoonizer(nn.Module):
    """A trained generator with its method's test-time step (``Method.infer``): photos in, cartoons out."""

    def __init__(self, method: type, generator: nn.Module) -> None:
        super().__init__()
        self.method = method
        self.generator = generator

    def forward(self, photo: torch.Tensor) -> torch.Tensor:
        return self.method.infer(self.generator, photo)


def to_tensor(images: np.ndarray | list[np.ndarray]) -> torch.Tensor:
    """uint8 HxWx3 (or a stack) -> float NCHW in [-1, 1]."""
    array = np.stack(images) if isinstance(images, list) else images
    if array.ndim == 3:
        array = array[None]
    return torch.from_numpy(np.ascontiguousarray(array)).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def to_uint8(tensor: torch.Tensor) -> np.ndarray:
    """float NCHW in [-1, 1] -> uint8 NxHxWx3 (clamped: no colour blotches from overflow)."""
    return tensor.detach().clamp(-1, 1).add(1).mul(127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()


def limit_side(rgb: np.ndarray, max_side: int) -> np.ndarray:
    """Scale down so the longer side is at most ``max_side`` (never up)."""
    height, width = rgb.shape[:2]
    scale = max_side / max(height, width)
    if scale >= 1:
        return rgb
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)


@torch.no_grad()
def cartoonize(generator: nn.Module, rgb: np.ndarray, multiple: int = 4, device: str | torch.device = "cpu") -> np.ndarray:
    """Apply the generator to one HxWx3 uint8 image of any size: reflect-pad to a multiple, run, crop."""
    height, width = rgb.shape[:2]
    x = to_tensor(rgb).to(device)
    pad_h, pad_w = (-height) % multiple, (-width) % multiple
    if pad_h or pad_w:
        mode = "reflect" if pad_h < height and pad_w < width else "replicate"
        x = F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
    return to_uint8(generator(x)[:, :, :height, :width])[0]
