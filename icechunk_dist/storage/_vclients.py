"""obstore clients of virtual chunk containers: one per (container, credentials, bucket or
host) and process, built on first use (clients do not survive ``os.fork``)."""

from __future__ import annotations

import os
import posixpath
import threading
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from obstore.store import GCSStore, HTTPStore, LocalStore, S3Store

from icechunk_dist._containers import (
    GcsConfig,
    HttpConfig,
    LocalFileSystemConfig,
    S3Config,
    VirtualChunkContainer,
)
from icechunk_dist.credentials import (
    AnyCredential,
    Credentials,
    GcsCredentials,
    S3Credentials,
    S3StaticCredentials,
)
from icechunk_dist.errors import StorageError, VirtualChunkAccessError
from icechunk_dist.storage._retry import OBSTORE_RETRY_CONFIG

if TYPE_CHECKING:
    from obstore.store import ObjectStore, S3Credential

__all__ = ["client_for"]

_CLIENTS: dict[tuple[Any, ...], ObjectStore] = {}
_LOCK = threading.Lock()


class _S3Provider:
    """obstore credential provider over our S3 credentials (static or refreshable), so
    that no ``AWS_*`` variable of the environment mixes in."""

    __slots__ = ("_cred",)

    def __init__(self, cred: S3Credentials.Static | S3Credentials.Refreshable) -> None:
        self._cred = cred

    def __call__(self) -> S3Credential:
        c = self._cred
        if isinstance(c, S3Credentials.Static):
            got = c.credentials
        elif c.current is not None and c.current.expires_after is None:
            got = c.current
        else:
            got = c.get_credentials()
            if not isinstance(got, S3StaticCredentials):
                raise StorageError("a refreshable S3 credentials function returned "
                                   f"{type(got).__name__}, not S3StaticCredentials")
        return {"access_key_id": got.access_key_id, "secret_access_key": got.secret_access_key,
                "token": got.session_token, "expires_at": got.expires_after}

    def __repr__(self) -> str:
        return "_S3Provider(<redacted>)"


def _s3(store: S3Config,
        cred: AnyCredential | None, bucket: str) -> S3Store:
    o = store.options
    inner = cred.credentials if isinstance(cred, Credentials.S3) else None
    kw: dict[str, Any] = {"region": o.region or "us-east-1"}
    if o.endpoint_url:
        kw["endpoint"] = o.endpoint_url
    kw["virtual_hosted_style_request"] = not (o.force_path_style or o.endpoint_url)
    if o.requester_pays:
        kw["request_payer"] = True
    if o.anonymous or isinstance(inner, S3Credentials.Anonymous):
        kw.update(skip_signature=True)
    elif isinstance(inner, (S3Credentials.Static, S3Credentials.Refreshable)):
        kw.update(credential_provider=_S3Provider(inner))
    # None / FromEnv: obstore reads the environment's AWS_* settings itself
    client: dict[str, Any] = {"allow_http": bool(o.allow_http)}
    if o.network_stream_timeout_seconds:
        client["timeout"] = f"{int(o.network_stream_timeout_seconds)}s"
    return S3Store(bucket, client_options=client,  # type: ignore[arg-type]
                   retry_config=OBSTORE_RETRY_CONFIG, **kw)


def _gcs(store: GcsConfig, cred: AnyCredential | None, bucket: str) -> GCSStore:
    inner = cred.credentials if isinstance(cred, Credentials.Gcs) else None
    kw: dict[str, Any] = {}
    if isinstance(inner, GcsCredentials.Anonymous):
        kw["skip_signature"] = True
    elif isinstance(inner, GcsCredentials.Static):
        if inner.service_account_file:
            kw["service_account"] = inner.service_account_file
        if inner.service_account_key:
            kw["service_account_key"] = inner.service_account_key
        if inner.application_credentials:
            kw["application_credentials"] = inner.application_credentials
        if inner.bearer_token:
            kw["bearer_token"] = inner.bearer_token
    return GCSStore(bucket, config=dict(store.opts) or None,  # type: ignore[arg-type]
                    retry_config=OBSTORE_RETRY_CONFIG, **kw)


def _http(store: HttpConfig, base: str) -> HTTPStore:
    client: dict[str, Any] = dict(store.opts)
    if store.headers:
        client["default_headers"] = dict(store.headers)
    return HTTPStore.from_url(base, client_options=client or None,  # type: ignore[arg-type]
                              retry_config=OBSTORE_RETRY_CONFIG)


def _no_dot_segments(url: str, path: str) -> None:
    if any(part in (".", "..") for part in path.split("/")):
        raise VirtualChunkAccessError(
            f"cannot read virtual chunk {url!r}: '.' and '..' path segments are refused "
            "(they could leave the container)", key=url)


def client_for(container: VirtualChunkContainer, cred: AnyCredential | None, url: str
               ) -> tuple[ObjectStore, str]:
    """(obstore client, key) that reads ``url`` of ``container`` with ``cred``.

    Raises
    ------
    VirtualChunkAccessError
        If the URL leaves the container (a ``file://`` path outside its directory, dot
        segments in a local or HTTP path).
    StorageError
        If the client cannot be built (e.g. a missing local directory).
    """
    store = container.store
    parts = urlsplit(url)
    if isinstance(store, LocalFileSystemConfig):
        path = unquote(parts.path)
        _no_dot_segments(url, path)
        where = store.path.rstrip("/") or "/"
        norm = posixpath.normpath(path)
        inside = where.rstrip("/") + "/"
        if not norm.startswith(inside):
            raise VirtualChunkAccessError(
                f"cannot read virtual chunk {url!r}: outside the directory {where!r} of its "
                "container", key=url)
        key = norm[len(inside):]
        ident: tuple[Any, ...] = (os.getpid(), "file", where)
    elif isinstance(store, (S3Config, GcsConfig)):
        where = parts.netloc
        key = unquote(parts.path.lstrip("/"))
        ident = (os.getpid(), container, cred, where)
    else:
        path = unquote(parts.path)
        _no_dot_segments(url, path)
        where = f"{parts.scheme}://{parts.netloc}"
        key = path.lstrip("/")
        ident = (os.getpid(), container, where)
    with _LOCK:
        client = _CLIENTS.get(ident)
    if client is None:
        try:
            if isinstance(store, LocalFileSystemConfig):
                client = LocalStore(prefix=where)
            elif isinstance(store, GcsConfig):
                client = _gcs(store, cred, where)
            elif isinstance(store, HttpConfig):
                client = _http(store, where)
            elif isinstance(store, S3Config):  # S3-compatible and Tigris too
                client = _s3(store, cred, where)
            else:  # containers refuse other stores when they are made
                raise VirtualChunkAccessError(
                    f"cannot read virtual chunk {url!r}: a {type(store).__name__} store "
                    "holds no virtual chunks", key=url)
        except Exception as exc:  # e.g. a directory that does not exist
            raise StorageError(
                f"cannot read virtual chunk {url!r}: {str(exc).strip().splitlines()[0]}",
                key=url, cause=exc) from exc
        with _LOCK:
            client = _CLIENTS.setdefault(ident, client)
    return client, key
