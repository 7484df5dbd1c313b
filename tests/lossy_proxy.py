"""Test helper: an HTTP proxy on 127.0.0.1 that forwards every request to an upstream server
(the moto S3 server) and may then *drop the response*: the request landed upstream, the
client sees its connection closed. It also counts requests, so tests can say how many GETs,
PUTs and LISTs an operation costs on the wire.

Point obstore's S3 client at :attr:`LossyProxy.url` instead of the moto URL.
"""

from __future__ import annotations

import contextlib
import http.client
import random
import socket
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

__all__ = ["LossyProxy", "Seen", "lossy_proxy"]

_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te",
                  "trailer", "upgrade", "content-length"})

# (method, path with query) -> drop this response?
Rule = Callable[[str, str], bool]


@dataclass(frozen=True)
class Seen:
    """One request that went through the proxy."""

    method: str
    path: str
    status: int
    dropped: bool

    @property
    def kind(self) -> str:
        """``LIST`` for bucket listings, else the HTTP method."""
        return "LIST" if self.method == "GET" and "list-type=" in self.path else self.method


class LossyProxy:
    """Forward to ``upstream``; drop responses of requests matching :attr:`drop_if`, and
    of any request with probability :attr:`drop_probability` (at most :attr:`max_drops`)."""

    def __init__(self, upstream: str, *, seed: int = 0) -> None:
        parts = urlsplit(upstream)
        self._upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.drop_if: Rule | None = None
        self.drop_probability = 0.0
        self.max_drops: int | None = None
        self.seen: list[Seen] = []
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        name="lossy-proxy")

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> LossyProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def rules(self, *, drop_if: Rule | None = None, probability: float = 0.0,
              max_drops: int | None = None) -> None:
        """Replace the drop rules (and clear the request log)."""
        with self._lock:
            self.drop_if, self.drop_probability, self.max_drops = drop_if, probability, max_drops
            self.seen.clear()

    def counts(self) -> Counter[str]:
        """Requests seen since the last :meth:`rules` or :meth:`clear`, by kind."""
        with self._lock:
            return Counter(s.kind for s in self.seen)

    def clear(self) -> None:
        with self._lock:
            self.seen.clear()

    @property
    def dropped(self) -> int:
        with self._lock:
            return sum(s.dropped for s in self.seen)

    def _decide(self, method: str, path: str) -> bool:
        with self._lock:
            if self.max_drops is not None and sum(s.dropped for s in self.seen) >= \
                    self.max_drops:
                return False
            if self.drop_if is not None and self.drop_if(method, path):
                return True
            return self.drop_probability > 0 and self._rng.random() < self.drop_probability

    def _record(self, seen: Seen) -> None:
        with self._lock:
            self.seen.append(seen)

    def _forward(self, method: str, path: str, headers: dict[str, str], body: bytes
                 ) -> tuple[int, str, list[tuple[str, str]], bytes]:
        conn = http.client.HTTPConnection(*self._upstream, timeout=60)
        try:
            conn.request(method, path, body=body or None, headers=headers)
            resp = conn.getresponse()
            return resp.status, resp.reason, resp.getheaders(), resp.read()
        finally:
            conn.close()


def _make_handler(proxy: LossyProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                out = b""
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass
                        return out
                    out += self.rfile.read(size)
                    self.rfile.readline()
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def _handle(self) -> None:
            body = self._body()
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
            if body or self.command in ("PUT", "POST"):
                headers["Content-Length"] = str(len(body))
            status, reason, resp_headers, data = proxy._forward(self.command, self.path,
                                                                 headers, body)
            drop = proxy._decide(self.command, self.path)
            proxy._record(Seen(self.command, self.path, status, drop))
            if drop:  # it landed upstream; the client never hears back
                self.close_connection = True
                with contextlib.suppress(OSError):
                    self.connection.shutdown(socket.SHUT_RDWR)
                return
            self.send_response_only(status, reason)
            length = None
            for k, v in resp_headers:
                if k.lower() == "content-length":
                    length = v
                elif k.lower() not in _HOP:
                    self.send_header(k, v)
            if self.command == "HEAD":
                self.send_header("Content-Length", length or "0")
            else:
                self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

    return Handler


@contextmanager
def lossy_proxy(upstream: str, *, seed: int = 0) -> Iterator[LossyProxy]:
    """Run a :class:`LossyProxy` in front of ``upstream`` for the ``with`` block."""
    proxy = LossyProxy(upstream, seed=seed).start()
    try:
        yield proxy
    finally:
        proxy.stop()
