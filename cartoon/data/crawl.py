"""The ``crawl`` stage: gather raw images from the sources file into a content-addressed store.

Every item (generated, local file or URL) is validated by decoding it as untrusted input; bad ones
become ``rejected`` rows with a reason instead of errors, exact copies within a domain become
``duplicate`` rows, and good ones are stored byte for byte as
``images/<domain>/<sha256[:16]><ext>``. ``manifest.csv`` has one row per item seen, sorted so that
a rerun over the same inputs writes the same file.
"""

from __future__ import annotations

import http.client
import os
import socket
import ssl
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urljoin, urlsplit

import cv2
import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cartoon.data.imageio import FORMAT_SUFFIXES, ImageRejected, decode_image_with_format, sha256_bytes
from cartoon.errors import UsageError
from cartoon.params import CrawlParams, read_yaml
from cartoon.progress import console, progress

MANIFEST_COLUMNS = [
    "item_id", "domain", "source", "kind", "origin", "licence",
    "sha256", "width", "height", "status", "reason", "path",
]  # fmt: skip
USER_AGENT = "cartoon-pipeline/0.1"
MAX_REDIRECTS = 5
#: One attempt at a URL may take at most this many ``timeout_s`` in total (connect, headers and
#: body together), so a server that keeps sending a byte now and then is still cut off.
ATTEMPT_BUDGET_FACTOR = 5
_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_CHUNK = 64 * 1024


# ---------------------------------------------------------------- sources file


class _SourceBase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = None
    domain: Literal["photo", "cartoon", "face_photo", "face_cartoon"]
    licence: str = ""


class BuiltinSource(_SourceBase):
    kind: Literal["builtin"]
    count: int = Field(48, ge=1, le=10_000)
    size: int = Field(160, ge=16, le=4096)
    seed: int = 0


class LocalSource(_SourceBase):
    kind: Literal["local"]
    path: Path
    recursive: bool = True


class UrlsSource(_SourceBase):
    kind: Literal["urls"]
    urls: list[str] = []
    url_file: Path | None = None

    @field_validator("urls")
    @classmethod
    def _http_only(cls, urls: list[str]) -> list[str]:
        for url in urls:
            _check_url(url)
        return [url.strip() for url in urls]

    @model_validator(mode="after")
    def _some_urls(self) -> UrlsSource:
        if not self.urls and self.url_file is None:
            raise ValueError("give urls, url_file or both")
        return self


AnySource = BuiltinSource | LocalSource | UrlsSource
Source = Annotated[AnySource, Field(discriminator="kind")]


class SourcesFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    sources: list[Source] = Field(min_length=1)


@dataclass(frozen=True)
class _Origin:
    """Where one item comes from and how to get its bytes (``load`` raises _Rejected)."""

    index: int  # position of its source in the sources file, for sorting
    position: int  # position within its source: listing order for URLs, path order for folders
    source: str
    kind: str
    domain: str
    licence: str
    origin: str
    load: Callable[[], bytes]


class _Rejected(Exception):
    """An item that cannot be had (download or read failed); ``retryable`` marks transient causes."""

    def __init__(self, reason: str, retryable: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable


def _check_url(url: str) -> None:
    parts = urlsplit(url.strip())
    try:
        valid = parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
    except ValueError:  # a port that is not a number or out of range
        valid = False
    if not valid:
        raise ValueError(f"not an http(s) URL: {url!r}")


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
    return named


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
            if loc and loc[0] in ("builtin", "local", "urls"):  # the union tag pydantic inserts
                loc = loc[1:]
        if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
            loc = ["kind"]
        key = ".".join(str(part) for part in loc)
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"].replace("Value error, ", "")
        messages.append(f"{where}{'.' if where and key else ''}{key}: {msg}")
    return "; ".join(messages)


def _origins(sources: list[tuple[str, AnySource]], base: Path, params: CrawlParams) -> Iterator[_Origin]:
    """Every item of every source, with local folders and URL files checked up front."""
    plans = [_plan(i, name, src, base, params) for i, (name, src) in enumerate(sources)]
    for plan in plans:
        yield from plan()


def _plan(index: int, name: str, src: AnySource, base: Path, params: CrawlParams) -> Callable[[], Iterable[_Origin]]:
    """Check a source's inputs now (so a bad path fails before any work) and return its item list."""

    def make(position: int, origin: str, load: Callable[[], bytes]) -> _Origin:
        return _Origin(index, position, name, src.kind, src.domain, src.licence, origin, load)

    if isinstance(src, BuiltinSource):
        # imported on use: its photo loaders pull in scikit-image, scikit-learn and matplotlib
        from cartoon.data.builtin import builtin_items

        generated = builtin_items(src.domain, src.count, src.size, src.seed)
        return lambda: (
            make(i, f"builtin:{item}", lambda rgb=rgb: _png_bytes(rgb)) for i, (item, rgb) in enumerate(generated)
        )
    if isinstance(src, LocalSource):
        folder = src.path if src.path.is_absolute() else base / src.path
        if not folder.is_dir():
            raise UsageError(f"source {name!r}: path: folder not found: {folder}")
        files = _local_files(folder.resolve(), src.recursive)
        return lambda: (
            make(i, str(path), lambda path=path: _read_local(path, params.max_bytes)) for i, path in enumerate(files)
        )
    urls = list(src.urls)
    if src.url_file is not None:
        urls += _read_url_file(src.url_file if src.url_file.is_absolute() else base / src.url_file, name)
    unique = list(dict.fromkeys(urls))
    return lambda: (make(i, url, lambda url=url: fetch_url(url, params)) for i, url in enumerate(unique))


def _local_files(folder: Path, recursive: bool) -> list[Path]:
    """Every visible regular file, whatever its suffix: a mislabelled image is still kept and a
    stray non-image shows up as a rejected row instead of vanishing silently."""
    candidates = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(
        path for path in candidates
        if path.is_file() and not any(part.startswith(".") for part in path.relative_to(folder).parts)
    )  # fmt: skip


def _read_local(path: Path, max_bytes: int) -> bytes:
    try:
        if path.stat().st_size > max_bytes:
            raise _Rejected(f"too large (> {max_bytes} bytes)")
        return path.read_bytes()
    except OSError as exc:
        raise _Rejected(f"unreadable ({type(exc).__name__})") from None


def _read_url_file(path: Path, name: str) -> list[str]:
    if not path.is_file():
        raise UsageError(f"source {name!r}: url_file: file not found: {path}")
    urls = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        url = line.split("#", 1)[0].strip()
        if not url:
            continue
        try:
            _check_url(url)
        except ValueError as exc:
            raise UsageError(f"source {name!r}: url_file {path} line {number}: {exc}") from None
        urls.append(url)
    return urls


def _png_bytes(rgb: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR))
    if not ok:
        raise _Rejected("cannot encode generated image")
    return buf.tobytes()


# ---------------------------------------------------------------- HTTP


def fetch_url(url: str, params: CrawlParams) -> bytes:
    """Download one URL with retries and exponential backoff; raises _Rejected with a reason.

    Connection errors, timeouts, 429 and 5xx are retried (``params.retries`` times, waiting
    ``backoff_s``, then twice that, ...); other 4xx and content problems are not. The worst case
    per URL is therefore bounded: (retries + 1) attempts of at most ATTEMPT_BUDGET_FACTOR *
    timeout_s each, plus the backoff waits.
    """
    attempt = 0
    while True:
        try:
            return _fetch_once(url, params)
        except _Rejected as exc:
            if not exc.retryable or attempt == params.retries:
                raise
        time.sleep(params.backoff_s * 2**attempt)
        attempt += 1


def _fetch_once(url: str, params: CrawlParams) -> bytes:
    """One attempt, following at most MAX_REDIRECTS redirects, all within one time budget."""
    deadline = time.monotonic() + ATTEMPT_BUDGET_FACTOR * params.timeout_s
    for _ in range(MAX_REDIRECTS + 1):
        scheme = urlsplit(url).scheme
        if scheme not in ("http", "https"):
            raise _Rejected(f"unsupported scheme ({scheme or 'none'})")
        try:
            _check_url(url)
        except ValueError:
            raise _Rejected("invalid url") from None
        status, location, body = _get(url, params, deadline)
        if status in _REDIRECT_STATUSES and location:
            url = urljoin(url, location)
            continue
        if 200 <= status < 300:
            return body
        raise _Rejected(f"http {status}", retryable=status in _RETRY_STATUSES)
    raise _Rejected("too many redirects")


def _get(url: str, params: CrawlParams, deadline: float) -> tuple[int, str | None, bytes]:
    """(status, Location, body) of one GET; the body is read only for 2xx and is size-capped.

    A watchdog shuts the socket down at the deadline, which unblocks a read stuck on a server
    that sends headers or body a byte at a time (each byte would reset a plain socket timeout).
    """
    parts = urlsplit(url)
    connection_type = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    extra = {"context": ssl.create_default_context()} if parts.scheme == "https" else {}
    conn = connection_type(parts.hostname, parts.port, timeout=params.timeout_s, **extra)
    expired = threading.Event()

    def cut_off() -> None:
        expired.set()
        if conn.sock is not None:
            try:
                conn.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    watchdog = threading.Timer(max(0.0, deadline - time.monotonic()), cut_off)
    watchdog.daemon = True
    watchdog.start()
    try:
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        headers = {"User-Agent": USER_AGENT, "Accept": "image/*, */*;q=0.5", "Accept-Encoding": "identity"}
        conn.request("GET", target, headers=headers)
        response = conn.getresponse()
        if not 200 <= response.status < 300:
            return response.status, response.getheader("Location"), b""
        body = _read_body(response, params.max_bytes, deadline)
        if expired.is_set():  # the watchdog's shutdown can look like a normal end of body
            raise _Rejected("timeout (total time limit)", retryable=True)
        return response.status, None, body
    except _Rejected:
        raise
    except ssl.SSLCertVerificationError:
        raise _Rejected("tls certificate error") from None
    except (http.client.InvalidURL, UnicodeError):
        raise _Rejected("invalid url") from None
    except TimeoutError:
        raise _Rejected("timeout", retryable=True) from None
    except (OSError, http.client.HTTPException) as exc:
        if expired.is_set():
            raise _Rejected("timeout (total time limit)", retryable=True) from None
        raise _Rejected(f"connection error ({type(exc).__name__})", retryable=True) from None
    finally:
        watchdog.cancel()
        conn.close()


def _read_body(response: http.client.HTTPResponse, max_bytes: int, deadline: float) -> bytes:
    """The body, refusing non-image content types and stopping as soon as it exceeds max_bytes
    (Content-Length is only a hint: it may be absent or wrong)."""
    content_type = (response.getheader("Content-Type") or "").split(";")[0].strip().lower()
    if not (content_type.startswith("image/") or content_type == "application/octet-stream"):
        raise _Rejected(f"bad content-type ({content_type or 'none'})")
    declared = response.getheader("Content-Length") or ""
    if declared.isdigit() and int(declared) > max_bytes:
        raise _Rejected(f"too large (> {max_bytes} bytes)")
    chunks, received = [], 0
    while chunk := response.read1(_CHUNK):
        received += len(chunk)
        if received > max_bytes:
            raise _Rejected(f"too large (> {max_bytes} bytes)")
        if time.monotonic() > deadline:
            raise _Rejected("timeout (total time limit)", retryable=True)
        chunks.append(chunk)
    return b"".join(chunks)


# ---------------------------------------------------------------- the stage


@dataclass(frozen=True)
class _Result:
    item: _Origin
    sha256: str = ""
    width: int | None = None
    height: int | None = None
    path: str = ""  # relative to out_dir; set when the bytes were stored
    reason: str = ""


def _examine(item: _Origin, out_dir: Path, max_pixels: int) -> _Result:
    """Load, validate and store one item; every failure becomes a reason, never an exception."""
    try:
        data = item.load()
    except _Rejected as exc:
        return _Result(item, reason=exc.reason)
    except Exception as exc:  # untrusted input must not stop the crawl; the manifest shows the type
        return _Result(item, reason=f"failed ({type(exc).__name__}: {exc})")
    sha = sha256_bytes(data)
    try:
        rgb, fmt = decode_image_with_format(data, max_pixels)
    except ImageRejected as exc:
        return _Result(item, sha256=sha, reason=exc.reason)
    relative = f"images/{item.domain}/{sha[:16]}{FORMAT_SUFFIXES.get(fmt, '.' + fmt.lower())}"
    target = out_dir / relative
    if not target.is_file():  # content-addressed: an existing file already holds these bytes
        _write_atomic(target, data)
    return _Result(item, sha256=sha, width=int(rgb.shape[1]), height=int(rgb.shape[0]), path=relative)


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(tmp, path)


def crawl(sources_file: Path, out_dir: Path, params: CrawlParams) -> pd.DataFrame:
    """Run the crawl stage and return its manifest (also written to ``out_dir/manifest.csv``).

    Relative paths in the sources file are relative to its folder. A domain with no usable image
    is not an error here: the resize stage, which needs both domains, decides.
    """
    sources_file = Path(sources_file)
    out_dir = Path(out_dir)
    sources = load_sources(sources_file)
    items = list(_origins(sources, sources_file.parent, params))
    counts: Counter[str] = Counter()
    first_seen: set[tuple[str, str]] = set()
    results = []
    with progress() as bar, ThreadPoolExecutor(max_workers=params.workers) as pool:
        task = bar.add_task("crawl", total=len(items), status="")
        futures = [pool.submit(_examine, item, out_dir, params.max_pixels) for item in items]
        for future in as_completed(futures):
            result = future.result()
            results.append(result)
            if result.reason:
                counts["rejected"] += 1
            elif (result.item.domain, result.sha256) in first_seen:
                counts["duplicate"] += 1  # which copy is kept is settled later; the count is not
            else:
                first_seen.add((result.item.domain, result.sha256))
                counts["ok"] += 1
            bar.update(task, advance=1, status=_counts_text(counts))
    manifest = _manifest(results)
    _remove_stale(out_dir / "images", {out_dir / p for p in manifest.loc[manifest.status == "ok", "path"]})
    _write_atomic(out_dir / "manifest.csv", manifest.to_csv(index=False, lineterminator="\n").encode())
    console.print(summary(manifest), markup=False, highlight=False)
    return manifest


def _counts_text(counts: Counter[str]) -> str:
    return f"{counts['ok']} ok, {counts['rejected']} rejected, {counts['duplicate']} duplicate"


def _manifest(results: list[_Result]) -> pd.DataFrame:
    """Rows in a fixed order (domain, then order in the sources file); the first copy of a content
    hash in that order is ``ok`` and later ones are ``duplicate``, so the choice never depends on
    which download finished first."""
    results = sorted(results, key=lambda r: (r.item.domain, r.item.index, r.item.position))
    kept: dict[tuple[str, str], str] = {}
    rows = []
    for r in results:
        status, reason, path = "ok", "", r.path
        if r.reason:
            status, reason, path = "rejected", r.reason, ""
        elif (r.item.domain, r.sha256) in kept:
            status, reason, path = "duplicate", f"same content as {kept[(r.item.domain, r.sha256)]}", ""
        else:
            kept[(r.item.domain, r.sha256)] = r.item.origin
        rows.append({
            "item_id": r.sha256[:16] if status != "rejected" else _rejected_id(r.item),
            "domain": r.item.domain, "source": r.item.source, "kind": r.item.kind, "origin": r.item.origin,
            "licence": r.item.licence, "sha256": r.sha256, "width": r.width, "height": r.height,
            "status": status, "reason": reason, "path": path,
        })  # fmt: skip
    manifest = pd.DataFrame(rows, columns=MANIFEST_COLUMNS)
    return manifest.astype({"width": "Int64", "height": "Int64"})


def _rejected_id(item: _Origin) -> str:
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
