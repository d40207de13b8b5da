"""Image stores: exact round trips, atomic writes, memory-mapped reads and clear errors on damage."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cartoon.data.imageio import write_png
from cartoon.data.store import (
    StoreWriter,
    map_store,
    names_path,
    open_images,
    read_store,
    row_chunks,
    staged_path,
    write_store,
)
from cartoon.errors import RuntimeFailure, UsageError

REPO = Path(__file__).resolve().parents[1]


def noise(count: int, height: int = 6, width: int = 5, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, height, width, 3), dtype=np.uint8)


def test_round_trip_is_exact_and_memory_mapped(tmp_path):
    pixels = noise(4)
    write_store(tmp_path / "set.npy", ["a", "b", "c", "d"], pixels)
    store = read_store(tmp_path / "set.npy")
    assert store.names == ["a", "b", "c", "d"]
    assert isinstance(store.pixels, np.memmap) and store.pixels.mode == "r"  # mapped, not loaded
    assert np.array_equal(store.pixels, pixels)
    assert (tmp_path / "set.names.txt").read_text() == "a\nb\nc\nd\n"
    assert np.array_equal(np.load(tmp_path / "set.npy", allow_pickle=False), pixels)  # plain .npy for any tool
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set.names.txt", "set.npy"]  # no temp file left


def test_picked_rows_are_copied_in_order(tmp_path):
    pixels = noise(5)
    write_store(tmp_path / "set.npy", ["x", "y"], pixels, rows=[3, 1])
    assert np.array_equal(read_store(tmp_path / "set.npy").pixels, pixels[[3, 1]])


def test_empty_store_is_valid(tmp_path):
    with StoreWriter(tmp_path / "faces.npy", 0, 8, 8) as writer:
        writer.commit([])
    store = read_store(tmp_path / "faces.npy")
    assert store.names == [] and store.pixels.shape == (0, 8, 8, 3)
    assert (tmp_path / "faces.names.txt").read_text() == ""


def test_failure_while_writing_leaves_the_previous_store_and_no_temp_file(tmp_path):
    write_store(tmp_path / "set.npy", ["old"], noise(1, seed=1))
    with pytest.raises(KeyError), StoreWriter(tmp_path / "set.npy", 3, 6, 5) as writer:
        writer.pixels[0] = 7
        raise KeyError("killed")
    assert read_store(tmp_path / "set.npy").names == ["old"]
    assert np.array_equal(read_store(tmp_path / "set.npy").pixels, noise(1, seed=1))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set.names.txt", "set.npy"]


#: Replaces a store with three new images and is killed (SIGKILL, no clean-up of any kind) when it
#: is about to make rename number argv[2]; past its last rename it finishes normally.
KILLED_WRITER = """
import os, signal, sys
import numpy as np
from cartoon.data.store import write_store

path, kill_at = sys.argv[1], int(sys.argv[2])
real_replace, renames = os.replace, []

def replace(source, target):
    if len(renames) == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
    real_replace(source, target)
    renames.append(target)

os.replace = replace
write_store(path, ["new-0", "new-1", "new-2"], np.full((3, 4, 4, 3), 2, np.uint8))
"""
OLD = (["old-0", "old-1", "old-2"], 1)
NEW = (["new-0", "new-1", "new-2"], 2)
RENAMES = 4  # pixels staged, names staged (the commit point), pixels and names into place


@pytest.mark.parametrize(("kill_at", "expected"), [(0, OLD), (1, OLD), (2, NEW), (3, NEW), (RENAMES, NEW)])
def test_a_writer_killed_at_any_rename_leaves_the_old_store_or_the_new(tmp_path, kill_at, expected):
    """Old and new stores have as many rows, so only the design (not the row count check) can
    keep old names from being read beside new pixels."""
    path = tmp_path / "set.npy"
    write_store(path, OLD[0], np.full((3, 4, 4, 3), OLD[1], np.uint8))
    run = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(path), str(kill_at)], cwd=REPO, capture_output=True)
    assert run.returncode == (0 if kill_at == RENAMES else -signal.SIGKILL), run.stderr.decode()

    store = read_store(path)
    assert (store.names, np.unique(store.pixels).tolist()) == (expected[0], [expected[1]])
    with StoreWriter(path, 1, 4, 4):  # the next writer settles what the killed one left, committing or not
        pass
    assert not staged_path(path).exists() and not staged_path(names_path(path)).exists()
    store = read_store(path)
    assert (store.names, np.unique(store.pixels).tolist()) == (expected[0], [expected[1]])


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_store_files_get_the_mode_of_any_new_file(tmp_path, umask):
    """Not mkstemp's 0600: a stage's outputs must be readable by the others who share the data."""
    previous = os.umask(umask)
    try:
        write_store(tmp_path / "set.npy", ["a"], noise(1))
    finally:
        os.umask(previous)
    for path in (tmp_path / "set.npy", tmp_path / "set.names.txt"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path.name


def test_failure_before_any_store_leaves_nothing(tmp_path):
    with pytest.raises(ValueError, match="2 names for 3 images"), StoreWriter(tmp_path / "set.npy", 3, 6, 5) as writer:
        writer.commit(["a", "b"])
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["", "two\nlines", "carriage\rreturn"])
def test_names_must_be_single_lines(tmp_path, name):
    with pytest.raises(ValueError, match="single non-empty lines"), StoreWriter(tmp_path / "s.npy", 1, 2, 2) as writer:
        writer.commit([name])


def test_store_name_must_end_in_npy(tmp_path):
    with pytest.raises(UsageError, match=r"must end in \.npy"):
        StoreWriter(tmp_path / "set.png", 1, 2, 2)


def test_missing_store_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="photos store not found: .*nowhere.npy"):
        read_store(tmp_path / "nowhere.npy", "photos")


def _damaged(tmp_path, data: bytes):
    write_store(tmp_path / "set.npy", ["a", "b", "c"], noise(3))
    (tmp_path / "set.npy").write_bytes(data)
    with pytest.raises(RuntimeFailure) as info:
        read_store(tmp_path / "set.npy")
    assert str(tmp_path / "set.npy") in str(info.value) and "re-run the stage" in str(info.value)
    return str(info.value)


def test_truncated_store_names_the_file(tmp_path):
    write_store(tmp_path / "full.npy", ["a", "b", "c"], noise(3))
    data = (tmp_path / "full.npy").read_bytes()
    assert "unreadable" in _damaged(tmp_path, data[: len(data) - 10])
    assert "unreadable" in _damaged(tmp_path, data[:40])  # cut inside the header
    assert "unreadable" in _damaged(tmp_path, b"")


def test_trailing_bytes_are_not_ignored(tmp_path):
    write_store(tmp_path / "full.npy", ["a", "b", "c"], noise(3))
    assert "7 bytes longer than its header says" in _damaged(tmp_path, (tmp_path / "full.npy").read_bytes() + b"1234567")


def test_other_files_are_not_taken_for_a_store(tmp_path):
    assert "magic string" in _damaged(tmp_path, b"\x80\x04 a pickle, or anything else")


def test_object_arrays_are_never_unpickled(tmp_path):
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    names_path(tmp_path / "objects.npy").write_text("a\n")
    with pytest.raises(RuntimeFailure, match="objects.npy"):
        read_store(tmp_path / "objects.npy")


@pytest.mark.parametrize(
    "array",
    [np.zeros((2, 4, 4, 3), np.float32), np.zeros((2, 4, 4), np.uint8), np.zeros((2, 4, 4, 4), np.uint8),
     np.zeros((2, 0, 4, 3), np.uint8), np.asfortranarray(np.zeros((2, 4, 4, 3), np.uint8))],
    ids=["float", "no-channels", "rgba", "no-height", "fortran"],
)  # fmt: skip
def test_wrong_shape_or_type_is_rejected(tmp_path, array):
    np.save(tmp_path / "set.npy", array)
    names_path(tmp_path / "set.npy").write_text("a\nb\n")
    with pytest.raises(RuntimeFailure, match=r"set\.npy (holds|is in Fortran)"):
        read_store(tmp_path / "set.npy")


def test_names_must_match_the_rows(tmp_path):
    write_store(tmp_path / "set.npy", ["a", "b", "c"], noise(3))
    names_path(tmp_path / "set.npy").write_text("a\nb\n")
    with pytest.raises(RuntimeFailure, match="holds 3 images but .*set.names.txt lists 2 names"):
        read_store(tmp_path / "set.npy")
    names_path(tmp_path / "set.npy").unlink()
    with pytest.raises(RuntimeFailure, match="no readable names file"):
        read_store(tmp_path / "set.npy")


@pytest.mark.parametrize("name", ["../../escape", "a/b", "..", "c\\d"])
def test_names_that_would_leave_a_folder_are_refused(tmp_path, name):
    """Store names become file names (evaluate's outputs): a hand-made store cannot escape."""
    write_store(tmp_path / "set.npy", ["a", "b"], noise(2))
    names_path(tmp_path / "set.npy").write_text(f"a\n{name}\n")
    with pytest.raises(RuntimeFailure, match="unusable image name"):
        read_store(tmp_path / "set.npy")


def test_folders_are_read_too(tmp_path):
    pixels = noise(2)
    write_png(tmp_path / "in" / "b.png", pixels[1])
    write_png(tmp_path / "in" / "a.png", pixels[0])
    (tmp_path / "in" / "notes.txt").write_text("not an image")
    images = open_images(tmp_path / "in")
    assert images.names == ["a", "b"] and np.array_equal(images.pixels, pixels)
    write_png(tmp_path / "in" / "c.png", noise(1, height=7)[0])
    with pytest.raises(RuntimeFailure, match="differ in size"):
        open_images(tmp_path / "in")
    with pytest.raises(UsageError, match="not found"):
        open_images(tmp_path / "nowhere")


def test_map_store_keeps_names_and_order(tmp_path):
    pixels = noise(40, seed=3)
    names = [f"n{i:02d}" for i in range(40)]
    write_store(tmp_path / "in.npy", names, pixels)
    assert map_store(tmp_path / "in.npy", tmp_path / "out.npy", lambda rgb: 255 - rgb, "invert") == 40
    out = read_store(tmp_path / "out.npy")
    assert out.names == names and np.array_equal(out.pixels, 255 - pixels)
    with pytest.raises(UsageError, match="must differ"):
        map_store(tmp_path / "in.npy", tmp_path / "in.npy", lambda rgb: rgb, "same")


def test_row_chunks_cover_every_row_once_within_the_size():
    pixels = np.zeros((10, 2, 2, 3), np.uint8)  # 12 bytes a row
    parts = list(row_chunks(pixels, max_bytes=30))
    assert [(p.start, p.stop) for p in parts] == [(0, 2), (2, 4), (4, 6), (6, 8), (8, 10)]
    assert [(p.start, p.stop) for p in row_chunks(pixels, max_bytes=1)][:2] == [(0, 1), (1, 2)]  # a row at least
    assert list(row_chunks(pixels[:0])) == []
