"""Object-store settings as values, with Icechunk's names: :class:`S3Options` and the
:class:`ObjectStoreConfig` variants that ``s3_store(...)``, ``local_filesystem_store(...)``
and the other ``*_store`` factories return.

They are plain, immutable, picklable data: no client, no I/O. ``s3_storage`` builds its
:class:`S3Options` and reads the S3 settings from it, so a repository's storage and the
object stores of other data (virtual chunk containers) are described the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from icechunk_dist.errors import InvalidInputError

__all__ = [
    "AnyObjectStoreConfig",
    "ObjectStoreConfig",
    "S3Options",
    "azure_store",
    "gcs_store",
    "http_store",
    "local_filesystem_store",
    "s3_store",
]


def _opt_str(name: str, value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise InvalidInputError(f"{name} must be a str or None, got {value!r}")
    return value


def _mapping(name: str, value: Mapping[str, str] | None) -> tuple[tuple[str, str], ...]:
    if value is None:
        return ()
    if not isinstance(value, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise InvalidInputError(f"{name} must be a dict of str to str, got {value!r}")
    return tuple(sorted(value.items()))


@dataclass(frozen=True)
class S3Options:
    """Options for reaching an S3 or S3-compatible object store (Icechunk's ``S3Options``).

    Parameters
    ----------
    region
        The bucket's region; None lets the client decide (``us-east-1`` here).
    endpoint_url
        An S3-compatible server (``http://localhost:9000``) instead of AWS.
    allow_http
        Permit plain-HTTP endpoints.
    anonymous
        Send unsigned requests (public buckets).
    force_path_style
        Address buckets as ``<endpoint>/<bucket>/<key>`` instead of
        ``<bucket>.<endpoint>/<key>``. Requests to an ``endpoint_url`` are path-style here
        whatever this says; on AWS it switches from virtual-hosted to path-style.
    network_stream_timeout_seconds
        Kept for Icechunk's code; not applied by icechunk_dist's storage (obstore has no
        idle-stream timeout).
    requester_pays
        Send ``x-amz-request-payer: requester`` (buckets whose reader pays).
    checksum_algorithm
        Kept for Icechunk's code; not applied by icechunk_dist's storage.

    Raises
    ------
    InvalidInputError
        If a value has the wrong type.
    """

    region: str | None = None
    endpoint_url: str | None = None
    allow_http: bool = False
    anonymous: bool = False
    force_path_style: bool = False
    network_stream_timeout_seconds: int | None = None
    requester_pays: bool = False
    checksum_algorithm: Any = None

    def __post_init__(self) -> None:
        _opt_str("region", self.region)
        _opt_str("endpoint_url", self.endpoint_url)
        for name in ("allow_http", "anonymous", "force_path_style", "requester_pays"):
            object.__setattr__(self, name, bool(getattr(self, name)))
        t = self.network_stream_timeout_seconds
        if t is not None and (not isinstance(t, int) or isinstance(t, bool) or t < 0):
            raise InvalidInputError(
                f"network_stream_timeout_seconds must be an int >= 0 or None, got {t!r}")

    def __repr__(self) -> str:
        args = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in fields(self))
        return f"S3Options({args})"


@dataclass(frozen=True)
class _InMemory:
    """An in-memory object store (``ObjectStoreConfig.InMemory()``)."""


@dataclass(frozen=True)
class _LocalFileSystem:
    """A directory of the local filesystem (``ObjectStoreConfig.LocalFileSystem(path)``)."""

    path: str

    def __post_init__(self) -> None:
        if not isinstance(self.path, str) or not self.path:
            raise InvalidInputError(f"path must be a non-empty str, got {self.path!r}")


@dataclass(frozen=True)
class _S3:
    """AWS S3 (``ObjectStoreConfig.S3(S3Options(...))``)."""

    options: S3Options = field(default_factory=S3Options)

    def __post_init__(self) -> None:
        if not isinstance(self.options, S3Options):
            raise InvalidInputError(f"options must be an S3Options, got {self.options!r}")


@dataclass(frozen=True)
class _S3Compatible(_S3):
    """An S3-compatible store (``ObjectStoreConfig.S3Compatible(S3Options(...))``)."""


@dataclass(frozen=True)
class _Tigris(_S3):
    """Tigris (``ObjectStoreConfig.Tigris(S3Options(...))``)."""


@dataclass(frozen=True, init=False)
class _OptsStore:
    """A store configured by a mapping of option names to values."""

    opts: tuple[tuple[str, str], ...] = ()

    def __init__(self, opts: Mapping[str, str] | None = None) -> None:
        object.__setattr__(self, "opts", _mapping("opts", opts))

    @property
    def options(self) -> dict[str, str]:
        """The options as a dict."""
        return dict(self.opts)


class _Gcs(_OptsStore):
    """Google Cloud Storage (``ObjectStoreConfig.Gcs(opts)``)."""


class _Azure(_OptsStore):
    """Azure Blob Storage (``ObjectStoreConfig.Azure(opts)``)."""


@dataclass(frozen=True, init=False)
class _Http:
    """An HTTP(S) server (``ObjectStoreConfig.Http(opts, headers)``)."""

    opts: tuple[tuple[str, str], ...] = ()
    headers: tuple[tuple[str, str], ...] = ()

    def __init__(self, opts: Mapping[str, str] | None = None,
                 headers: Mapping[str, str] | None = None) -> None:
        object.__setattr__(self, "opts", _mapping("opts", opts))
        object.__setattr__(self, "headers", _mapping("headers", headers))


class ObjectStoreConfig:
    """Where data other than the repository itself lives, one nested class per kind of
    store, as Icechunk names them: ``InMemory()``, ``LocalFileSystem(path)``,
    ``S3(options)``, ``S3Compatible(options)``, ``Tigris(options)``, ``Gcs(opts)``,
    ``Azure(opts)``, ``Http(opts, headers)``. Values compare by content and pickle."""

    InMemory = _InMemory
    LocalFileSystem = _LocalFileSystem
    S3 = _S3
    S3Compatible = _S3Compatible
    Tigris = _Tigris
    Gcs = _Gcs
    Azure = _Azure
    Http = _Http


for _name in ("InMemory", "LocalFileSystem", "S3", "S3Compatible", "Tigris", "Gcs", "Azure",
              "Http"):
    _cls = getattr(ObjectStoreConfig, _name)
    _cls.__name__ = _name
    _cls.__qualname__ = f"ObjectStoreConfig.{_name}"

AnyObjectStoreConfig = (_InMemory | _LocalFileSystem | _S3 | _S3Compatible | _Tigris | _Gcs
                        | _Azure | _Http)


def s3_store(region: str | None = None, endpoint_url: str | None = None,
             allow_http: bool = False, anonymous: bool = False, s3_compatible: bool = False,
             force_path_style: bool = False, network_stream_timeout_seconds: int = 60,
             requester_pays: bool = False, checksum_algorithm: Any = None) -> _S3:
    """The object-store config of S3 (``s3_compatible=False``) or an S3-compatible store.

    Raises
    ------
    InvalidInputError
        If an option has the wrong type.
    """
    options = S3Options(
        region=region, endpoint_url=endpoint_url, allow_http=allow_http, anonymous=anonymous,
        force_path_style=force_path_style,
        network_stream_timeout_seconds=network_stream_timeout_seconds,
        requester_pays=requester_pays, checksum_algorithm=checksum_algorithm)
    return _S3Compatible(options) if s3_compatible else _S3(options)


def local_filesystem_store(path: str) -> _LocalFileSystem:
    """The object-store config of a local directory (``path`` is its root).

    Raises
    ------
    InvalidInputError
        If ``path`` is empty.
    """
    return _LocalFileSystem(path)


def gcs_store(opts: Mapping[str, str] | None = None) -> _Gcs:
    """The object-store config of Google Cloud Storage (obstore ``GCSConfig`` keys).

    Raises
    ------
    InvalidInputError
        If ``opts`` is not a dict of str to str.
    """
    return _Gcs(opts)


def azure_store(*, account: str, config: Mapping[str, str] | None = None) -> _Azure:
    """The object-store config of an Azure storage account (obstore ``AzureConfig`` keys).

    Raises
    ------
    InvalidInputError
        If ``config`` is not a dict of str to str.
    """
    return _Azure({"account": account, **(config or {})})


def http_store(opts: Mapping[str, str] | None = None,
               headers: Mapping[str, str] | None = None) -> _Http:
    """The object-store config of an HTTP(S) server (client options and static headers).

    Raises
    ------
    InvalidInputError
        If ``opts`` or ``headers`` is not a dict of str to str.
    """
    return _Http(opts, headers)
