"""Archive members as bytes: exact data, hostile names and entry types refused, bombs cut off early."""

from __future__ import annotations

import gzip
import io
import random
import stat
import struct
import tarfile
import tracemalloc
import zipfile
from pathlib import Path

import pytest

from cartoon.data import archive as archive_module
from cartoon.data.archive import ARCHIVE_ROW, ArchiveError, Member, iter_members, safe_member_name

MIB = 1 << 20
UNSAFE = ["../evil.png", "/abs.png", "a/../../evil", "C:\\evil", "..\\evil", "", "a/.. /b", "x\ny.png"]
TAR_MODES = ["w", "w:gz", "w:bz2", "w:xz"]


def payload(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def write_zip(path: Path, entries: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", compression) as archive:
        for name, data in entries.items():
            archive.writestr(zipfile.ZipInfo(name), data, compress_type=compression)
    return path


def zip_headers(data: bytes | bytearray, name: str) -> tuple[int, int]:
    """Offsets of member ``name``'s local header and central-directory record, to forge them."""
    found = []
    for signature, name_at in ((b"PK\x03\x04", 30), (b"PK\x01\x02", 46)):
        start = data.find(signature)
        while data[start + name_at : start + name_at + len(name)] != name.encode():
            start = data.find(signature, start + 1)
        found.append(start)
    return found[0], found[1]


def add_tar_file(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))


def write_tar(path: Path, entries: dict[str, bytes], mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as archive:
        for name, data in entries.items():
            add_tar_file(archive, name, data)
    return path


def read_all(path: Path, member: int = MIB, total: int = 64 * MIB, count: int = 100) -> list[Member]:
    return list(iter_members(path, max_member_bytes=member, max_total_bytes=total, max_members=count))


def reasons(members: list[Member]) -> dict[str, str]:
    return {m.name: m.reason for m in members}


@pytest.mark.parametrize(
    "name, expected",
    [("a.png", "a.png"), ("dir/sub/a.png", "dir/sub/a.png"), ("./a//b/./c.png", "a/b/c.png"),
     ("dir\\a.png", "dir/a.png"), ("...png", "...png"), ("12:30.jpg", "12:30.jpg")]
    + [(bad, None) for bad in UNSAFE + ["/", ".", "./", "//server/share/x", "c:x.png", "a/C:/b", "...", "a" * 2000]],
)  # fmt: skip
def test_safe_member_name(name: str, expected: str | None) -> None:
    assert safe_member_name(name) == expected


def test_zip_members_exact_bytes_and_nested_names(tmp_path: Path) -> None:
    entries = {"top.png": payload(5000, 1), "dir/": b"", "dir/sub/": b"", "dir/sub/deep.jpg": payload(70_000, 2)}
    stored = {"empty.bin": b"", "raw.bin": payload(300, 3)}
    path = write_zip(tmp_path / "photos.tar.gz", entries)  # the suffix lies: the content decides
    with zipfile.ZipFile(path, "a", zipfile.ZIP_STORED) as archive:
        for name, data in stored.items():
            archive.writestr(name, data)
    members = read_all(path)
    assert [(m.name, m.data, m.reason) for m in members] == [
        ("top.png", entries["top.png"], ""),
        ("dir/sub/deep.jpg", entries["dir/sub/deep.jpg"], ""),
        ("empty.bin", b"", ""),
        ("raw.bin", stored["raw.bin"], ""),
    ]


@pytest.mark.parametrize("mode", TAR_MODES)
def test_tar_members_exact_bytes_and_nested_names(tmp_path: Path, mode: str) -> None:
    entries = {"top.png": payload(5000, 1), "./dir/sub/deep.jpg": payload(70_000, 2), "empty.bin": b""}
    path = tmp_path / "photos.zip"  # the suffix lies: the content decides
    with tarfile.open(path, mode) as archive:
        for folder in ("dir", "dir/sub"):
            info = tarfile.TarInfo(folder)
            info.type = tarfile.DIRTYPE
            archive.addfile(info)
        for name, data in entries.items():
            add_tar_file(archive, name, data)
    members = read_all(path)
    assert [(m.name, m.data, m.reason) for m in members] == [
        ("top.png", entries["top.png"], ""),
        ("dir/sub/deep.jpg", entries["./dir/sub/deep.jpg"], ""),
        ("empty.bin", b"", ""),
    ]


@pytest.mark.parametrize("kind", ["zip", "tar"])
def test_unsafe_names_are_refused_and_the_rest_read(tmp_path: Path, kind: str) -> None:
    entries = {name: b"bad" for name in UNSAFE} | {"fine.png": b"good"}
    if kind == "zip":
        path = write_zip(tmp_path / "a", entries)
    else:
        path = write_tar(tmp_path / "a", entries)
    members = read_all(path)
    assert [m.reason for m in members] == ["unsafe path"] * len(UNSAFE) + [""]
    assert [m.name for m in members] == [*UNSAFE, "fine.png"]  # refused names are shown as they were
    assert all(m.data is None for m in members[:-1]) and members[-1].data == b"good"


def test_tar_links_and_special_files_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "a.tar"
    with tarfile.open(path, "w") as archive:
        add_tar_file(archive, "good.png", b"good")
        kinds = {"sym.png": tarfile.SYMTYPE, "hard.png": tarfile.LNKTYPE, "fifo": tarfile.FIFOTYPE,
                 "tty": tarfile.CHRTYPE, "disk": tarfile.BLKTYPE}  # fmt: skip
        for name, kind in kinds.items():
            info = tarfile.TarInfo(name)
            info.type = kind
            info.linkname = "good.png" if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE) else ""
            archive.addfile(info)
        add_tar_file(archive, "after.png", b"after")
    assert reasons(read_all(path)) == {
        "good.png": "", "sym.png": "symlink", "hard.png": "hardlink", "fifo": "special file (fifo)",
        "tty": "special file (character device)", "disk": "special file (block device)", "after.png": "",
    }  # fmt: skip


def test_zip_symlink_special_encrypted_and_bzip2_members_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "a.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for name, mode in [("link.png", stat.S_IFLNK | 0o777), ("pipe", stat.S_IFIFO | 0o644)]:
            info = zipfile.ZipInfo(name)
            info.external_attr = mode << 16
            archive.writestr(info, b"good.png")
        archive.writestr("locked.png", b"not really encrypted")
        archive.writestr("packed.png", b"x" * 1000, compress_type=zipfile.ZIP_BZIP2)
        archive.writestr("good.png", b"good")
    data = bytearray(path.read_bytes())  # zipfile clears the encryption flag when writing, so set it here
    local, central = zip_headers(data, "locked.png")
    data[local + 6] |= 0x1
    data[central + 8] |= 0x1
    path.write_bytes(bytes(data))
    assert reasons(read_all(path)) == {
        "link.png": "symlink", "pipe": "special file (fifo)", "locked.png": "encrypted",
        "packed.png": "unsupported compression (method 12)", "good.png": "",
    }  # fmt: skip


def test_zip_bomb_is_cut_off_in_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "bomb.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("bomb.png", "w") as member:
            zeros = bytes(MIB)
            for _ in range(200):
                member.write(zeros)
        archive.writestr("after.png", b"after")
    assert path.stat().st_size < 2 * MIB
    tracemalloc.start()
    try:
        members = read_all(path, member=MIB, total=1024 * MIB)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [(m.name, m.data, m.reason) for m in members] == [
        ("bomb.png", None, f"too large (> {MIB} bytes)"),
        ("after.png", b"after", ""),
    ]
    assert peak < 20 * MIB


def test_tar_bomb_is_cut_off_without_decompressing_the_rest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # gzip members may be concatenated, so 200 MiB of zeros is one small member repeated
    bomb = tarfile.TarInfo("bomb.png")
    bomb.size = 200 * MIB
    path = tmp_path / "bomb.tar.gz"
    path.write_bytes(gzip.compress(bomb.tobuf()) + gzip.compress(bytes(MIB)) * 200 + gzip.compress(bytes(1024)))
    decompressed = []  # how far the gzip stream got: tarfile passes over a member by seeking through it

    class Watched(gzip.GzipFile):
        def close(self) -> None:
            if not self.closed:
                decompressed.append(self.tell())
            super().close()

    monkeypatch.setitem(archive_module._TAR_COMPRESSIONS, b"\x1f\x8b", ("gzip", lambda raw: Watched(fileobj=raw)))
    tracemalloc.start()
    try:
        members = read_all(path, member=MIB, total=8 * MIB)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [(m.name, m.reason) for m in members] == [
        ("bomb.png", f"too large (> {MIB} bytes)"),
        (ARCHIVE_ROW, f"total limit reached (> {8 * MIB} bytes)"),
    ]
    assert decompressed and decompressed[0] < 2 * MIB
    assert peak < 20 * MIB


@pytest.mark.parametrize("mode", ["w", "w:xz"])
def test_tar_member_over_the_cap_is_skipped_and_the_next_read(tmp_path: Path, mode: str) -> None:
    after = payload(2000, 5)
    path = write_tar(tmp_path / "a", {"big.png": bytes(3 * MIB), "after.png": after}, mode)
    members = read_all(path, member=MIB)
    assert [(m.name, m.data, m.reason) for m in members] == [
        ("big.png", None, f"too large (> {MIB} bytes)"),
        ("after.png", after, ""),
    ]


def test_zip_header_claiming_a_small_size_does_not_let_more_through(tmp_path: Path) -> None:
    after = payload(1000, 7)
    path = write_zip(tmp_path / "a.zip", {"liar.png": payload(3 * MIB, 6), "after.png": after}, zipfile.ZIP_STORED)
    data = bytearray(path.read_bytes())
    local, central = zip_headers(data, "liar.png")
    struct.pack_into("<L", data, local + 22, 100)  # uncompressed size in the local header
    struct.pack_into("<L", data, central + 24, 100)  # and in the central directory
    path.write_bytes(bytes(data))
    members = read_all(path, member=MIB)
    assert members[0].data is None
    assert members[0].reason.split(" (")[0] in ("corrupt member", "too large")
    assert (members[1].name, members[1].data) == ("after.png", after)


def test_zip_corrupt_member_is_refused_and_the_rest_read(tmp_path: Path) -> None:
    first, second = payload(4000, 8), payload(4000, 9)
    path = write_zip(tmp_path / "a.zip", {"first.png": first, "second.png": second}, zipfile.ZIP_STORED)
    data = bytearray(path.read_bytes())
    data[data.find(first) + 100] ^= 0xFF
    path.write_bytes(bytes(data))
    members = read_all(path)
    assert members[0].data is None and members[0].reason.startswith("corrupt member (BadZipFile: ")
    assert (members[1].name, members[1].data, members[1].reason) == ("second.png", second, "")


def test_zip_total_limit_refuses_every_later_member(tmp_path: Path) -> None:
    entries = {f"{i}.png": payload(400_000, i) for i in range(4)}
    members = read_all(write_zip(tmp_path / "a.zip", entries), member=MIB, total=1_000_000)
    assert [m.data for m in members[:2]] == [entries["0.png"], entries["1.png"]]
    assert [(m.name, m.data, m.reason) for m in members[2:]] == [
        (name, None, "total limit reached (> 1000000 bytes)") for name in ("2.png", "3.png")
    ]


def test_tar_total_limit_stops_the_stream(tmp_path: Path) -> None:
    entries = {f"{i}.png": payload(400_000, i) for i in range(4)}
    members = read_all(write_tar(tmp_path / "a.tgz", entries), member=MIB, total=1_000_000)
    assert [m.data for m in members[:2]] == [entries["0.png"], entries["1.png"]]
    assert [(m.name, m.data, m.reason) for m in members[2:]] == [
        ("2.png", None, "total limit reached (> 1000000 bytes)")
    ]


def test_tar_member_limit_ends_with_one_archive_row(tmp_path: Path) -> None:
    entries = {f"{i}.png": bytes([i]) for i in range(50)}
    path = write_tar(tmp_path / "a", entries)
    members = read_all(path, count=3)
    assert [(m.name, m.data, m.reason) for m in members] == [
        ("0.png", b"\x00", ""), ("1.png", b"\x01", ""), ("2.png", b"\x02", ""),
        (ARCHIVE_ROW, None, "member limit reached (3)"),
    ]  # fmt: skip
    assert len(read_all(path, count=50)) == 50  # exactly at the limit: no archive row


END = struct.Struct("<4s4H2LH")


def with_zip64_end(data: bytes, declared: int | None = None) -> bytes:
    """The zip with the zip64 end records zipfile writes past 65,535 entries, declaring
    ``declared`` entries (default: the true count), and the classic end record saying "see zip64"."""
    at = data.rfind(b"PK\x05\x06")
    _, _, _, _, count, size, offset, _ = END.unpack_from(data, at)
    count = count if declared is None else declared
    record = struct.pack("<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, count, count, size, offset)
    locator = struct.pack("<4sLQL", b"PK\x06\x07", 0, at, 1)
    return data[:at] + record + locator + END.pack(b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)


def declaring(data: bytes, count: int) -> bytes:
    """The zip with its end record declaring ``count`` entries, whatever its directory holds."""
    at = data.rfind(b"PK\x05\x06")
    fields = list(END.unpack_from(data, at))
    fields[3] = fields[4] = count
    return data[:at] + END.pack(*fields) + data[at + END.size :]


def with_comment(data: bytes, comment: bytes = b"made for a test") -> bytes:
    """The zip with an archive comment after its end record, so that the record must be searched for."""
    return data[:-2] + struct.pack("<H", len(comment)) + comment


def forbid_zipfile(monkeypatch: pytest.MonkeyPatch) -> None:
    """From now on zipfile may not open an archive: the member limit must be applied before it parses one."""

    def refuse(*args, **kwargs):
        raise AssertionError("zipfile.ZipFile was called for an archive over the member limit")

    monkeypatch.setattr(archive_module.zipfile, "ZipFile", refuse)


def fifty_member_zip(tmp_path: Path) -> bytes:
    return write_zip(tmp_path / "made.zip", {f"{i}.png": bytes([i]) for i in range(50)}).read_bytes()


@pytest.mark.parametrize(
    "forge",
    [lambda data: data, with_comment, lambda data: declaring(data, 2), with_zip64_end, lambda data: with_zip64_end(data, 2)],
    ids=["declared", "commented", "end-record-lies", "zip64", "zip64-lies"],
)  # fmt: skip
def test_zip_over_the_member_limit_is_refused_before_zipfile_parses_it(tmp_path: Path, forge, monkeypatch) -> None:
    """A count that the end record declares, or the records the directory really holds when the
    count lies (zipfile parses them all): either way, more than the limit refuses the archive."""
    path = tmp_path / "a.zip"
    path.write_bytes(forge(fifty_member_zip(tmp_path)))
    forbid_zipfile(monkeypatch)
    with pytest.raises(ArchiveError, match="more than 3 members"):
        read_all(path, count=3)


def test_zip64_count_is_read_without_counting_the_directory(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "a.zip"
    path.write_bytes(with_zip64_end(fifty_member_zip(tmp_path), declared=10**12))
    forbid_zipfile(monkeypatch)
    with pytest.raises(ArchiveError, match="more than 200000 members"):
        read_all(path, count=200_000)


@pytest.mark.parametrize(
    "forge", [lambda data: data, with_comment, with_zip64_end, lambda data: with_comment(with_zip64_end(data))],
    ids=["plain", "commented", "zip64", "zip64-commented"],
)  # fmt: skip
def test_zip_at_the_member_limit_is_read_whole(tmp_path: Path, forge) -> None:
    path = tmp_path / "a.zip"
    path.write_bytes(forge(fifty_member_zip(tmp_path)))
    members = read_all(path, count=50)
    assert [(m.name, m.data) for m in members] == [(f"{i}.png", bytes([i])) for i in range(50)]


def test_oversized_tar_header_stops_reading(tmp_path: Path) -> None:
    path = tmp_path / "a.tar"
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as archive:
        add_tar_file(archive, "good.png", b"good")
        huge = tarfile.TarInfo("huge.png")
        huge.pax_headers = {"comment": "x" * (2 * MIB)}
        archive.addfile(huge, io.BytesIO(b""))
    members = read_all(path)
    assert [(m.name, m.reason) for m in members] == [
        ("good.png", ""),
        (ARCHIVE_ROW, f"oversized header (> {MIB} bytes)"),
    ]


@pytest.mark.parametrize(
    "content",
    [b"", payload(5000, 10), b"\x89PNG\r\n\x1a\n" + payload(600, 11), gzip.compress(b"plain text, not a tar" * 50),
     b"PK\x03\x04" + payload(600, 12), b"BZh9" + payload(600, 13)],
    ids=["empty", "random", "png", "gzip-text", "zip-magic-only", "bzip2-magic-only"],
)  # fmt: skip
def test_not_an_archive_raises(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "a.zip"
    path.write_bytes(content)
    with pytest.raises(ArchiveError):
        read_all(path)


def test_missing_file_raises(tmp_path: Path) -> None:
    with pytest.raises(ArchiveError, match="unreadable"):
        read_all(tmp_path / "missing.zip")


@pytest.mark.parametrize("kind", ["zip", "tar"])
def test_truncated_archive_raises(tmp_path: Path, kind: str) -> None:
    entries = {"a.png": payload(5000, 14), "b.png": payload(5000, 15)}
    path = write_zip(tmp_path / "a", entries) if kind == "zip" else write_tar(tmp_path / "a", entries, "w")
    keep = len(path.read_bytes()) - 200 if kind == "zip" else 300  # zip: no central directory; tar: half a header
    path.write_bytes(path.read_bytes()[:keep])
    with pytest.raises(ArchiveError):
        read_all(path)


def test_tar_truncated_after_its_first_member_keeps_what_came_before(tmp_path: Path) -> None:
    first = payload(5000, 16)
    path = write_tar(tmp_path / "a.tar", {"a.png": first, "b.png": payload(5000, 17)}, "w")
    path.write_bytes(path.read_bytes()[: 512 + 5120 + 512 + 1000])  # into the second member's data
    members = read_all(path)
    assert (members[0].name, members[0].data) == ("a.png", first)
    assert members[1].data is None and members[1].reason.startswith("corrupt member (ReadError: ")
    assert all(m.data is None for m in members[1:])
