"""Temporal consistency for cartoonized video, and the flicker figure that measures it.

A generator sees each frame alone. Small changes between consecutive input frames (sensor
noise, compression, sub-pixel motion) change its strokes and textures far more, so the cartoon
flickers even where the scene holds still. The input frames say where each pixel came from:
DIS optical flow (OpenCV; fast, dense, no model to download; on frames scaled down to
FLOW_SIDE) from the current input frame to the previous one warps the previous *output* onto
the current frame, and where that flow can be trusted the warped output is blended into the
current one. Blending with the previous blended frame makes this a running average along
motion paths.

Where the flow cannot be trusted the current output is kept untouched, so occluded, uncovered
or changed content never drags a ghost along. A pixel is reliable when both hold:

- forward-backward consistency (Sundaram, Brox and Keutzer, ECCV 2010): following the flow
  back to the previous frame and then the forward flow from there returns to the start. It
  fails at occlusions and where the flow is wrong;
- photometric agreement: the previous *input* frame warped by the flow looks like the current
  one. It catches cuts, lighting changes and flat regions where both flows agree on a wrong
  answer.

The flicker figure is the mean absolute difference (0-255 levels, channels averaged) between
each frame and the previous frame warped by the input flow, over *tracked* pixels: those that
pass the forward-backward check and come from inside the previous frame, without the
photometric check. That check compares the very input frames the input figure measures, so
with it the input figure could never exceed PHOTO_TOLERANCE while the output figure could.
Measured on the outputs and, with the same flow and pixels, on the inputs: the input figure is
what motion-compensated change the footage itself has (noise, flow error, lighting changes), so
an output figure well above it is flicker the cartoonizer added. Lower is steadier.

DIS needs frames of some size: OpenCV raises under 8 px and, for some narrow frames under
16 px with a long other side, crashes the process. ``flow_fits`` says whether a frame size
(after the scaling to FLOW_SIDE) is safe; smaller video gets no flow, so no flicker figure.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

#: Forward-backward test |b + f(x + b)|^2 < FB_RATIO * (|b|^2 + |f(x + b)|^2) + FB_SLACK (pixels^2),
#: Sundaram et al.'s constants: the allowed error grows with the motion.
FB_RATIO, FB_SLACK = 0.01, 0.5
#: Largest mean absolute difference (0-255, over channels) between the warped previous input and
#: the current input at a reliable pixel: above compression noise, below a real change.
PHOTO_TOLERANCE = 12.0
#: Longer side of the frames the flow is computed on: larger frames are scaled down for DIS and
#: the flow scaled back up. Cartoon flicker is judged at a few pixels; full-resolution DIS on a
#: 4K frame would cost more than a GPU takes to cartoonize it.
FLOW_SIDE = 640
#: Shortest side (of the frame DIS sees, after scaling to FLOW_SIDE) the flow is run on: OpenCV
#: 5's DIS raises under 8 px and segfaults at e.g. 64x8 or 128x15; from 16 px it runs at every size.
MIN_FLOW_SIDE = 16
#: Side of the box filter that softens the blend weight inside the reliable region, so the
#: border between blended and untouched pixels leaves no visible edge.
SOFT_EDGE = 5


@dataclass(frozen=True)
class Motion:
    """How the current input frame relates to the previous one.

    ``flow``: HxWx2 float32, for each current pixel the offset to where it was in the previous
    frame; ``tracked``: HxW bool, where that offset passes the forward-backward check and stays
    inside the frame (what the flicker figures are measured on); ``reliable``: tracked and
    photometrically consistent too (where ``blend`` mixes).
    """

    flow: np.ndarray
    tracked: np.ndarray
    reliable: np.ndarray


def flow_fits(height: int, width: int) -> bool:
    """Whether DIS can run on frames of this size (see MIN_FLOW_SIDE)."""
    return min(_flow_size(height, width)) >= MIN_FLOW_SIDE


class FlowEstimator:
    """DIS optical flow between consecutive RGB frames, with the reliability checks."""

    def __init__(self) -> None:
        self.dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)

    def __call__(self, previous: np.ndarray, current: np.ndarray) -> Motion:
        prev_gray, cur_gray = (_flow_input(frame) for frame in (previous, current))
        backward = _full_size(self.dis.calc(cur_gray, prev_gray, None), current.shape)  # current -> previous
        forward = _full_size(self.dis.calc(prev_gray, cur_gray, None), current.shape)  # previous -> current
        forward_there = warp(forward, backward)  # the forward flow where each pixel came from
        consistent = _squared(backward + forward_there) < FB_RATIO * (_squared(backward) + _squared(forward_there)) + FB_SLACK
        tracked = consistent & _inside_frame(backward)
        photometric = _channel_mean_difference(warp(previous, backward), current) < PHOTO_TOLERANCE
        return Motion(backward, tracked, tracked & photometric)


def _squared(flow: np.ndarray) -> np.ndarray:
    """Squared length of each flow vector (slices: numpy reduces a 2-long last axis slowly)."""
    return flow[..., 0] ** 2 + flow[..., 1] ** 2


def _channel_mean_difference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-pixel absolute difference of two uint8 RGB frames, averaged over channels (float32)."""
    difference = cv2.absdiff(a, b)
    return (difference[..., 0].astype(np.float32) + difference[..., 1] + difference[..., 2]) / 3


def _flow_input(rgb: np.ndarray) -> np.ndarray:
    """Grayscale, scaled down (never up) to FLOW_SIDE on the longer side."""
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    height, width = _flow_size(*gray.shape)
    return cv2.resize(gray, (width, height), interpolation=cv2.INTER_AREA) if (height, width) != gray.shape else gray


def _flow_size(height: int, width: int) -> tuple[int, int]:
    """(height, width) of the frame DIS sees: scaled down (never up) to FLOW_SIDE on the longer side."""
    scale = FLOW_SIDE / max(height, width)
    return (height, width) if scale >= 1 else (max(1, round(height * scale)), max(1, round(width * scale)))


def _full_size(flow: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """A flow computed on a scaled-down frame, resampled to ``shape`` with its vectors scaled to match."""
    height, width = shape[:2]
    if flow.shape[:2] == (height, width):
        return flow
    factors = np.array([width / flow.shape[1], height / flow.shape[0]], np.float32)
    return cv2.resize(flow, (width, height), interpolation=cv2.INTER_LINEAR) * factors


def _inside_frame(flow: np.ndarray) -> np.ndarray:
    """Pixels whose source lies inside the previous frame (outside, remap would only repeat the edge)."""
    height, width = flow.shape[:2]
    xs, ys = _grid(height, width)
    x, y = xs + flow[..., 0], ys + flow[..., 1]
    return (x >= 0) & (x <= width - 1) & (y >= 0) & (y <= height - 1)


@lru_cache(maxsize=2)
def _grid(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel x and y coordinates (float32), built once per frame size: every warp needs them."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    return xs, ys


def warp(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """``image`` (the previous frame) resampled at each pixel's position plus ``flow``: the
    previous frame moved onto the current one."""
    xs, ys = _grid(*flow.shape[:2])
    return cv2.remap(image, xs + flow[..., 0], ys + flow[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def blend(current: np.ndarray, previous: np.ndarray, motion: Motion, strength: float) -> np.ndarray:
    """The current output with the previous output, warped, mixed in at weight ``strength``
    on reliable pixels (ramping down to 0 within SOFT_EDGE of unreliable ones); elsewhere unchanged."""
    mask = motion.reliable.astype(np.float32)
    weight = strength * np.minimum(mask, cv2.blur(mask, (SOFT_EDGE, SOFT_EDGE)))[..., None]
    mixed = (1 - weight) * current + weight * warp(previous, motion.flow)
    return np.clip(np.rint(mixed), 0, 255).astype(np.uint8)


class FlickerMeter:
    """Running flicker figure of one frame sequence (see the module docstring)."""

    def __init__(self) -> None:
        self.total, self.pixels = 0.0, 0

    def add(self, previous: np.ndarray, current: np.ndarray, motion: Motion) -> None:
        difference = _channel_mean_difference(warp(previous, motion.flow), current)
        self.total += float(difference[motion.tracked].sum())
        self.pixels += int(motion.tracked.sum())

    @property
    def value(self) -> float | None:
        """Mean over all tracked pixels of all frame pairs; None when there were none."""
        return self.total / self.pixels if self.pixels else None
