"""The zarr v3 store over a session (or a fork): what ``zarr``, ``dask`` and ``xarray`` use."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from zarr.abc.store import (
    ByteRequest,
    OffsetByteRequest,
    RangeByteRequest,
    Store,
    SuffixByteRequest,
)
from zarr.core.buffer import Buffer, BufferPrototype, default_buffer_prototype

from icechunk_dist.errors import InvalidInputError, NotFoundError, ReadOnlyError
from icechunk_dist.format import (
    VirtualChunkSpec,
    grid_to_columns,
    micros,
    specs_to_columns,
    split_checksum,
    virtual_table,
)
from icechunk_dist.session._storeslot import register_store_class
from icechunk_dist.storage import Storage

if TYPE_CHECKING:
    from icechunk_dist.format import ChunkTable

__all__ = ["PRIVATE_DIR", "IcechunkStore", "StoreBackend"]

#: Name of a directory that :meth:`IcechunkStore.list_dir` never shows. The library's own
#: documents live under ``<group>/.icechunk_dist/`` (ingestion's record of landed inputs,
#: docs/design/012-landed-inputs-record.md): ordinary keys of the snapshot, so they travel
#: with it through expiry, amend and reset and go with the group when it is deleted, but zarr
#: never meets them as (unrecognized) members of a group.
PRIVATE_DIR = ".icechunk_dist"


class StoreBackend(Protocol):
    """What the store needs from a session or fork (``Session``, ``ForkSession``)."""

    @property
    def read_only(self) -> bool: ...

    @property
    def storage(self) -> Storage: ...

    @property
    def snapshot_id(self) -> str: ...

    @property
    def fork_id(self) -> str | None: ...

    @property
    def partial_values_concurrency(self) -> int:
        """How many ranged reads one ``get_partial_values`` call runs at once."""
        ...

    def read_only_reason(self) -> str: ...

    async def get_key(self, key: str, start: int = 0, end: int | None = None
                      ) -> bytes | None: ...

    async def size_of(self, key: str) -> int | None: ...

    async def key_exists(self, key: str) -> bool: ...

    async def set_key(self, key: str, data: bytes) -> None: ...

    async def set_virtual_key(self, key: str, url: str, offset: int, length: int,
                              etag: str | None, modified: int = 0, *,
                              validate_container: bool = False) -> None: ...

    async def set_virtual_table(self, array_path: str, make: Callable[[int], ChunkTable], *,
                                validate_containers: bool = True
                                ) -> list[tuple[int, ...]] | None: ...

    async def delete_key(self, key: str) -> None: ...

    async def delete_prefix(self, prefix: str) -> None: ...

    def iter_keys(self, prefix: str = "") -> AsyncIterator[str]: ...

_RO = ("cannot write to read-only store: store was opened in read-only mode and does not "
       "support writing")

# the last segment of a zarr v3 key: metadata, or a chunk of the default ("c", "c/1/2",
# "c.1.2") or v2 ("1.2", "1/2", "0") chunk key encoding
_ZARR_LEAF = re.compile(r"zarr\.json|c(\.\d+)*|\d+(\.\d+)*")
# the library's own documents live under this directory name (not zarr keys, but ours)
_PRIVATE_DIR = ".icechunk_dist"


def _check_zarr_key(key: str) -> None:
    """Refuse writes of keys that are not zarr v3 keys, as Icechunk's store does.

    Raises
    ------
    InvalidInputError
        If ``key`` is neither metadata (``.../zarr.json``) nor a chunk key.
    """
    if not isinstance(key, str):
        raise InvalidInputError(f"invalid key {key!r}: keys are strings")
    parts = key.split("/")
    if _ZARR_LEAF.fullmatch(parts[-1]) is None and _PRIVATE_DIR not in parts[:-1]:
        raise InvalidInputError(
            f"invalid key {key!r}: not a zarr v3 key (metadata '<path>/zarr.json' or a chunk "
            "key such as '<array>/c/0/1'); this store holds zarr hierarchies only")


class StoreReadOnlyError(ReadOnlyError, ValueError):
    """A write through a read-only store (a ``ValueError`` too, as zarr expects)."""


class StoreKeyNotFoundError(NotFoundError, FileNotFoundError):
    """A key the store does not hold (a ``FileNotFoundError`` too, as zarr's store contract
    expects of ``getsize``)."""


StoreReadOnlyError.__module__ = "icechunk_dist"
StoreKeyNotFoundError.__module__ = "icechunk_dist"


class IcechunkStore(Store):
    """A ``zarr.abc.store.Store`` reading and writing through a session.

    Create it with ``session.store``; constructing it directly as
    ``IcechunkStore(session, read_only=...)`` is also supported (zarr's ``Store.open`` does).
    Writes become visible to others only when the session commits. A store over a read-only
    session (or a fork) pickles; a store over a writable session refuses, pointing to
    ``session.fork()``.
    """

    supports_writes = True
    supports_deletes = True
    supports_listing = True
    supports_partial_writes = False  # type: ignore[assignment]

    @property
    def supports_consolidated_metadata(self) -> bool:
        """False, as Icechunk's: the repository already is the consolidation (listing and
        metadata reads come from one snapshot), so zarr never writes ``.zmetadata``."""
        return False

    def __init__(self, session: StoreBackend, *, read_only: bool | None = None) -> None:
        ro = session.read_only if read_only is None else bool(read_only)
        super().__init__(read_only=ro)
        self._session = session
        self._claims: set[str] = set()

    @classmethod
    def _of_session(cls, session: StoreBackend, *, read_only: bool | None = None
                    ) -> IcechunkStore:
        """The store ``session.store`` returns: open, as Icechunk's (nothing to open: the
        session is ready). A store constructed directly starts closed, as zarr's
        ``Store.open`` expects."""
        store = cls(session, read_only=read_only)
        store._is_open = True
        return store

    # ------------------------------------------------------------------ identity
    @property
    def session(self) -> StoreBackend:
        """The session this store reads and writes through."""
        return self._session

    @property
    def read_only(self) -> bool:
        return self._read_only or self._session.read_only

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, IcechunkStore):
            return False
        a, b = self._session, other._session
        if self.read_only != other.read_only:
            return False
        if a is b:
            return True
        # stores over read-only sessions (e.g. unpickled copies) compare by what they show
        return bool(
            a.read_only and b.read_only and a.storage == b.storage
            and a.snapshot_id == b.snapshot_id and a.fork_id == b.fork_id
        )

    def __hash__(self) -> int:
        # equal stores share their storage; the storage never changes for a store's life
        # (its snapshot and read-only state can, when its session commits)
        return hash((IcechunkStore, self._session.storage))

    def __repr__(self) -> str:
        mode = "read-only" if self.read_only else "writable"
        return f"<IcechunkStore {mode} over {self._session!r}>"

    def __getstate__(self) -> dict[str, Any]:
        return {"session": self._session, "read_only": self._read_only,
                "is_open": self._is_open}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._session = state["session"]
        self._read_only = state["read_only"]
        self._is_open = state["is_open"]
        self._claims = set()

    def with_read_only(self, read_only: bool = False) -> IcechunkStore:
        """A new store over the same session with another read-only setting.

        Raises
        ------
        ReadOnlyError
            If asked for a writable store over a read-only session.
        """
        if not read_only and self._session.read_only:
            raise ReadOnlyError("cannot make a writable store over a read-only session")
        store = IcechunkStore(self._session, read_only=read_only)
        store._is_open = False  # as Icechunk's: zarr opens it on first use
        return store

    def _check_writable(self) -> None:
        if self.read_only:
            reason = self._session.read_only_reason() if self._session.read_only else ""
            raise StoreReadOnlyError(_RO + (f": {reason}" if reason else ""))

    # ------------------------------------------------------------------ reads
    async def get(
        self, key: str, prototype: BufferPrototype | None = None,
        byte_range: ByteRequest | None = None,
    ) -> Buffer | None:
        if prototype is None:
            prototype = default_buffer_prototype()
        start, end = 0, None
        if byte_range is None:
            pass
        elif isinstance(byte_range, RangeByteRequest):
            start, end = byte_range.start, byte_range.end
        elif isinstance(byte_range, OffsetByteRequest):
            start = byte_range.offset
        elif isinstance(byte_range, SuffixByteRequest):
            size = await self._session.size_of(key)
            if size is None:
                return None
            start = max(0, size - byte_range.suffix)
        else:
            raise TypeError(f"Unexpected byte_range, got {byte_range}.")
        data = await self._session.get_key(key, start, end)
        return None if data is None else prototype.buffer.from_bytes(data)

    async def get_partial_values(
        self, prototype: BufferPrototype,
        key_ranges: Iterable[tuple[str, ByteRequest | None]],
    ) -> list[Buffer | None]:
        from icechunk_dist.session._io import gather_limited

        limit = self._session.partial_values_concurrency
        return await gather_limited([self.get(k, prototype, r) for k, r in key_ranges], limit)

    async def exists(self, key: str) -> bool:
        return await self._session.key_exists(key)

    async def getsize(self, key: str) -> int:
        """Size in bytes of the value at ``key``.

        Raises
        ------
        NotFoundError
            If there is no such key (the error is also a ``FileNotFoundError``).
        """
        size = await self._session.size_of(key)
        if size is None:
            raise StoreKeyNotFoundError(f"no key {key!r} in this store")
        return size

    # ------------------------------------------------------------------ writes
    async def set(self, key: str, value: Buffer) -> None:
        """Write ``value`` at ``key`` (a zarr v3 key).

        Raises
        ------
        ReadOnlyError
            Through a read-only store (also a ``ValueError``).
        InvalidInputError
            If ``key`` is not a zarr v3 key (metadata or a chunk key), as Icechunk refuses.
        TypeError
            If ``value`` is not a zarr ``Buffer``.
        """
        self._check_writable()
        if not isinstance(value, Buffer):
            raise TypeError(
                "IcechunkStore.set(): `value` must be a Buffer instance. Got an instance of "
                f"{type(value)} instead."
            )
        _check_zarr_key(key)
        await self._session.set_key(key, value.to_bytes())

    # ------------------------------------------------------------------ virtual refs
    def set_virtual_ref(self, key: str, location: str, *, offset: int, length: int,
                        checksum: str | datetime | None = None,
                        validate_container: bool = True) -> None:
        """Point chunk ``key`` at ``length`` bytes at ``offset`` of an existing object
        (a URL such as ``s3://bucket/file.nc`` or ``file:///data/file.nc``) instead of
        copying it; reads need an authorized virtual chunk container (docs/virtual.md).

        ``checksum`` is the object's etag, or a timezone-aware time: reads fail if the
        object changed (etag differs, or modified after that time) since.

        Raises
        ------
        ReadOnlyError
            Through a read-only store.
        InvalidInputError
            On a bad key or location, or (``validate_container``) a location that no
            virtual chunk container of the config covers.
        """
        from icechunk_dist import _sync

        self._check_writable()
        _sync.run(self.set_virtual_ref_async(key, location, offset=offset, length=length,
                                             checksum=checksum,
                                             validate_container=validate_container))

    async def set_virtual_ref_async(self, key: str, location: str, *, offset: int,
                                    length: int, checksum: str | datetime | None = None,
                                    validate_container: bool = True) -> None:
        """Async twin of :meth:`set_virtual_ref`."""
        self._check_writable()
        etag, modified = split_checksum(checksum)
        await self._session.set_virtual_key(key, location, offset, length, etag, modified,
                                            validate_container=validate_container)

    def set_virtual_refs(self, array_path: str, chunks: Sequence[VirtualChunkSpec], *,
                         validate_containers: bool = True) -> list[tuple[int, ...]] | None:
        """Store many virtual refs of the array at ``array_path`` at once (Icechunk's).

        Columnar inside: the specs become numpy columns and one table. For millions of refs,
        :meth:`set_virtual_refs_columns` skips the per-ref spec objects.

        Returns
        -------
        list[tuple[int, ...]] | None
            None if every ref was stored, else the chunk indices of the refs left out
            because no virtual chunk container covers their location
            (``validate_containers``).

        Raises
        ------
        ReadOnlyError
            Through a read-only store.
        NotFoundError
            If there is no array at ``array_path``.
        InvalidInputError
            On an index outside the chunk grid, negative offsets or lengths, locations
            that are not URLs or naive checksum datetimes.
        """
        from icechunk_dist import _sync

        self._check_writable()
        return _sync.run(self.set_virtual_refs_async(  # type: ignore[no-any-return]
            array_path, chunks, validate_containers=validate_containers))

    async def set_virtual_refs_async(self, array_path: str, chunks: Sequence[VirtualChunkSpec],
                                     *, validate_containers: bool = True
                                     ) -> list[tuple[int, ...]] | None:
        """Async twin of :meth:`set_virtual_refs`."""
        self._check_writable()
        specs = list(chunks)
        return await self._session.set_virtual_table(
            array_path, lambda nd: virtual_table(nd, **specs_to_columns(specs, nd)),
            validate_containers=validate_containers)

    def set_virtual_refs_arr(self, array_path: str, chunk_grid_shape: Sequence[int],
                             locations: Sequence[str], offsets: Any, lengths: Any, *,
                             validate_containers: bool = True,
                             arr_offset: Sequence[int] | None = None,
                             checksum: datetime | str | None = None
                             ) -> list[tuple[int, ...]] | None:
        """Icechunk's flat-array form of :meth:`set_virtual_refs`: one location per chunk of
        ``chunk_grid_shape`` in C order (``""``: no ref), ``offsets``/``lengths`` alike,
        the grid placed at ``arr_offset``, one ``checksum`` for all. Same returns and
        errors as :meth:`set_virtual_refs`."""
        from icechunk_dist import _sync

        self._check_writable()
        return _sync.run(self.set_virtual_refs_arr_async(  # type: ignore[no-any-return]
            array_path, chunk_grid_shape, locations, offsets, lengths,
            validate_containers=validate_containers, arr_offset=arr_offset,
            checksum=checksum))

    async def set_virtual_refs_arr_async(self, array_path: str,
                                         chunk_grid_shape: Sequence[int],
                                         locations: Sequence[str], offsets: Any, lengths: Any,
                                         *, validate_containers: bool = True,
                                         arr_offset: Sequence[int] | None = None,
                                         checksum: datetime | str | None = None
                                         ) -> list[tuple[int, ...]] | None:
        """Async twin of :meth:`set_virtual_refs_arr`."""
        self._check_writable()
        cols = grid_to_columns(chunk_grid_shape, locations, offsets, lengths, arr_offset,
                               checksum)
        return await self._session.set_virtual_table(
            array_path, lambda nd: virtual_table(nd, **cols),
            validate_containers=validate_containers)

    def set_virtual_refs_columns(self, array_path: str, *, coords: Any, location_ids: Any,
                                 offsets: Any, lengths: Any, locations: Sequence[str],
                                 etags: Sequence[str | None] | None = None,
                                 last_modified: Sequence[datetime | None] | None = None,
                                 validate_containers: bool = True
                                 ) -> list[tuple[int, ...]] | None:
        """Ours: many virtual refs as numpy columns, the fast path for millions of refs.

        ``coords`` is an ``(n, ndim)`` integer array of chunk indices; ``location_ids``,
        ``offsets`` and ``lengths`` are ``(n,)`` integer arrays; ``location_ids[i]`` indexes
        ``locations`` (each distinct URL once), and ``etags`` / ``last_modified``
        (timezone-aware) give each location's checksum. A later row of one chunk wins.
        Same returns and errors as :meth:`set_virtual_refs`.
        """
        from icechunk_dist import _sync

        self._check_writable()
        return _sync.run(self.set_virtual_refs_columns_async(  # type: ignore[no-any-return]
            array_path, coords=coords, location_ids=location_ids, offsets=offsets,
            lengths=lengths, locations=locations, etags=etags, last_modified=last_modified,
            validate_containers=validate_containers))

    async def set_virtual_refs_columns_async(
            self, array_path: str, *, coords: Any, location_ids: Any, offsets: Any,
            lengths: Any, locations: Sequence[str], etags: Sequence[str | None] | None = None,
            last_modified: Sequence[datetime | None] | None = None,
            validate_containers: bool = True) -> list[tuple[int, ...]] | None:
        """Async twin of :meth:`set_virtual_refs_columns`."""
        self._check_writable()
        mods = None if last_modified is None else [micros(t) for t in last_modified]
        return await self._session.set_virtual_table(
            array_path, lambda nd: virtual_table(
                nd, coords=coords, location_ids=location_ids, offsets=offsets,
                lengths=lengths, locations=locations, etags=etags, modified=mods),
            validate_containers=validate_containers)

    async def set_if_not_exists(self, key: str, value: Buffer) -> None:
        self._check_writable()
        _check_zarr_key(key)
        if key in self._claims:
            return
        self._claims.add(key)  # no await between check and add: atomic on the loop
        try:
            if not await self._session.key_exists(key):
                await self._session.set_key(key, value.to_bytes())
        finally:
            self._claims.discard(key)

    async def delete(self, key: str) -> None:
        self._check_writable()
        await self._session.delete_key(key)

    async def delete_dir(self, prefix: str) -> None:
        self._check_writable()
        await self._session.delete_prefix(prefix)

    async def clear(self) -> None:
        self._check_writable()
        await self._session.delete_prefix("")

    def sync_clear(self) -> None:
        """Sync form of :meth:`clear` (Icechunk's): remove every group and array from the
        session (history is untouched).

        Raises
        ------
        ReadOnlyError
            Through a read-only store.
        """
        from icechunk_dist import _sync

        _sync.run(self.clear())

    # ------------------------------------------------------------------ listing
    async def list(self) -> AsyncIterator[str]:  # type: ignore[override]
        async for k in self._session.iter_keys(""):
            yield k

    async def list_prefix(self, prefix: str) -> AsyncIterator[str]:  # type: ignore[override]
        """Every key under the path ``prefix``, as in zarr and Icechunk: ``list_prefix("foo")``
        lists ``foo/...`` (and a key ``foo``) but not ``foo-bar/...``; ``""`` or ``"/"``
        lists the whole hierarchy."""
        path = prefix.strip("/")
        if not path:
            async for k in self._session.iter_keys(""):
                yield k
            return
        under = path + "/"
        async for k in self._session.iter_keys(path):
            if k == path or k.startswith(under):
                yield k

    async def list_dir(self, prefix: str) -> AsyncIterator[str]:  # type: ignore[override]
        root = prefix.rstrip("/")
        full = root + "/" if root else ""
        seen: set[str] = set()
        async for k in self._session.iter_keys(full):
            child = k[len(full):].split("/", 1)[0]
            if child and child != PRIVATE_DIR and child not in seen:
                seen.add(child)
                yield child


register_store_class(IcechunkStore._of_session)
