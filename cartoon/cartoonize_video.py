"""`cartoon cartoonize` for videos: every frame through the same cartoonizer as photos, out as H.264 MP4.

PyAV (FFmpeg in its wheel, no system ffmpeg) decodes the input and encodes the output in one
pass, one frame at a time, so memory does not grow with the length of the video. What is kept:

- every decoded frame, with its own timestamp in the input stream's time base (the encoder
  works in that time base; the MP4 muxer may pick its own and rescales), and the frame rate
  as the stream's rate: same frame count, same timing, audio stays in sync even across gaps;
- every audio stream: its packets copied unchanged when MP4 takes the codec (checked with the
  muxer itself), else decoded and encoded as AAC. Subtitle and data streams are not copied.

H.264 in yuv420p (what every player takes) needs even sides: an odd width or height is padded
by repeating the last column or row, and the summary says so. Frames stored sideways with a
display matrix (phones) are turned upright first, as photos are by EXIF. Frames of a size other
than the first (a mid-stream resolution change) are scaled to the first size. Untrusted files:
a file that is not a video, has no video stream, a frame with more pixels than ``--max-pixels``
(checked on the header and again on every decoded frame before it is converted to RGB: a stream
can change size mid-way, so one oversized frame skips the whole video, as a bomb photo is
skipped), a frame that cannot be converted to RGB, or a size or audio the encoders refuse, is
rejected with a reason; a packet that fails to decode is dropped and counted (its neighbours'
timestamps keep the timing), a read error ends the video early, and fewer frames than the
header promises are noted. Failures to write the output (a full disk, a read-only folder) are
not the file's fault: they propagate as OSError, and the run stops, as for photos.

Frames too small for optical flow (``cartoon.temporal.flow_fits``) get no flicker figure and no
temporal blend, and should the flow fail on a video anyway, that video is finished without
them; either way the summary says so.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
from rich.progress import Progress

from cartoon.artifacts import atomic_write
from cartoon.data.imageio import ImageRejected
from cartoon.data.video import FALLBACK_FPS
from cartoon.temporal import FLOW_SIDE, MIN_FLOW_SIDE, FlickerMeter, FlowEstimator, blend, flow_fits

#: x264 constant quality: 18 is close to visually lossless, so the cartoon's flat areas do not band.
CRF = "18"


class VideoRejected(ImageRejected):
    """A file that cannot be cartoonized as a video; ``reason`` as for images."""


@dataclass
class VideoResult:
    """What one video became: counts, the audio handling, notes, and the flicker figures."""

    frames: int = 0
    fps: Fraction = Fraction(0)
    audio: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    flicker_input: float | None = None
    flicker_output: float | None = None
    temporal: float | None = None

    def describe(self) -> str:
        audio = "; ".join(self.audio) or "no audio"
        line = f"{self.frames} frames at {float(self.fps):.6g} fps, H.264; {audio}"
        if self.flicker_output is not None:
            temporal = f"temporal {self.temporal:g}" if self.temporal else "no temporal"
            line += f"; flicker {self.flicker_output:.2f} (input {self.flicker_input:.2f}; {temporal})"
        return "; ".join([line, *self.notes])


def cartoonize_video(
    source: Path, target: Path, run: Callable[[np.ndarray], np.ndarray], max_pixels: int, temporal: float | None, bar: Progress, label: str
) -> VideoResult:
    """Cartoonize ``source`` into the MP4 ``target`` (written to a temp file, renamed when
    complete); ``temporal`` is the blend strength, None for none. Raises VideoRejected."""
    try:
        container = av.open(str(source), metadata_errors="ignore")
    except (av.FFmpegError, UnicodeDecodeError) as exc:
        raise VideoRejected(f"not a readable video ({_why(exc)})") from None
    with container:
        if not container.streams.video:
            raise VideoRejected("no video stream")
        video = container.streams.video[0]
        width, height = video.codec_context.width, video.codec_context.height
        if width * height > max_pixels:
            raise VideoRejected(f"too many pixels ({width} x {height} > {max_pixels})")
        if not width or not height:
            raise VideoRejected("no frame size in the video stream")
        result = VideoResult(temporal=temporal)
        turns = _quarter_turns(source)
        expected = _expected_frames(container)
        task = bar.add_task(f"frames of {label}", total=expected, status="")
        try:
            atomic_write(target, lambda tmp: _transcode(container, tmp, run, max_pixels, temporal, turns, result, lambda: bar.advance(task)))
        finally:
            bar.remove_task(task)
    if expected and result.frames < expected - 1:  # demuxers can stop at damage without an error
        result.notes.append(f"only {result.frames} of about {expected} frames could be decoded")
    return result


def _expected_frames(container: av.container.InputContainer) -> int | None:
    """The frame count the header promises: the stream's count, else its duration (or the
    file's) times the frame rate; None when the header says neither."""
    video = container.streams.video[0]
    rate = video.average_rate or video.guessed_rate
    if video.frames:
        return video.frames
    if rate and video.duration:
        return round(video.duration * video.time_base * rate)
    if rate and container.duration:
        return round(Fraction(container.duration, av.time_base) * rate)
    return None


def _transcode(
    container: av.container.InputContainer,
    tmp: Path,
    run: Callable[[np.ndarray], np.ndarray],
    max_pixels: int,
    temporal: float | None,
    turns: int,
    result: VideoResult,
    advance: Callable[[], None],
) -> None:
    video = container.streams.video[0]
    coded = video.codec_context.width, video.codec_context.height
    width, height = coded[::-1] if turns % 2 else coded  # upright
    if turns:
        result.notes.append(f"turned upright ({90 * turns} degrees counterclockwise, as its display matrix asks)")
    rate = video.average_rate or video.guessed_rate or Fraction(FALLBACK_FPS)
    time_base = video.time_base or 1 / rate
    result.fps = rate
    with av.open(str(tmp), "w", format="mp4") as output:
        encoder = output.add_stream("libx264", rate=rate, options={"crf": CRF})
        encoder.width, encoder.height, encoder.pix_fmt = width + width % 2, height + height % 2, "yuv420p"
        encoder.time_base = encoder.codec_context.time_base = time_base
        if width % 2 or height % 2:
            result.notes.append(f"padded {width}x{height} to {encoder.width}x{encoder.height} (H.264 yuv420p needs even sides)")
        audio = {stream.index: _audio_output(output, stream, result) for stream in container.streams.audio if _usable(stream, result)}
        _open_encoders([encoder, *(stream for stream, decoder in audio.values() if decoder is not None)])
        others = len(container.streams) - 1 - len(container.streams.audio)
        if others:
            result.notes.append(f"{others} other stream{'s' * (others > 1)} (subtitles, data, more video) not copied")
        flow, input_flicker, output_flicker = FlowEstimator(), FlickerMeter(), FlickerMeter()
        measure = flow_fits(height, width)
        if not measure:
            result.notes.append(f"no flicker figure{' or temporal blend' * bool(temporal)} ({width}x{height}: optical flow needs both sides of {MIN_FLOW_SIDE} px or more, the longer scaled to {FLOW_SIDE} at most)")
        previous: tuple[np.ndarray, np.ndarray] | None = None  # (input, output) of the last frame
        resized = 0
        for frame, pts in _video_frames(container, audio, output, result, time_base, rate):
            rgb = _rgb(frame, max_pixels, result.frames)
            if rgb.shape[1::-1] != coded:
                rgb, resized = cv2.resize(rgb, coded, interpolation=cv2.INTER_AREA), resized + 1
            rgb = np.ascontiguousarray(np.rot90(rgb, turns)) if turns else rgb
            cartoon = run(rgb)
            if previous is not None and measure:
                try:
                    motion = flow(previous[0], rgb)
                except cv2.error as exc:  # the flow only serves the figures and the blend: finish the video without them
                    measure, input_flicker, output_flicker = False, FlickerMeter(), FlickerMeter()
                    result.notes.append(f"no flicker figure (optical flow failed at frame {result.frames + 1}: {exc.err}){'; no temporal blend from there' * bool(temporal)}")
                else:
                    if temporal:
                        cartoon = blend(cartoon, previous[1], motion, temporal)
                    input_flicker.add(previous[0], rgb, motion)
                    output_flicker.add(previous[1], cartoon, motion)
            previous = rgb, cartoon
            padded = np.pad(cartoon, ((0, height % 2), (0, width % 2), (0, 0)), mode="edge")
            out = av.VideoFrame.from_ndarray(padded, format="rgb24")
            out.pts, out.time_base = pts, time_base
            output.mux(encoder.encode(out))
            result.frames += 1
            advance()
        if not result.frames:
            raise VideoRejected("no decodable video frame")
        output.mux(encoder.encode())
        for stream, decoder in audio.values():
            if decoder is not None:
                output.mux(stream.encode())
    if resized:
        result.notes.append(f"{resized} frames of another size scaled to {width}x{height}")
    result.flicker_input, result.flicker_output = input_flicker.value, output_flicker.value


def _rgb(frame: av.VideoFrame, max_pixels: int, index: int) -> np.ndarray:
    """``frame`` as HxWx3 RGB. Its size is checked against the cap first: the header gives only
    the first size, and a later frame of another size would otherwise be converted in full
    before being scaled down. Raises VideoRejected."""
    if frame.width * frame.height > max_pixels:
        raise VideoRejected(f"too many pixels in frame {index + 1} ({frame.width} x {frame.height} > {max_pixels})")
    try:
        return frame.to_ndarray(format="rgb24")
    except (av.FFmpegError, ValueError) as exc:  # a pixel format PyAV cannot convert
        raise VideoRejected(f"cannot convert frame {index + 1} to RGB ({_why(exc)})") from None


def _open_encoders(encoders: list[av.stream.Stream]) -> None:
    """Open the encoders now (PyAV would at the first frame), so a size or audio format they
    refuse rejects this video, while errors writing the file later are left to propagate."""
    for stream in encoders:
        try:
            stream.codec_context.open()
        except av.FFmpegError as exc:
            raise VideoRejected(f"{stream.codec_context.name} cannot encode this {stream.type} ({_why(exc)})") from None


def _quarter_turns(source: Path) -> int:
    """Counterclockwise quarter turns (0-3) that show ``source``'s frames upright (phones store
    portrait video sideways with a display matrix). The frames are turned before cartoonizing,
    as photos are by EXIF, so the model sees upright faces and the MP4 needs no matrix. The
    matrix comes with decoded frames, so the first frame is peeked in a separate read."""
    try:
        with av.open(str(source), metadata_errors="ignore") as container:
            for frame in container.decode(video=0):
                return round(frame.rotation / 90) % 4
    except (av.FFmpegError, ValueError):
        pass  # the main read reports what is wrong with the file
    return 0


def _audio_output(
    output: av.container.OutputContainer, stream: av.audio.AudioStream, result: VideoResult
) -> tuple[av.stream.Stream, av.audio.AudioStream | None]:
    """The output stream for one input audio stream, and the stream to decode (None: copy packets)."""
    codec = stream.codec_context.name
    if _mp4_takes(stream):
        result.audio.append(f"audio {codec} copied")
        return output.add_stream_from_template(stream), None
    result.audio.append(f"audio {codec} transcoded to AAC (MP4 does not take {codec})")
    encoder = output.add_stream("aac", rate=stream.rate)
    encoder.layout = av.AudioLayout(f"{stream.layout.nb_channels}c")  # the default order: unordered layouts fail AAC
    return encoder, stream


def _usable(stream: av.audio.AudioStream, result: VideoResult) -> bool:
    """An audio stream with a sample rate and channels; any other is dropped with a note (a
    damaged header), rather than failing the whole video."""
    if stream.rate and stream.layout.nb_channels:
        return True
    result.notes.append(f"audio stream {stream.index} dropped (no sample rate or channels in its header)")
    return False


def _mp4_takes(stream: av.audio.AudioStream) -> bool:
    """Whether the MP4 muxer accepts ``stream``'s packets as they are, asked of the muxer itself
    (some codecs it lists, like Vorbis, it refuses when the header is written)."""
    try:
        with av.open(io.BytesIO(), "w", format="mp4") as probe:
            probe.add_stream_from_template(stream)
            probe.start_encoding()
        return True
    except (ValueError, av.FFmpegError):
        return False


def _video_frames(
    container: av.container.InputContainer,
    audio: dict,
    output: av.container.OutputContainer,
    result: VideoResult,
    time_base: Fraction,
    rate: Fraction,
) -> Iterator[tuple[av.VideoFrame, int]]:
    """Decoded video frames with their output timestamps (``_Timestamps``), in order; audio
    packets met on the way are copied or transcoded into ``output``."""
    video = container.streams.video[0]
    timestamps = _Timestamps(max(1, round(1 / (rate * time_base))), by_index=container.format.name == "avi")
    broken = 0
    packets = container.demux(video, *(container.streams[index] for index in audio))
    while True:
        try:
            packet = next(packets)
        except StopIteration:
            break
        except av.FFmpegError as exc:
            result.notes.append(f"input ends early after {result.frames} frames ({_why(exc)})")
            break
        if packet.stream.type == "audio":
            broken += _audio_packet(packet, *audio[packet.stream.index], output)
            continue
        try:
            frames = packet.decode()
        except av.FFmpegError:
            broken += 1
            continue
        for frame in frames:
            yield frame, timestamps(frame)
    if broken:
        result.notes.append(f"{broken} undecodable packet{'s' * (broken > 1)} dropped")
    if timestamps.repaired:
        result.notes.append(f"{timestamps.repaired} missing or repeated timestamps replaced")


class _Timestamps:
    """Presentation timestamps for decoded frames, strictly increasing as the encoder needs.

    A frame keeps its own pts, except in AVI: that format stores no presentation times, and with
    B-frames FFmpeg hands out decode-order stamps (1, 4, 3, 5, 2, ...), so AVI frames, which run
    at the constant rate the format is built on, are stamped by their index. A stamp missing or
    not after the previous one becomes the previous plus one frame (``step`` ticks).
    """

    def __init__(self, step: int, by_index: bool) -> None:
        self.step, self.by_index = step, by_index
        self.count = self.repaired = 0
        self.last: int | None = None

    def __call__(self, frame: av.VideoFrame) -> int:
        stamp = self.count * self.step if self.by_index else frame.pts
        if stamp is None or (self.last is not None and stamp <= self.last):
            stamp = 0 if self.last is None else self.last + self.step
            self.repaired += 1
        self.count, self.last = self.count + 1, stamp
        return stamp


def _audio_packet(
    packet: av.Packet, stream: av.stream.Stream, decoder: av.audio.AudioStream | None, output: av.container.OutputContainer
) -> int:
    """Copy (or transcode) one audio packet into ``output``; 1 if it could not be decoded, else 0."""
    if decoder is None:
        if packet.dts is not None:  # the demuxer's empty flush packet has none
            packet.stream = stream
            output.mux(packet)
        return 0
    try:
        frames = packet.decode()
    except av.FFmpegError:
        return 1
    for frame in frames:
        output.mux(stream.encode(frame))
    return 0


def _why(exc: Exception) -> str:
    """FFmpeg's short reason, without the errno and file name PyAV adds."""
    return getattr(exc, "strerror", None) or type(exc).__name__
