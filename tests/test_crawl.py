"""The crawl stage: strict sources file, every bad input recorded (never fatal), bounded HTTP."""

from __future__ import annotations

import sys
import threading
import time
import types
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from io import BytesIO
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from cartoon.data.crawl import MANIFEST_COLUMNS, crawl
from cartoon.data.http import ATTEMPT_BUDGET_FACTOR, is_public_address
from cartoon.data.imageio import sha256_bytes
from cartoon.errors import UsageError
from cartoon.params import CrawlParams
from tests.local_server import fake_network, serving


def image_bytes(width: int, height: int, seed: int, fmt: str = "PNG") -> bytes:
    rng = np.random.default_rng(seed)
    buf = BytesIO()
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(buf, format=fmt)
    return buf.getvalue()


def write_sources(folder: Path, sources: list[dict]) -> Path:
    path = folder / "sources.yaml"
    path.write_text(yaml.safe_dump({"sources": sources}))
    return path


def rows_by_name(manifest: pd.DataFrame) -> dict[str, dict]:
    return {Path(row["origin"]).name: row for row in manifest.to_dict("records")}


# ---------------------------------------------------------------- local folders


@pytest.fixture
def mixed_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    (folder / "sub" / "deeper").mkdir(parents=True)
    (folder / ".cache").mkdir()
    good_png = image_bytes(30, 20, seed=1)
    (folder / "a.png").write_bytes(good_png)
    (folder / "sub" / "a-copy.png").write_bytes(good_png)
    (folder / "b.jpg").write_bytes(image_bytes(24, 24, seed=2, fmt="JPEG"))
    (folder / "sub" / "deeper" / "c.gif").write_bytes(image_bytes(10, 12, seed=3, fmt="GIF"))
    buf = BytesIO()
    Image.new("RGBA", (9, 9), (0, 0, 0, 0)).save(buf, format="PNG")
    (folder / "clear.png").write_bytes(buf.getvalue())
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.jpg").write_text("this is not a JPEG\n")
    (folder / "README.txt").write_text("photos for the test\n")
    truncated = image_bytes(64, 64, seed=4)
    (folder / "trunc.png").write_bytes(truncated[: len(truncated) // 2])
    buf = BytesIO()
    Image.new("1", (3000, 3000)).save(buf, format="PNG")
    (folder / "bomb.png").write_bytes(buf.getvalue())
    (folder / ".hidden.png").write_bytes(image_bytes(8, 8, seed=5))
    (folder / ".cache" / "thumb.png").write_bytes(image_bytes(8, 8, seed=6))
    return folder


def test_local_folder_keeps_good_records_bad_and_marks_duplicates(tmp_path, mixed_folder, capsys):
    sources = write_sources(tmp_path, [{"kind": "local", "domain": "photo", "path": "photos", "licence": "own"}])
    out = tmp_path / "raw"
    manifest = crawl(sources, out, CrawlParams(max_pixels=1_000_000, workers=3))

    assert list(manifest.columns) == MANIFEST_COLUMNS
    rows = rows_by_name(manifest)
    assert ".hidden.png" not in rows and "thumb.png" not in rows  # hidden files and folders skipped
    assert {name: row["status"] for name, row in rows.items()} == {
        "a.png": "ok", "a-copy.png": "duplicate", "b.jpg": "ok", "c.gif": "ok", "clear.png": "ok",
        "empty.jpg": "rejected", "notes.jpg": "rejected", "README.txt": "rejected",
        "trunc.png": "rejected", "bomb.png": "rejected",
    }  # fmt: skip
    assert rows["empty.jpg"]["reason"] == "empty file"
    assert rows["notes.jpg"]["reason"] == "not an image"
    assert rows["trunc.png"]["reason"] == "corrupt or truncated"
    assert rows["bomb.png"]["reason"] == "too many pixels (3000 x 3000 > 1000000)"
    assert rows["a-copy.png"]["reason"] == f"same content as {mixed_folder / 'a.png'}"
    assert rows["a-copy.png"]["item_id"] == rows["a.png"]["item_id"] and rows["a-copy.png"]["path"] == ""

    for name in ("a.png", "b.jpg", "c.gif", "clear.png"):
        row = rows[name]
        original = next(mixed_folder.rglob(name)).read_bytes()
        stored = out / row["path"]
        assert stored.read_bytes() == original  # original bytes, not a re-encode
        assert row["sha256"] == sha256_bytes(original) and row["item_id"] == row["sha256"][:16]
        assert row["path"] == f"images/photo/{row['item_id']}{Path(name).suffix}"
        assert row["origin"] == str(next(mixed_folder.rglob(name)).resolve())
        assert row["licence"] == "own" and row["reason"] == "" and row["source"] == "local-0"
    assert (rows["a.png"]["width"], rows["a.png"]["height"]) == (30, 20)
    assert sorted(p.name for p in (out / "images" / "photo").iterdir()) == sorted(
        rows[n]["path"].split("/")[-1] for n in ("a.png", "b.jpg", "c.gif", "clear.png")
    )
    line = capsys.readouterr().err
    assert "crawl: 4 ok (4 photo), 5 rejected (" in line and "1 duplicate" in line
    assert "2 not an image" in line and "1 corrupt or truncated" in line


def test_rerun_is_identical_and_clears_stale_files(tmp_path, mixed_folder):
    sources = write_sources(tmp_path, [{"kind": "local", "domain": "photo", "path": str(mixed_folder)}])
    out = tmp_path / "raw"
    params = CrawlParams(max_pixels=1_000_000)
    crawl(sources, out, params)
    first = (out / "manifest.csv").read_text()
    stale = out / "images" / "cartoon" / "0123456789abcdef.png"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"left over")
    (mixed_folder / "b.jpg").unlink()

    crawl(sources, out, params)
    second = (out / "manifest.csv").read_text()
    assert not stale.exists() and not stale.parent.exists()
    assert "b.jpg" not in second and len(list((out / "images" / "photo").iterdir())) == 3
    (mixed_folder / "b.jpg").write_bytes(image_bytes(24, 24, seed=2, fmt="JPEG"))
    crawl(sources, out, params)
    assert (out / "manifest.csv").read_text() == first


def test_local_non_recursive_and_relative_to_sources_file(tmp_path, mixed_folder, monkeypatch):
    sources = write_sources(tmp_path, [{"kind": "local", "domain": "cartoon", "path": "photos", "recursive": False}])
    monkeypatch.chdir(mixed_folder / "sub")  # the relative path must not depend on the cwd
    manifest = crawl(sources, tmp_path / "raw", CrawlParams(max_pixels=1_000_000))
    names = set(rows_by_name(manifest))
    assert "a.png" in names and "a-copy.png" not in names and "c.gif" not in names
    assert set(manifest.domain) == {"cartoon"}


def test_builtin_source_writes_pngs(tmp_path, monkeypatch):
    def fake_items(domain: str, count: int, size: int, seed: int, photos, style, haze) -> Iterator[tuple[str, np.ndarray]]:
        rng = np.random.default_rng(seed)
        for i in range(count):
            yield f"{domain}-{i:03d}", rng.integers(0, 256, (size, size, 3), dtype=np.uint8)

    fake = types.ModuleType("cartoon.data.builtin")
    fake.builtin_items = fake_items  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "cartoon.data.builtin", fake)  # stands in for the real generator
    sources = write_sources(tmp_path, [
        {"name": "scenes", "kind": "builtin", "domain": "cartoon", "count": 3, "size": 32, "seed": 7},
        {"kind": "builtin", "domain": "photo", "count": 2, "size": 20, "seed": 7},  # same pixels, other domain
    ])  # fmt: skip
    out = tmp_path / "raw"
    manifest = crawl(sources, out, CrawlParams())
    assert (manifest.status == "ok").all()  # duplicates only count within a domain
    cartoons = manifest[manifest.domain == "cartoon"]
    assert cartoons.origin.tolist() == ["builtin:cartoon-000", "builtin:cartoon-001", "builtin:cartoon-002"]
    assert set(cartoons.source) == {"scenes"} and set(manifest[manifest.domain == "photo"].source) == {"builtin-1"}
    assert all(path.endswith(".png") for path in manifest.path)
    stored = Image.open(out / cartoons.path.iloc[0])
    assert stored.format == "PNG" and stored.size == (32, 32)
    first = (out / "manifest.csv").read_text()
    crawl(sources, out, CrawlParams())
    assert (out / "manifest.csv").read_text() == first


def test_real_builtin_sources_are_deterministic(tmp_path):
    pytest.importorskip("cartoon.data.builtin")
    sources = write_sources(tmp_path, [
        {"kind": "builtin", "domain": "photo", "count": 3, "size": 32, "seed": 0},
        {"kind": "builtin", "domain": "cartoon", "count": 3, "size": 32, "seed": 0},
    ])  # fmt: skip
    manifest = crawl(sources, tmp_path / "a", CrawlParams())
    crawl(sources, tmp_path / "b", CrawlParams())
    assert (manifest.status == "ok").sum() == 6
    assert set(manifest.width) == set(manifest.height) == {32}
    assert manifest.origin.str.startswith("builtin:").all()
    assert (tmp_path / "a" / "manifest.csv").read_text() == (tmp_path / "b" / "manifest.csv").read_text()


# ---------------------------------------------------------------- sources file validation


@pytest.mark.parametrize(
    ("sources", "expected"),
    [
        (
            [{"kind": "local", "domain": "photo", "path": ".", "recursve": False}],
            ["sources[0]", "recursve", "unknown key"],
        ),
        ([{"name": "mine", "kind": "ftp", "domain": "photo"}], ["sources[0] (mine)", "kind"]),
        ([{"domain": "photo", "path": "."}], ["sources[0]", "kind"]),
        ([{"kind": "builtin", "domain": "photo"}, {"kind": "local", "path": "."}], ["sources[1]", "domain"]),
        ([{"kind": "local", "domain": "painting", "path": "."}], ["sources[0]", "domain"]),
        ([{"kind": "builtin", "domain": "photo", "count": 0}], ["sources[0]", "count"]),
        ([{"name": "web", "kind": "urls", "domain": "photo", "urls": ["ftp://x/y.png"]}], ["sources[0] (web)", "urls"]),
        ([{"kind": "urls", "domain": "photo"}], ["sources[0]", "url_file"]),
        ([{"kind": "local", "domain": "photo"}], ["sources[0]", "path", "Field required"]),
        ([], ["sources"]),
    ],
)
def test_invalid_sources_name_the_key(tmp_path, sources, expected):
    with pytest.raises(UsageError) as info:
        crawl(write_sources(tmp_path, sources), tmp_path / "raw", CrawlParams())
    for text in expected:
        assert text in str(info.value)
    assert not (tmp_path / "raw").exists()  # nothing is written before the file is valid


def test_unknown_top_level_key_and_duplicate_names(tmp_path):
    path = tmp_path / "sources.yaml"
    path.write_text("sources: [{kind: builtin, domain: photo}]\nextra: 1\n")
    with pytest.raises(UsageError, match="extra: unknown key"):
        crawl(path, tmp_path / "raw", CrawlParams())
    twice = [{"name": "x", "kind": "builtin", "domain": "photo"}, {"name": "x", "kind": "builtin", "domain": "cartoon"}]
    with pytest.raises(UsageError, match=r"sources\[1\].name: duplicate"):
        crawl(write_sources(tmp_path, twice), tmp_path / "raw", CrawlParams())


def test_missing_local_folder_is_a_usage_error(tmp_path):
    sources = write_sources(tmp_path, [{"name": "shots", "kind": "local", "domain": "photo", "path": "nowhere"}])
    with pytest.raises(UsageError, match="'shots'.*folder not found.*nowhere"):
        crawl(sources, tmp_path / "raw", CrawlParams())


def test_bad_line_in_url_file_is_a_usage_error(tmp_path):
    (tmp_path / "urls.txt").write_text("# comment\nhttp://127.0.0.1:9/a.png\nfile:///etc/passwd\n")
    sources = write_sources(tmp_path, [{"kind": "urls", "domain": "photo", "url_file": "urls.txt"}])
    with pytest.raises(UsageError, match="line 3"):
        crawl(sources, tmp_path / "raw", CrawlParams())


# ---------------------------------------------------------------- HTTP against a local server


class Site:
    """What the test server serves, and what it saw (hits per path, User-Agents, bytes sent)."""

    def __init__(self) -> None:
        self.good = image_bytes(16, 12, seed=10)
        self.other = image_bytes(12, 16, seed=11, fmt="JPEG")
        self.third = image_bytes(8, 8, seed=12, fmt="JPEG")
        self.hits: Counter[str] = Counter()
        self.agents: set[str] = set()
        self.big_sent = 0
        self.lock = threading.Lock()


def make_handler(site: Site) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def reply(self, status: int, body: bytes, content_type: str = "image/png", length: bool = True) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            if length:
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def redirect(self, location: str) -> None:
            self.send_response(302)
            self.send_header("Location", location)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_GET(self) -> None:
            with site.lock:
                site.hits[self.path] += 1
                hits = site.hits[self.path]
                site.agents.add(self.headers.get("User-Agent", ""))
            if self.path == "/good.png":
                self.reply(200, site.good)
            elif self.path == "/copy.png":
                self.reply(200, site.good)
            elif self.path == "/octet":
                self.reply(200, site.third, "application/octet-stream")
            elif self.path == "/missing.png":
                self.reply(404, b"not here", "text/plain")
            elif self.path == "/flaky.jpg":
                self.reply(500, b"oops", "text/plain") if hits == 1 else self.reply(200, site.other, "image/jpeg")
            elif self.path == "/broken":
                self.reply(503, b"down", "text/plain")
            elif self.path == "/html.jpg":
                self.reply(200, b"<html><body>hello</body></html>", "image/jpeg")
            elif self.path == "/typed-html":
                self.reply(200, site.good, "text/html; charset=utf-8")
            elif self.path == "/declared-big":
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(50_000_000))
                self.end_headers()
            elif self.path == "/endless":  # no Content-Length: the body runs until the client stops
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.end_headers()
                chunk = site.good[:16] + bytes(64 * 1024)
                try:
                    for _ in range(800):  # ~50 MB if nobody stops it
                        self.wfile.write(chunk)
                        with site.lock:
                            site.big_sent += len(chunk)
                except OSError:
                    pass
            elif self.path == "/moved":
                self.redirect("/octet")
            elif self.path == "/loop":
                self.redirect("/loop")
            elif self.path == "/to-ftp":
                self.redirect("ftp://127.0.0.1/x.png")
            elif self.path == "/to-internal":
                self.redirect(f"http://internal.test:{self.server.server_port}/good.png")
            elif self.path == "/to-loopback":
                self.redirect(f"http://127.0.0.1:{self.server.server_port}/good.png")
            elif self.path.startswith("/status/"):  # /status/<code>: that status on the first hit, then the image
                self.reply(int(self.path.split("/")[2]), b"busy", "text/plain") if hits == 1 else self.reply(200, site.good)
            elif self.path == "/drip":  # headers at once, then one byte every 50 ms "forever"
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.end_headers()
                try:
                    for byte in site.good * 10:
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                        time.sleep(0.05)
                except OSError:
                    pass
            elif self.path == "/stall":  # promises a body, then says nothing
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", "1000")
                self.end_headers()
                self.wfile.flush()
                time.sleep(3)
            else:
                self.reply(404, b"", "text/plain")

    return Handler


@pytest.fixture
def site() -> Iterator[tuple[Site, str]]:
    state = Site()
    with serving(make_handler(state)) as base:
        yield state, base


def test_urls_status_retries_content_checks_and_caps(tmp_path, site):
    state, base = site
    (tmp_path / "more.txt").write_text(f"# extra URLs\n{base}/moved  # a redirect\n\n{base}/good.png\n")
    paths = ["/good.png", "/good.png", "/copy.png", "/missing.png", "/flaky.jpg", "/broken", "/html.jpg",
             "/typed-html", "/declared-big", "/endless", "/loop", "/to-ftp"]  # fmt: skip
    sources = write_sources(tmp_path, [
        {"name": "web", "kind": "urls", "domain": "photo", "urls": [base + p for p in paths],
         "url_file": "more.txt", "licence": "CC0"},
    ])  # fmt: skip
    params = CrawlParams(retries=2, backoff_s=0.01, timeout_s=2, max_bytes=100_000, workers=4, host_delay_s=0, per_host=4,
                         allow_private=True)  # fmt: skip
    manifest = crawl(sources, tmp_path / "raw", params)

    rows = {row["origin"].removeprefix(base): row for row in manifest.to_dict("records")}
    assert len(manifest) == len(rows) == 12  # /good.png listed three times: one row
    status = {path: (row["status"], row["reason"]) for path, row in rows.items()}
    assert status["/good.png"] == ("ok", "")
    assert status["/copy.png"][0] == "duplicate"
    assert status["/flaky.jpg"] == ("ok", "")
    assert status["/moved"] == ("ok", "")
    assert status["/missing.png"] == ("rejected", "http 404")
    assert status["/broken"] == ("rejected", "http 503")
    assert status["/html.jpg"] == ("rejected", "not an image")
    assert status["/typed-html"] == ("rejected", "bad content-type (text/html)")
    assert status["/declared-big"] == ("rejected", "too large (> 100000 bytes)")
    assert status["/endless"] == ("rejected", "too large (> 100000 bytes)")
    assert status["/loop"] == ("rejected", "too many redirects")
    assert status["/to-ftp"] == ("rejected", "unsupported scheme (ftp)")

    assert state.hits["/good.png"] == 1  # identical URLs are fetched once
    assert state.hits["/missing.png"] == 1  # 4xx is final: no retry
    assert state.hits["/flaky.jpg"] == 2  # 500, then success
    assert state.hits["/broken"] == 3  # first try + 2 retries
    assert state.hits["/loop"] == 6  # first request + 5 redirects
    assert state.big_sent < 20_000_000  # the client hung up long before the 50 MB were sent
    assert len(state.agents) == 1 and state.agents.pop().startswith("cartoon-pipeline/")  # names the project

    ok = manifest[manifest.status == "ok"]
    assert set(ok.licence) == {"CC0"} and set(ok.source) == {"web"}
    flaky = rows["/flaky.jpg"]
    assert (tmp_path / "raw" / flaky["path"]).read_bytes() == state.other and flaky["path"].endswith(".jpg")
    assert (flaky["width"], flaky["height"]) == (12, 16)
    assert (tmp_path / "raw" / rows["/moved"]["path"]).read_bytes() == state.third  # the redirect target's bytes
    assert state.hits["/octet"] == 1
    rejected = manifest[manifest.status == "rejected"]
    assert (rejected.path == "").all() and rejected.item_id.str.len().eq(16).all()


def test_slow_servers_are_cut_off(tmp_path, site):
    _, base = site
    urls = [f"{base}/drip", f"{base}/stall"]
    sources = write_sources(tmp_path, [{"kind": "urls", "domain": "cartoon", "urls": urls}])
    params = CrawlParams(retries=0, timeout_s=0.3, workers=2, host_delay_s=0, allow_private=True)
    started = time.monotonic()
    manifest = crawl(sources, tmp_path / "raw", params)
    elapsed = time.monotonic() - started
    reasons = dict(zip(manifest.origin.str.removeprefix(base), manifest.reason))
    assert reasons["/drip"] == "timeout (total time limit)"  # each byte came within timeout_s
    assert reasons["/stall"] == "timeout"
    assert elapsed < ATTEMPT_BUDGET_FACTOR * params.timeout_s + 1.5


def test_every_5xx_and_429_is_retried_with_backoff(tmp_path, site):
    state, base = site
    codes = [429, 500, 501, 502, 503, 504, 505, 599]
    sources = write_sources(tmp_path, [{"kind": "urls", "domain": "photo", "urls": [f"{base}/status/{code}" for code in codes]}])
    params = CrawlParams(retries=1, backoff_s=0.2, host_delay_s=0, per_host=8, workers=8, allow_private=True)
    started = time.monotonic()
    manifest = crawl(sources, tmp_path / "raw", params)
    assert manifest.status.tolist() == ["ok"] + ["duplicate"] * (len(codes) - 1)  # each got the image on its retry
    assert all(state.hits[f"/status/{code}"] == 2 for code in codes)
    assert time.monotonic() - started >= params.backoff_s  # the retry waited


# ---------------------------------------------------------------- private addresses


def test_private_addresses_are_refused_by_default(tmp_path, site):
    state, base = site
    sources = write_sources(tmp_path, [
        {"name": "list", "kind": "urls", "domain": "photo", "urls": [f"{base}/good.png"]},
        {"name": "pages", "kind": "html", "domain": "photo", "start_urls": [f"{base}/gallery.html"]},
        {"name": "pack", "kind": "archive", "domain": "photo", "url": f"{base}/pack.zip"},
    ])  # fmt: skip
    manifest = crawl(sources, tmp_path / "raw", CrawlParams(retries=2, backoff_s=0.01))
    reasons = dict(zip(manifest.source, manifest.reason))
    assert reasons == {"list": "private address: 127.0.0.1", "pages": "page private address: 127.0.0.1",
                       "pack": "private address: 127.0.0.1"}  # fmt: skip
    assert sum(state.hits.values()) == 0  # not even robots.txt was asked for

    opted_in = write_sources(tmp_path, [{"kind": "urls", "domain": "photo", "urls": [f"{base}/good.png"]}])
    assert crawl(opted_in, tmp_path / "raw2", CrawlParams(allow_private=True)).status.tolist() == ["ok"]


def test_a_redirect_to_a_private_address_is_refused_at_that_hop(tmp_path, site, monkeypatch):
    """public.test redirects to internal.test and to 127.0.0.1; the fake network would carry
    either request to the server, so only a check at every hop can stop them."""
    state, base = site
    fake_network(monkeypatch)
    port = base.rsplit(":", 1)[1]
    paths = ["/good.png", "/to-internal", "/to-loopback"]
    sources = write_sources(tmp_path, [{"kind": "urls", "domain": "photo", "urls": [f"http://public.test:{port}{p}" for p in paths]}])
    manifest = crawl(sources, tmp_path / "raw", CrawlParams(retries=0, host_delay_s=0))
    reasons = dict(zip(manifest.origin.str.split(port).str[1], manifest.reason))
    assert reasons == {"/good.png": "", "/to-internal": "private address: 10.0.0.7", "/to-loopback": "private address: 127.0.0.1"}
    assert state.hits["/to-internal"] == state.hits["/to-loopback"] == 1  # the public hop was fetched...
    assert state.hits["/good.png"] == 1  # ...and only the public URL reached the image


def test_a_host_with_any_private_address_is_refused(tmp_path, site, monkeypatch):
    """mixed.test lists a public address first and a private one second: every address counts."""
    state, base = site
    fake_network(monkeypatch)
    port = base.rsplit(":", 1)[1]
    sources = write_sources(tmp_path, [{"kind": "urls", "domain": "photo", "urls": [f"http://mixed.test:{port}/good.png"]}])
    manifest = crawl(sources, tmp_path / "raw", CrawlParams(retries=0, host_delay_s=0))
    assert manifest.reason.tolist() == ["private address: 10.0.0.7"]
    assert sum(state.hits.values()) == 0


@pytest.mark.parametrize(
    ("address", "public"),
    [("93.184.215.14", True), ("2606:4700:4700::1111", True), ("127.0.0.1", False), ("10.1.2.3", False),
     ("172.16.0.1", False), ("192.168.1.1", False), ("169.254.169.254", False), ("100.64.0.1", False),
     ("0.0.0.0", False), ("224.0.0.1", False), ("240.0.0.1", False), ("255.255.255.255", False), ("::1", False),
     ("::", False), ("fe80::1", False), ("fc00::1", False), ("ff02::1", False), ("::ffff:127.0.0.1", False),
     ("::ffff:10.0.0.1", False)],
)  # fmt: skip
def test_public_addresses(address, public):
    assert is_public_address(address) is public
