"""The ``crawl`` stage: gather raw images from the sources file into a content-addressed store.

Every item (generated, local file or URL) is validated by decoding it as untrusted input; bad ones
become ``rejected`` rows with a reason instead of errors, exact copies within a domain become
``duplicate`` rows, and good ones are stored byte for byte as
``images/<domain>/<sha256[:16]><ext>``. ``manifest.csv`` has one row per item seen, sorted so that
a rerun over the same inputs writes the same file.
"""

from __future__ import annotations

import itertools
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import cv2
import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cartoon.data.dedupe import hamming, near_duplicates, perceptual_hash
from cartoon.data.http import HttpCache, HttpClient, Rejected, check_url
from cartoon.data.imageio import FORMAT_SUFFIXES, ImageRejected, decode_image_with_format, sha256_bytes, write_atomic
from cartoon.data.video import VIDEO_SUFFIXES, VideoError, extract_frames
from cartoon.errors import UsageError
from cartoon.params import CrawlParams, read_yaml
from cartoon.progress import console, progress

MANIFEST_COLUMNS = [
    "item_id", "domain", "source", "kind", "origin", "licence",
    "sha256", "phash", "width", "height", "status", "reason", "path",
]  # fmt: skip
#: Domains deduplicated together, the first one winning: a face photo that copies a held-out
#: photo would otherwise leak it into training.
DEDUPE_GROUPS = {"photo": ("photo", 0), "face_photo": ("photo", 1), "cartoon": ("cartoon", 0), "face_cartoon": ("cartoon", 1),
                 "reference": ("reference", 0)}  # fmt: skip
CACHE_DIR = ".http-cache"  # inside the output folder; .dvcignore keeps it out of DVC's hashes


# ---------------------------------------------------------------- sources file


class _SourceBase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = None
    domain: Literal["photo", "cartoon", "face_photo", "face_cartoon", "reference"]
    licence: str = ""


def _http_urls(urls: list[str]) -> list[str]:
    for url in urls:
        check_url(url)
    return [url.strip() for url in urls]


class BuiltinSource(_SourceBase):
    kind: Literal["builtin"]
    count: int = Field(48, ge=1, le=10_000)
    size: int = Field(160, ge=16, le=4096)
    seed: int = 0
    photos: tuple[str, ...] | None = Field(None, min_length=1, description="bundled photographs to crop (default: the domain's own)")
    style: Literal["celshade", "scenes", "clear", "haze"] | None = Field(
        None, description="how crops are rendered: cartoons celshade (default), scenes, clear or haze; photos and references clear (default) or haze"
    )
    haze: Literal["thin", "dense"] | None = Field(None, description="with style haze: RESIDE-like thin (default) or O-HAZE-like dense haze")

    @field_validator("photos")
    @classmethod
    def _known_photos(cls, photos: tuple[str, ...] | None) -> tuple[str, ...] | None:
        from cartoon.data.builtin import builtin_photo_names

        unknown = [name for name in photos or () if name not in builtin_photo_names()]
        if unknown:
            raise ValueError(f"unknown bundled photo {unknown[0]!r} (known: {', '.join(builtin_photo_names())})")
        return photos

    @model_validator(mode="after")
    def _style_fits(self) -> BuiltinSource:
        if self.style is not None:
            from cartoon.data.builtin import STYLES

            styles = STYLES[self.domain]
            if self.style not in styles:
                raise ValueError(f"style {self.style!r} does not apply to the {self.domain} domain"
                                 + (f" (use {' or '.join(styles)})" if styles else ""))  # fmt: skip
        if self.haze is not None and self.style != "haze":
            raise ValueError("haze applies with style: haze only")
        return self


class LocalSource(_SourceBase):
    kind: Literal["local"]
    path: Path
    recursive: bool = True


class UrlsSource(_SourceBase):
    kind: Literal["urls"]
    urls: list[str] = []
    url_file: Path | None = None

    _http_only = field_validator("urls")(_http_urls)

    @model_validator(mode="after")
    def _some_urls(self) -> UrlsSource:
        if not self.urls and self.url_file is None:
            raise ValueError("give urls, url_file or both")
        return self


class HtmlSource(_SourceBase):
    kind: Literal["html"]
    start_urls: list[str] = Field(min_length=1)
    max_depth: int = Field(1, ge=0, le=10)
    same_host: bool = True
    max_pages: int = Field(100, ge=1)
    max_images: int = Field(10_000, ge=1)

    _http_only = field_validator("start_urls")(_http_urls)


class VideoSource(_SourceBase):
    kind: Literal["video"]
    path: Path  # a video file, or a folder of them
    recursive: bool = True
    mode: Literal["scene", "interval"] = "scene"
    every_s: float = Field(2.0, gt=0)
    scene_threshold: float = Field(0.12, gt=0, le=1)
    min_scene_s: float = Field(0.5, ge=0)
    crop_letterbox: bool = True
    black_level: int = Field(24, ge=0, le=255)
    min_std: float = Field(6.0, ge=0)
    duplicate_threshold: float = Field(0.04, ge=0, le=1)
    max_frames: int | None = Field(None, ge=1)  # per video


class ArchiveSource(_SourceBase):
    kind: Literal["archive"]
    path: Path | None = None
    url: str | None = None

    @model_validator(mode="after")
    def _one_place(self) -> ArchiveSource:
        if (self.path is None) == (self.url is None):
            raise ValueError("give exactly one of path and url")
        if self.url is not None:
            check_url(self.url)
        return self


AnySource = BuiltinSource | LocalSource | UrlsSource | HtmlSource | VideoSource | ArchiveSource
Source = Annotated[AnySource, Field(discriminator="kind")]


class SourcesFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    sources: list[Source] = Field(min_length=1)


@dataclass(frozen=True)
class _Where:
    """Where one item comes from: all that its manifest row needs."""

    index: int  # position of its source in the sources file, for sorting
    position: int  # position within its source, in listing order
    source: str
    kind: str
    domain: str
    licence: str
    origin: str


@dataclass(frozen=True)
class _Origin:
    """An item and how to get its bytes (``load`` raises Rejected). Results keep only ``where``,
    so bytes held by ``load`` (archive members, video frames) are freed once examined."""

    where: _Where
    load: Callable[[], bytes]


def load_sources(sources_file: Path) -> list[tuple[str, AnySource]]:
    """Validated (name, source) pairs; any problem is a UsageError naming the source and key."""
    raw = read_yaml(sources_file, "sources")
    try:
        parsed = SourcesFile.model_validate(raw)
    except ValidationError as exc:
        raise UsageError(f"{sources_file}: {_describe(exc, raw)}") from None
    named = [(src.name or f"{src.kind}-{i}", src) for i, src in enumerate(parsed.sources)]
    seen: set[str] = set()
    for i, (name, _) in enumerate(named):
        if name in seen:
            raise UsageError(f"{sources_file}: sources[{i}].name: duplicate source name {name!r}")
        seen.add(name)
    for i, (name, src) in enumerate(named):
        if src.domain == "reference":
            _check_reference(src, [other for _, other in named], f"{sources_file}: sources[{i}] ({name})")
    return named


def _check_reference(src: AnySource, sources: list[AnySource], where: str) -> None:
    """A reference source must crop what a builtin photo source crops (same seed, size and
    photos): resize pairs a reference with the photo of the same origin, and a reference of
    other crops would still match by name and give meaningless PSNR/SSIM."""
    if not isinstance(src, BuiltinSource):
        raise UsageError(f"{where}: the reference domain is for builtin sources, whose references share their photos' "
                         "origins; for your own expected outputs use `cartoon evaluate --references DIR` (matched by file stem)")  # fmt: skip
    from cartoon.data.builtin import PHOTO_SOURCES

    def crops(other: BuiltinSource) -> tuple:
        return other.seed, other.size, other.photos or PHOTO_SOURCES

    if not any(isinstance(other, BuiltinSource) and other.domain == "photo" and crops(other) == crops(src) for other in sources):
        raise UsageError(f"{where}: no builtin photo source with the same seed, size and photos ({src.seed}, {src.size}, "
                         f"{', '.join(src.photos or PHOTO_SOURCES)}): its references would be the originals of no photo")  # fmt: skip


def _describe(exc: ValidationError, raw: Any) -> str:
    """Pydantic errors as ``sources[1] (my-photos).path: Field required``."""
    messages = []
    for err in exc.errors():
        loc = list(err["loc"])
        where = ""
        if len(loc) >= 2 and loc[0] == "sources" and isinstance(loc[1], int):
            index = loc[1]
            listed = raw.get("sources") if isinstance(raw, dict) else None
            entry = listed[index] if isinstance(listed, list) else None
            name = entry.get("name") if isinstance(entry, dict) else None
            where = f"sources[{index}]" + (f" ({name})" if name else "")
            loc = loc[2:]
            if loc and loc[0] in ("builtin", "local", "urls", "html", "video", "archive"):  # the union tag pydantic inserts
                loc = loc[1:]
        if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
            loc = ["kind"]
        key = ".".join(str(part) for part in loc)
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"].replace("Value error, ", "")
        messages.append(f"{where}{'.' if where and key else ''}{key}: {msg}")
    return "; ".join(messages)


def _origins(sources: list[tuple[str, AnySource]], base: Path, params: CrawlParams, http: Callable[[], HttpClient]) -> Iterator[_Origin]:
    """Every item of every source, lazily (pages, frames and members are found while the
    workers fetch), with local paths and URL files checked up front."""
    plans = [_plan(i, name, src, base, params, http) for i, (name, src) in enumerate(sources)]
    for plan in plans:
        yield from plan()


def _refuse(reason: str) -> Callable[[], bytes]:
    def load() -> bytes:
        raise Rejected(reason)

    return load


def _plan(
    index: int, name: str, src: AnySource, base: Path, params: CrawlParams, http: Callable[[], HttpClient]
) -> Callable[[], Iterable[_Origin]]:
    """Check a source's inputs now (so a bad path fails before any work) and return its item list."""
    counter = itertools.count()

    def make(origin: str, load: Callable[[], bytes]) -> _Origin:
        return _Origin(_Where(index, next(counter), name, src.kind, src.domain, src.licence, origin), load)

    def local(path: Path, what: str, folder_ok: bool = True) -> Path:
        path = path if path.is_absolute() else base / path
        if not (path.is_file() or (folder_ok and path.is_dir())):
            raise UsageError(f"source {name!r}: path: {what} not found: {path}")
        return path.resolve()

    if isinstance(src, BuiltinSource):
        # imported on use: its photo loaders pull in scikit-image, scikit-learn and matplotlib
        from cartoon.data.builtin import builtin_items

        generated = builtin_items(src.domain, src.count, src.size, src.seed, src.photos, src.style, src.haze or "thin")
        return lambda: (make(f"builtin:{item}", lambda rgb=rgb: _png_bytes(rgb)) for item, rgb in generated)
    if isinstance(src, LocalSource):
        folder = local(src.path, "folder")
        if not folder.is_dir():
            raise UsageError(f"source {name!r}: path: not a folder: {folder}")
        files = _local_files(folder, src.recursive)
        return lambda: (make(str(path), lambda path=path: _read_local(path, params.max_bytes)) for path in files)
    if isinstance(src, UrlsSource):
        urls = list(src.urls)
        if src.url_file is not None:
            urls += _read_url_file(src.url_file if src.url_file.is_absolute() else base / src.url_file, name)
        unique = list(dict.fromkeys(urls))
        return lambda: (make(url, lambda url=url: http().fetch(url, "image").read()) for url in unique)
    if isinstance(src, HtmlSource):
        return lambda: _gallery_items(src, http(), make)
    if isinstance(src, VideoSource):
        target = local(src.path, "video file or folder")
        videos = _local_files(target, src.recursive, VIDEO_SUFFIXES) if target.is_dir() else [target]
        return lambda: (item for video in videos for item in _video_items(video, src, make))
    archive = local(src.path, "archive", folder_ok=False) if src.path is not None else None
    return lambda: _archive_items(src, archive, params, http, make)


def _gallery_items(src: HtmlSource, client: HttpClient, make: Callable[..., _Origin]) -> Iterator[_Origin]:
    from cartoon.data.gallery import crawl_gallery

    for found in crawl_gallery(client, src.start_urls, src.max_depth, src.same_host, src.max_pages, src.max_images):
        if found.reason:
            yield make(found.page, _refuse(found.reason))
        else:
            yield make(found.image, lambda url=found.image: client.fetch(url, "image").read())


def _video_items(video: Path, src: VideoSource, make: Callable[..., _Origin]) -> Iterator[_Origin]:
    """One item per candidate frame (``<file>#frame=<n>``); frames are PNG-encoded by the workers."""
    options = src.model_dump(include={"mode", "every_s", "scene_threshold", "min_scene_s", "crop_letterbox",
                                      "black_level", "min_std", "duplicate_threshold", "max_frames"})  # fmt: skip
    try:
        for frame in extract_frames(video, **options):
            origin = f"{video}#frame={frame.index}"
            yield make(origin, _refuse(frame.reason) if frame.rgb is None else (lambda rgb=frame.rgb: _png_bytes(rgb)))
    except VideoError:
        yield make(str(video), _refuse("unreadable video"))


def _archive_items(
    src: ArchiveSource, archive: Path | None, params: CrawlParams, http: Callable[[], HttpClient], make: Callable[..., _Origin]
) -> Iterator[_Origin]:
    """One item per regular member (``<archive>!<member>``); the archive itself is never unpacked to disk."""
    from cartoon.data.archive import ArchiveError, iter_members

    where = str(archive) if archive is not None else str(src.url)
    try:
        if archive is None:
            archive = http().fetch(str(src.url), "archive", params.max_archive_bytes).path
        elif archive.stat().st_size > params.max_archive_bytes:
            raise Rejected(f"archive too large (> {params.max_archive_bytes} bytes)")
        members = iter_members(archive, max_member_bytes=params.max_bytes, max_total_bytes=params.max_archive_total_bytes,
                               max_members=params.max_archive_members)  # fmt: skip
        for member in members:
            origin = f"{where}!{member.name}"
            yield make(origin, _refuse(member.reason) if member.data is None else (lambda data=member.data: data))
    except Rejected as exc:
        yield make(where, _refuse(exc.reason))
    except ArchiveError as exc:
        yield make(where, _refuse(f"bad archive ({exc})"))


def _local_files(folder: Path, recursive: bool, suffixes: tuple[str, ...] | None = None) -> list[Path]:
    """Every visible regular file (with one of ``suffixes``, if given). For images, whatever the
    suffix: a mislabelled image is still kept and a stray non-image shows up as a rejected row
    instead of vanishing silently."""
    candidates = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(
        path for path in candidates
        if path.is_file() and not any(part.startswith(".") for part in path.relative_to(folder).parts)
        and (suffixes is None or path.suffix.lower() in suffixes)
    )  # fmt: skip


def _read_local(path: Path, max_bytes: int) -> bytes:
    try:
        if path.stat().st_size > max_bytes:
            raise Rejected(f"too large (> {max_bytes} bytes)")
        return path.read_bytes()
    except OSError as exc:
        raise Rejected(f"unreadable ({type(exc).__name__})") from None


def _read_url_file(path: Path, name: str) -> list[str]:
    if not path.is_file():
        raise UsageError(f"source {name!r}: url_file: file not found: {path}")
    urls = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        url = line.split("#", 1)[0].strip()
        if not url:
            continue
        try:
            check_url(url)
        except ValueError as exc:
            raise UsageError(f"source {name!r}: url_file {path} line {number}: {exc}") from None
        urls.append(url)
    return urls


def _png_bytes(rgb: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR))
    if not ok:
        raise Rejected("cannot encode image")
    return buf.tobytes()


# ---------------------------------------------------------------- the stage


@dataclass(frozen=True)
class _Result:
    item: _Where
    sha256: str = ""
    phash: str = ""  # 16 hex digits of the 64-bit perceptual hash
    width: int | None = None
    height: int | None = None
    path: str = ""  # relative to out_dir; set when the bytes were stored
    reason: str = ""


def _examine(origin: _Origin, out_dir: Path, params: CrawlParams) -> _Result:
    """Load, validate and store one item; every failure becomes a reason, never an exception."""
    item = origin.where
    try:
        data = origin.load()
    except Rejected as exc:
        return _Result(item, reason=exc.reason)
    except Exception as exc:  # untrusted input must not stop the crawl; the manifest shows the type
        return _Result(item, reason=f"failed ({type(exc).__name__}: {exc})")
    sha = sha256_bytes(data)
    try:
        rgb, fmt = decode_image_with_format(data, params.max_pixels)
    except ImageRejected as exc:
        return _Result(item, sha256=sha, reason=exc.reason)
    height, width = rgb.shape[:2]
    size = {"sha256": sha, "width": int(width), "height": int(height)}
    if min(height, width) < params.min_side:
        return _Result(item, **size, reason=f"too small ({width}x{height} < {params.min_side} px)")
    if max(height, width) > params.max_aspect * min(height, width):
        return _Result(item, **size, reason=f"aspect ratio ({max(height, width) / min(height, width):.2f} > {params.max_aspect:g})")
    relative = f"images/{item.domain}/{sha[:16]}{FORMAT_SUFFIXES.get(fmt, '.' + fmt.lower())}"
    target = out_dir / relative
    if not target.is_file():  # content-addressed: an existing file already holds these bytes
        write_atomic(target, data)
    return _Result(item, **size, phash=f"{perceptual_hash(rgb):016x}", path=relative)


def crawl(sources_file: Path, out_dir: Path, params: CrawlParams) -> pd.DataFrame:
    """Run the crawl stage and return its manifest (also written to ``out_dir/manifest.csv``).

    Relative paths in the sources file are relative to its folder. Items are examined by
    ``params.workers`` threads while sources are still being listed (gallery pages, video
    frames, archive members), with a bounded queue in between so memory stays flat. HTTP bodies
    are cached in ``out_dir/.http-cache``: a crawl that was interrupted resumes without
    downloading again, a later one revalidates. A domain with no usable image is not an error
    here: the resize stage, which needs both domains, decides.
    """
    sources_file = Path(sources_file)
    out_dir = Path(out_dir)
    sources = load_sources(sources_file)
    clients: list[HttpClient] = []
    client_lock = threading.Lock()

    def http() -> HttpClient:  # made on first use: builtin and local sources need no cache folder
        with client_lock:
            if not clients:
                cache = HttpCache(out_dir / CACHE_DIR)
                cache.begin()
                clients.append(HttpClient(params, cache))
            return clients[0]

    for leftover in out_dir.glob(".*.tmp"):  # a kill during the last crawl's final write
        leftover.unlink()
    counts: Counter[str] = Counter()
    first_seen: set[tuple[str, str]] = set()
    results: list[_Result] = []
    with progress() as bar, ThreadPoolExecutor(max_workers=params.workers) as pool:
        task = bar.add_task("crawl", total=None, status="")
        pending: set[Future[_Result]] = set()

        def collect(done: Iterable[Future[_Result]]) -> None:
            for future in done:
                result = future.result()
                results.append(result)
                if result.reason:
                    counts["failed"] += 1
                elif (DEDUPE_GROUPS[result.item.domain][0], result.sha256) in first_seen:
                    counts["skipped"] += 1  # which copy is kept is settled later; the count is not
                else:
                    first_seen.add((DEDUPE_GROUPS[result.item.domain][0], result.sha256))
                    counts["fetched"] += 1
                bar.update(task, advance=1, status=f"{counts['fetched']} fetched, {counts['skipped']} skipped, {counts['failed']} failed")

        try:
            for submitted, item in enumerate(_origins(sources, sources_file.parent, params, http), start=1):
                pending.add(pool.submit(_examine, item, out_dir, params))
                bar.update(task, total=submitted)
                if len(pending) >= 4 * params.workers:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    collect(done)
            collect(pending)
        except BaseException:  # Ctrl-C or a failure: stop now; what was fetched is cached for a resume
            if clients:
                clients[0].cancelled.set()
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    manifest = _manifest(results, params.near_duplicate_distance)
    _remove_stale(out_dir / "images", {out_dir / p for p in manifest.loc[manifest.status == "ok", "path"]})
    write_atomic(out_dir / "manifest.csv", manifest.to_csv(index=False, lineterminator="\n").encode())
    if clients:
        clients[0].cache.finish()
    elif (out_dir / CACHE_DIR).is_dir():  # no HTTP source any more: nothing in the cache is used
        HttpCache(out_dir / CACHE_DIR).finish()
    console.print(summary(manifest), markup=False, highlight=False)
    return manifest


def _manifest(results: list[_Result], near_distance: int) -> pd.DataFrame:
    """Rows in a fixed order (dedupe group, domain, then order in the sources file). Within a
    group (photo with face_photo, cartoon with face_cartoon) the first copy of a content hash in
    that order is ``ok`` and later ones are ``duplicate``, so the choice never depends on which
    download finished first. Then, in the same order, images within ``near_distance`` bits of
    perceptual hash of an earlier kept one are ``duplicate`` too (-1: exact copies only). The
    resize stage splits only what is left, so no held-out photo is a near-copy of a training
    image."""
    results = sorted(results, key=lambda r: (DEDUPE_GROUPS[r.item.domain], r.item.index, r.item.position))
    kept: dict[tuple[str, str], str] = {}
    rows = []
    for r in results:
        status, reason, path = "ok", "", r.path
        key = (DEDUPE_GROUPS[r.item.domain][0], r.sha256)
        if r.reason:
            status, reason, path = "rejected", r.reason, ""
        elif key in kept:
            status, reason, path = "duplicate", f"same content as {kept[key]}", ""
        else:
            kept[key] = r.item.origin
        rows.append({
            "item_id": r.sha256[:16] if status != "rejected" else _rejected_id(r.item),
            "domain": r.item.domain, "source": r.item.source, "kind": r.item.kind, "origin": r.item.origin,
            "licence": r.item.licence, "sha256": r.sha256, "phash": r.phash if status == "ok" else "",
            "width": r.width, "height": r.height, "status": status, "reason": reason, "path": path,
        })  # fmt: skip
    manifest = pd.DataFrame(rows, columns=MANIFEST_COLUMNS)
    if near_distance >= 0:
        usable = manifest[manifest.status == "ok"]
        for _, group in usable.groupby(usable.domain.map(lambda domain: DEDUPE_GROUPS[domain][0]), sort=False):
            hashes = np.array([int(value, 16) for value in group.phash], dtype=np.uint64)
            twin = near_duplicates(hashes, near_distance)
            for position in np.nonzero(twin >= 0)[0]:
                row, other = group.index[position], group.index[twin[position]]
                distance = int(hamming(hashes[position], hashes[twin[position]]))
                manifest.loc[row, ["status", "reason", "path", "phash"]] = [
                    "duplicate", f"near-duplicate of {manifest.at[other, 'origin']} (distance {distance})", "", ""
                ]
    return manifest.astype({"width": "Int64", "height": "Int64"})


def _rejected_id(item: _Where) -> str:
    """A stable id for an item that may have no bytes at all: a hash of where it came from."""
    return sha256_bytes(f"{item.source}\n{item.origin}".encode())[:16]


def _remove_stale(images_dir: Path, keep: set[Path]) -> None:
    """Delete files (and then empty folders) under images/ that this run did not produce."""
    if not images_dir.is_dir():
        return
    for path in sorted(images_dir.rglob("*"), reverse=True):
        if path.is_file() or path.is_symlink():
            if path not in keep:
                path.unlink()
        elif path.is_dir() and not any(path.iterdir()):
            path.rmdir()


def summary(manifest: pd.DataFrame) -> str:
    """One line for the log: ``crawl: 52 ok (40 photo, 12 cartoon), 3 rejected (...), 1 duplicate``."""
    ok = manifest[manifest.status == "ok"]
    per_domain = ", ".join(f"{n} {domain}" for domain, n in sorted(Counter(ok.domain).items()))
    text = f"crawl: {len(ok)} ok" + (f" ({per_domain})" if per_domain else "")
    rejected = manifest[manifest.status == "rejected"]
    text += f", {len(rejected)} rejected"
    if len(rejected):
        reasons = Counter(reason.split(" (")[0] for reason in rejected.reason)
        ordered = sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))
        text += " (" + ", ".join(f"{n} {reason}" for reason, n in ordered) + ")"
    duplicates = int((manifest.status == "duplicate").sum())
    return text + f", {duplicates} duplicate{'' if duplicates == 1 else 's'}"
