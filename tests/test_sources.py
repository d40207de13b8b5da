"""Crawl source kinds beyond local/urls/builtin (html galleries, video, archives), the HTTP
cache (resume, revalidation), robots.txt, hostile servers and cross-source deduplication."""

from __future__ import annotations

import io
import threading
import time
import zipfile
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from cartoon.data import crawl as crawl_module
from cartoon.data.crawl import crawl
from cartoon.data.dedupe import hamming
from cartoon.data.http import ATTEMPT_BUDGET_FACTOR
from cartoon.errors import UsageError
from cartoon.params import CrawlParams, ResizeParams
from tests.local_server import fake_network, serving

#: Quick crawl settings for the local test server, which runs on 127.0.0.1: a private address, so
#: every test that talks to it opts in with allow_private.
LOCAL_SERVER = {"allow_private": True, "host_delay_s": 0.0, "per_host": 4, "backoff_s": 0.01, "timeout_s": 1.0}


def scene(seed: int, width: int = 48, height: int = 40) -> np.ndarray:
    """A distinct picture: a few random shapes on a random gradient (perceptual hashes differ)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:height, :width] / max(height, width)
    image = np.stack([rng.uniform(0, 255) * x, rng.uniform(0, 255) * y, rng.uniform(0, 255) * (1 - x)], -1)
    for _ in range(5):
        cy, cx, r = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.1, 0.3)
        image[(y - cy) ** 2 + (x - cx) ** 2 < r**2] = rng.uniform(0, 255, 3)
    return np.clip(image, 0, 255).astype(np.uint8)


def encode(rgb: np.ndarray, ext: str = ".png", quality: int = 90) -> bytes:
    options = [cv2.IMWRITE_JPEG_QUALITY, quality] if ext == ".jpg" else []
    ok, buf = cv2.imencode(ext, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), options)
    assert ok
    return buf.tobytes()


def write_sources(folder: Path, sources: list[dict]) -> Path:
    path = folder / "sources.yaml"
    path.write_text(yaml.safe_dump({"sources": sources}))
    return path


def files_under(root: Path) -> set[Path]:
    return {path for path in root.rglob("*") if path.is_file()}


# ---------------------------------------------------------------- a hostile gallery server


class Gallery:
    def __init__(self) -> None:
        self.images = {f"/img/{name}.png": encode(scene(seed)) for seed, name in enumerate(["a", "b", "big", "p2", "secret", "ext"])}
        self.images["/img/photo.jpg"] = encode(scene(40), ".jpg")
        self.hits: Counter[str] = Counter()
        self.conditional: Counter[str] = Counter()
        self.not_modified = 0
        self.endless_sent = 0
        self.lock = threading.Lock()
        self.archive = self._archive()

    def _archive(self) -> bytes:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as archive:
            archive.writestr("good/one.png", encode(scene(50)))
            archive.writestr("../evil.png", encode(scene(51)))
            archive.writestr("notes.txt", b"not an image")
        return buf.getvalue()

    def pages(self, port: int) -> dict[str, str]:
        return {
            "/gallery.html": f"""<html><head><title>g</title></head><body>
                <img src="/img/a.png"><img src="img/a.png" alt="again">
                <img srcset="/img/b.png 100w, /img/big.png 800w" src="/img/b.png">
                <a href="/img/photo.jpg">full size</a>
                <a href="/page2.html">next</a> <a href="/private/index.html">private</a>
                <img src="/private/secret.png"> <img src="data:image/png;base64,AAAA">
                <a href="mailto:someone@example.com">mail</a> <a href="/broken.html">broken</a>
                <a href="http://localhost:{port}/elsewhere.html">other host</a>
                <img src="/html-as-jpeg.jpg"><img src="/liar.png"><img src="/endless.png">
                </body></html>""",
            "/page2.html": '<img src="/img/p2.png"><a href="/page3.html">deeper</a>',
            "/page3.html": '<img src="/img/ext.png">',
            "/elsewhere.html": '<img src="/img/ext.png">',
            "/outward.html": f'<img src="/img/a.png"> <img src="http://internal.test:{port}/img/b.png">'
                             f'<a href="http://internal.test:{port}/page2.html">in</a>'
                             f'<a href="http://127.0.0.1:{port}/page3.html">loopback</a>',
        }


def gallery_handler(site: Gallery, port_box: list[int]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def reply(self, status: int, body: bytes, content_type: str, extra: dict | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for key, value in (extra or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            path = self.path
            with site.lock:
                site.hits[path] += 1
                if self.headers.get("If-None-Match"):
                    site.conditional[path] += 1
            pages = site.pages(port_box[0])
            if path == "/robots.txt":
                self.reply(200, b"User-agent: *\nDisallow: /private/\n", "text/plain")
            elif path in pages:
                self.reply(200, pages[path].encode(), "text/html; charset=utf-8")
            elif path in site.images:
                etag = f'"{len(site.images[path])}"'
                if self.headers.get("If-None-Match") == etag:
                    with site.lock:
                        site.not_modified += 1
                    self.send_response(304)
                    self.end_headers()
                    return
                self.reply(200, site.images[path], "image/jpeg" if path.endswith(".jpg") else "image/png", {"ETag": etag})
            elif path == "/html-as-jpeg.jpg":
                self.reply(200, b"<html><body>not a picture</body></html>", "image/jpeg")
            elif path == "/liar.png":  # a body larger than its Content-Length claims
                body = site.images["/img/a.png"]
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", "64")
                self.end_headers()
                self.wfile.write(body + bytes(100_000))
            elif path == "/endless.png":  # a response that never ends
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.end_headers()
                try:
                    for _ in range(2000):
                        self.wfile.write(bytes(64 * 1024))
                        with site.lock:
                            site.endless_sent += 64 * 1024
                except OSError:
                    pass
            elif path == "/loop.html":
                self.send_response(302)
                self.send_header("Location", "/loop.html")
                self.send_header("Content-Length", "0")
                self.end_headers()
            elif path == "/flaky.png":  # 500 first, then success
                if site.hits[path] == 1:
                    self.reply(500, b"oops", "text/plain")
                else:
                    self.reply(200, site.images["/img/b.png"], "image/png")
            elif path == "/pack.zip":
                self.reply(200, site.archive, "application/zip")
            elif path.startswith("/slow/"):  # a healthy but slow server: 0.25 s per image
                time.sleep(0.25)
                self.reply(200, encode(scene(int(path.rsplit("/", 1)[1]))), "image/png")
            elif path == "/my%20photo%C3%A9.png":  # what a browser sends for "/my photoé.png"
                self.reply(200, site.images["/img/a.png"], "image/png")
            elif path == "/cdn/a.png":  # an image URL that redirects to where it is served
                self.send_response(302)
                self.send_header("Location", "/img/a.png")
                self.send_header("Content-Length", "0")
                self.end_headers()
            elif path == "/bad-redirect.png":
                self.send_response(302)
                self.send_header("Location", "http://[oops/x.png")
                self.send_header("Content-Length", "0")
                self.end_headers()
            elif path == "/malformed.html":
                self.reply(200, b"<html><base href='http://[oops/'><a href='http://[oops/x.html'>x</a>"
                                b"<img src='http://[oops/y.png'><img srcset='  '><img src='/img/a.png'><![if bad]></html>",
                           "text/html")  # fmt: skip
            else:
                self.reply(404 if path != "/broken.html" else 500, b"no", "text/plain")

    return Handler


@pytest.fixture
def gallery() -> Iterator[tuple[Gallery, str]]:
    site = Gallery()
    port_box = [0]
    with serving(gallery_handler(site, port_box)) as base:
        port_box[0] = int(base.rsplit(":", 1)[1])
        yield site, base


def test_html_gallery_with_robots_depth_and_hostile_responses(tmp_path, gallery, capsys):
    site, base = gallery
    sources = write_sources(tmp_path, [{"name": "gallery", "kind": "html", "domain": "photo", "licence": "CC-BY 4.0 (test)",
                                        "start_urls": [f"{base}/gallery.html"], "max_depth": 1}])  # fmt: skip
    before = files_under(tmp_path)
    started = time.monotonic()
    manifest = crawl(sources, tmp_path / "raw", CrawlParams(retries=1, max_bytes=300_000, **LOCAL_SERVER))
    elapsed = time.monotonic() - started
    rows = {row["origin"].removeprefix(base): row for row in manifest.to_dict("records")}
    status = {origin: (row["status"], row["reason"]) for origin, row in rows.items()}

    for image in ("/img/a.png", "/img/big.png", "/img/photo.jpg", "/img/p2.png"):
        assert status[image] == ("ok", ""), image
    assert "/img/b.png" not in rows  # srcset: only its largest candidate
    assert "/img/ext.png" not in rows  # page3 is depth 2; elsewhere.html is another host
    assert status["/private/secret.png"] == ("rejected", "disallowed by robots.txt")
    assert status["/broken.html"] == ("rejected", "page http 500")
    assert status["/html-as-jpeg.jpg"] == ("rejected", "not an image")
    assert status["/liar.png"] == ("rejected", "corrupt or truncated")  # only the 64 declared bytes are read
    assert status["/endless.png"] == ("rejected", "too large (> 300000 bytes)")
    assert site.hits["/private/secret.png"] == 0 and site.hits["/private/index.html"] == 0  # robots honoured
    assert site.hits["/page3.html"] == 0 and site.hits["/img/a.png"] == 1
    assert site.hits["/broken.html"] == 2  # one retry
    assert site.endless_sent < 20_000_000
    assert set(manifest[manifest.status == "ok"].licence) == {"CC-BY 4.0 (test)"}
    assert elapsed < 30  # bounded: every request has a time budget
    assert all(path.is_relative_to(tmp_path / "raw") for path in files_under(tmp_path) - before)
    err = capsys.readouterr().err
    assert "fetched" in err and "skipped" in err and "failed" in err  # the progress bar's counts


def test_links_and_images_on_private_addresses_are_refused_with_same_host_off(tmp_path, gallery, monkeypatch):
    site, base = gallery
    port = base.rsplit(":", 1)[1]
    fake_network(monkeypatch)
    sources = write_sources(tmp_path, [{"kind": "html", "domain": "photo", "same_host": False, "max_depth": 1,
                                        "start_urls": [f"http://public.test:{port}/outward.html"]}])  # fmt: skip
    manifest = crawl(sources, tmp_path / "raw", CrawlParams(retries=0, host_delay_s=0))
    assert dict(zip(manifest.origin, manifest.reason)) == {
        f"http://public.test:{port}/img/a.png": "",
        f"http://internal.test:{port}/img/b.png": "private address: 10.0.0.7",
        f"http://internal.test:{port}/page2.html": "page private address: 10.0.0.7",
        f"http://127.0.0.1:{port}/page3.html": "page private address: 127.0.0.1",
    }
    assert site.hits["/img/a.png"] == 1  # the public host was crawled...
    assert site.hits["/img/b.png"] == site.hits["/page2.html"] == site.hits["/page3.html"] == 0  # ...and nothing else


def test_archive_over_http_rejects_escaping_members_and_writes_only_its_folder(tmp_path, gallery):
    site, base = gallery
    sources = write_sources(tmp_path, [{"name": "pack", "kind": "archive", "domain": "cartoon", "url": f"{base}/pack.zip"}])
    before = files_under(tmp_path)
    manifest = crawl(sources, tmp_path / "out" / "raw", CrawlParams(**LOCAL_SERVER))
    rows = {row["origin"].split("!", 1)[1]: (row["status"], row["reason"]) for row in manifest.to_dict("records")}
    assert rows == {"good/one.png": ("ok", ""), "../evil.png": ("rejected", "unsafe path"), "notes.txt": ("rejected", "not an image")}
    created = files_under(tmp_path) - before
    assert created and all(path.is_relative_to(tmp_path / "out" / "raw") for path in created)
    assert not (tmp_path / "out" / "evil.png").exists() and not (tmp_path / "evil.png").exists()


def test_local_archive_and_its_errors(tmp_path):
    with zipfile.ZipFile(tmp_path / "set.zip", "w") as archive:
        archive.writestr("a.png", encode(scene(1)))
        archive.writestr("/abs.png", encode(scene(2)))
    (tmp_path / "fake.zip").write_bytes(b"this is no archive")
    sources = write_sources(tmp_path, [
        {"name": "zip", "kind": "archive", "domain": "photo", "path": "set.zip"},
        {"name": "fake", "kind": "archive", "domain": "photo", "path": "fake.zip"},
    ])  # fmt: skip
    manifest = crawl(sources, tmp_path / "raw", CrawlParams())
    reasons = dict(zip(manifest.origin.str.removeprefix(f"{tmp_path}/"), manifest.reason))
    assert reasons["set.zip!a.png"] == "" and reasons["set.zip!/abs.png"] == "unsafe path"
    assert reasons["fake.zip"].startswith("bad archive (")
    with pytest.raises(UsageError, match="archive not found"):
        crawl(write_sources(tmp_path, [{"kind": "archive", "domain": "photo", "path": "nope.zip"}]), tmp_path / "r2", CrawlParams())
    with pytest.raises(UsageError, match="exactly one of path and url"):
        crawl(write_sources(tmp_path, [{"kind": "archive", "domain": "photo", "path": "set.zip", "url": "http://x/y.zip"}]),
              tmp_path / "r3", CrawlParams())  # fmt: skip


def test_interrupted_crawl_resumes_without_downloading_again(tmp_path, gallery, monkeypatch):
    site, base = gallery
    urls = [f"{base}/img/{name}" for name in ("a.png", "b.png", "big.png", "p2.png", "secret.png", "photo.jpg")]
    sources = write_sources(tmp_path, [{"kind": "urls", "domain": "photo", "urls": urls}])
    params = CrawlParams(workers=1, **LOCAL_SERVER)
    examined = []
    real_examine = crawl_module._examine

    def interrupted(item, out_dir, params):
        if len(examined) == 3:
            raise KeyboardInterrupt  # the user presses Ctrl-C half-way
        examined.append(item.where.origin)
        return real_examine(item, out_dir, params)

    monkeypatch.setattr(crawl_module, "_examine", interrupted)
    with pytest.raises(KeyboardInterrupt):
        crawl(sources, tmp_path / "raw", params)
    assert sum(site.hits[f"/img/{n}"] for n in ("a.png", "b.png", "big.png", "p2.png", "secret.png", "photo.jpg")) == 3
    monkeypatch.setattr(crawl_module, "_examine", real_examine)
    manifest = crawl(sources, tmp_path / "raw", params)
    assert (manifest.status == "ok").sum() == 6
    assert all(site.hits[url.removeprefix(base)] == 1 for url in urls)  # nothing fetched twice
    assert sum(site.conditional.values()) == 0  # the interrupted crawl's downloads were trusted as they are


def test_recrawl_revalidates_with_etags(tmp_path, gallery):
    site, base = gallery
    urls = [f"{base}/img/a.png", f"{base}/img/b.png", f"{base}/flaky.png"]
    sources = write_sources(tmp_path, [{"kind": "urls", "domain": "photo", "urls": urls}])
    first = crawl(sources, tmp_path / "raw", CrawlParams(**LOCAL_SERVER))
    site.images["/img/b.png"] = encode(scene(99))  # changed on the server since
    second = crawl(sources, tmp_path / "raw", CrawlParams(**LOCAL_SERVER))
    assert site.not_modified == 1  # a.png: 304, no body sent again
    assert site.conditional["/img/a.png"] == 1 and site.conditional["/img/b.png"] == 1
    assert site.hits["/flaky.png"] == 3  # no validator from that server: fetched again (500, then 200 twice)
    changed = dict(zip(second.origin, second.sha256))
    assert changed[f"{base}/img/a.png"] == dict(zip(first.origin, first.sha256))[f"{base}/img/a.png"]
    assert changed[f"{base}/img/b.png"] != dict(zip(first.origin, first.sha256))[f"{base}/img/b.png"]
    assert not (tmp_path / "raw" / ".http-cache" / "crawl-in-progress.json").exists()


def test_malformed_links_and_redirects_become_rows_not_crashes(tmp_path, gallery):
    site, base = gallery
    sources = write_sources(tmp_path, [
        {"name": "page", "kind": "html", "domain": "photo", "start_urls": [f"{base}/malformed.html"]},
        {"name": "list", "kind": "urls", "domain": "cartoon", "urls": [f"{base}/bad-redirect.png", f"{base}/my photoé.png"]},
    ])  # fmt: skip
    manifest = crawl(sources, tmp_path / "raw", CrawlParams(**LOCAL_SERVER))
    rows = dict(zip(manifest.origin.str.removeprefix(base), zip(manifest.status, manifest.reason)))
    assert rows == {"/img/a.png": ("ok", ""), "/bad-redirect.png": ("rejected", "invalid redirect"), "/my photoé.png": ("ok", "")}


def test_waiting_for_a_busy_host_does_not_count_against_the_time_budget(tmp_path, gallery):
    """One request at a time to the host, 8 workers, 0.25 s per image, a 1.5 s budget each:
    the last requests wait about 2 s for their turn and must still succeed."""
    _, base = gallery
    sources = write_sources(tmp_path, [{"kind": "urls", "domain": "photo", "urls": [f"{base}/slow/{i}" for i in range(8)]}])
    params = CrawlParams(workers=8, per_host=1, host_delay_s=0, timeout_s=0.3, retries=0, allow_private=True)
    manifest = crawl(sources, tmp_path / "raw", params)
    assert (manifest.status == "ok").all(), manifest.reason.tolist()


def test_interrupt_stops_without_running_the_queue(tmp_path, gallery, monkeypatch):
    site, base = gallery
    urls = [f"{base}/slow/{i}" for i in range(12)]
    sources = write_sources(tmp_path, [{"kind": "urls", "domain": "photo", "urls": urls}])
    real_origins = crawl_module._origins

    def interrupted(*args):
        for count, item in enumerate(real_origins(*args), start=1):
            yield item
            if count == 6:
                time.sleep(0.1)  # the two workers have started on the first items
                raise KeyboardInterrupt

    monkeypatch.setattr(crawl_module, "_origins", interrupted)
    with pytest.raises(KeyboardInterrupt):
        crawl(sources, tmp_path / "raw", CrawlParams(workers=2, **{**LOCAL_SERVER, "per_host": 2}))
    assert sum(site.hits[f"/slow/{i}"] for i in range(12)) <= 2  # queued items were cancelled
    assert (tmp_path / "raw" / ".http-cache" / "crawl-in-progress.json").is_file()  # resumable


def test_redirected_images_are_revalidated_at_their_final_url(tmp_path, gallery):
    site, base = gallery
    sources = write_sources(tmp_path, [{"kind": "urls", "domain": "photo", "urls": [f"{base}/cdn/a.png"]}])
    crawl(sources, tmp_path / "raw", CrawlParams(**LOCAL_SERVER))
    crawl(sources, tmp_path / "raw", CrawlParams(**LOCAL_SERVER))
    assert site.not_modified == 1 and site.hits["/img/a.png"] == 2


def test_face_photos_are_deduplicated_against_photos(tmp_path):
    """A face photo that copies a photo must not bring it into training behind the split's back."""
    (tmp_path / "photos").mkdir()
    (tmp_path / "faces").mkdir()
    for index in range(3):
        (tmp_path / "photos" / f"{index}.png").write_bytes(encode(scene(index)))
    (tmp_path / "faces" / "copy.jpg").write_bytes(encode(cv2.resize(scene(1), (40, 32)), ".jpg", 80))
    (tmp_path / "faces" / "own.png").write_bytes(encode(scene(7)))
    sources = write_sources(tmp_path, [
        {"name": "faces", "kind": "local", "domain": "face_photo", "path": "faces"},
        {"name": "photos", "kind": "local", "domain": "photo", "path": "photos"},
    ])  # fmt: skip
    manifest = crawl(sources, tmp_path / "raw", CrawlParams(near_duplicate_distance=6))
    status = dict(zip(manifest.origin.map(lambda o: Path(o).name), manifest.status))
    assert status == {"0.png": "ok", "1.png": "ok", "2.png": "ok", "copy.jpg": "duplicate", "own.png": "ok"}


def test_redirect_loop_page_is_recorded(tmp_path, gallery):
    _, base = gallery
    sources = write_sources(tmp_path, [{"kind": "html", "domain": "photo", "start_urls": [f"{base}/loop.html"]}])
    started = time.monotonic()
    manifest = crawl(sources, tmp_path / "raw", CrawlParams(**LOCAL_SERVER))
    assert manifest.reason.tolist() == ["page too many redirects"]
    assert time.monotonic() - started < ATTEMPT_BUDGET_FACTOR * LOCAL_SERVER["timeout_s"] * 2


# ---------------------------------------------------------------- video


def write_video(path: Path, scenes: list[np.ndarray], seconds: float = 1.0, fps: int = 10) -> None:
    height, width = scenes[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (width, height))
    assert writer.isOpened(), "OpenCV cannot write MJPG video here"
    for picture in scenes:
        for step in range(int(seconds * fps)):
            frame = np.roll(picture, step, axis=1)  # a slow pan: frames of a shot are not identical
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()


def test_video_source_keeps_one_frame_per_scene(tmp_path):
    pictures = [cv2.resize(scene(seed), (96, 64)) for seed in (1, 2)]
    black = np.zeros((64, 96, 3), np.uint8)
    (tmp_path / "films").mkdir()
    write_video(tmp_path / "films" / "ep1.avi", [pictures[0], black, pictures[1]])
    (tmp_path / "films" / "broken.mp4").write_bytes(b"not a video at all")
    sources = write_sources(tmp_path, [{"name": "anime", "kind": "video", "domain": "cartoon", "path": "films"}])
    manifest = crawl(sources, tmp_path / "raw", CrawlParams())
    frames = manifest[manifest.origin.str.contains("#frame=")]
    assert (frames.status == "ok").sum() == 2 and set(frames[frames.status != "ok"].reason) == {"near-black"}
    assert manifest.loc[manifest.origin.str.endswith("broken.mp4"), "reason"].tolist() == ["unreadable video"]
    assert set(frames.kind) == {"video"} and set(frames.source) == {"anime"}


# ---------------------------------------------------------------- cleaning


def test_near_duplicates_across_sources_never_straddle_the_split(tmp_path):
    """Resized and re-encoded copies of photos arrive from two sources; after the crawl's
    dedupe the resize stage's split has no test photo near any training photo."""
    originals = [cv2.resize(scene(seed), (80, 64)) for seed in range(30)]
    for index, picture in enumerate(originals):
        (tmp_path / "a").mkdir(exist_ok=True)
        (tmp_path / "a" / f"{index:02d}.png").write_bytes(encode(picture))
        if index % 2 == 0:  # a second source with near-copies: smaller and JPEG-compressed
            (tmp_path / "b").mkdir(exist_ok=True)
            (tmp_path / "b" / f"{index:02d}.jpg").write_bytes(encode(cv2.resize(picture, (60, 48)), ".jpg", 70))
    (tmp_path / "c").mkdir()
    for index in range(4):
        (tmp_path / "c" / f"{index}.png").write_bytes(encode(scene(100 + index)))
    sources = write_sources(tmp_path, [
        {"name": "first", "kind": "local", "domain": "photo", "path": "a"},
        {"name": "second", "kind": "local", "domain": "photo", "path": "b"},
        {"name": "toons", "kind": "local", "domain": "cartoon", "path": "c"},
    ])  # fmt: skip
    params = CrawlParams(near_duplicate_distance=6)
    manifest = crawl(sources, tmp_path / "raw", params)
    near = manifest[manifest.reason.str.startswith("near-duplicate of")]
    assert len(near) == 15 and set(near.source) == {"second"}  # the first source's copy is kept
    assert near.reason.str.contains(r"/a/\d\d\.png \(distance \d\)").all()

    from cartoon.data.resize import resize

    resized = resize(tmp_path / "raw", tmp_path / "resized", ResizeParams(size=32, test_fraction=0.3, seed=0))
    split = dict(zip(resized.item_id, resized.split))
    hashes = {row["item_id"]: int(row["phash"], 16) for row in manifest.to_dict("records") if row["status"] == "ok"}
    photos = manifest[(manifest.status == "ok") & (manifest.domain == "photo")].item_id
    test = np.array([hashes[i] for i in photos if split[i] == "test"], dtype=np.uint64)
    train = np.array([hashes[i] for i in photos if split[i] == "train"], dtype=np.uint64)
    assert len(test) >= 4 and len(train) >= 10
    assert hamming(test[:, None], train[None, :]).min() > params.near_duplicate_distance

    # without the near-duplicate removal, copies would have been split apart
    loose = crawl(sources, tmp_path / "raw2", CrawlParams(near_duplicate_distance=-1))
    assert (loose.status == "ok").sum() == 49


def test_minimum_size_and_aspect_ratio(tmp_path):
    (tmp_path / "in").mkdir()
    for name, (width, height) in {"ok": (64, 48), "small": (40, 30), "long": (300, 60)}.items():
        (tmp_path / "in" / f"{name}.png").write_bytes(encode(cv2.resize(scene(len(name)), (width, height))))
    sources = write_sources(tmp_path, [{"kind": "local", "domain": "photo", "path": "in"}])
    manifest = crawl(sources, tmp_path / "raw", CrawlParams(min_side=48, max_aspect=4.0))
    reasons = dict(zip(manifest.origin.map(lambda o: Path(o).stem), manifest.reason))
    assert reasons == {"ok": "", "small": "too small (40x30 < 48 px)", "long": "aspect ratio (5.00 > 4)"}
    assert len(list((tmp_path / "raw" / "images" / "photo").iterdir())) == 1  # rejected images are not stored


def test_documented_examples_validate():
    from cartoon.data.crawl import load_sources

    examples = Path(__file__).resolve().parents[1] / "pipeline" / "sources.examples.yaml"
    kinds = {source.kind for _, source in load_sources(examples)}
    assert kinds == {"builtin", "local", "urls", "html", "video", "archive"}


def test_large_archive_streams_in_bounded_memory(tmp_path):
    """Members wait in a bounded queue and are freed once examined: memory does not grow with
    the archive (60 members of 1 MB each here)."""
    import tracemalloc

    rng = np.random.default_rng(0)
    member = encode(rng.integers(0, 256, (600, 600, 3), dtype=np.uint8))
    assert len(member) > 1_000_000
    with zipfile.ZipFile(tmp_path / "big.zip", "w", zipfile.ZIP_STORED) as archive:
        for index in range(60):
            archive.writestr(f"{index:02d}.png", member)
    sources = write_sources(tmp_path, [{"kind": "archive", "domain": "photo", "path": "big.zip"}])
    tracemalloc.start()
    try:
        manifest = crawl(sources, tmp_path / "raw", CrawlParams(workers=2, max_bytes=5_000_000))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (manifest.status == "ok").sum() == 1 and (manifest.status == "duplicate").sum() == 59
    assert peak < 30_000_000  # 60 MB of members went through


def test_robots_txt_redirect_is_followed_and_unreachable_is_told_apart(tmp_path):
    """RFC 9309: follow robots.txt redirects; a server error on it disallows all, with its own reason."""
    image = encode(scene(3))
    hits: Counter[str] = Counter()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:
            hits[self.path] += 1
            if self.path == "/robots.txt":
                status, body, headers = 301, b"", {"Location": "/real-robots.txt"}
            elif self.path == "/real-robots.txt":
                status, body, headers = 200, b"User-agent: *\nDisallow: /private/\n", {"Content-Type": "text/plain"}
            else:
                status, body, headers = 200, image, {"Content-Type": "image/png"}
            self.send_response(status)
            for key, value in {**headers, "Content-Length": str(len(body))}.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body)

    class Broken(Handler):
        def do_GET(self) -> None:
            hits["broken " + self.path] += 1
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()

    with serving(Handler) as good, serving(Broken) as broken:
        sources = write_sources(tmp_path, [{"kind": "urls", "domain": "photo",
                                            "urls": [f"{good}/private/a.png", f"{good}/public/b.png", f"{broken}/c.png"]}])  # fmt: skip
        manifest = crawl(sources, tmp_path / "raw", CrawlParams(**LOCAL_SERVER, retries=1))
    reasons = dict(zip(manifest.origin.map(lambda origin: origin.rsplit("/", 1)[1]), manifest.reason))
    assert reasons == {"a.png": "disallowed by robots.txt", "b.png": "", "c.png": "robots.txt unreachable"}
    assert hits["broken /robots.txt"] == 2 and hits["broken /c.png"] == 0  # retried, then nothing fetched
