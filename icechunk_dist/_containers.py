"""Virtual chunk containers and the object-store configs they hold, with Icechunk's names.

A :class:`VirtualChunkContainer` says where virtual chunks may live (``url_prefix``) and how
to reach them (``store``: :func:`s3_store`, :func:`local_filesystem_store`,
:func:`gcs_store`, :func:`http_store`). Containers are part of the repository config
(``RepositoryConfig.set_virtual_chunk_container``, persisted by ``save_config``); the
credentials are not (``authorize_virtual_chunk_access`` of ``Repository.open``). Pure data
here: the clients are built by ``icechunk_dist.storage._virtual``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from icechunk_dist.errors import InvalidInputError

__all__ = [
    "AnyObjectStoreConfig",
    "ObjectStoreConfig",
    "S3Options",
    "VirtualChunkContainer",
    "gcs_store",
    "http_store",
    "local_filesystem_store",
    "s3_store",
]


@dataclass(frozen=True)
class S3Options:
    """How to reach an S3 or S3-compatible service (Icechunk's ``S3Options``)."""

    region: str | None = None
    endpoint_url: str | None = None
    allow_http: bool = False
    anonymous: bool = False
    force_path_style: bool = False
    network_stream_timeout_seconds: int | None = None
    requester_pays: bool = False


def _str_map(name: str, m: Mapping[str, str] | None) -> tuple[tuple[str, str], ...]:
    if m is None:
        return ()
    if not isinstance(m, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in m.items()):
        raise InvalidInputError(f"{name} must map strings to strings")
    return tuple(sorted(m.items()))


class ObjectStoreConfig:
    """The object stores a virtual chunk container can name (Icechunk's
    ``ObjectStoreConfig``); build them with the ``*_store`` functions."""

    @dataclass(frozen=True)
    class S3:
        options: S3Options = field(default_factory=S3Options)
        scheme = "s3"

    @dataclass(frozen=True)
    class S3Compatible:
        options: S3Options = field(default_factory=S3Options)
        scheme = "s3"

    @dataclass(frozen=True)
    class LocalFileSystem:
        path: str = "/"
        scheme = "file"

    @dataclass(frozen=True)
    class Gcs:
        opts: tuple[tuple[str, str], ...] = ()
        scheme = "gcs"

    @dataclass(frozen=True)
    class Http:
        opts: tuple[tuple[str, str], ...] = ()
        headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)
        scheme = "http"


AnyObjectStoreConfig = (ObjectStoreConfig.S3 | ObjectStoreConfig.S3Compatible
                        | ObjectStoreConfig.LocalFileSystem | ObjectStoreConfig.Gcs
                        | ObjectStoreConfig.Http)

# URL schemes each kind of store serves
_SCHEMES: dict[str, tuple[str, ...]] = {
    "s3": ("s3",), "file": ("file",), "gcs": ("gs", "gcs"), "http": ("http", "https"),
}


def s3_store(region: str | None = None, endpoint_url: str | None = None,
             allow_http: bool = False, anonymous: bool = False, s3_compatible: bool = False,
             force_path_style: bool = False, network_stream_timeout_seconds: int = 60,
             requester_pays: bool = False) -> ObjectStoreConfig.S3 | ObjectStoreConfig.S3Compatible:
    """The store of an S3 (or, with ``s3_compatible``/``endpoint_url``, S3-compatible)
    virtual chunk container (Icechunk's ``s3_store``)."""
    opts = S3Options(region=region, endpoint_url=endpoint_url, allow_http=bool(allow_http),
                     anonymous=bool(anonymous), force_path_style=bool(force_path_style),
                     network_stream_timeout_seconds=network_stream_timeout_seconds,
                     requester_pays=bool(requester_pays))
    return ObjectStoreConfig.S3Compatible(opts) if s3_compatible else ObjectStoreConfig.S3(opts)


def local_filesystem_store(path: str) -> ObjectStoreConfig.LocalFileSystem:
    """The store of a ``file://`` virtual chunk container rooted at directory ``path``
    (files outside it are refused).

    Raises
    ------
    InvalidInputError
        If ``path`` is not an absolute path.
    """
    p = str(path)
    if not p.startswith("/"):
        raise InvalidInputError(f"local_filesystem_store needs an absolute path, got {p!r}")
    return ObjectStoreConfig.LocalFileSystem(p)


def gcs_store(opts: Mapping[str, str] | None = None) -> ObjectStoreConfig.Gcs:
    """The store of a ``gs://`` (or ``gcs://``) virtual chunk container; ``opts`` are
    obstore/object_store GCS config keys (e.g. ``{"google_base_url": ...}``)."""
    return ObjectStoreConfig.Gcs(_str_map("gcs_store opts", opts))


def http_store(opts: Mapping[str, str] | None = None,
               headers: Mapping[str, str] | None = None) -> ObjectStoreConfig.Http:
    """The store of an ``http(s)://`` virtual chunk container: client ``opts`` (obstore's
    client options, e.g. ``{"timeout": "30s"}``) and static request ``headers``."""
    return ObjectStoreConfig.Http(_str_map("http_store opts", opts),
                                  _str_map("http_store headers", headers))


# ------------------------------------------------------------------------ containers
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
        kind = getattr(self.store, "scheme", None)
        if kind is None:
            raise InvalidInputError(
                "a container store comes from s3_store, local_filesystem_store, gcs_store "
                f"or http_store, got {type(self.store).__name__}")
        if scheme not in _SCHEMES[kind]:
            raise InvalidInputError(
                f"container {p!r}: a {type(self.store).__name__} store serves "
                f"{' or '.join(s + '://' for s in _SCHEMES[kind])} URLs")
        if kind == "file":
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
            store = {"type": "s3_compatible" if isinstance(s, ObjectStoreConfig.S3Compatible)
                     else "s3", "region": o.region, "endpoint_url": o.endpoint_url,
                     "allow_http": o.allow_http, "anonymous": o.anonymous,
                     "force_path_style": o.force_path_style,
                     "network_stream_timeout_seconds": o.network_stream_timeout_seconds,
                     "requester_pays": o.requester_pays}
        elif isinstance(s, ObjectStoreConfig.LocalFileSystem):
            store = {"type": "local", "path": s.path}
        elif isinstance(s, ObjectStoreConfig.Gcs):
            store = {"type": "gcs", "opts": dict(s.opts)}
        else:
            store = {"type": "http", "opts": dict(s.opts), "headers": dict(s.headers)}
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
