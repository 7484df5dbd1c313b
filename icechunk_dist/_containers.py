"""Object-store settings and virtual chunk containers, with Icechunk's names.

:class:`S3Options` and the :class:`ObjectStoreConfig` variants that ``s3_store(...)``,
``local_filesystem_store(...)`` and the other ``*_store`` factories return are plain,
immutable, picklable data: no client, no I/O. ``s3_storage`` builds its :class:`S3Options`
and reads the S3 settings from it, so a repository's storage and the object stores of
other data are described the same way.

A :class:`VirtualChunkContainer` says where virtual chunks may live (``url_prefix``) and how
to reach them (``store``: :func:`s3_store`, :func:`local_filesystem_store`,
:func:`gcs_store`, :func:`http_store`). Containers are part of the repository config
(``RepositoryConfig.set_virtual_chunk_container``, persisted by ``save_config``); the
credentials are not (``authorize_virtual_chunk_access`` of ``Repository.open``). The clients
are built by ``icechunk_dist.storage._vclients``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from icechunk_dist.errors import InvalidInputError

__all__ = [
    "AnyObjectStoreConfig",
    "AzureConfig",
    "GcsConfig",
    "HttpConfig",
    "InMemoryConfig",
    "LocalFileSystemConfig",
    "ObjectStoreConfig",
    "S3CompatibleConfig",
    "S3Config",
    "TigrisConfig",
    "S3Options",
    "VirtualChunkContainer",
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
class InMemoryConfig:
    """An in-memory object store (``ObjectStoreConfig.InMemory()``)."""


@dataclass(frozen=True)
class LocalFileSystemConfig:
    """A directory of the local filesystem (``ObjectStoreConfig.LocalFileSystem(path)``)."""

    path: str

    def __post_init__(self) -> None:
        if not isinstance(self.path, str) or not self.path:
            raise InvalidInputError(f"path must be a non-empty str, got {self.path!r}")


@dataclass(frozen=True)
class S3Config:
    """AWS S3 (``ObjectStoreConfig.S3(S3Options(...))``)."""

    options: S3Options = field(default_factory=S3Options)

    def __post_init__(self) -> None:
        if not isinstance(self.options, S3Options):
            raise InvalidInputError(f"options must be an S3Options, got {self.options!r}")


@dataclass(frozen=True)
class S3CompatibleConfig(S3Config):
    """An S3-compatible store (``ObjectStoreConfig.S3Compatible(S3Options(...))``)."""


@dataclass(frozen=True)
class TigrisConfig(S3Config):
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


class GcsConfig(_OptsStore):
    """Google Cloud Storage (``ObjectStoreConfig.Gcs(opts)``)."""


class AzureConfig(_OptsStore):
    """Azure Blob Storage (``ObjectStoreConfig.Azure(opts)``)."""


@dataclass(frozen=True, init=False)
class HttpConfig:
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

    InMemory = InMemoryConfig
    LocalFileSystem = LocalFileSystemConfig
    S3 = S3Config
    S3Compatible = S3CompatibleConfig
    Tigris = TigrisConfig
    Gcs = GcsConfig
    Azure = AzureConfig
    Http = HttpConfig


for _name in ("InMemory", "LocalFileSystem", "S3", "S3Compatible", "Tigris", "Gcs", "Azure",
              "Http"):
    _cls = getattr(ObjectStoreConfig, _name)
    _cls.__name__ = _name
    _cls.__qualname__ = f"ObjectStoreConfig.{_name}"

AnyObjectStoreConfig = (InMemoryConfig | LocalFileSystemConfig | S3Config | S3CompatibleConfig
                        | TigrisConfig | GcsConfig | AzureConfig | HttpConfig)


def s3_store(region: str | None = None, endpoint_url: str | None = None,
             allow_http: bool = False, anonymous: bool = False, s3_compatible: bool = False,
             force_path_style: bool = False, network_stream_timeout_seconds: int = 60,
             requester_pays: bool = False, checksum_algorithm: Any = None) -> S3Config:
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
    return S3CompatibleConfig(options) if s3_compatible else S3Config(options)


def local_filesystem_store(path: str) -> LocalFileSystemConfig:
    """The object-store config of a local directory (``path`` is its root).

    Raises
    ------
    InvalidInputError
        If ``path`` is empty.
    """
    return LocalFileSystemConfig(path)


def gcs_store(opts: Mapping[str, str] | None = None) -> GcsConfig:
    """The object-store config of Google Cloud Storage (obstore ``GCSConfig`` keys).

    Raises
    ------
    InvalidInputError
        If ``opts`` is not a dict of str to str.
    """
    return GcsConfig(opts)


def azure_store(*, account: str, config: Mapping[str, str] | None = None) -> AzureConfig:
    """The object-store config of an Azure storage account (obstore ``AzureConfig`` keys).

    Raises
    ------
    InvalidInputError
        If ``config`` is not a dict of str to str.
    """
    return AzureConfig({"account": account, **(config or {})})


def http_store(opts: Mapping[str, str] | None = None,
               headers: Mapping[str, str] | None = None) -> HttpConfig:
    """The object-store config of an HTTP(S) server (client options and static headers).

    Raises
    ------
    InvalidInputError
        If ``opts`` or ``headers`` is not a dict of str to str.
    """
    return HttpConfig(opts, headers)


# ------------------------------------------------------------------------ containers
# URL schemes each kind of store serves (Azure and in-memory stores hold no virtual chunks)
_SCHEMES: dict[type, tuple[str, ...]] = {
    S3Config: ("s3",), S3CompatibleConfig: ("s3",), TigrisConfig: ("s3",),
    LocalFileSystemConfig: ("file",), GcsConfig: ("gs", "gcs"), HttpConfig: ("http", "https"),
}
@dataclass(frozen=True)
class VirtualChunkContainer:
    """Where virtual chunks may live and how to reach them (Icechunk's
    ``VirtualChunkContainer``).

    Parameters
    ----------
    url_prefix
        URLs of virtual chunks this container serves start with it; it ends with ``/``
        (``"s3://bucket/archive/"``, ``"file:///data/netcdf/"``).
    store
        How to reach them: :func:`s3_store`, :func:`local_filesystem_store`,
        :func:`gcs_store` or :func:`http_store`, of the prefix's URL scheme.
    name
        Optional name; refs may then say ``vcc://<name>/<path>`` (resolved against
        ``url_prefix`` when read).

    Raises
    ------
    InvalidInputError
        On a prefix without a scheme or trailing slash, or a store of another scheme.
    """

    url_prefix: str
    store: AnyObjectStoreConfig
    name: str | None = None

    def __post_init__(self) -> None:
        p = self.url_prefix
        if not isinstance(p, str) or "://" not in p:
            raise InvalidInputError(f"a container url_prefix is a URL prefix such as "
                                    f"'s3://bucket/path/', got {p!r}")
        if not p.endswith("/"):
            raise InvalidInputError(f"a container url_prefix must end with '/': {p!r}")
        scheme = p.partition("://")[0].lower()
        schemes = _SCHEMES.get(type(self.store))
        if schemes is None:
            raise InvalidInputError(
                "a container store comes from s3_store, local_filesystem_store, gcs_store "
                f"or http_store, got {type(self.store).__name__}")
        if scheme not in schemes:
            raise InvalidInputError(
                f"container {p!r}: a {type(self.store).__name__} store serves "
                f"{' or '.join(s + '://' for s in schemes)} URLs")
        if isinstance(self.store, LocalFileSystemConfig):
            root = self.store.path.rstrip("/") + "/"  # type: ignore[union-attr]
            path = p[len("file://"):]
            if not path.startswith("/") or not path.startswith(root):
                raise InvalidInputError(
                    f"container {p!r} is outside its local store's directory {root!r}")
        if self.name is not None and (not isinstance(self.name, str) or not self.name
                                      or "/" in self.name):
            raise InvalidInputError(f"a container name is a non-empty string without '/', "
                                    f"got {self.name!r}")

    @property
    def scheme(self) -> str:
        """The URL scheme of the prefix (``s3``, ``file``, ``gs``, ``https``...)."""
        return self.url_prefix.partition("://")[0].lower()

    def to_dict(self) -> dict[str, Any]:
        """Plain data for the saved config (no credentials: there are none here)."""
        s = self.store
        store: dict[str, Any]
        if isinstance(s, (ObjectStoreConfig.S3, ObjectStoreConfig.S3Compatible)):
            o = s.options
            kind = ("tigris" if isinstance(s, TigrisConfig) else "s3_compatible"
                    if isinstance(s, S3CompatibleConfig) else "s3")
            store = {"type": kind, "region": o.region, "endpoint_url": o.endpoint_url,
                     "allow_http": o.allow_http, "anonymous": o.anonymous,
                     "force_path_style": o.force_path_style,
                     "network_stream_timeout_seconds": o.network_stream_timeout_seconds,
                     "requester_pays": o.requester_pays}
        elif isinstance(s, ObjectStoreConfig.LocalFileSystem):
            store = {"type": "local", "path": s.path}
        elif isinstance(s, ObjectStoreConfig.Gcs):
            store = {"type": "gcs", "opts": dict(s.opts)}
        elif isinstance(s, HttpConfig):
            store = {"type": "http", "opts": dict(s.opts), "headers": dict(s.headers)}
        else:  # refused by __post_init__
            raise InvalidInputError(f"{type(s).__name__} stores hold no virtual chunks")
        out: dict[str, Any] = {"url_prefix": self.url_prefix, "store": store}
        if self.name is not None:
            out["name"] = self.name
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> VirtualChunkContainer:
        """Rebuild a container from :meth:`to_dict` output.

        Raises
        ------
        InvalidInputError
            On anything else.
        """
        try:
            st = dict(d["store"])
            kind = st.pop("type")
            store: AnyObjectStoreConfig
            if kind in ("s3", "s3_compatible"):
                store = s3_store(s3_compatible=kind == "s3_compatible", **st)
            elif kind == "tigris":
                store = TigrisConfig(S3Options(**st))
            elif kind == "local":
                store = local_filesystem_store(st["path"])
            elif kind == "gcs":
                store = gcs_store(st.get("opts"))
            elif kind == "http":
                store = http_store(st.get("opts"), st.get("headers"))
            else:
                raise InvalidInputError(f"unknown container store type {kind!r}")
            return cls(d["url_prefix"], store, d.get("name"))
        except (KeyError, TypeError, AttributeError) as e:
            raise InvalidInputError(f"invalid virtual chunk container {d!r}: {e}") from None
