"""A throwaway HTTP server on 127.0.0.1 for the crawl tests (the only network they touch), made-up
host names that lead to it, and the waiting for servers the tests start as processes (MLflow's
model server, the web page)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

PUBLIC = "93.184.215.14"  # a global address, routed to the test server by fake_network
#: Host names that fake_network resolves; the crawl refuses the private ones by default.
FAKE_DNS = {"public.test": [PUBLIC], "internal.test": ["10.0.0.7"], "mixed.test": [PUBLIC, "10.0.0.7"]}


@contextmanager
def serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """Serve ``handler`` on a free port in a background thread; yields the base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def fake_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the names in FAKE_DNS resolve to their addresses, and route a connection to any of
    those addresses to 127.0.0.1: as if those hosts ran the test servers. A refusal can then come
    only from the check of the addresses, never from a connection that fails."""
    real_getaddrinfo, real_connect = socket.getaddrinfo, socket.create_connection
    routed = {address for addresses in FAKE_DNS.values() for address in addresses}

    def getaddrinfo(host, port, *args, **kwargs):
        if host in FAKE_DNS:
            return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, port)) for address in FAKE_DNS[host]]
        return real_getaddrinfo(host, port, *args, **kwargs)

    def create_connection(address, *args, **kwargs):
        host, port = address[:2]
        return real_connect(("127.0.0.1" if host in routed else host, port), *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket, "create_connection", create_connection)


def free_port() -> int:
    """A port free on 127.0.0.1 right now (for servers started as processes)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_up(url: str, server: subprocess.Popen, log: Path, deadline_s: float) -> None:
    """Poll ``url`` until it answers; fail with the server's log if it exits or ``deadline_s`` passes."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"{server.args[0]} exited with code {server.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:  # refused while starting (URLError is an OSError)
            time.sleep(0.3)
    raise AssertionError(f"no answer from {url} within {deadline_s} s:\n{log.read_text()[-3000:]}")


def start_server(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """Start ``command`` in its own process group, output to ``log``: servers start children
    (MLflow's starts uvicorn), and ``stop_server`` must end them all."""
    with log.open("wb") as output:
        return subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)


def stop_server(server: subprocess.Popen) -> None:
    """End the server's whole process group: politely, then by force after 15 s."""
    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()
