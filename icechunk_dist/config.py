"""Repository configuration: mutable, composable objects shaped like Icechunk's, persisted in
the repository (``Repository.save_config``) and validated when built, changed and loaded.

``RepositoryConfig`` composes ``CompressionConfig``, ``CachingConfig`` and ``ManifestConfig``
(which holds a ``ManifestSplittingConfig``) and holds the virtual chunk containers. A field
left ``None`` means "the default"; the getters of the settings this library uses return the
effective value, never ``None``.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from enum import Enum
from typing import Any

from icechunk_dist._containers import VirtualChunkContainer
from icechunk_dist.errors import InvalidInputError

__all__ = [
    "CachingConfig",
    "CompressionAlgorithm",
    "CompressionConfig",
    "ManifestConfig",
    "ManifestSplittingConfig",
    "RepositoryConfig",
]

_DEFAULTS = {
    "inline_chunk_threshold_bytes": 512,
    "manifest_split_size": 100_000,
    "compression_level": 3,
    "max_concurrent_requests": 64,
    "get_partial_values_concurrency": 10,
    "num_chunk_refs": 4_000_000,
}


def _check_int(name: str, value: Any, lo: int, hi: int | None = None) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInputError(f"{name} must be an integer or None, got {value!r}")
    if value < lo or (hi is not None and value > hi):
        bound = f">= {lo}" if hi is None else f"in {lo}..{hi}"
        raise InvalidInputError(f"{name} must be {bound}, got {value}")
    return int(value)


class _Config:
    """Mutable settings with validated attributes, equality, copy and dict round trip."""

    _fields: tuple[str, ...] = ()

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self.to_dict() == other.to_dict()  # type: ignore[attr-defined]

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        args = ", ".join(f"{f}={getattr(self, '_' + f)!r}" for f in self._fields)
        return f"{type(self).__name__}({args})"

    def _unknown(self, d: dict[str, Any]) -> None:
        extra = set(d) - set(self._fields)
        if extra:
            raise InvalidInputError(f"unknown {type(self).__name__} field(s): {sorted(extra)}")


class CompressionAlgorithm(Enum):
    """Compression of metadata objects (Icechunk's enum): only zstd."""

    Zstd = 0

    @staticmethod
    def default() -> CompressionAlgorithm:
        return CompressionAlgorithm.Zstd


class CompressionConfig(_Config):
    """How metadata objects (snapshots, manifests, logs) are compressed.

    Parameters
    ----------
    algorithm
        Only :attr:`CompressionAlgorithm.Zstd`.
    level
        zstd level 1..22 (default 3).

    Raises
    ------
    InvalidInputError
        On a level outside 1..22 or another algorithm.
    """

    _fields = ("algorithm", "level")

    def __init__(self, algorithm: CompressionAlgorithm | None = None,
                 level: int | None = None) -> None:
        self.algorithm = algorithm
        self.level = level

    @property
    def algorithm(self) -> CompressionAlgorithm | None:
        return self._algorithm

    @algorithm.setter
    def algorithm(self, value: CompressionAlgorithm | None) -> None:
        if value is not None and value is not CompressionAlgorithm.Zstd:
            raise InvalidInputError(f"unsupported compression algorithm {value!r}")
        self._algorithm = value

    @property
    def level(self) -> int | None:
        return self._level

    @level.setter
    def level(self, value: int | None) -> None:
        self._level = _check_int("compression level", value, 1, 22)

    @staticmethod
    def default() -> CompressionConfig:
        return CompressionConfig()

    def to_dict(self) -> dict[str, Any]:
        return {"level": self._level} if self._level is not None else {}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CompressionConfig:
        cls()._unknown(d)
        return cls(level=d.get("level"))


class CachingConfig(_Config):
    """Sizes of in-memory caches.

    Parameters
    ----------
    num_chunk_refs
        Chunk refs kept in each session's manifest cache (default 4,000,000).
    num_snapshot_nodes, num_transaction_changes, num_bytes_attributes, num_bytes_chunks
        Accepted so that Icechunk configurations load; this library has no such caches, so
        they have no effect (they are persisted as given).

    Raises
    ------
    InvalidInputError
        On negative sizes.
    """

    _fields = ("num_snapshot_nodes", "num_chunk_refs", "num_transaction_changes",
               "num_bytes_attributes", "num_bytes_chunks")

    def __init__(self, num_snapshot_nodes: int | None = None, num_chunk_refs: int | None = None,
                 num_transaction_changes: int | None = None,
                 num_bytes_attributes: int | None = None,
                 num_bytes_chunks: int | None = None) -> None:
        for f, v in zip(self._fields, (num_snapshot_nodes, num_chunk_refs,
                                       num_transaction_changes, num_bytes_attributes,
                                       num_bytes_chunks), strict=True):
            setattr(self, "_" + f, _check_int(f, v, 0))

    def __setattr__(self, name: str, value: Any) -> None:
        if name in self._fields:
            name, value = "_" + name, _check_int(name, value, 0)
        object.__setattr__(self, name, value)

    def __getattr__(self, name: str) -> Any:
        if name in type(self)._fields:
            return self.__dict__.get("_" + name)
        raise AttributeError(name)

    @staticmethod
    def default() -> CachingConfig:
        return CachingConfig()

    def to_dict(self) -> dict[str, Any]:
        return {f: getattr(self, "_" + f) for f in self._fields
                if getattr(self, "_" + f) is not None}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CachingConfig:
        cls()._unknown(d)
        return cls(**d)


class ManifestSplittingConfig(_Config):
    """How manifests are split: here, one target number of chunk refs per split for every
    array (each array's chunk grid is tiled into regions of about that many chunks; a commit
    rewrites only the splits it touched).

    Parameters
    ----------
    split_sizes
        Target chunk refs per split (default 100,000). Icechunk's per-array, per-dimension
        condition tuples are not supported (one size for all arrays is stricter).

    Raises
    ------
    InvalidInputError
        On anything but a positive integer or None.
    """

    _fields = ("split_sizes",)

    def __init__(self, split_sizes: int | None = None) -> None:
        self.split_sizes = split_sizes

    @property
    def split_sizes(self) -> int | None:
        return self._split_sizes

    @split_sizes.setter
    def split_sizes(self, value: int | None) -> None:
        if value is not None and not isinstance(value, int):
            raise InvalidInputError(
                "split_sizes must be one integer (target chunk refs per manifest split); "
                "per-array condition tuples are not supported by icechunk_dist"
            )
        self._split_sizes = _check_int("split_sizes", value, 1)

    def to_dict(self) -> dict[str, Any]:
        return {"split_sizes": self._split_sizes} if self._split_sizes is not None else {}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ManifestSplittingConfig:
        cls()._unknown(d)
        return cls(d.get("split_sizes"))


class ManifestConfig(_Config):
    """Manifest settings: the splitting (``preload`` and the other Icechunk manifest
    settings do not exist here and must stay None).

    Raises
    ------
    InvalidInputError
        If ``preload`` is given, or ``splitting`` is not a ManifestSplittingConfig.
    """

    _fields = ("splitting",)

    def __init__(self, preload: Any = None,
                 splitting: ManifestSplittingConfig | None = None) -> None:
        if preload is not None:
            raise InvalidInputError("manifest preload is not supported by icechunk_dist")
        self.splitting = splitting

    @property
    def preload(self) -> None:
        return None

    @property
    def splitting(self) -> ManifestSplittingConfig | None:
        return self._splitting

    @splitting.setter
    def splitting(self, value: ManifestSplittingConfig | None) -> None:
        if value is not None and not isinstance(value, ManifestSplittingConfig):
            raise InvalidInputError("splitting must be a ManifestSplittingConfig or None")
        self._splitting = value

    @staticmethod
    def default() -> ManifestConfig:
        return ManifestConfig()

    def to_dict(self) -> dict[str, Any]:
        return {"splitting": self._splitting.to_dict()} if self._splitting is not None else {}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ManifestConfig:
        cls()._unknown(d)
        s = d.get("splitting")
        return cls(splitting=None if s is None else ManifestSplittingConfig.from_dict(s))


class RepositoryConfig(_Config):
    """Settings of a repository: built, modified and composed like Icechunk's, persisted with
    :meth:`Repository.save_config` and read back by :meth:`Repository.open`.

    Parameters
    ----------
    inline_chunk_threshold_bytes
        Chunks of at most this many bytes are kept inside the manifest (default 512).
    get_partial_values_concurrency
        Concurrent requests of one ``get_partial_values`` call (default 10).
    compression
        A :class:`CompressionConfig` (metadata objects' zstd level).
    max_concurrent_requests
        Upper bound on concurrent object-store requests of one operation (default 64).
    caching
        A :class:`CachingConfig`.
    virtual_chunk_containers
        The :class:`~icechunk_dist.virtual.VirtualChunkContainer` objects virtual chunks may
        be read from (a mapping whose values are containers, or an iterable of them); see
        :meth:`set_virtual_chunk_container`.
    manifest
        A :class:`ManifestConfig` (its splitting sets the chunk refs per manifest split).
    manifest_split_size, compression_level
        Shortcuts (ours) for ``manifest.splitting.split_sizes`` and ``compression.level``.

    Raises
    ------
    InvalidInputError
        On a bad value, here or when an attribute is set later.
    """

    _fields = ("inline_chunk_threshold_bytes", "get_partial_values_concurrency", "compression",
               "max_concurrent_requests", "caching", "manifest", "virtual_chunk_containers")

    def __init__(
        self,
        inline_chunk_threshold_bytes: int | None = None,
        get_partial_values_concurrency: int | None = None,
        compression: CompressionConfig | None = None,
        max_concurrent_requests: int | None = None,
        caching: CachingConfig | None = None,
        storage: Any = None,
        virtual_chunk_containers: Any = None,
        manifest: ManifestConfig | None = None,
        *,
        manifest_split_size: int | None = None,
        compression_level: int | None = None,
    ) -> None:
        if storage is not None:
            raise InvalidInputError(
                "StorageSettings are not part of the repository config in icechunk_dist: "
                "pass retry and concurrency settings to the storage factory"
            )
        self._virtual_chunk_containers: dict[str, VirtualChunkContainer] = {}
        if virtual_chunk_containers:
            items = (virtual_chunk_containers.values()
                     if isinstance(virtual_chunk_containers, Mapping)
                     else virtual_chunk_containers)
            for c in items:
                self.set_virtual_chunk_container(c)
        self.inline_chunk_threshold_bytes = inline_chunk_threshold_bytes
        self.get_partial_values_concurrency = get_partial_values_concurrency
        self.compression = compression
        self.max_concurrent_requests = max_concurrent_requests
        self.caching = caching
        self.manifest = manifest
        if manifest_split_size is not None:
            self.manifest_split_size = manifest_split_size
        if compression_level is not None:
            self.compression_level = compression_level

    # simple integer settings: None (default) or a validated value ------------------------
    @property
    def inline_chunk_threshold_bytes(self) -> int:
        v = self._inline_chunk_threshold_bytes
        return _DEFAULTS["inline_chunk_threshold_bytes"] if v is None else v

    @inline_chunk_threshold_bytes.setter
    def inline_chunk_threshold_bytes(self, value: int | None) -> None:
        self._inline_chunk_threshold_bytes = _check_int("inline_chunk_threshold_bytes", value, 0)

    @property
    def get_partial_values_concurrency(self) -> int:
        v = self._get_partial_values_concurrency
        return _DEFAULTS["get_partial_values_concurrency"] if v is None else v

    @get_partial_values_concurrency.setter
    def get_partial_values_concurrency(self, value: int | None) -> None:
        self._get_partial_values_concurrency = _check_int(
            "get_partial_values_concurrency", value, 1)

    @property
    def max_concurrent_requests(self) -> int:
        v = self._max_concurrent_requests
        return _DEFAULTS["max_concurrent_requests"] if v is None else v

    @max_concurrent_requests.setter
    def max_concurrent_requests(self, value: int | None) -> None:
        self._max_concurrent_requests = _check_int("max_concurrent_requests", value, 1)

    # composed settings ------------------------------------------------------------------
    @property
    def compression(self) -> CompressionConfig | None:
        return self._compression

    @compression.setter
    def compression(self, value: CompressionConfig | None) -> None:
        if value is not None and not isinstance(value, CompressionConfig):
            raise InvalidInputError("compression must be a CompressionConfig or None")
        self._compression = value

    @property
    def caching(self) -> CachingConfig | None:
        return self._caching

    @caching.setter
    def caching(self, value: CachingConfig | None) -> None:
        if value is not None and not isinstance(value, CachingConfig):
            raise InvalidInputError("caching must be a CachingConfig or None")
        self._caching = value

    @property
    def manifest(self) -> ManifestConfig | None:
        return self._manifest

    @manifest.setter
    def manifest(self, value: ManifestConfig | None) -> None:
        if value is not None and not isinstance(value, ManifestConfig):
            raise InvalidInputError("manifest must be a ManifestConfig or None")
        self._manifest = value

    @property
    def storage(self) -> None:
        """Always None: storage settings belong to the storage objects here."""
        return None

    # virtual chunk containers ------------------------------------------------------------
    @property
    def virtual_chunk_containers(self) -> dict[str, VirtualChunkContainer] | None:
        """The containers virtual chunks may be read from, by name (named containers) or
        url prefix, or None if there are none (as Icechunk's)."""
        return dict(self._virtual_chunk_containers) or None

    def set_virtual_chunk_container(self, cont: VirtualChunkContainer) -> None:
        """Add or replace a container: a named one replaces the container of that name, an
        unnamed one the container of its url prefix. Saved by ``Repository.save_config``.

        Raises
        ------
        InvalidInputError
            If ``cont`` is not a VirtualChunkContainer.
        """
        if not isinstance(cont, VirtualChunkContainer):
            raise InvalidInputError("set_virtual_chunk_container takes a "
                                    f"VirtualChunkContainer, got {type(cont).__name__}")
        self._virtual_chunk_containers[cont.name or cont.url_prefix] = cont

    def get_virtual_chunk_container(self, name: str) -> VirtualChunkContainer | None:
        """The container named ``name`` (or whose url prefix is ``name``), or None."""
        return self._virtual_chunk_containers.get(name)

    def clear_virtual_chunk_containers(self) -> None:
        """Remove every container."""
        self._virtual_chunk_containers = {}

    def containers(self) -> list[VirtualChunkContainer]:
        """Every container (ours: a list, in the order they were set)."""
        return list(self._virtual_chunk_containers.values())

    # effective values used by the library -------------------------------------------------
    @property
    def compression_level(self) -> int:
        c = self._compression
        return _DEFAULTS["compression_level"] if c is None or c.level is None else c.level

    @compression_level.setter
    def compression_level(self, value: int) -> None:
        c = self._compression if self._compression is not None else CompressionConfig()
        c.level = value
        self._compression = c

    @property
    def manifest_split_size(self) -> int:
        m = self._manifest
        s = None if m is None or m.splitting is None else m.splitting.split_sizes
        return _DEFAULTS["manifest_split_size"] if s is None else s

    @manifest_split_size.setter
    def manifest_split_size(self, value: int) -> None:
        m = self._manifest if self._manifest is not None else ManifestConfig()
        s = m.splitting if m.splitting is not None else ManifestSplittingConfig()
        s.split_sizes = value
        m.splitting = s
        self._manifest = m

    @property
    def manifest_cache_chunk_refs(self) -> int:
        c = self._caching
        n = None if c is None else c.num_chunk_refs
        return _DEFAULTS["num_chunk_refs"] if n is None else int(n)

    # building --------------------------------------------------------------------------
    @staticmethod
    def default() -> RepositoryConfig:
        """A config with every setting at its default."""
        return RepositoryConfig()

    def copy(self) -> RepositoryConfig:
        return copy.deepcopy(self)

    def merge(self, other: RepositoryConfig) -> RepositoryConfig:
        """A new config: ``self`` with every setting ``other`` sets (non-None) replacing it,
        nested configs merged field by field (as Icechunk's ``merge``)."""
        if not isinstance(other, RepositoryConfig):
            raise InvalidInputError("can only merge a RepositoryConfig")
        a, b = self.to_dict(), other.to_dict()
        # containers of ``other`` extend ours (a container of the same key replaces ours)
        conts = [*a.pop("virtual_chunk_containers", []), *b.pop("virtual_chunk_containers", [])]
        merged = _deep_merge(a, b)
        if conts:
            merged["virtual_chunk_containers"] = conts
        return RepositoryConfig.from_dict(merged)

    def to_dict(self) -> dict[str, Any]:
        """The settings given (not the defaults), as plain JSON-like values."""
        out: dict[str, Any] = {}
        for f in ("inline_chunk_threshold_bytes", "get_partial_values_concurrency",
                  "max_concurrent_requests"):
            v = getattr(self, "_" + f)
            if v is not None:
                out[f] = v
        for f in ("compression", "caching", "manifest"):
            sub = getattr(self, "_" + f)
            if sub is not None and sub.to_dict():
                out[f] = sub.to_dict()
        if self._virtual_chunk_containers:
            out["virtual_chunk_containers"] = [
                c.to_dict() for c in self._virtual_chunk_containers.values()]
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RepositoryConfig:
        """Build from :meth:`to_dict` output (also reads the flat form of older versions).

        Raises
        ------
        InvalidInputError
            On unknown fields or bad values.
        """
        if not isinstance(d, dict):
            raise InvalidInputError(f"invalid repository config: {d!r}")
        d = dict(d)
        split = d.pop("manifest_split_size", None)
        level = d.pop("compression_level", None)
        extra = set(d) - set(cls._fields)
        if extra:
            raise InvalidInputError(f"invalid repository config: unknown fields {sorted(extra)}")
        conts = d.get("virtual_chunk_containers") or []
        if not isinstance(conts, Iterable) or isinstance(conts, (str, Mapping)):
            raise InvalidInputError("invalid repository config: virtual_chunk_containers "
                                    "must be a list")
        try:
            out = cls(
                inline_chunk_threshold_bytes=d.get("inline_chunk_threshold_bytes"),
                get_partial_values_concurrency=d.get("get_partial_values_concurrency"),
                max_concurrent_requests=d.get("max_concurrent_requests"),
                compression=(None if d.get("compression") is None
                             else CompressionConfig.from_dict(d["compression"])),
                caching=(None if d.get("caching") is None
                         else CachingConfig.from_dict(d["caching"])),
                manifest=(None if d.get("manifest") is None
                          else ManifestConfig.from_dict(d["manifest"])),
                manifest_split_size=split, compression_level=level,
                virtual_chunk_containers=[VirtualChunkContainer.from_dict(c) for c in conts],
            )
        except (TypeError, AttributeError) as e:
            raise InvalidInputError(f"invalid repository config: {e}") from None
        return out


def _deep_merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(
            out.get(k), dict) else v
    return out
