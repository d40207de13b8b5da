"""`cartoon cartoonize` on videos: frames, rate, timestamps and audio kept, H.264 out, the temporal
option lowering the flicker figure, and broken videos skipped with a reason."""

from __future__ import annotations

import re
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from cartoon.cli import app
from cartoon.data.imageio import write_png
from tests.test_cartoonize import photo, save_tiny

runner = CliRunner()
FPS, SAMPLE_RATE = 12, 16_000


def write_clip(
    path: Path, frames: int, width: int, height: int, video_codec: str, audio_codec: str, pix_fmt: str, rotation: int = 0
) -> None:
    """Random 8-pixel colour blocks panning right one pixel a frame, with a 440 Hz tone;
    ``rotation``: the display matrix's counterclockwise degrees, as phones write portrait video."""
    blocks = np.random.default_rng(0).integers(0, 256, (height // 8 + 1, (width + frames) // 8 + 1, 3)).astype(np.uint8)
    texture = np.kron(blocks, np.ones((8, 8, 1), np.uint8))
    with av.open(str(path), "w") as container:
        video = container.add_stream(video_codec, rate=FPS)
        video.width, video.height, video.pix_fmt = width, height, pix_fmt
        if rotation:
            video.set_display_rotation(rotation)
        audio = container.add_stream(audio_codec, rate=SAMPLE_RATE)
        audio.layout = "mono"
        for index in range(frames):
            frame = av.VideoFrame.from_ndarray(
                np.ascontiguousarray(texture[:height, frames - index : frames - index + width]), format="rgb24"
            )
            frame.pts = index
            container.mux(video.encode(frame))
        container.mux(video.encode())
        tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(SAMPLE_RATE * frames // FPS) / SAMPLE_RATE)).astype(np.float32)
        for start in range(0, len(tone), 1024):
            samples = av.AudioFrame.from_ndarray(tone[None, start : start + 1024], format="flt", layout="mono")
            samples.sample_rate, samples.pts = SAMPLE_RATE, start
            container.mux(audio.encode(samples))
        container.mux(audio.encode())


def probe(path: Path) -> dict:
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        times = [frame.time for frame in container.decode(video=0)]
        audio = [(stream.codec_context.name, float(stream.duration * stream.time_base)) for stream in container.streams.audio]
        return {
            "codec": video.codec_context.name,
            "pix_fmt": video.codec_context.pix_fmt,
            "size": (video.width, video.height),
            "rate": video.average_rate,
            "times": times,
            "audio": audio,
        }


def flicker(output: str, label: str) -> tuple[float, float]:
    """(output, input) flicker figures from the summary line of video ``label``."""
    found = re.search(rf"video {re.escape(label)}: .*flicker ([\d.]+) \(input ([\d.]+)", output)
    assert found, output
    return float(found[1]), float(found[2])


def test_video_keeps_frames_rate_and_audio_and_temporal_lowers_flicker(tmp_path):
    gen = save_tiny(tmp_path / "gen", "whitebox")
    clip = tmp_path / "clips" / "pan.mp4"
    clip.parent.mkdir()
    write_clip(clip, 24, 96, 64, "libx264", "aac", "yuv420p")
    source = probe(clip)
    figures = {}
    for option in ("--no-temporal", "--temporal"):
        out = tmp_path / option.strip("-")
        result = runner.invoke(app, ["cartoonize", str(tmp_path / "clips"), "--model", str(gen), "--out", str(out), option])
        assert result.exit_code == 0, result.output
        assert "1 done, 0 skipped" in result.output and "audio aac copied" in result.output, result.output
        assert [path.name for path in out.iterdir()] == ["pan.mp4"]  # no temp file left beside it
        made = probe(out / "pan.mp4")
        assert (made["codec"], made["pix_fmt"], made["size"]) == ("h264", "yuv420p", (96, 64))
        assert made["rate"] == source["rate"] == FPS
        assert made["times"] == source["times"] and len(made["times"]) == 24  # every frame, at its own time
        assert [codec for codec, _ in made["audio"]] == ["aac"]
        assert abs(made["audio"][0][1] - source["audio"][0][1]) < 1 / FPS
        figures[option] = flicker(result.output, str(clip))
    (plain, plain_input), (steady, steady_input) = figures["--no-temporal"], figures["--temporal"]
    assert plain_input == steady_input  # same input flow, same pixels
    assert steady < 0.8 * plain, figures  # measured on tracked pixels, also those the blend leaves alone


def test_broken_videos_are_skipped_while_other_inputs_complete(tmp_path):
    gen = save_tiny(tmp_path / "gen", "whitebox")
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    write_clip(tmp_path / "whole.mp4", 6, 32, 24, "libx264", "aac", "yuv420p")
    data = (tmp_path / "whole.mp4").read_bytes()
    (inputs / "truncated.mp4").write_bytes(data[: len(data) // 2])  # the index (moov) is at the end: gone
    (inputs / "page.mov").write_text("<!doctype html><html><body>404</body></html>\n")
    (inputs / "empty.mkv").write_bytes(b"")
    write_clip(inputs / "odd.avi", 6, 33, 25, "rawvideo", "pcm_u8", "rgb24")  # odd sides; audio MP4 does not take
    write_png(inputs / "still.png", photo(20, 24))
    write_clip(inputs / "portrait.m4v", 3, 32, 24, "libx264", "aac", "yuv420p", rotation=-90)
    result = runner.invoke(app, ["cartoonize", str(inputs), "--model", str(gen), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output and result.exception is None
    assert "3 done, 3 skipped" in result.output, result.output
    for name in ("truncated.mp4", "page.mov", "empty.mkv"):
        assert re.search(rf"skipped {re.escape(str(inputs / name))}: not a readable video \(.+\)", result.output), result.output
    assert "audio pcm_u8 transcoded to AAC" in result.output and "padded 33x25 to 34x26" in result.output, result.output
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == ["odd.mp4", "portrait.mp4", "still.png"]
    assert "turned upright (270 degrees counterclockwise" in result.output
    made = probe(tmp_path / "out" / "odd.mp4")
    assert made["size"] == (34, 26) and len(made["times"]) == 6 and [codec for codec, _ in made["audio"]] == ["aac"]
    assert made["times"] == [float(Fraction(index, FPS)) for index in range(6)]


def test_temporal_strength_needs_temporal_and_a_weight_below_one(tmp_path):
    gen = save_tiny(tmp_path / "gen", "whitebox")
    write_png(tmp_path / "a.png", photo(12, 12))
    for extra in (["--temporal-strength", "0.5"], ["--temporal", "--temporal-strength", "1.0"]):
        result = runner.invoke(app, ["cartoonize", str(tmp_path / "a.png"), "--model", str(gen), "--out", str(tmp_path / "out"), *extra])
        assert result.exit_code == 2 and "--temporal-strength" in result.output, result.output
    assert not (tmp_path / "out").exists()


def test_an_interrupted_video_leaves_no_file(tmp_path):
    """Ctrl-C in the middle of a video: neither the target nor its temp file is left behind."""
    from cartoon.cartoonize_video import cartoonize_video
    from cartoon.progress import progress

    write_clip(tmp_path / "clip.mkv", 8, 32, 24, "libx264", "aac", "yuv420p")
    calls = []

    def interrupted(rgb: np.ndarray) -> np.ndarray:
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return rgb

    with pytest.raises(KeyboardInterrupt), progress(disable=True) as bar:
        cartoonize_video(tmp_path / "clip.mkv", tmp_path / "out" / "clip.mp4", interrupted, 10**6, None, bar, "clip.mkv")
    assert len(calls) == 5 and list((tmp_path / "out").iterdir()) == []


def test_flow_is_trusted_along_motion_and_not_across_a_cut():
    from cartoon.temporal import FlowEstimator, blend

    rng = np.random.default_rng(1)
    scene = cv2.resize(rng.integers(0, 256, (16, 24, 3), dtype=np.uint8), (192, 128), interpolation=cv2.INTER_CUBIC)
    previous, shifted = scene[:96, :160], scene[2:98, 3:163]  # the camera moves 3 px right, 2 px down
    motion = FlowEstimator()(previous, shifted)
    assert motion.reliable.mean() > 0.8
    assert np.allclose(motion.flow[motion.reliable].mean(axis=0), (3, 2), atol=0.25)
    other = cv2.resize(rng.integers(0, 256, (12, 20, 3), dtype=np.uint8), (160, 96), interpolation=cv2.INTER_CUBIC)
    cut = FlowEstimator()(previous, other)
    assert cut.reliable.mean() < 0.1
    kept = blend(other, np.zeros_like(other), cut, 0.5)  # where the flow is unreliable the frame stays as it is
    assert np.array_equal(kept[~cut.reliable], other[~cut.reliable])


def frames_of(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def write_frames(path: Path, frames: list[np.ndarray], rotation: int = 0, container_format: str | None = None) -> None:
    """H.264 frames as given, no audio; ``rotation`` as in write_clip."""
    with av.open(str(path), "w", format=container_format) as container:
        video = container.add_stream("libx264", rate=FPS)
        video.height, video.width = frames[0].shape[:2]
        video.pix_fmt = "yuv420p"
        if rotation:
            video.set_display_rotation(rotation)
        for index, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = index
            container.mux(video.encode(frame))
        container.mux(video.encode())


def cartoonize_one(source: Path, target: Path, run=lambda rgb: rgb, max_pixels: int = 10**6, temporal: float | None = None):
    from cartoon.cartoonize_video import cartoonize_video
    from cartoon.progress import progress

    with progress(disable=True) as bar:
        return cartoonize_video(source, target, run, max_pixels, temporal, bar, source.name)


def test_sideways_video_is_turned_the_way_its_display_matrix_says(tmp_path):
    """Rotation -90 is shown 90 degrees clockwise: the stored top-left corner ends top-right."""
    frame = np.zeros((24, 32, 3), np.uint8)
    frame[:8, :8] = 255
    write_frames(tmp_path / "portrait.mp4", [frame] * 2, rotation=-90)
    cartoonize_one(tmp_path / "portrait.mp4", tmp_path / "out.mp4")
    upright = frames_of(tmp_path / "out.mp4")[0].mean(axis=2)
    assert upright.shape == (32, 24)
    corners = {"top-left": upright[:8, :8], "top-right": upright[:8, -8:], "bottom-left": upright[-8:, :8], "bottom-right": upright[-8:, -8:]}
    assert [name for name, corner in corners.items() if corner.mean() > 128] == ["top-right"]


def test_tiny_video_gets_no_flicker_figure_and_the_other_inputs_complete(tmp_path):
    """DIS raises on frames under 12 px (and crashes the process on some narrow ones)."""
    gen = save_tiny(tmp_path / "gen", "whitebox")
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    write_clip(inputs / "a-tiny.mp4", 4, 8, 8, "libx264", "aac", "yuv420p")
    write_clip(inputs / "b-small.mp4", 4, 32, 24, "libx264", "aac", "yuv420p")
    result = runner.invoke(app, ["cartoonize", str(inputs), "--model", str(gen), "--out", str(tmp_path / "out"), "--temporal"])
    assert result.exit_code == 0 and result.exception is None, result.output
    assert "2 done, 0 skipped" in result.output, result.output
    assert "no flicker figure or temporal blend (8x8: optical flow needs both sides of 16 px" in result.output, result.output
    flicker(result.output, str(inputs / "b-small.mp4"))  # the other video is measured as usual
    assert len(frames_of(tmp_path / "out" / "a-tiny.mp4")) == 4


def test_a_failing_flow_costs_the_figure_not_the_video(tmp_path, monkeypatch):
    from cartoon.temporal import FlowEstimator

    def broken(self, previous, current):
        raise cv2.error("flow exploded")

    monkeypatch.setattr(FlowEstimator, "__call__", broken)
    write_clip(tmp_path / "clip.mp4", 4, 32, 24, "libx264", "aac", "yuv420p")
    result = cartoonize_one(tmp_path / "clip.mp4", tmp_path / "out.mp4", temporal=0.5)
    assert result.frames == 4 and result.flicker_output is None and len(frames_of(tmp_path / "out.mp4")) == 4
    assert any(note.startswith("no flicker figure (optical flow failed at frame 2") and "no temporal blend" in note for note in result.notes), result.notes


def test_every_decoded_frame_is_held_to_the_pixel_cap(tmp_path, monkeypatch):
    """An MPEG-TS stream that grows from 32x24 to 96x64 mid-way: the header gives the first size only."""
    gen = save_tiny(tmp_path / "gen", "whitebox")
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    rng = np.random.default_rng(0)
    for name, (height, width) in (("small.ts", (24, 32)), ("large.ts", (64, 96))):
        write_frames(tmp_path / name, list(rng.integers(0, 256, (3, height, width, 3), dtype=np.uint8)), container_format="mpegts")
    (inputs / "grows.ts").write_bytes((tmp_path / "small.ts").read_bytes() + (tmp_path / "large.ts").read_bytes())
    write_png(inputs / "still.png", photo(20, 24))
    converted = []
    to_ndarray = av.VideoFrame.to_ndarray
    monkeypatch.setattr(av.VideoFrame, "to_ndarray", lambda frame, **kw: converted.append(frame.width) or to_ndarray(frame, **kw))
    result = runner.invoke(app, ["cartoonize", str(inputs), "--model", str(gen), "--out", str(tmp_path / "out"), "--max-pixels", "1000"])
    assert result.exit_code == 0, result.output
    assert "1 done, 1 skipped" in result.output, result.output
    assert f"skipped {inputs / 'grows.ts'}: too many pixels in frame 4 (96 x 64 > 1000)" in result.output, result.output
    assert converted == [32, 32, 32]  # the large frames were never converted
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == ["still.png"]


def test_write_failures_stop_the_run_and_model_errors_are_not_blamed_on_the_file(tmp_path, monkeypatch):
    import cartoon.cartoonize_video

    gen = save_tiny(tmp_path / "gen", "whitebox")
    write_clip(tmp_path / "clip.mp4", 3, 32, 24, "libx264", "aac", "yuv420p")
    write_png(tmp_path / "still.png", photo(20, 24))
    with monkeypatch.context() as patch:  # every write of the video lands on a full disk
        patch.setattr(cartoon.cartoonize_video, "atomic_write", lambda target, write: write(Path("/dev/full")))
        result = runner.invoke(app, ["cartoonize", str(tmp_path / "clip.mp4"), str(tmp_path / "still.png"), "--model", str(gen), "--out", str(tmp_path / "out")])
    assert result.exit_code == 1 and "skipped" not in result.output, result.output
    assert re.search(r"failed: cannot write .*clip\.mp4 \(No space left on device\); stopped after 0 of 2 files", " ".join(result.output.split())), result.output

    def faulty(rgb: np.ndarray) -> np.ndarray:
        raise ValueError("a bug in the cartoonizer")

    with pytest.raises(ValueError, match="a bug in the cartoonizer"):
        cartoonize_one(tmp_path / "clip.mp4", tmp_path / "out.mp4", faulty)


def test_large_frames_get_their_flow_scaled_down_and_back_up():
    from cartoon.temporal import FLOW_SIDE, FlowEstimator

    rng = np.random.default_rng(2)
    scene = cv2.resize(rng.integers(0, 256, (46, 80, 3), dtype=np.uint8), (1296, 736), interpolation=cv2.INTER_CUBIC)
    previous, shifted = scene[:720, :1280], scene[4:724, 6:1286]  # the camera moves 6 px right, 4 px down
    assert max(previous.shape) > FLOW_SIDE
    motion = FlowEstimator()(previous, shifted)
    assert motion.flow.shape == (720, 1280, 2) and motion.reliable.mean() > 0.8
    assert np.allclose(motion.flow[motion.reliable].mean(axis=0), (6, 4), atol=0.3)


def test_input_flicker_is_not_capped_by_the_blend_check():
    """A lighting change of 20 levels fails the photometric check everywhere (no blending), yet
    the input figure must report it rather than measure nothing."""
    from cartoon.temporal import PHOTO_TOLERANCE, FlickerMeter, FlowEstimator

    rng = np.random.default_rng(3)
    previous = cv2.resize(rng.integers(40, 200, (16, 24, 3), dtype=np.uint8), (192, 128), interpolation=cv2.INTER_CUBIC)
    brighter = previous + np.uint8(20)
    motion = FlowEstimator()(previous, brighter)
    assert motion.reliable.mean() < 0.05 and motion.tracked.mean() > 0.8
    meter = FlickerMeter()
    meter.add(previous, brighter, motion)
    assert meter.value > PHOTO_TOLERANCE and abs(meter.value - 20) < 2


def test_one_list_of_video_suffixes_for_planning_and_help(tmp_path):
    from typer.main import get_command

    from cartoon.cartoonize import plan_jobs
    from cartoon.data.video import VIDEO_SUFFIXES

    for name in ("a.TS", "b.mpg", "c.MP4", "d.png", "e.txt"):
        (tmp_path / name).write_bytes(b"")
    jobs = plan_jobs([tmp_path], tmp_path / "out")
    assert [(job.source.name, job.target.name, job.is_video) for job in jobs] == [
        ("a.TS", "a.mp4", True), ("b.mpg", "b.mp4", True), ("c.MP4", "c.mp4", True), ("d.png", "d.png", False)
    ]  # fmt: skip
    command = get_command(app).commands["cartoonize"]
    help_text = next(param.help for param in command.params if param.name == "inputs")
    assert set(re.findall(r"\.[a-z0-9]+", help_text)) == set(VIDEO_SUFFIXES), help_text
