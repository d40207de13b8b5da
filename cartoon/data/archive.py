"""Reading the members of an untrusted zip or tar archive as bytes, for the crawl's ``archive`` source.

Nothing is extracted: the crawl stores images content-addressed, so a member's name is only a label.
Names are still checked as if they were paths, so that no consumer is ever handed one that escapes
a folder. Every limit counts bytes actually decompressed, never the sizes that headers claim.
"""

from __future__ import annotations

import bz2
import gzip
import itertools
import lzma
import re
import stat
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import IO

#: The name of the row that stands for the rest of an archive when reading stops early.
ARCHIVE_ROW = "<archive>"
_CHUNK = 64 * 1024
#: tarfile reads a pax or GNU long-name header in one piece, whatever size it claims.
_MAX_HEADER_BYTES = 1 << 20
_MAX_NAME_CHARS = 1024
_DRIVE = re.compile(r"[A-Za-z]:")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
#: The zip records read before zipfile is let near an archive (APPNOTE 4.3.12-4.3.16).
_END = struct.Struct("<4s4H2LH")  # signature, disks, entries on this disk, entries, directory size, offset, comment length
_END64_LOCATOR = struct.Struct("<4sLQL")
_END64 = struct.Struct("<4sQ2H2L4Q")  # ..., entries on this disk, entries, directory size, offset
_CENTRAL_HEADER_SIZE = 46  # then the name, extra field and comment, whose lengths sit at offset 28
_END_SEARCH = (1 << 16) + _END.size  # how far from the end zipfile looks for the end record
_TAR_COMPRESSIONS: dict[bytes, tuple[str, Callable[[IO[bytes]], IO[bytes]]]] = {
    b"\x1f\x8b": ("gzip", gzip.open),
    b"BZh": ("bzip2", bz2.open),
    b"\xfd7zXZ\x00": ("xz", lzma.open),
}
#: zipfile inflates bzip2 and lzma members without an output bound: a few kilobytes of bzip2 can
#: become gigabytes in one call, so only stored and deflated members are read.
_ZIP_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)
_ZIP_SPECIAL = {
    stat.S_IFCHR: "character device", stat.S_IFBLK: "block device",
    stat.S_IFIFO: "fifo", stat.S_IFSOCK: "socket",
}  # fmt: skip
_TAR_SPECIAL = {tarfile.CHRTYPE: "character device", tarfile.BLKTYPE: "block device", tarfile.FIFOTYPE: "fifo"}
_CORRUPT = (
    tarfile.TarError, zipfile.BadZipFile, OSError, EOFError, ValueError, struct.error, zlib.error, lzma.LZMAError,
)  # fmt: skip


class ArchiveError(Exception):
    """The whole archive is unusable; raised before its first member is yielded, or not at all."""


@dataclass(frozen=True)
class Member:
    """One archive entry: ``data`` holds its bytes, or is None when ``reason`` says why it was refused."""

    name: str
    data: bytes | None
    reason: str


@dataclass(frozen=True)
class _Limits:
    member: int
    total: int
    count: int

    @property
    def total_reason(self) -> str:
        return f"total limit reached (> {self.total} bytes)"


class _Stop(Exception):
    """Reading on would break a limit; ``reason`` says which."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def safe_member_name(name: str) -> str | None:
    """The name as a relative POSIX path, or None if it could escape a target folder.

    Backslashes count as separators (archives made on Windows use them), "." and empty components
    are dropped, and a component that is a drive (``C:``) or only dots and spaces other than "."
    is refused: Windows trims trailing dots and spaces, so ``.. `` would become ``..``. Control
    characters are refused too, since names end up in logs and the manifest.
    """
    if not name or len(name) > _MAX_NAME_CHARS or _CONTROL.search(name):
        return None
    path = name.replace("\\", "/")
    if path.startswith("/"):
        return None
    parts = [part for part in path.split("/") if part not in ("", ".")]
    if not parts or any(not part.strip(". ") or _DRIVE.match(part) for part in parts):
        return None
    return "/".join(parts)


def iter_members(path: Path, *, max_member_bytes: int, max_total_bytes: int, max_members: int) -> Iterator[Member]:
    """One Member per regular file in the zip or tar archive at ``path``, in archive order.

    The format comes from the content, not the suffix. Directories are skipped; every other refused
    entry is a Member with a reason and reading goes on. ``max_members`` counts every entry,
    directories included (each costs parsing): a zip with more is refused whole (ArchiveError)
    before zipfile parses its central directory; a tar is read as a stream, so past the limit one
    ``ARCHIVE_ROW`` Member ends the iteration. ``max_total_bytes`` bounds decompression: in a zip
    it counts the bytes read from members, and once past it every later member is refused unread;
    a tar is one stream, so there it counts the stream (headers and passed-over members too) and
    reading stops where it would go past.
    """
    limits = _Limits(max_member_bytes, max_total_bytes, max_members)
    try:
        file = path.open("rb")
    except OSError as exc:
        raise ArchiveError(f"unreadable ({_describe(exc)})") from None
    with file:
        try:
            head = file.read(512)
            file.seek(0)
        except OSError as exc:
            raise ArchiveError(f"unreadable ({_describe(exc)})") from None
        if head.startswith(_ZIP_MAGIC):
            yield from _zip_members(file, limits)
        else:
            yield from _tar_members(file, head, limits)


def _zip_members(file: IO[bytes], limits: _Limits) -> Iterator[Member]:
    try:
        if _zip_entries_over(file, limits.count):
            raise ArchiveError(f"more than {limits.count} members")
        archive = zipfile.ZipFile(file)
    except _CORRUPT as exc:
        raise ArchiveError(f"corrupt zip ({_describe(exc)})") from None
    total = 0
    with archive:
        for info in archive.infolist():
            mode = info.external_attr >> 16
            if info.filename.endswith("/") or stat.S_ISDIR(mode):  # ZipInfo.is_dir() fails on an empty name
                continue
            name = safe_member_name(info.filename)
            reason = "unsafe path" if name is None else _zip_refusal(info, mode)
            if not reason and total > limits.total:
                reason = limits.total_reason
            if reason:
                yield Member(name or info.filename[:_MAX_NAME_CHARS], None, reason)
                continue
            budget = min(limits.member, limits.total - total)
            data, size, reason = _read_at_most(lambda info=info: archive.open(info), budget + 1)
            total += size
            yield _judged(name, data, reason, budget, limits)


def _zip_entries_over(file: IO[bytes], cap: int) -> bool:
    """Whether the zip has more than ``cap`` entries, found without zipfile, which would first
    parse its whole central directory (a ZipInfo per entry, whatever their number).

    The count the end record declares is checked first. It can lie, and zipfile parses entries
    until the directory's declared size is used up, so the entries are then counted the same way,
    stopping past ``cap``. An archive whose records are missing is left to zipfile to refuse.
    """
    found = _zip_directory(file)
    if found is None:
        return False
    entries, start, size = found
    if entries > cap:
        return True
    used = count = 0
    while used < size and count <= cap:
        file.seek(start + used)
        header = file.read(_CENTRAL_HEADER_SIZE)
        if len(header) < _CENTRAL_HEADER_SIZE or not header.startswith(b"PK\x01\x02"):
            break  # zipfile stops here too, refusing the archive
        used += _CENTRAL_HEADER_SIZE + sum(struct.unpack_from("<3H", header, 28))
        count += 1
    return count > cap


def _zip_directory(file: IO[bytes]) -> tuple[int, int, int] | None:
    """(declared entries, start, size) of the central directory, from the end record and the
    zip64 one if it is there, each looked for where zipfile looks: the end record at the very end,
    else the last one in the final 64 KiB (a comment may follow it); the zip64 record right before
    it, behind its locator. The directory ends where those records begin."""
    file.seek(0, 2)
    tail_start = max(0, file.tell() - _END_SEARCH)
    file.seek(tail_start)
    tail = file.read()
    if tail[-_END.size :].startswith(b"PK\x05\x06") and tail.endswith(b"\0\0"):
        end_at = len(tail) - _END.size
    else:
        end_at = tail.rfind(b"PK\x05\x06")
    if end_at < 0 or len(tail) - end_at < _END.size:
        return None
    _, _, _, _, entries, size, _, _ = _END.unpack_from(tail, end_at)
    directory_end = tail_start + end_at
    zip64_at = directory_end - _END64_LOCATOR.size - _END64.size
    if zip64_at >= 0:
        file.seek(zip64_at)
        records = file.read(_END64.size + _END64_LOCATOR.size)
        if records.startswith(b"PK\x06\x06") and records[_END64.size :].startswith(b"PK\x06\x07"):
            _, _, _, _, _, _, _, entries, size, _ = _END64.unpack_from(records)
            directory_end = zip64_at
    if directory_end < size:
        return None  # a directory before the file's start: zipfile calls it a bad offset
    return entries, directory_end - size, size


def _zip_refusal(info: zipfile.ZipInfo, mode: int) -> str:
    """Why a non-directory zip entry is refused before reading, or "" for a plain file."""
    kind = stat.S_IFMT(mode)
    if kind == stat.S_IFLNK:
        return "symlink"
    if kind in _ZIP_SPECIAL:
        return f"special file ({_ZIP_SPECIAL[kind]})"
    if info.flag_bits & 0x1:
        return "encrypted"
    if info.compress_type not in _ZIP_METHODS:
        return f"unsupported compression (method {info.compress_type})"
    return ""


def _tar_members(file: IO[bytes], head: bytes, limits: _Limits) -> Iterator[Member]:
    compression, opener = next(
        (found for magic, found in _TAR_COMPRESSIONS.items() if head.startswith(magic)), ("", None)
    )
    with opener(file) if opener else nullcontext(file) as source:
        try:
            tar = tarfile.open(fileobj=_TarStream(source, limits), mode="r:", encoding="utf-8", errors="replace")
        except _Stop as exc:
            raise ArchiveError(exc.reason) from None
        except _CORRUPT as exc:
            what = f"corrupt tar in {compression}" if compression else "not a zip or tar archive"
            raise ArchiveError(f"{what} ({_describe(exc)})") from None
        with tar:
            for count in itertools.count(1):
                try:
                    member = tar.next()
                except _Stop as exc:
                    yield Member(ARCHIVE_ROW, None, exc.reason)
                    return
                except _CORRUPT as exc:
                    yield Member(ARCHIVE_ROW, None, f"corrupt archive ({_describe(exc)})")
                    return
                if member is None:
                    return
                if count > limits.count:
                    yield Member(ARCHIVE_ROW, None, f"member limit reached ({limits.count})")
                    return
                if member.isdir():
                    continue
                name = safe_member_name(member.name)
                reason = "unsafe path" if name is None else _tar_refusal(member)
                if reason:
                    yield Member(name or member.name[:_MAX_NAME_CHARS], None, reason)
                    continue
                try:
                    data, _, reason = _read_at_most(lambda member=member: tar.extractfile(member), limits.member + 1)
                except _Stop as exc:
                    yield Member(name, None, exc.reason)
                    return
                yield _judged(name, data, reason, limits.member, limits)


def _tar_refusal(member: tarfile.TarInfo) -> str:
    """Why a non-directory tar entry is refused before reading, or "" for a plain file."""
    if member.issym():
        return "symlink"
    if member.islnk():
        return "hardlink"
    if member.issparse():  # its holes would expand without passing through the counted stream
        return "sparse file"
    if member.isreg():
        return ""
    return f"special file ({_TAR_SPECIAL.get(member.type) or 'type ' + member.type.decode('latin-1')})"


class _TarStream:
    """The stream tarfile reads: no single read may be huge and no position may pass the total limit.

    tarfile reads extended headers in one piece and passes over members by seeking, which in a
    compressed stream means decompressing them; both happen inside tarfile, so they are bounded here.
    """

    def __init__(self, stream: IO[bytes], limits: _Limits) -> None:
        self._stream = stream
        self._limits = limits

    def tell(self) -> int:
        return self._stream.tell()

    def seek(self, offset: int) -> int:
        if offset > self._limits.total:
            raise _Stop(self._limits.total_reason)
        return self._stream.seek(offset)

    def read(self, size: int) -> bytes:
        if size > _MAX_HEADER_BYTES:
            raise _Stop(f"oversized header (> {_MAX_HEADER_BYTES} bytes)")
        if self._stream.tell() + size > self._limits.total:
            raise _Stop(self._limits.total_reason)
        return self._stream.read(size)


def _read_at_most(opener: Callable[[], IO[bytes] | None], limit: int) -> tuple[bytes, int, str]:
    """(data, bytes read, "" or why reading failed), reading at most ``limit`` bytes in chunks.

    The count is returned even on failure: a corrupt member's bytes were decompressed all the same.
    """
    chunks: list[bytes] = []
    size = 0
    try:
        with opener() as stream:
            while size < limit and (chunk := stream.read(min(_CHUNK, limit - size))):
                chunks.append(chunk)
                size += len(chunk)
    except NotImplementedError as exc:  # zipfile: patched data, strong encryption
        return b"", size, f"unsupported member ({exc})"
    except _CORRUPT as exc:
        return b"", size, f"corrupt member ({_describe(exc)})"
    return b"".join(chunks), size, ""


def _judged(name: str, data: bytes, reason: str, budget: int, limits: _Limits) -> Member:
    """The Member for bytes read with a cap of ``budget`` + 1: one byte over means there was more."""
    if reason:
        return Member(name, None, reason)
    if len(data) > limits.member:
        return Member(name, None, f"too large (> {limits.member} bytes)")
    if len(data) > budget:
        return Member(name, None, limits.total_reason)
    return Member(name, data, "")


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
