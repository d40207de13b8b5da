"""Image stores: each image set as one uint8 ``N x H x W x 3`` array in NumPy's ``.npy`` format.

At 100k images DVC slows down on many small files and training spends its time decoding
JPEG/PNG. A store is two files however many images it holds: ``<set>.npy`` (C-order pixels,
memory-mapped and indexed by training without decoding or loading it whole) and
``<set>.names.txt`` (one name per line, row by row). The resize manifest stays the index of
record: it names each item's store and row. The two files are replaced as one unit, so a stage
that fails or is killed at any point leaves the previous store (or none) or the new one, never
half of one nor old names beside new pixels (see ``StoreWriter.commit``). Wherever a set is read,
a folder of image files is accepted too, for sets people pass by hand.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import numpy as np

from cartoon.data.imageio import create_temp, list_images, read_rgb, write_atomic
from cartoon.errors import RuntimeFailure, UsageError
from cartoon.progress import progress

STORE_SUFFIX = ".npy"
NAMES_SUFFIX = ".names.txt"
COPY_CHUNK_BYTES = 64 << 20  # reads and copies in slices of this size: bounded memory, few calls
MAP_CHUNK_BYTES = 1 << 20  # per-image work in smaller slices, so threads share it evenly


@dataclass(frozen=True)
class Images:
    """The names and pixels of an image set, row by row."""

    names: list[str]
    pixels: np.ndarray  # uint8 N x H x W x 3; a read-only np.memmap when read from a store


def is_store(path: Path) -> bool:
    return Path(path).suffix == STORE_SUFFIX


def names_path(path: Path) -> Path:
    """``photo/train.npy`` -> ``photo/train.names.txt``."""
    return Path(path).with_suffix(NAMES_SUFFIX)


def staged_path(path: Path) -> Path:
    """Where a commit puts a store file before it takes its place: ``photo/.train.npy.staged``."""
    path = Path(path)
    return path.with_name(f".{path.name}.staged")


def _store_files(path: Path) -> tuple[Path, Path]:
    """The (pixels, names) files that hold the store now. Staged names mean a writer was stopped
    after its commit point: the new store is then the staged files and, for any already renamed,
    the store's own (see ``StoreWriter.commit``)."""
    names = names_path(path)
    if not staged_path(names).is_file():
        return path, names
    pixels = staged_path(path)
    return (pixels if pixels.is_file() else path), staged_path(names)


def _settle(path: Path) -> None:
    """Finish a commit that was stopped after its commit point (rename the staged files into
    place), or drop one stopped before it (its staged pixels)."""
    pixels, names = staged_path(path), staged_path(names_path(path))
    if names.is_file():
        if pixels.is_file():
            os.replace(pixels, path)
        os.replace(names, names_path(path))
    else:
        pixels.unlink(missing_ok=True)


def row_chunks(pixels: np.ndarray, max_bytes: int = COPY_CHUNK_BYTES) -> Iterator[slice]:
    """Slices of whole rows of at most ``max_bytes`` (at least one row each)."""
    row_bytes = max(1, int(np.prod(pixels.shape[1:])) * pixels.itemsize)
    step = max(1, max_bytes // row_bytes)
    for start in range(0, len(pixels), step):
        yield slice(start, min(start + step, len(pixels)))


def _broken(path: Path, why: str) -> RuntimeFailure:
    return RuntimeFailure(f"image store {path} {why}; re-run the stage that wrote it")


def read_store(path: Path, label: str = "image") -> Images:
    """Memory-map a store read-only, after checking it: a missing store is a UsageError, one that
    is unreadable, of the wrong shape or type, or without matching names a RuntimeFailure."""
    path = Path(path)
    pixels_file, side = _store_files(path)
    if not pixels_file.is_file():
        raise UsageError(f"{label} store not found: {path}")
    try:
        with pixels_file.open("rb") as handle:
            np.lib.format.read_magic(handle)  # np.load would take any other file for a pickle
        pixels = np.load(pixels_file, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise _broken(path, f"is unreadable ({exc})") from None
    if pixels.dtype != np.uint8 or pixels.ndim != 4 or pixels.shape[3] != 3 or 0 in pixels.shape[1:3]:
        raise _broken(path, f"holds {pixels.dtype} of shape {pixels.shape}, not uint8 N x H x W x 3")
    if not pixels.flags.c_contiguous:
        raise _broken(path, "is in Fortran order, not row by row")
    extra = pixels_file.stat().st_size - pixels.offset - pixels.nbytes
    if extra:
        raise _broken(path, f"is {extra} bytes longer than its header says")
    try:
        names = side.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise _broken(path, f"has no readable names file {side} ({exc})") from None
    if len(names) != len(pixels):
        raise _broken(path, f"holds {len(pixels)} images but {side} lists {len(names)} names")
    unsafe = next((name for name in names if not name or name in (".", "..") or "/" in name or "\\" in name), None)
    if unsafe is not None:  # names become output file names (evaluate): none may leave its folder
        raise _broken(path, f"lists an unusable image name {unsafe!r} in {side}")
    return Images(names, pixels)


def open_images(path: Path, label: str = "image") -> Images:
    """An image set from a store (memory-mapped) or a folder of same-size images (decoded into memory)."""
    path = Path(path)
    if is_store(path):
        return read_store(path, label)
    if not path.is_dir():
        raise UsageError(f"{label} set not found: {path} (expected a {STORE_SUFFIX} image store or a folder of images)")
    files = list_images(path)
    try:
        arrays = [read_rgb(file) for file in files]
    except OSError as exc:
        raise RuntimeFailure(str(exc)) from None
    shapes = {array.shape for array in arrays}
    if len(shapes) > 1:
        raise RuntimeFailure(f"{label} images in {path} differ in size {sorted(shapes)}; run the resize stage")
    pixels = np.stack(arrays) if arrays else np.zeros((0, 0, 0, 3), np.uint8)
    return Images([file.stem for file in files], pixels)


class StoreWriter:
    """A new store of ``count`` images of ``height`` x ``width``, filled through ``pixels`` (a
    writable memmap of a temp file beside ``path``) and published by ``commit``. Leaving the
    ``with`` block without committing (an error) removes the temp file: no partial store. A
    commit that an earlier writer left unfinished (a kill) is settled first."""

    def __init__(self, path: Path, count: int, height: int, width: int) -> None:
        self.path = Path(path)
        if not is_store(self.path):
            raise UsageError(f"an image store's file name must end in {STORE_SUFFIX}: {self.path}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _settle(self.path)
        fd, tmp = create_temp(self.path.parent, prefix=f".{self.path.name}.")
        os.close(fd)
        self._tmp = Path(tmp)
        try:
            self.pixels = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(count, height, width, 3))
        except BaseException:
            self._tmp.unlink()
            raise

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None) -> None:
        self._tmp.unlink(missing_ok=True)  # gone already when committed

    def commit(self, names: Sequence[str]) -> None:
        """Publish the pixels with one name per row, both files as one unit.

        Two renames cannot happen at once, so the new files are first staged under fixed names:
        the pixels, then the names, whose arrival is the commit point. Only then do both take
        their places. A kill before the commit point leaves the old store (readers ignore staged
        pixels alone); after it, readers take the staged files that are left as the new store,
        and the next writer of the store finishes the renames.
        """
        if len(names) != len(self.pixels):
            raise ValueError(f"{len(names)} names for {len(self.pixels)} images")
        bad = [name for name in names if name.splitlines() != [name]]
        if bad:
            raise ValueError(f"image names must be single non-empty lines, got {bad[:3]}")
        self.pixels.flush()
        os.replace(self._tmp, staged_path(self.path))
        write_atomic(staged_path(names_path(self.path)), "".join(f"{name}\n" for name in names).encode())
        _settle(self.path)


def write_store(path: Path, names: Sequence[str], pixels: np.ndarray, rows: Sequence[int] | None = None) -> None:
    """Write ``pixels[rows]`` (all rows by default) as a store, slice by slice, so a memory-mapped
    source is never read whole."""
    picked = np.arange(len(pixels)) if rows is None else np.asarray(rows, dtype=np.int64)
    with StoreWriter(path, len(picked), *pixels.shape[1:3]) as writer:
        for part in row_chunks(writer.pixels):
            writer.pixels[part] = pixels[picked[part]]
        writer.commit(names)


def map_store(source: Path, out: Path, transform: Callable[[np.ndarray], np.ndarray], description: str) -> int:
    """Write ``transform(image)`` of every image of ``source`` (a store or a folder) to the store
    ``out``, keeping names and order; returns the count. OpenCV releases the GIL, so a few threads
    overlap the work, each on its own slice of rows."""
    source, out = Path(source), Path(out)
    if out.resolve() == source.resolve():
        raise UsageError(f"the output must differ from the input: {out}")
    images = open_images(source, "input")
    if not images.names:
        raise RuntimeFailure(f"no images in {source}")
    count, height, width = images.pixels.shape[:3]
    with StoreWriter(out, count, height, width) as writer, progress() as bar:
        task = bar.add_task(description, total=count, status="")

        def work(rows: slice) -> int:
            for index in range(rows.start, rows.stop):
                writer.pixels[index] = transform(np.asarray(images.pixels[index]))
            return rows.stop - rows.start

        with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
            for done in pool.map(work, row_chunks(images.pixels, MAP_CHUNK_BYTES)):
                bar.update(task, advance=done)
        writer.commit(images.names)
    return count
