"""extract_frames must turn a video into one clean frame per shot (or per interval), cropping bars
and dropping black, flat and repeated frames with a reason."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from cartoon.data.video import Frame, VideoError, extract_frames

FPS, WIDTH, HEIGHT, BAR = 12, 96, 64, 8
RED, GREEN, BLUE = 2, 1, 0  # channel indices in OpenCV's BGR order


def texture(dominant: int, seed: int) -> np.ndarray:
    """8-pixel blocks of random colour leaning towards one channel, wider than the frame so it can pan."""
    blocks = np.random.default_rng(seed).integers(0, 196, (HEIGHT // 8, WIDTH // 8 + 4, 3)).astype(np.uint8)
    blocks[..., dominant] += 60
    return np.kron(blocks, np.ones((8, 8, 1), np.uint8))


def shot(picture: np.ndarray, seconds: float, mark: bool = False) -> Iterator[np.ndarray]:
    """A panning shot (one pixel a frame) inside 8-pixel letterbox bars; ``mark`` adds a tiny white dot."""
    for t in range(round(seconds * FPS)):
        frame = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
        frame[BAR : HEIGHT - BAR] = picture[: HEIGHT - 2 * BAR, t : t + WIDTH]
        if mark:
            frame[BAR + 2 : BAR + 6, 2:6] = 255
        yield frame


def write_video(path: Path, frames: Iterable[np.ndarray]) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (WIDTH, HEIGHT))
    assert writer.isOpened(), "cv2.VideoWriter cannot write MJPG AVI on this machine"
    for frame in frames:
        writer.write(frame)
    writer.release()
    assert path.stat().st_size > 0
    return path


@pytest.fixture(scope="module")
def film(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 s at 12 fps: red shot, black second, green shot, the green shot again (near-duplicate),
    blue shot, flat grey second. Shots start at frames 0, 18, 30, 48, 66 and 84."""
    black = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    grey = black.copy()
    grey[BAR : HEIGHT - BAR] = 128
    green = texture(GREEN, 2)

    def frames() -> Iterator[np.ndarray]:
        yield from shot(texture(RED, 1), 1.5)
        yield from [black] * FPS
        yield from shot(green, 1.5)
        yield from shot(green, 1.5, mark=True)
        yield from shot(texture(BLUE, 3), 1.5)
        yield from [grey] * FPS

    return write_video(tmp_path_factory.mktemp("video") / "film.avi", frames())


def summary(frames: list[Frame]) -> list[tuple[int, str]]:
    return [(frame.index, frame.reason) for frame in frames]


def leans_to(rgb: np.ndarray, channel: int) -> bool:
    means = rgb.reshape(-1, 3).mean(axis=0)
    return all(means[channel] > means[other] + 30 for other in range(3) if other != channel)


def test_scene_mode_keeps_one_frame_per_shot(film: Path):
    frames = list(extract_frames(film))
    # each shot's candidate is min_scene_s / 2 = 3 frames after its cut
    assert summary(frames) == [
        (3, ""),
        (21, "near-black"),
        (33, ""),
        (51, "near-duplicate of frame 33"),
        (69, ""),
        (87, "near-uniform"),
    ]
    assert [frame.time_s for frame in frames] == pytest.approx([i / FPS for i, _ in summary(frames)])
    kept = [frame.rgb for frame in frames if not frame.reason]
    assert all(frame.rgb is None for frame in frames if frame.reason)
    for rgb in kept:
        assert rgb is not None and rgb.dtype == np.uint8
        assert abs(rgb.shape[0] - (HEIGHT - 2 * BAR)) <= 2 and rgb.shape[1:] == (WIDTH, 3)
    # BGR channel 2 (red) is RGB channel 0, and so on
    assert leans_to(kept[0], 0) and leans_to(kept[1], 1) and leans_to(kept[2], 2)


def test_bars_stay_when_cropping_is_off(film: Path):
    kept = [frame.rgb for frame in extract_frames(film, crop_letterbox=False) if not frame.reason]
    # the flat grey shot is kept too: with its bars it is no longer uniform
    assert [rgb.shape for rgb in kept] == [(HEIGHT, WIDTH, 3)] * 4


def test_shots_shorter_than_min_scene_s_give_no_frame(film: Path):
    # 1.2 s needed: the 1 s black and grey shots give nothing, the others their frame 7 after the cut
    frames = list(extract_frames(film, min_scene_s=1.2))
    assert summary(frames) == [(7, ""), (37, ""), (55, "near-duplicate of frame 37"), (73, "")]


def test_interval_mode_takes_a_frame_every_every_s(film: Path):
    frames = list(extract_frames(film, mode="interval", every_s=1.0))
    assert [frame.index for frame in frames] == list(range(0, 8 * FPS, FPS))
    assert [frame.time_s for frame in frames] == pytest.approx(list(range(8)))
    reasons = dict(summary(frames))
    assert reasons[24] == "near-black" and reasons[84] == "near-uniform"
    assert [i for i, reason in reasons.items() if not reason] == [0, 12, 36, 48, 60, 72]
    assert len(list(extract_frames(film, mode="interval"))) == 4  # every 2 s of 8 s


def test_max_frames_stops_after_that_many_kept(film: Path):
    assert summary(list(extract_frames(film, max_frames=2))) == [(3, ""), (21, "near-black"), (33, "")]


def test_pillarbox_cropped_and_dark_picture_cropped_at_most_40_percent(tmp_path: Path):
    picture = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    picture[:, 16 : WIDTH - 16] = texture(RED, 4)[:, : WIDTH - 32]
    picture[:40] = 0  # a dark sky over 62% of the height: only 40% of it may go
    path = write_video(tmp_path / "pillar.avi", [picture] * FPS)
    (frame,) = extract_frames(path)
    assert frame.reason == "" and frame.rgb is not None
    assert frame.rgb.shape[:2] == (HEIGHT - int(HEIGHT * 0.4), WIDTH - 32)


def test_missing_file_is_a_video_error(tmp_path: Path):
    with pytest.raises(VideoError, match="missing.avi: no such file"):
        list(extract_frames(tmp_path / "missing.avi"))


def test_video_without_frames_is_a_video_error(tmp_path: Path):
    path = write_video(tmp_path / "empty.avi", [])
    with pytest.raises(VideoError, match="empty.avi: no decodable video frame"):
        list(extract_frames(path))


@pytest.mark.parametrize("content", [b"", b"not a video at all\n" * 100, bytes(range(256)) * 40])
def test_non_video_file_is_a_video_error(tmp_path: Path, content: bytes):
    path = tmp_path / "fake.avi"
    path.write_bytes(content)
    with pytest.raises(VideoError, match="fake.avi: cannot open as video"):
        list(extract_frames(path, mode="interval"))


def test_bad_options_are_refused(film: Path):
    with pytest.raises(ValueError, match="every_s"):
        list(extract_frames(film, mode="interval", every_s=0))
    with pytest.raises(ValueError, match="max_frames"):
        list(extract_frames(film, max_frames=0))
