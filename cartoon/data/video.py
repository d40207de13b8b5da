"""Candidate still frames from one local video file: how anime training sets are made (AnimeGAN's
Hayao set is 1,752 frames of one film).

``extract_frames`` reads the file once, front to back, and yields each candidate frame either kept
or dropped with a reason, so the caller can record both in the crawl manifest. At most one decoded
frame waits at a time (plus small thumbnails), whatever the length of the video.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

#: Suffixes read as video, by crawl's ``video`` sources and by ``cartoon cartoonize``: containers
#: FFmpeg (behind both OpenCV and PyAV) demuxes.
VIDEO_SUFFIXES = (".mp4", ".mkv", ".avi", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".ts", ".wmv", ".flv")
#: Frame rate assumed when the container reports none (0, NaN) or an absurd one (a time base).
FALLBACK_FPS = 25.0
#: Bars are cropped up to this fraction of the height (or width) per side: real letterbox and
#: pillarbox bars stay under a quarter, so a longer dark run is dark picture, not a bar.
MAX_BAR_FRACTION = 0.4
#: (width, height) of the thumbnails compared for cuts and near-duplicates: small enough to average
#: away compression noise and small motion, large enough to tell one shot from another.
THUMB_SIZE = (64, 36)


def is_video(path: Path) -> bool:
    """Whether ``path`` is taken as a video, by its suffix (any case)."""
    return path.suffix.lower() in VIDEO_SUFFIXES


class VideoError(Exception):
    """A file that cannot be opened or decoded as video at all; the message names the file and cause."""


@dataclass(frozen=True)
class Frame:
    """One candidate frame: ``rgb`` (HxWx3 uint8, bars cropped) if kept, else None and a ``reason``."""

    index: int  # position in the video, from 0
    time_s: float  # index / fps
    rgb: np.ndarray | None
    reason: str  # "" when kept


def extract_frames(
    path: Path | str,
    *,
    mode: Literal["scene", "interval"] = "scene",
    every_s: float = 2.0,
    scene_threshold: float = 0.12,
    min_scene_s: float = 0.5,
    crop_letterbox: bool = True,
    black_level: int = 24,
    min_std: float = 6.0,
    duplicate_threshold: float = 0.04,
    max_frames: int | None = None,
) -> Iterator[Frame]:
    """Yield the candidate frames of one video in order, kept or dropped (``rgb`` None, ``reason`` set).

    ``mode="scene"``: a cut is a frame whose colour thumbnail differs from the previous one's by a
    mean absolute difference (on 0..1) above ``scene_threshold``; every shot lasting at least
    ``min_scene_s`` gives one candidate, the frame ``min_scene_s / 2`` after its cut: clear of the
    cut, and known without buffering the shot. The default threshold is low because a missed cut
    loses a shot (two shots of one setting differ little over the whole frame) while a false cut
    (a flash, fast action) costs only an extra candidate, which the checks below usually drop.
    Fades and dissolves change too little per frame to be cuts, so shots joined by them share a
    candidate: use ``mode="interval"`` for such material.

    ``mode="interval"``: the frame at every multiple of ``every_s`` seconds, from 0. Frames in
    between are only grabbed, never converted to RGB.

    Each candidate then loses its near-black border rows and columns (letterbox and pillarbox
    bars: largest channel value <= ``black_level``) if ``crop_letterbox``, and is dropped as
    ``"near-black"`` (mean luminance <= ``black_level``), ``"near-uniform"`` (luminance standard
    deviation < ``min_std``) or ``"near-duplicate of frame N"`` (its thumbnail differs from that
    of N, the last kept frame, by less than ``duplicate_threshold``; dedupe across videos is done
    elsewhere). Iteration stops after ``max_frames`` kept frames.

    Raises VideoError, once iteration starts, for a file that cannot be opened or has no
    decodable frame; a frame that fails to decode later on ends the video.
    """
    if mode not in ("scene", "interval"):
        raise ValueError(f"mode must be 'scene' or 'interval', got {mode!r}")
    if not every_s > 0:
        raise ValueError(f"every_s must be > 0, got {every_s}")
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be >= 1 or None, got {max_frames}")
    path = Path(path)
    capture, fps = _open(path)
    try:
        if mode == "scene":
            candidates = _scene_candidates(capture, path, fps, scene_threshold, min_scene_s)
        else:
            candidates = _interval_candidates(capture, path, fps, every_s)
        last: tuple[int, np.ndarray] | None = None  # index and thumbnail of the last kept frame
        kept = 0
        for index, bgr in candidates:
            if crop_letterbox:
                bgr = _crop_bars(bgr, black_level)
            reason = _quality_problem(bgr, black_level, min_std)
            thumb = _thumbnail(bgr)
            if not reason and last is not None and _difference(thumb, last[1]) < duplicate_threshold:
                reason = f"near-duplicate of frame {last[0]}"
            if reason:
                yield Frame(index, index / fps, None, reason)
                continue
            last = (index, thumb)
            yield Frame(index, index / fps, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), "")
            kept += 1
            if kept == max_frames:
                return
    finally:
        capture.release()


def _open(path: Path) -> tuple[cv2.VideoCapture, float]:
    """An opened capture and its frame rate.

    FFmpeg is named rather than left to OpenCV's choice, so a file it cannot read is an error
    instead of a path handed on to OpenCV's other readers (image sequences, cameras).
    """
    if not path.is_file():
        raise VideoError(f"{path}: no such file")
    capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    if not capture.isOpened():
        capture.release()
        raise VideoError(f"{path}: cannot open as video (not a video, or an unsupported container or codec)")
    fps = capture.get(cv2.CAP_PROP_FPS)
    return capture, fps if math.isfinite(fps) and 0 < fps <= 1000 else FALLBACK_FPS


def _grabbed(capture: cv2.VideoCapture, path: Path) -> Iterator[int]:
    """Grab (read and decode, but not convert) each frame in turn, yielding its index."""
    index = 0
    while capture.grab():
        yield index
        index += 1
    if index == 0:
        raise VideoError(f"{path}: no decodable video frame")


def _scene_candidates(
    capture: cv2.VideoCapture, path: Path, fps: float, threshold: float, min_scene_s: float
) -> Iterator[tuple[int, np.ndarray]]:
    """(index, BGR) of the frame min_scene_s / 2 after each cut, for shots at least min_scene_s long.

    The first shot starts at frame 0. Its frame waits until the shot has lasted min_scene_s, which
    is why it is taken before the middle: the wait holds one frame, not the whole shot.
    """
    length = max(1, round(min_scene_s * fps))  # frames a shot needs
    offset = length // 2
    start = 0  # first frame of the current shot
    previous: np.ndarray | None = None
    waiting: tuple[int, np.ndarray] | None = None
    for index in _grabbed(capture, path):
        ok, bgr = capture.retrieve()
        if not ok:
            return
        thumb = _thumbnail(bgr)
        if previous is not None and _difference(thumb, previous) > threshold:
            start, waiting = index, None
        previous = thumb
        if index == start + offset:
            waiting = (index, bgr)
        if waiting is not None and index == start + length - 1:
            yield waiting
            waiting = None


def _interval_candidates(
    capture: cv2.VideoCapture, path: Path, fps: float, every_s: float
) -> Iterator[tuple[int, np.ndarray]]:
    """(index, BGR) of the frame nearest each multiple of every_s seconds (at least a frame apart)."""
    step = max(every_s * fps, 1.0)
    taken = 0
    for index in _grabbed(capture, path):
        if index < round(taken * step):
            continue
        ok, bgr = capture.retrieve()
        if not ok:
            return
        yield index, bgr
        taken += 1


def _crop_bars(bgr: np.ndarray, black_level: int) -> np.ndarray:
    """The frame without its near-black border rows and columns, at most MAX_BAR_FRACTION a side;
    an all-dark frame stays whole (the near-black check drops it)."""
    dark_rows = bgr.max(axis=(1, 2)) <= black_level
    if dark_rows.all():
        return bgr
    dark_cols = bgr.max(axis=(0, 2)) <= black_level  # not all dark either: a bright pixel exists
    height, width = dark_rows.size, dark_cols.size
    top, bottom = _bar(dark_rows), _bar(dark_rows[::-1])
    left, right = _bar(dark_cols), _bar(dark_cols[::-1])
    return bgr[top : height - bottom, left : width - right]


def _bar(dark: np.ndarray) -> int:
    """Length of the dark run at the start of ``dark`` (which is not all dark), capped per side."""
    return min(int(np.argmin(dark)), int(dark.size * MAX_BAR_FRACTION))


def _quality_problem(bgr: np.ndarray, black_level: int, min_std: float) -> str:
    """Why the frame is useless as a training image, or ""."""
    mean, std = cv2.meanStdDev(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY))
    if mean[0, 0] <= black_level:
        return "near-black"
    if std[0, 0] < min_std:
        return "near-uniform"
    return ""


def _thumbnail(bgr: np.ndarray) -> np.ndarray:
    return cv2.resize(bgr, THUMB_SIZE, interpolation=cv2.INTER_AREA)


def _difference(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of two thumbnails, on 0..1."""
    return float(cv2.absdiff(a, b).mean()) / 255.0
