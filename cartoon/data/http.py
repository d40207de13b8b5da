"""The crawl's HTTP client: polite, bounded and cached downloads from untrusted servers.

Every request names the project in its User-Agent, honours robots.txt (RFC 9309: a 4xx robots
file allows everything, an unreachable one disallows everything), waits ``host_delay_s`` between
requests to one host and keeps at most ``per_host`` of them in flight. Unless ``allow_private``,
a request (start URL, redirect hop, gallery link, robots.txt) goes only to a host whose every
address is public, and connects to exactly the addresses that were checked. A response is
checked for its content type and capped at ``max_bytes`` while it streams (Content-Length is only
a hint), and a watchdog ends any attempt after ATTEMPT_BUDGET_FACTOR * ``timeout_s``. Bodies go to a
content-addressed cache folder with their ETag / Last-Modified, so a re-crawl asks "changed?"
(a 304 costs no body) and a crawl that was interrupted skips what it already fetched.
"""

from __future__ import annotations

import hashlib
import http.client
import ipaddress
import json
import os
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import quote, urljoin, urlsplit
from urllib.robotparser import RobotFileParser

from cartoon.data.imageio import create_temp, write_atomic
from cartoon.params import CrawlParams

USER_AGENT = "cartoon-pipeline/0.1 (photo-to-cartoon dataset crawler; honours robots.txt)"
ROBOTS_AGENT = "cartoon-pipeline"
MAX_REDIRECTS = 5
#: One attempt at a URL may take at most this many ``timeout_s`` in total (connect, headers and
#: body together), so a server that keeps sending a byte now and then is still cut off.
ATTEMPT_BUDGET_FACTOR = 5
ROBOTS_MAX_BYTES = 512 * 1024
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_CHUNK = 64 * 1024

Accept = Literal["image", "html", "archive", "text"]
_ACCEPT_HEADERS = {
    "image": "image/*, */*;q=0.5",
    "html": "text/html, application/xhtml+xml;q=0.9",
    "archive": "application/zip, application/x-tar, application/gzip, */*;q=0.5",
    "text": "text/plain, */*;q=0.5",
}


def _acceptable(accept: Accept, content_type: str) -> bool:
    if accept == "image":
        return content_type.startswith("image/") or content_type == "application/octet-stream"
    if accept == "html":
        return content_type in ("text/html", "application/xhtml+xml")
    if accept == "archive":
        return content_type.startswith("application/") or content_type == ""
    return True


def _retryable(status: int) -> bool:
    """429 (slow down) and every 5xx (the server's trouble, often passing) are worth another try."""
    return status == 429 or 500 <= status < 600


def is_public_address(address: str) -> bool:
    """Whether ``address`` is a globally reachable unicast address. An IPv4-mapped IPv6 address
    (``::ffff:127.0.0.1``) is judged by the IPv4 address it leads to."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    non_public = ip.is_loopback or ip.is_private or ip.is_link_local or ip.is_unspecified or ip.is_reserved or ip.is_multicast
    return ip.is_global and not non_public


def _connect_to(addresses: list[str]) -> Callable[..., socket.socket]:
    """A stand-in for ``socket.create_connection`` (http.client's hook for opening its socket)
    that connects only to ``addresses``, in order, so that a DNS answer that changes after the
    check (rebinding) is never used."""

    def connect(address: tuple[str, int], timeout: float, source_address: tuple[str, int] | None = None) -> socket.socket:
        for ip in addresses[:-1]:
            try:
                return socket.create_connection((ip, address[1]), timeout, source_address)
            except OSError:
                continue  # the next address may answer
        return socket.create_connection((addresses[-1], address[1]), timeout, source_address)

    return connect


class Rejected(Exception):
    """An item that cannot be had (download or read failed); ``retryable`` marks transient causes."""

    def __init__(self, reason: str, retryable: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable


def check_url(url: str) -> None:
    """ValueError unless ``url`` is an absolute http(s) URL with a host."""
    parts = urlsplit(url.strip())
    try:
        valid = parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
    except ValueError:  # a port that is not a number or out of range
        valid = False
    if not valid:
        raise ValueError(f"not an http(s) URL: {url!r}")


@dataclass(frozen=True)
class Fetched:
    """A downloaded body: its file in the cache, its final URL (after redirects), and how it came."""

    path: Path
    url: str
    content_type: str
    from_cache: bool  # True when a 304 or the resume journal spared the download

    def read(self) -> bytes:
        return self.path.read_bytes()


class _HostGate:
    """At most ``per_host`` requests in flight per host, starting at least ``delay_s`` apart."""

    def __init__(self, per_host: int, delay_s: float) -> None:
        self.per_host, self.delay_s = per_host, delay_s
        self.lock = threading.Lock()
        self.slots: dict[str, threading.Semaphore] = {}
        self.next_start: dict[str, float] = {}

    @contextmanager
    def enter(self, host: str) -> Iterator[None]:
        with self.lock:
            slot = self.slots.setdefault(host, threading.Semaphore(self.per_host))
        with slot:
            with self.lock:
                now = time.monotonic()
                start = max(now, self.next_start.get(host, now))
                self.next_start[host] = start + self.delay_s
            time.sleep(max(0.0, start - time.monotonic()))
            yield


class HttpCache:
    """URL -> (validators, body sha256) entries plus content-addressed bodies, in one folder.

    Entries are small JSON files written atomically as each download completes, so an
    interrupted crawl loses nothing it finished. ``begin`` marks a crawl in progress; if the
    previous one never reached ``finish``, entries it wrote are trusted without asking the
    server again (resume), while older ones are revalidated (re-crawl).
    """

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        (self.folder / "entries").mkdir(parents=True, exist_ok=True)
        (self.folder / "blobs").mkdir(parents=True, exist_ok=True)
        self.resume_since: float | None = None
        self.used: set[str] = set()
        self.lock = threading.Lock()

    def begin(self) -> None:
        marker = self.folder / "crawl-in-progress.json"
        if marker.is_file():
            try:
                self.resume_since = float(json.loads(marker.read_text())["started"])
            except (ValueError, KeyError, TypeError):
                self.resume_since = None
        else:
            write_atomic(marker, json.dumps({"started": time.time()}).encode())

    def finish(self) -> None:
        """Forget entries and bodies this crawl did not use (and temp files a kill left), and end
        the resume window."""
        for entry in (self.folder / "entries").iterdir():
            if entry.suffix != ".json" or entry.stem not in self.used:
                entry.unlink(missing_ok=True)
        keep = {info.get("sha256") for info in (self._load(key) for key in self.used) if info}
        for blob in (self.folder / "blobs").iterdir():
            if blob.name not in keep:
                blob.unlink(missing_ok=True)
        (self.folder / "crawl-in-progress.json").unlink(missing_ok=True)

    @staticmethod
    def key(url: str) -> str:
        return hashlib.sha256(url.encode()).hexdigest()[:32]

    def _load(self, key: str) -> dict | None:
        try:
            info = json.loads((self.folder / "entries" / f"{key}.json").read_text())
        except (OSError, ValueError):
            return None
        blob = self.folder / "blobs" / str(info.get("sha256", ""))
        return info if isinstance(info, dict) and blob.is_file() else None

    def lookup(self, url: str) -> dict | None:
        key = self.key(url)
        with self.lock:
            self.used.add(key)
        return self._load(key)

    def fresh(self, info: dict) -> bool:
        """Fetched by the interrupted crawl being resumed: no need to ask the server."""
        return self.resume_since is not None and float(info.get("fetched_at", 0)) >= self.resume_since

    def blob(self, sha256: str) -> Path:
        return self.folder / "blobs" / sha256

    def temp_file(self) -> tuple[int, str]:
        return create_temp(self.folder / "blobs", suffix=".part")

    def store(self, url: str, final_url: str, temp: str, sha256: str, headers: dict[str, str]) -> Path:
        blob = self.blob(sha256)
        os.replace(temp, blob)
        info = {"url": url, "final_url": final_url, "sha256": sha256, "fetched_at": time.time(), **headers}
        write_atomic(self.folder / "entries" / f"{self.key(url)}.json", json.dumps(info).encode())
        return blob

    def touch(self, url: str, info: dict) -> None:
        """Record a successful revalidation (304) so a resume trusts it too."""
        info = {**info, "fetched_at": time.time()}
        write_atomic(self.folder / "entries" / f"{self.key(url)}.json", json.dumps(info).encode())


class HttpClient:
    """Downloads for one crawl; thread-safe, so the crawl's workers share it."""

    def __init__(self, params: CrawlParams, cache: HttpCache) -> None:
        self.params = params
        self.cache = cache
        self.gate = _HostGate(params.per_host, params.host_delay_s)
        self.robots: dict[str, RobotFileParser | str] = {}
        self.robots_locks: dict[str, threading.Lock] = {}
        self.robots_lock = threading.Lock()
        self.cancelled = threading.Event()  # set on Ctrl-C: requests in flight stop early

    # ---------------------------------------------------------------- robots.txt

    def robots_refusal(self, url: str) -> str:
        """Why robots.txt forbids ``url`` for our agent, or "" (fetched once per scheme and host)."""
        if not self.params.respect_robots:
            return ""
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        with self.robots_lock:  # one lock per origin: a slow host delays only its own checks
            lock = self.robots_locks.setdefault(origin, threading.Lock())
        with lock:
            if origin not in self.robots:
                self.robots[origin] = self._robots(origin)
        rules = self.robots[origin]
        if isinstance(rules, str):
            return rules
        return "" if rules.can_fetch(ROBOTS_AGENT, _wire_url(url)) else "disallowed by robots.txt"

    def _robots(self, origin: str) -> RobotFileParser | str:
        """The parsed robots.txt, "" (allow all) or the reason everything is refused (RFC 9309:
        up to 5 redirects followed, 4xx allows all, an unreachable file disallows all)."""
        url = f"{origin}/robots.txt"
        for attempt in range(self.params.retries + 1):
            if attempt:
                self._pause(self.params.backoff_s * 2 ** (attempt - 1))
            try:
                for _ in range(MAX_REDIRECTS + 1):
                    status, location, body, _ = self._request(url, "text", ROBOTS_MAX_BYTES, {})
                    if status in _REDIRECT_STATUSES and location:
                        url = urljoin(url, location)
                        continue
                    break
            except (Rejected, ValueError):
                continue
            if 400 <= status < 500:
                return ""
            if 200 <= status < 300:
                parser = RobotFileParser()
                parser.parse(body.decode("utf-8", errors="replace").splitlines())
                return parser
        return "robots.txt unreachable"

    # ---------------------------------------------------------------- fetching

    def fetch(self, url: str, accept: Accept, max_bytes: int | None = None) -> Fetched:
        """GET ``url`` into the cache (or reuse it); raises Rejected with a reason.

        Connection errors, timeouts, 429 and every 5xx are retried (``retries`` times, waiting
        ``backoff_s``, then twice that, ...); other 4xx, content problems and private addresses
        are not.
        """
        max_bytes = max_bytes or self.params.max_bytes
        cached = self.cache.lookup(url)
        if cached and self.cache.fresh(cached):
            return Fetched(self.cache.blob(cached["sha256"]), cached.get("final_url", url), cached.get("content_type", ""), True)
        attempt = 0
        while True:
            try:
                return self._fetch_once(url, accept, max_bytes, cached)
            except Rejected as exc:
                if not exc.retryable or attempt == self.params.retries:
                    raise
            self._pause(self.params.backoff_s * 2**attempt)
            attempt += 1

    def _pause(self, seconds: float) -> None:
        if self.cancelled.wait(seconds):
            raise Rejected("cancelled")

    def _fetch_once(self, url: str, accept: Accept, max_bytes: int, cached: dict | None) -> Fetched:
        """One attempt, following at most MAX_REDIRECTS redirects (each hop checked for a private
        address, then against robots.txt). The cached validators go with the request for the URL
        they were served for, which after a redirect is the final one."""
        current = url
        for _ in range(MAX_REDIRECTS + 1):
            try:
                scheme = urlsplit(current).scheme
            except ValueError:
                raise Rejected("invalid url") from None
            if scheme not in ("http", "https"):
                raise Rejected(f"unsupported scheme ({scheme or 'none'})")
            try:
                check_url(current)
            except ValueError:
                raise Rejected("invalid url") from None
            self._addresses(current)  # _request checks too; first here, so the reason is not robots.txt's
            refusal = self.robots_refusal(current)
            if refusal:
                raise Rejected(refusal)
            validators = {}
            if cached and current == cached.get("final_url", url):
                if cached.get("etag"):
                    validators["If-None-Match"] = cached["etag"]
                if cached.get("last_modified"):
                    validators["If-Modified-Since"] = cached["last_modified"]
            status, location, body_file, headers = self._request(current, accept, max_bytes, validators, to_file=True)
            if status == 304 and cached:
                self.cache.touch(url, cached)
                return Fetched(self.cache.blob(cached["sha256"]), cached.get("final_url", url), cached.get("content_type", ""), True)
            if status in _REDIRECT_STATUSES and location:
                try:
                    current = urljoin(current, location)
                except ValueError:
                    raise Rejected("invalid redirect") from None
                continue
            if 200 <= status < 300:
                temp, sha = body_file
                path = self.cache.store(url, current, temp, sha, headers)
                return Fetched(path, current, headers.get("content_type", ""), False)
            raise Rejected(f"http {status}", retryable=_retryable(status))
        raise Rejected("too many redirects")

    def _addresses(self, url: str) -> list[str] | None:
        """The addresses a request for ``url`` may connect to, all of them public, or None (any)
        with ``allow_private``. Every address counts, not just the first: a host that lists a
        public address beside a private one could be reached at either."""
        if self.params.allow_private:
            return None
        parts = urlsplit(_wire_url(url))
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            found = socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
        except UnicodeError:
            raise Rejected("invalid url") from None
        except OSError as exc:
            raise Rejected(f"connection error ({type(exc).__name__})", retryable=True) from None
        addresses = list(dict.fromkeys(info[4][0] for info in found))
        for address in addresses:
            if not is_public_address(address):
                raise Rejected(f"private address: {address}")
        return addresses

    def _request(self, url: str, accept: Accept, max_bytes: int, extra: dict[str, str], to_file: bool = False):
        """(status, Location, body, headers) of one GET. The body (2xx only) is bytes, or with
        ``to_file`` a (temp path, sha256) pair in the cache; it is size-capped and time-capped.

        The time budget starts once the host's gate lets the request through (waiting for a
        slot is politeness, not the server's slowness). A watchdog then shuts the socket down at
        the deadline, which unblocks a read stuck on a server that sends headers or body a byte
        at a time (each byte would reset a plain socket timeout).
        """
        parts = urlsplit(_wire_url(url))
        if self.cancelled.is_set():
            raise Rejected("cancelled")
        addresses = self._addresses(url)
        connection_type = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        context = {"context": ssl.create_default_context()} if parts.scheme == "https" else {}
        with self.gate.enter(parts.netloc):
            deadline = time.monotonic() + ATTEMPT_BUDGET_FACTOR * self.params.timeout_s
            conn = connection_type(parts.hostname, parts.port, timeout=self.params.timeout_s, **context)
            if addresses is not None:  # the Host header and TLS still name the host; only the socket is pinned
                conn._create_connection = _connect_to(addresses)
            expired = threading.Event()

            def cut_off() -> None:
                expired.set()
                if conn.sock is not None:
                    try:
                        conn.sock.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

            def check_time() -> None:
                if expired.is_set() or self.cancelled.is_set():
                    raise Rejected("cancelled" if self.cancelled.is_set() else "timeout (total time limit)", retryable=True)

            watchdog = threading.Timer(max(0.0, deadline - time.monotonic()), cut_off)
            watchdog.daemon = True
            watchdog.start()
            try:
                conn.connect()  # bounded by timeout_s; a watchdog firing before it is checked next
                check_time()
                target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
                headers = {"User-Agent": USER_AGENT, "Accept": _ACCEPT_HEADERS[accept], "Accept-Encoding": "identity", **extra}
                conn.request("GET", target, headers=headers)
                response = conn.getresponse()
                check_time()
                if not 200 <= response.status < 300:
                    return response.status, response.getheader("Location"), b"", {}
                content_type = (response.getheader("Content-Type") or "").split(";")[0].strip().lower()
                if not _acceptable(accept, content_type):
                    raise Rejected(f"bad content-type ({content_type or 'none'})")
                declared = response.getheader("Content-Length") or ""
                if declared.isdigit() and int(declared) > max_bytes:
                    raise Rejected(f"too large (> {max_bytes} bytes)")
                kept = {"content_type": content_type}
                for name, key in (("ETag", "etag"), ("Last-Modified", "last_modified")):
                    if response.getheader(name):
                        kept[key] = response.getheader(name)
                body = self._read_body(response, max_bytes, deadline, to_file)
                if expired.is_set() or self.cancelled.is_set():  # a shutdown can look like a normal end of body
                    _discard(body)
                    check_time()
                return response.status, None, body, kept
            except Rejected:
                raise
            except ssl.SSLCertVerificationError:
                raise Rejected("tls certificate error") from None
            except (http.client.InvalidURL, UnicodeError, ValueError):
                raise Rejected("invalid url") from None
            except TimeoutError:
                raise Rejected("timeout", retryable=True) from None
            except (OSError, http.client.HTTPException) as exc:
                check_time()
                raise Rejected(f"connection error ({type(exc).__name__})", retryable=True) from None
            finally:
                watchdog.cancel()
                conn.close()

    def _read_body(self, response: http.client.HTTPResponse, max_bytes: int, deadline: float, to_file: bool):
        """Stream the body, stopping as soon as it exceeds max_bytes or the deadline passes."""
        digest = hashlib.sha256()
        received = 0
        if to_file:
            fd, temp = self.cache.temp_file()
            sink = os.fdopen(fd, "wb")
        else:
            temp, sink, chunks = "", None, []
        try:
            while chunk := response.read1(_CHUNK):
                received += len(chunk)
                if received > max_bytes:
                    raise Rejected(f"too large (> {max_bytes} bytes)")
                if time.monotonic() > deadline or self.cancelled.is_set():
                    raise Rejected("timeout (total time limit)", retryable=True)
                if sink is not None:
                    sink.write(chunk)
                    digest.update(chunk)
                else:
                    chunks.append(chunk)
        except BaseException:
            if sink is not None:
                sink.close()
                os.unlink(temp)
            raise
        if sink is None:
            return b"".join(chunks)
        sink.close()
        return temp, digest.hexdigest()


def _wire_url(url: str) -> str:
    """The URL as it goes on the wire: host in IDNA, path and query percent-encoded where a
    browser would (spaces, non-ASCII), existing escapes kept."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        host = host.encode("idna").decode("ascii")
    except UnicodeError:
        pass  # left as is: the connection attempt reports it
    netloc = f"[{host}]" if ":" in host else host
    if parts.port is not None:
        netloc += f":{parts.port}"
    path = quote(parts.path, safe="/%:@!$&'()*+,;=~")
    query = quote(parts.query, safe="/%:@!$&'()*+,;=~?")
    return f"{parts.scheme}://{netloc}{path}" + (f"?{query}" if query else "")


def _discard(body: object) -> None:
    if isinstance(body, tuple):
        Path(body[0]).unlink(missing_ok=True)
