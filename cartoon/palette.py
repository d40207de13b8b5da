"""A palette step at inference: each image's colours snapped to its own few colours.

Not from the papers; the default profile's help for short CPU runs (README: Results on the
default data). Cartoons are drawn in a few flat colours; a generator trained for minutes
smooths and simplifies but keeps fine gradations in every region, and no loss tried taught it
exact flatness in 450 steps. This step ends each method's inference (``Method.infer``, after
White-box's guided filter): a k-means of the output's own colours (``colours`` centres), every
pixel replaced by its nearest centre. It is not in the training graph: trained through it
(straight-through gradients), the generators drifted to blotchy colours (README: Results).

Deterministic and exportable: the centres start from the mean colours of ``colours``
equal-width luminance bands of the image (tones, as cel shading draws them; no random seeding,
no sort), then a fixed number of Lloyd iterations; everything is tensor arithmetic that ONNX exports.
The k-means is fitted on at most FIT_SIDE x FIT_SIDE pixels (a regular grid of a larger
image), then every pixel takes its nearest centre: a 1024 px photo costs about what a 128 px
one does, plus one assignment pass (benchmarks/bench_palette.py). The palette is a
whole-image statistic, so tiled inference (cartoon.tiling) records it on the whole image in
the statistics pass and applies it to every tile (``mode``), as it does with norm statistics.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

LUMA = (0.299, 0.587, 0.114)
ITERATIONS = 10
FIT_SIDE = 128  # the k-means is fitted on a grid of at most FIT_SIDE x FIT_SIDE pixels, then every pixel is assigned
FAR = 1e9  # a squared distance no colour in [-1, 1] reaches (stands in for infinity, which exports less safely)


def _one_hot(labels: torch.Tensor, colours: int, dtype: torch.dtype) -> torch.Tensor:
    """N,P labels -> N,P,K float indicators (a comparison, which every ONNX runtime has)."""
    return (labels[..., None] == torch.arange(colours, device=labels.device)).to(dtype)


def _class_means(pixels: torch.Tensor, members: torch.Tensor, fallback: torch.Tensor) -> torch.Tensor:
    """Mean colour of each class (N,K,3), ``fallback`` where a class has no pixel."""
    counts = members.sum(1)[..., None]
    return torch.where(counts > 0, members.transpose(1, 2) @ pixels / counts.clamp_min(1.0), fallback)


def squared_distances(pixels: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """N,P,K squared RGB distances of every pixel (N,P,3) to every centre (N,K,3)."""
    return (pixels * pixels).sum(-1, keepdim=True) + (centres * centres).sum(-1)[:, None, :] - 2.0 * pixels @ centres.transpose(1, 2)


def nearest(pixels: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """Index of the nearest centre (N,K,3) of every pixel (N,P,3)."""
    return squared_distances(pixels, centres).argmin(-1)


def palette_of(pixels: torch.Tensor, colours: int, iterations: int = ITERATIONS) -> torch.Tensor:
    """K-means centres (N,K,3) of each image's pixels (N,P,3).

    Start: the mean colour of each of ``colours`` equal-width luminance bands; a band without
    pixels takes instead the pixel farthest from every centre chosen so far (farthest-point
    seeding), so two colours of one luminance still get a centre each. Then Lloyd iterations."""
    luma = (pixels * torch.tensor(LUMA, dtype=pixels.dtype, device=pixels.device)).sum(-1)  # not a matmul: onnxruntime
    # fuses a transpose into a matrix-vector product wrongly (seen with onnxruntime 1.32)
    low, high = luma.amin(1, keepdim=True), luma.amax(1, keepdim=True)
    band = ((luma - low) / (high - low).clamp_min(1e-6) * colours).long().clamp(0, colours - 1)
    members = _one_hot(band, colours, pixels.dtype)
    centres = _class_means(pixels, members, pixels.new_zeros(pixels.shape[0], colours, pixels.shape[-1]))
    chosen = members.sum(1) > 0  # N,K
    slots = torch.arange(colours, device=pixels.device)
    for k in range(colours):
        unchosen = torch.where(chosen[:, None, :], 0.0, FAR)  # N,1,K: a centre not yet chosen is never nearest
        gap = (squared_distances(pixels, centres) + unchosen).amin(-1)  # N,P: each pixel to its nearest chosen centre
        farthest = torch.gather(pixels, 1, gap.argmax(1)[:, None, None].expand(-1, 1, pixels.shape[-1]))  # N,1,3
        fill = ((slots == k)[None, :] & ~chosen)[..., None]  # N,K,1: slot k, if its band was empty
        centres = torch.where(fill, farthest, centres)
        chosen = chosen | (slots == k)[None, :]
    for _ in range(iterations):
        centres = _class_means(pixels, _one_hot(nearest(pixels, centres), colours, pixels.dtype), centres)
    return centres


def _flat(images: torch.Tensor) -> torch.Tensor:
    """N,3,H,W -> N,H*W,3 in fp32."""
    return images.float().flatten(2).transpose(1, 2)


class Palette(nn.Module):
    """N,3,H,W images -> the same with every pixel's colour replaced by its image's nearest
    palette centre (no gradient: an inference step).

    ``mode`` (set by cartoon.tiling): "own" = each input's own palette; "record" = the same,
    keeping it; "apply" = the kept palette, for the tiles of the image it was recorded on.
    """

    def __init__(self, colours: int, iterations: int = ITERATIONS) -> None:
        super().__init__()
        if colours < 2:
            raise ValueError(f"a palette needs at least 2 colours, got {colours}")
        self.colours, self.iterations = colours, iterations
        self.mode: Literal["own", "record", "apply"] = "own"
        self.centres: torch.Tensor | None = None

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        n, channels, height, width = images.shape
        with torch.autocast(images.device.type, enabled=False):
            pixels = _flat(images)
            if self.mode == "apply":
                centres = self.centres
            else:  # fitted on every pixel up to FIT_SIDE a side, on a regular grid of them beyond
                grid = images[:, :, :: (height + FIT_SIDE - 1) // FIT_SIDE, :: (width + FIT_SIDE - 1) // FIT_SIDE]
                centres = palette_of(_flat(grid), self.colours, self.iterations)
                if self.mode == "record":
                    self.centres = centres
            quantised = torch.gather(centres, 1, nearest(pixels, centres)[..., None].expand(-1, -1, channels))
        return quantised.transpose(1, 2).reshape(n, channels, height, width).to(images.dtype)

    def extra_repr(self) -> str:
        return f"colours={self.colours}, iterations={self.iterations}"
