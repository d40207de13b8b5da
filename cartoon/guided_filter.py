"""Differentiable guided filter (He, Sun, Tang, "Guided Image Filtering", ECCV 2010 / TPAMI 2013).

The box-filter formulation on NCHW tensors, on any device, differentiable in both inputs:

    N      = box(1)                          (window sizes: smaller at the borders)
    mean_I = box(I) / N,  mean_p = box(p) / N
    cov_Ip = box(I p) / N - mean_I mean_p,   var_I = box(I I) / N - mean_I^2
    a      = cov_Ip / (var_I + eps),         b = mean_p - a mean_I
    q      = box(a) / N * I + box(b) / N

per channel (guide and source have the same channel count, or the guide has one channel).
``box(x) / N`` is the mean over the (2r+1)^2 window clipped to the image: exactly
``avg_pool2d(..., count_include_pad=False)`` with zero padding r, which ``box_mean`` computes
from running sums for larger windows.

White-box cartoonization uses it twice: the training output is
``guided_filter(photo, G(photo), r=1, eps=1e-2)`` and the surface representation is the
self-guided ``guided_filter(x, x, r=5, eps=2e-1)`` (edge-preserving smoothing).

The filter computes in fp32 (at least), also under autocast: ``var_I`` and ``cov_Ip`` are small
differences of large means, which bf16's 8-bit mantissa would cancel to noise.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

CUMSUM_MIN_RADIUS = 3  # below it one average pool of the window is faster (benchmarks/bench_guided_filter.py)
FP32_SUM_MAX_LENGTH = 512  # running sums along longer axes are taken in fp64


def box_mean(x: torch.Tensor, r: int) -> torch.Tensor:
    """Mean over the (2r+1)x(2r+1) window around each pixel, the window clipped at the borders.

    Small windows are one average pool. From r = 3 the clipped window, a rectangle, is averaged
    as a running mean along the width, then along the height, each the difference of two
    cumulative sums: the cost no longer grows with r (White-box's surface filter, r = 5, ran
    3.8x faster at 64 px and 4.4x at 256 px with its backward; benchmarks/bench_guided_filter.py). The sums are fp32 up to
    512 pixels (error below 2e-7 there) and fp64 beyond, so long rows keep fp32's precision."""
    if r < 0:
        raise ValueError(f"radius must be >= 0, got {r}")
    if r == 0:
        return x
    if r < CUMSUM_MIN_RADIUS:
        return F.avg_pool2d(x, kernel_size=2 * r + 1, stride=1, padding=r, count_include_pad=False)
    return running_mean(running_mean(x, r, -1), r, -2)


def running_mean(x: torch.Tensor, r: int, dim: int, sum_dtype: torch.dtype | None = None) -> torch.Tensor:
    """Mean over the 2r+1 neighbours along ``dim``, the window clipped at both ends; the running
    sums are taken in ``sum_dtype`` (default: fp32, or fp64 along axes over FP32_SUM_MAX_LENGTH)."""
    length = x.shape[dim]
    if sum_dtype is None:
        sum_dtype = torch.float64 if length > FP32_SUM_MAX_LENGTH else torch.float32
    sums = x.to(torch.promote_types(x.dtype, sum_dtype)).cumsum(dim)
    sums = torch.cat([torch.zeros_like(sums.narrow(dim, 0, 1)), sums], dim)  # sums[i] = x[0] + ... + x[i - 1]
    index = torch.arange(length, device=x.device)
    high, low = (index + r + 1).clamp(max=length), (index - r).clamp(min=0)
    shape = [1] * x.ndim
    shape[dim] = length
    return ((sums.index_select(dim, high) - sums.index_select(dim, low)) / (high - low).view(shape)).to(x.dtype)


def guided_filter(guide: torch.Tensor, src: torch.Tensor, r: int, eps: float) -> torch.Tensor:
    """Filter ``src`` (N,C,H,W) guided by ``guide`` (N,C,H,W or N,1,H,W) with radius ``r`` and regulariser ``eps``;
    the result is fp32 (or fp64 for fp64 inputs)."""
    if guide.shape[0] != src.shape[0] or guide.shape[2:] != src.shape[2:]:
        raise ValueError(f"guide {tuple(guide.shape)} and source {tuple(src.shape)} differ in batch or size")
    if guide.shape[1] not in (1, src.shape[1]):
        raise ValueError(f"guide has {guide.shape[1]} channels, source {src.shape[1]}: need 1 or the same")
    with torch.autocast(src.device.type, enabled=False):
        dtype = torch.promote_types(torch.promote_types(guide.dtype, src.dtype), torch.float32)
        guide, src = guide.to(dtype), src.to(dtype)
        mean_i = box_mean(guide, r)
        mean_p = box_mean(src, r)
        cov_ip = box_mean(guide * src, r) - mean_i * mean_p
        var_i = box_mean(guide * guide, r) - mean_i * mean_i
        a = cov_ip / (var_i + eps)
        b = mean_p - a * mean_i
        return box_mean(a, r) * guide + box_mean(b, r)
