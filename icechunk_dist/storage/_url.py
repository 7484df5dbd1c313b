"""Repository URLs: :func:`from_url` turns one string (a path or a URL) into a storage.

The one parser of storage locations: the CLI (and so the Helm chart's runner, which runs it)
and ingestion go through it (docs/storage.md, "Repository URLs").
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote, urlsplit

from icechunk_dist.errors import InvalidInputError
from icechunk_dist.storage._base import Storage
from icechunk_dist.storage._factories import (
    azure_storage,
    gcs_storage,
    in_memory_storage,
    local_filesystem_storage,
    s3_storage,
)

__all__ = ["from_url"]

SCHEMES = ("a path", "file:///path", "memory://", "s3://bucket/prefix", "gs://bucket/prefix",
           "az://container/prefix", "abfs://container@account.dfs.core.windows.net/prefix")

_AZURE_HOST = ".dfs.core.windows.net"
_ACCOUNT_ENV = ("AZURE_STORAGE_ACCOUNT_NAME", "AZURE_STORAGE_ACCOUNT")


def _keywords(factory: Callable[..., Storage], *where: str) -> frozenset[str]:
    return frozenset(inspect.signature(factory).parameters) - {"prefix", *where}


_S3 = _keywords(s3_storage, "bucket") | {"anonymous"}
_GCS = _keywords(gcs_storage, "bucket")
_AZURE = _keywords(azure_storage, "container")
_ALL = _S3 | _GCS | _AZURE
_GCS_CREDENTIALS = ("service_account_file", "service_account_key", "application_credentials",
                    "bearer_token")
_AZURE_CREDENTIALS = ("access_key", "sas_token", "bearer_token")


def _is_drive_path(text: str) -> bool:
    """``C:\\data\\repo`` or ``C:/data/repo``: a Windows path, not a URL with scheme ``c``."""
    return len(text) > 2 and text[0].isalpha() and text[1] == ":" and text[2] in "\\/"


def _for(backend: set[str] | frozenset[str], options: dict[str, Any]) -> dict[str, Any]:
    """The options that apply to ``backend``; those of other backends are left out, so one
    set of settings serves a repository and sources of different kinds."""
    return {k: v for k, v in options.items() if k in backend}


def _bucket_and_prefix(url: str, netloc: str, path: str, what: str) -> tuple[str, str]:
    if not netloc:
        raise InvalidInputError(f"{url!r} names no {what}: use "
                                f"{url.partition('://')[0]}://{what}/prefix")
    return unquote(netloc), unquote(path).strip("/")


def _s3(url: str, netloc: str, path: str, options: dict[str, Any]) -> Storage:
    bucket, prefix = _bucket_and_prefix(url, netloc, path, "bucket")
    opts = _for(_S3, options)
    keys = opts.get("access_key_id") is not None
    if opts.pop("anonymous", False):
        if keys or opts.get("from_env"):
            raise InvalidInputError("anonymous=True cannot be combined with S3 credentials "
                                    "or from_env")
        opts["from_env"] = False
    # credentials and settings from the environment (AWS_*) unless keys were given
    opts.setdefault("from_env", not keys)
    return s3_storage(bucket=bucket, prefix=prefix, **opts)


def _gcs(url: str, netloc: str, path: str, options: dict[str, Any]) -> Storage:
    bucket, prefix = _bucket_and_prefix(url, netloc, path, "bucket")
    opts = _for(_GCS, options)
    given = opts.get("anonymous") or any(opts.get(k) for k in _GCS_CREDENTIALS)
    opts.setdefault("from_env", not given)
    return gcs_storage(bucket=bucket, prefix=prefix, **opts)


def _azure(url: str, scheme: str, netloc: str, path: str, options: dict[str, Any]) -> Storage:
    opts = _for(_AZURE, options)
    container = unquote(netloc)
    account = opts.pop("account", None)
    if "@" in container:  # abfs://container@account.dfs.core.windows.net/prefix
        container, _, host = container.partition("@")
        if not host.endswith(_AZURE_HOST):
            raise InvalidInputError(f"{url!r}: expected container@account{_AZURE_HOST}")
        named = host[: -len(_AZURE_HOST)]
        if account is not None and account != named:
            raise InvalidInputError(f"{url!r} names account {named!r}, the options {account!r}")
        account = named
    if not container:
        raise InvalidInputError(f"{url!r} names no container: use {scheme}://container/prefix")
    given = any(opts.get(k) for k in _AZURE_CREDENTIALS)
    opts.setdefault("from_env", not given)
    if account is None and opts["from_env"]:
        account = next((os.environ[v] for v in _ACCOUNT_ENV if os.environ.get(v)), None)
    if account is None:
        raise InvalidInputError(
            f"{url!r} names no storage account: pass account=..., set "
            f"{_ACCOUNT_ENV[0]}, or use abfs://container@account{_AZURE_HOST}/prefix"
        )
    return azure_storage(account=account, container=container, prefix=unquote(path).strip("/"),
                         **opts)


def from_url(url: str | os.PathLike[str], **options: Any) -> Storage:
    """The storage a path or URL names.

    - ``/data/repo``, ``repo``, ``~/repo``, ``C:\\data\\repo``, ``file:///data/repo`` (or
      ``file://localhost/...``): :func:`local_filesystem_storage`
    - ``memory://``: :func:`in_memory_storage` (a new, empty store every call)
    - ``s3://bucket/prefix`` (also ``s3a://``): :func:`s3_storage`
    - ``gs://bucket/prefix`` (also ``gcs://``): :func:`gcs_storage`
    - ``az://container/prefix`` with ``account=`` (or ``$AZURE_STORAGE_ACCOUNT_NAME``), or
      ``abfs[s]://container@account.dfs.core.windows.net/prefix``: :func:`azure_storage`

    Parameters
    ----------
    url
        The location.
    **options
        Keywords of the backend's factory (``region``, ``endpoint_url``, ``allow_http``,
        credentials, ``config``...). ``None`` values are dropped, and keywords that belong to
        another backend are ignored (one set of settings serves a repository and sources of
        different kinds). ``from_env`` defaults to True unless credentials are given: S3
        reads ``AWS_*`` (``AWS_ENDPOINT_URL``, ``AWS_REGION``...), GCS ``GOOGLE_*``, Azure
        ``AZURE_*`` (and the account from ``AZURE_STORAGE_ACCOUNT_NAME``). ``anonymous=True``
        asks for unsigned requests (public buckets) on S3 and GCS.

    Raises
    ------
    InvalidInputError
        For an empty location, an unknown scheme, a URL without its bucket, container or
        account, a ``file://`` URL of another host, a query or fragment, or an unknown
        option.
    """
    text = os.fspath(url)
    if not isinstance(text, str) or not text:
        raise InvalidInputError("a repository path or URL is required")
    unknown = sorted(k for k in options if k not in _ALL)
    if unknown:
        raise InvalidInputError(f"unknown storage option(s) {', '.join(map(repr, unknown))}; "
                                f"known: {', '.join(sorted(_ALL))}")
    opts = {k: v for k, v in options.items() if v is not None}
    parts = urlsplit(text)
    if "://" not in text or not parts.scheme or _is_drive_path(text):
        return local_filesystem_storage(text)
    scheme = parts.scheme.lower()
    if parts.query or parts.fragment:
        raise InvalidInputError(f"{text!r}: storage URLs take no query or fragment")
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise InvalidInputError(f"file URLs must be local (file:///path), got {text!r}")
        if not parts.path:
            raise InvalidInputError(f"{text!r} names no directory: use file:///path")
        return local_filesystem_storage(unquote(parts.path))
    if scheme == "memory":
        if parts.netloc or parts.path.strip("/"):
            raise InvalidInputError(f"{text!r}: in-memory storage has no location; use "
                                    "memory://")
        return in_memory_storage()
    if scheme in ("s3", "s3a"):
        return _s3(text, parts.netloc, parts.path, opts)
    if scheme in ("gs", "gcs"):
        return _gcs(text, parts.netloc, parts.path, opts)
    if scheme in ("az", "abfs", "abfss"):
        return _azure(text, scheme, parts.netloc, parts.path, opts)
    raise InvalidInputError(f"unsupported storage URL {text!r}: use {', '.join(SCHEMES)}")
