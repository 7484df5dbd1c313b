"""One retry policy (docs/design/010-one-retry-policy.md): one operation against a backend that
always fails transiently sends at most ``RetryPolicy.attempts`` requests, counted on the wire.

obstore's own retries used to multiply with ours (5 of our tries of 4 obstore requests each:
20 requests for one failing operation); now obstore does not retry, so every try the policy
counts is one request.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest
from conftest import S3_ACCESS_KEY_ID, S3_REGION, S3_SECRET_ACCESS_KEY
from lossy_proxy import LossyProxy, lossy_proxy

import icechunk_dist as icd
from icechunk_dist import InvalidInputError, StorageError
from icechunk_dist.storage import Fault, FaultyStorage, Storage
from icechunk_dist.storage._obstore import ObstoreStorage
from icechunk_dist.storage._retry import DEFAULT_RETRY, RetryPolicy

FAST = RetryPolicy(attempts=3, base=0.001, cap=0.01)

OPS: dict[str, Callable[[Storage], object]] = {
    "get": lambda s: s.get_sync("a"),
    "put": lambda s: s.put_sync("b", b"x"),
    "put-create": lambda s: s.put_sync("c", b"x", mode="create"),
    "head": lambda s: s.exists_sync("a"),
    "list": lambda s: s.list_sync(""),
}


@pytest.fixture
def dropping(s3_server: str, s3_bucket: str) -> Iterator[tuple[LossyProxy, Storage]]:
    """moto behind a proxy, and a storage through it whose object ``a`` exists."""
    with lossy_proxy(s3_server) as proxy:
        storage = icd.s3_storage(bucket=s3_bucket, prefix="repo", region=S3_REGION,
                                 endpoint_url=proxy.url, allow_http=True,
                                 access_key_id=S3_ACCESS_KEY_ID,
                                 secret_access_key=S3_SECRET_ACCESS_KEY)
        storage.put_sync("a", b"1")
        yield proxy, storage


def _fails(op: str, storage: Storage) -> StorageError:
    with pytest.raises(StorageError) as info:
        OPS[op](storage)
    return info.value


def test_the_policy_is_bounded() -> None:
    assert DEFAULT_RETRY.attempts == 6
    with pytest.raises(InvalidInputError):
        RetryPolicy(attempts=0)


@pytest.mark.parametrize("op", sorted(OPS))
def test_every_response_dropped(dropping: tuple[LossyProxy, Storage], op: str,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Each request lands upstream and its response is lost: exactly ``attempts`` requests,
    then a StorageError that says how many tries failed."""
    proxy, storage = dropping
    monkeypatch.setattr(ObstoreStorage, "retry_policy", FAST)
    proxy.rules(drop_if=lambda method, path: True)
    err = _fails(op, storage)
    assert len(proxy.seen) == FAST.attempts, proxy.seen
    assert f"after {FAST.attempts} attempts" in str(err)


@pytest.mark.parametrize("op", ["get", "put-create"])
def test_the_shipped_policy_on_the_wire(dropping: tuple[LossyProxy, Storage], op: str) -> None:
    """The default policy, as shipped: 6 requests (it was 20)."""
    proxy, storage = dropping
    proxy.rules(drop_if=lambda method, path: True)
    _fails(op, storage)
    assert len(proxy.seen) == DEFAULT_RETRY.attempts == 6


class _Unavailable(BaseHTTPRequestHandler):
    """Answers every request with 503 Service Unavailable, and counts them."""

    protocol_version = "HTTP/1.1"
    seen: ClassVar[list[str]] = []

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        type(self).seen.append(self.command)
        body = b"<Error><Code>SlowDown</Code><Message>busy</Message></Error>"
        self.send_response(503)
        self.send_header("Content-Length", "0" if self.command == "HEAD" else str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_PUT = do_HEAD = do_DELETE = do_POST = _answer


@pytest.fixture
def unavailable() -> Iterator[tuple[list[str], Storage]]:
    _Unavailable.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Unavailable)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    try:
        yield _Unavailable.seen, icd.s3_storage(
            bucket="b", prefix="repo", region=S3_REGION, endpoint_url=f"http://{host!s}:{port}",
            allow_http=True, access_key_id="k", secret_access_key="s")
    finally:
        with contextlib.suppress(OSError):
            server.shutdown()
            server.server_close()


@pytest.mark.parametrize("op", sorted(OPS))
def test_every_answer_503(unavailable: tuple[list[str], Storage], op: str,
                          monkeypatch: pytest.MonkeyPatch) -> None:
    seen, storage = unavailable
    monkeypatch.setattr(ObstoreStorage, "retry_policy", FAST)
    _fails(op, storage)
    assert len(seen) == FAST.attempts, seen


def test_faulty_storage_counts_its_injected_failures(tmp_path: object) -> None:
    """FaultyStorage's stand-in for a backend's retries uses the same policy type: an always
    failing request is tried ``retry.attempts`` times and never reaches the backend."""
    storage = FaultyStorage(icd.local_filesystem_storage(str(tmp_path)),
                            [Fault.transient(op="get")], retry=FAST)
    with pytest.raises(StorageError, match=f"failed after {FAST.attempts} attempts"):
        storage.get_sync("a")
    assert storage.fired["transient"] == FAST.attempts and storage.requests["get"] == 0
