"""`cartoon cartoonize`: photos of any size and videos (files, or folders searched recursively) to
cartoon PNGs and MP4s.

Inputs are untrusted: each photo is decoded by ``cartoon.data.imageio.decode_image`` (the rules
evaluate uses: pixel cap checked from the header, EXIF orientation, 16-bit, CMYK, palette), each
video by ``cartoon.cartoonize_video`` (same pixel cap per frame), and a file that cannot be used
is skipped with its reason instead of stopping the run. A failure to write an output (full
disk, read-only folder) is no fault of the file: it stops the run as a runtime failure. Output names come only from paths
relative to an input folder (or an input file's own name), and every target is checked to
resolve inside the output folder, so no name can write outside it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from rich.progress import Progress

from cartoon.data.imageio import IMAGE_SUFFIXES, ImageRejected, decode_image, write_png
from cartoon.data.video import VIDEO_SUFFIXES, is_video
from cartoon.errors import RuntimeFailure, UsageError
from cartoon.progress import console, progress
from cartoon.tiling import TiledCartoonizer, TileSettings


@dataclass(frozen=True)
class Job:
    """One photo or video to cartoonize: where it is, how reports name it, where its cartoon goes."""

    source: Path
    label: str
    target: Path

    @property
    def is_video(self) -> bool:
        return is_video(self.source)


@dataclass
class Summary:
    done: list[str] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    videos: list[tuple[str, str]] = field(default_factory=list)  # (label, what it became: frames, audio, flicker)


def plan_jobs(inputs: list[Path], out_dir: Path) -> list[Job]:
    """Every photo and video of ``inputs`` with its target: a folder's images and videos
    (recursively, by suffix) keep their path relative to that folder; a file keeps its name.
    Targets are ``.png`` for photos, ``.mp4`` for videos; when two inputs would share one
    (``a.jpg``, ``a.png``), the later keeps its full name (``a.jpg.png``)."""
    missing = [str(path) for path in inputs if not path.exists()]
    if missing:
        raise UsageError(f"input not found: {', '.join(missing)}")
    out_resolved = out_dir.resolve()
    found: list[tuple[Path, Path, str]] = []  # (source, path relative to the output folder, label)
    for path in inputs:
        if path.is_dir():
            for source in _inputs_below(path, skip=out_resolved):
                relative = source.relative_to(path)
                found.append((source, relative, str(path / relative)))
        else:
            found.append((path, Path(path.name), str(path)))
    jobs, taken = [], set()
    for source, relative, label in found:
        suffix = ".mp4" if is_video(source) else ".png"
        target, copy = relative.with_suffix(suffix), 1
        while target in taken:  # a.jpg beside a.png becomes a.jpg.png; a third clash a.jpg-2.png, ...
            target = relative.with_name(relative.name + (f"-{copy}" if copy > 1 else "") + suffix)
            copy += 1
        taken.add(target)
        jobs.append(Job(source, label, _inside(out_resolved, target)))
    return jobs


def _inputs_below(folder: Path, skip: Path) -> list[Path]:
    """Image and video files under ``folder`` by suffix, sorted; symlinked folders are not followed
    and the output folder (when it lies inside) is left out, so a rerun does not cartoonize its own outputs."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(name for name in dirs if Path(root, name).resolve() != skip)
        found += [Path(root, name) for name in files if Path(name).suffix.lower() in IMAGE_SUFFIXES + VIDEO_SUFFIXES]
    return sorted(found)


def _inside(out_dir: Path, relative: Path) -> Path:
    """The target, its folder resolved (a symlinked subfolder leading out is refused); a symlink
    at the target itself is replaced by the atomic write, never written through."""
    target = (out_dir / relative.parent).resolve() / relative.name
    if not target.is_relative_to(out_dir):
        raise UsageError(f"refusing to write {target}: outside the output folder {out_dir}")
    return target


def resolve_device(device: str) -> torch.device:
    """``auto`` picks CUDA when there is one; asking for CUDA without one is a usage error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available (use auto or cpu)")
    return torch.device(device)


def torch_cartoonizer(reference: str, settings: TileSettings, device: torch.device,
                      precision: str = "fp32") -> Callable[[np.ndarray], np.ndarray]:
    """The trained generator behind ``reference`` (folder or MLflow URI) with its method's
    inference step, tiled for any size, at ``precision`` (fp32, bf16, or auto: bf16 where it is fast)."""
    from cartoon.artifacts import load_cartoonizer
    from cartoon.engine import resolve_precision
    from cartoon.evaluate import resolve_model

    if reference.endswith(".onnx"):
        raise UsageError(f"{reference} is an ONNX file: run it with --backend onnx")
    model, config = load_cartoonizer(resolve_model(reference))
    bf16 = resolve_precision(precision, device, "--precision") == "bf16"
    console.print(f"cartoonize: {'bf16' if bf16 else 'fp32'} on {device}", markup=False)
    return TiledCartoonizer(model, config["size_multiple"], settings, device, bf16=bf16)


def cartoonize_files(jobs: list[Job], run: Callable[[np.ndarray], np.ndarray], max_pixels: int, temporal: float | None = None) -> Summary:
    """Cartoonize every job with ``run``; unusable files are skipped with a reason, a failed
    write stops the run (RuntimeFailure). Videos get a second progress bar counting their
    frames; ``temporal`` is their blend strength (None: off)."""
    summary = Summary()
    with progress() as bar:
        files = bar.add_task("cartoonize", total=len(jobs), status="")
        for job in jobs:
            try:
                if job.is_video:
                    summary.videos.append((job.label, _video(job, run, max_pixels, temporal, bar)))
                else:
                    write_png(job.target, run(_read_photo(job, max_pixels)))
                summary.done.append(job.label)
            except ImageRejected as exc:
                summary.skipped.append({"file": job.label, "reason": exc.reason})
            except OSError as exc:  # reading was checked above (a bad input is rejected): this is the output
                raise RuntimeFailure(f"cannot write {job.target} ({exc.strerror or exc}); stopped after {len(summary.done)} of {len(jobs)} files") from exc
            bar.advance(files)
    return summary


def _read_photo(job: Job, max_pixels: int) -> np.ndarray:
    """The decoded photo; a file that cannot be read is rejected like one that cannot be decoded
    (a failure to write the cartoon is not caught: it is no fault of the file)."""
    try:
        data = job.source.read_bytes()
    except OSError as exc:
        raise ImageRejected(f"cannot read ({exc.strerror or type(exc).__name__})") from None
    return decode_image(data, max_pixels)


def _video(job: Job, run: Callable[[np.ndarray], np.ndarray], max_pixels: int, temporal: float | None, bar: Progress) -> str:
    """Cartoonize one video (PyAV is imported only when there is one); its summary line."""
    from cartoon.cartoonize_video import cartoonize_video

    return cartoonize_video(job.source, job.target, run, max_pixels, temporal, bar, job.label).describe()


def report(summary: Summary, out_dir: Path) -> None:
    """Print what was done, each video's figures (frames, audio, flicker) and every skipped file
    with its reason; all skipped is a runtime failure."""
    console.print(f"cartoonize: {len(summary.done)} done, {len(summary.skipped)} skipped; outputs in {out_dir}", markup=False)
    for label, line in summary.videos:
        console.print(f"  video {label}: {line}", markup=False)
    for item in summary.skipped:
        console.print(f"  skipped {item['file']}: {item['reason']}", markup=False)
    if summary.skipped and not summary.done:
        raise RuntimeFailure(f"none of the {len(summary.skipped)} files could be cartoonized")
