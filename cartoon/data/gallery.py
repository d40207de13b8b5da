"""Gallery pages -> image URLs: the ``html`` source kind of the crawl stage.

Pages are read breadth-first from the start URLs up to ``max_depth`` links away, on the start
pages' hosts only unless told otherwise. A page contributes ``<img src>``, the largest
candidate of each ``srcset`` (``<img>`` and ``<picture><source>``), and links whose path ends
in an image suffix; its other links are pages for the next level. Downloads go through the
crawl's HttpClient, so robots.txt, rate limits, size caps and caching apply to pages too.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from urllib.parse import urldefrag, urljoin, urlsplit

from cartoon.data.http import HttpClient, Rejected, check_url
from cartoon.data.imageio import IMAGE_SUFFIXES


@dataclass(frozen=True)
class Found:
    """An image URL found on ``page``, or (``image`` empty) a page that failed with ``reason``."""

    page: str
    image: str = ""
    reason: str = ""


class _LinkParser(HTMLParser):
    def __init__(self, page_url: str) -> None:
        super().__init__(convert_charrefs=True)
        self.base = page_url
        self.images: list[str] = []
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value.strip() for name, value in attrs if value and value.strip()}
        if tag == "base" and "href" in values:
            try:
                self.base = urljoin(self.base, values["href"])
            except ValueError:
                pass  # a broken <base> is ignored, as browsers do
        elif tag == "img":
            found = _largest(values.get("srcset", "")) or values.get("src", "")
            if found:
                self.images.append(found)
        elif tag == "source" and (found := _largest(values.get("srcset", ""))):
            self.images.append(found)
        elif tag == "a" and "href" in values:
            href = values["href"]
            try:
                is_image = urlsplit(href).path.lower().endswith(IMAGE_SUFFIXES)
            except ValueError:
                return  # a malformed link: nothing to fetch
            (self.images if is_image else self.links).append(href)
        # other tags carry no gallery links

    def absolute(self, found: list[str]) -> list[str]:
        """Absolute http(s) URLs without fragments, first occurrence order, no repeats."""
        urls = []
        for raw in found:
            try:
                url = urldefrag(urljoin(self.base, raw))[0]
                check_url(url)
            except ValueError:
                continue  # data:, mailto:, javascript: and malformed links are not ours to fetch
            urls.append(url)
        return list(dict.fromkeys(urls))


def _largest(srcset: str) -> str:
    """The candidate of a srcset with the largest width (``800w``) or density (``2x``) descriptor."""
    best, best_size = "", -1.0
    for candidate in srcset.split(","):
        parts = candidate.split()
        if not parts:
            continue
        size = 1.0
        if len(parts) > 1 and parts[1][:-1].replace(".", "", 1).isdigit():
            size = float(parts[1][:-1])
        if size > best_size:
            best, best_size = parts[0], size
    return best


def parse_page(html: str, page_url: str) -> tuple[list[str], list[str]]:
    """(image URLs, page links) of one HTML page, absolute and in document order. What the
    parser read before markup it cannot parse is kept."""
    parser = _LinkParser(page_url)
    try:
        parser.feed(html)
        parser.close()
    except (AssertionError, ValueError):  # html.parser's reaction to some malformed declarations
        pass
    return parser.absolute(parser.images), parser.absolute(parser.links)


def crawl_gallery(
    client: HttpClient, start_urls: list[str], max_depth: int, same_host: bool, max_pages: int, max_images: int
) -> Iterator[Found]:
    """Every image URL reachable from the start pages (each once), and every page that failed."""
    hosts = {urlsplit(url).netloc for url in start_urls}  # grows by the start pages' final hosts
    queue = deque((url, 0) for url in dict.fromkeys(start_urls))
    seen_pages = {url for url, _ in queue}
    seen_images: set[str] = set()
    read = 0
    while queue and read < max_pages and len(seen_images) < max_images:
        page, depth = queue.popleft()
        read += 1
        try:
            fetched = client.fetch(page, "html")
        except Rejected as exc:
            yield Found(page, reason=f"page {exc.reason}")
            continue
        if depth == 0:  # a start page may redirect (http -> https, www.): its final host counts too
            hosts.add(urlsplit(fetched.url).netloc)
        images, links = parse_page(fetched.read().decode("utf-8", errors="replace"), fetched.url)
        for image in images:
            if image not in seen_images and len(seen_images) < max_images:
                seen_images.add(image)
                yield Found(page, image=image)
        if depth < max_depth:
            for link in links:
                if link not in seen_pages and (not same_host or urlsplit(link).netloc in hosts):
                    seen_pages.add(link)
                    queue.append((link, depth + 1))
