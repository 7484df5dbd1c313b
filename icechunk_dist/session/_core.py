"""The readable/writable view shared by sessions and forks: base snapshot + change-set."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import xxhash

from icechunk_dist._types import encode_id, new_id, new_id_bytes
from icechunk_dist.changeset import ChangeSet
from icechunk_dist.config import RepositoryConfig
from icechunk_dist.errors import (
    FormatError,
    InvalidInputError,
    NotFoundError,
    ReadOnlyError,
    StorageError,
)
from icechunk_dist.format import (
    KIND_INLINE,
    KIND_NATIVE,
    KIND_TOMBSTONE,
    KIND_VIRTUAL,
    ArrayInfo,
    ChunkRefRecord,
    ChunkTable,
    NodeRecord,
    SnapshotData,
)
from icechunk_dist.session import _keys
from icechunk_dist.session._io import ManifestCache, chunk_key, put_fresh
from icechunk_dist.session._storeslot import store_class
from icechunk_dist.session._vrefs import check_in_grid
from icechunk_dist.session._writeback import PendingWrites
from icechunk_dist.storage import ObjectNotFoundError, Storage, VirtualSources

if TYPE_CHECKING:
    from icechunk_dist.store import IcechunkStore

__all__ = ["SessionCore", "node_names"]

Ref = tuple[int, Any]

# backends where a chunk write waits on the network: written in the background (_writeback);
# on local disk and memory a small write costs less than handing it over
_WRITE_BEHIND = frozenset({"s3", "gcs", "azure"})  # (kind, payload) as ChunkTable.row_payload


class SessionCore:
    """Resolves zarr keys against ``base`` overlaid with ``changes``; records writes."""

    _storage: Storage
    _config: RepositoryConfig
    _base: SnapshotData
    _changes: ChangeSet
    _read_only: bool

    def _init_core(self, storage: Storage, config: RepositoryConfig, base: SnapshotData,
                   changes: ChangeSet | None, read_only: bool,
                   virtual: VirtualSources | None = None) -> None:
        self._storage = storage
        self._config = config
        # the virtual chunk containers this session may read (none authorized by default)
        self._virtual = virtual if virtual is not None else VirtualSources(
            config.containers(), {}, config.max_concurrent_requests)
        self._base = base
        self._changes = changes if changes is not None else ChangeSet()
        # pending metadata inherited from a parent session (forks only); read, never merged
        self._inherited = ChangeSet()
        self._read_only = read_only
        self._base_nodes = {n.path: n for n in base.nodes}
        self._base_loose = {r.key: r for r in base.loose}
        self._manifests = ManifestCache(config.manifest_cache_chunk_refs, shared=True)
        self._lock = threading.RLock()
        self._store: IcechunkStore | None = None
        # chunk objects of ``_changes`` still being written (write-behind, see _writeback)
        self._writes = PendingWrites()

    # ------------------------------------------------------------------ common props
    @property
    def read_only(self) -> bool:
        """Whether this session refuses writes."""
        return self._read_only

    @property
    def storage(self) -> Storage:
        """The storage of the repository this session reads and writes."""
        return self._storage

    @property
    def snapshot_id(self) -> str:
        """The snapshot this session reads (its base while writing)."""
        return self._base.id

    @property
    def has_uncommitted_changes(self) -> bool:
        return not self._changes.is_empty()

    @property
    def store(self) -> IcechunkStore:
        """A ``zarr.abc.store.Store`` over this session."""
        if self._store is None:
            self._store = store_class()(self, read_only=self._read_only)
        return self._store

    @property
    def virtual_sources(self) -> VirtualSources:
        """The virtual chunk containers this session reads, with their authorization."""
        return self._virtual

    @property
    def partial_values_concurrency(self) -> int:
        """How many ranged reads one ``get_partial_values`` call of the store runs at once
        (``RepositoryConfig.get_partial_values_concurrency``)."""
        return int(self._config.get_partial_values_concurrency)

    @property
    def fork_id(self) -> str | None:
        """The fork's id for a :class:`ForkSession`; None for a session."""
        return None

    def read_only_reason(self) -> str:
        """Why writes are refused (for error messages)."""
        return self._read_only_reason()

    async def _flush_writes(self) -> None:
        """Wait until every chunk object of our change-set has landed.

        Raises
        ------
        StorageError
            If one of them could not be written.
        """
        await self._writes.flush()

    def _chunks_written(self, node_id: str) -> None:
        """Called (under the lock) before chunk refs of node ``node_id`` are recorded: a
        session stamps the array with its write generation (see ``Session.merge``)."""

    def _check_writable(self) -> None:
        if self._read_only:
            raise ReadOnlyError(self._read_only_reason())

    def _read_only_reason(self) -> str:
        return "this session is read-only"

    # ------------------------------------------------------------------ nodes
    def _node(self, path: str) -> NodeRecord | None:
        for cs in (self._changes, self._inherited):
            rec = cs.nodes.get(path)
            if rec is not None:
                return rec
            if path in cs.deleted:
                return None
        return self._base_nodes.get(path)

    def _all_nodes(self) -> dict[str, NodeRecord]:
        out = dict(self._base_nodes)
        for cs in (self._inherited, self._changes):
            for p in cs.deleted:
                out.pop(p, None)
            out.update(cs.nodes)
        return out

    def _array_for_key(self, key: str) -> tuple[NodeRecord, tuple[int, ...]] | None:
        """(array node, chunk coord) if ``key`` is a chunk key of an existing array."""
        parts = key.split("/")
        for i in range(len(parts) - 1, -1, -1):
            path = "/".join(parts[:i])
            node = self._node(path)
            if node is None or node.array is None:
                continue
            suffix = "/".join(parts[i:])
            coord = _keys.parse_chunk_suffix(suffix, node.array)
            if coord is not None:
                return node, coord
            return None
        return None

    # ------------------------------------------------------------------ reads
    async def _chunk_ref(self, node: NodeRecord, coord: tuple[int, ...]) -> Ref | None:
        ac = self._changes.chunks.get(node.node_id)
        if ac is not None:
            hit = ac.lookup(coord)
            if hit is not None:
                return None if hit[0] == KIND_TOMBSTONE else hit
        base = self._base_nodes.get(node.path)
        if base is None or base.node_id != node.node_id or base.array is None:
            return None
        split = tuple(c // s for c, s in zip(coord, base.array.split_shape, strict=True))
        for mref in base.manifests:
            if mref.split == split:
                table = await self._manifests.get(self._storage, mref.id)
                i = table.find(coord)
                return None if i < 0 else table.row_payload(i)
        return None

    async def _loose_ref(self, key: str) -> ChunkRefRecord | None:
        if key in self._changes.loose:
            return self._changes.loose[key]
        return self._base_loose.get(key)

    async def _read_ref(self, ref: Ref, start: int, end: int | None, key: str) -> bytes:
        """Bytes ``[start, end)`` of the chunk ``ref`` points to (``key`` names it in errors).

        Raises
        ------
        FormatError
            If a native chunk object is missing, or holds fewer (or, where the read can see
            it, more) bytes than its ref records.
        StorageError
            If the backend fails, or a virtual chunk cannot be read whole.
        """
        kind, payload = ref
        if kind == KIND_INLINE:
            return bytes(payload[start:end])
        if kind == KIND_NATIVE:
            cid, offset, length = payload
            stop = length if end is None else min(end, length)
            if stop <= start:
                return b""
            return await self._read_native(chunk_key(cid), offset, length, start, stop, key)
        if kind == KIND_VIRTUAL:
            url, etag, modified, offset, length = payload
            stop = length if end is None else min(end, length)
            if stop <= start:
                return b""
            data = await self._virtual.read(url, etag, modified, offset + start,
                                            offset + stop, key=key)
            if len(data) != stop - start:
                raise StorageError(
                    f"virtual chunk {url!r} of key {key!r} is shorter than its ref records: "
                    f"bytes [{offset + start}, {offset + stop}) requested, {len(data)} read",
                    key=url,
                )
            return data
        raise FormatError(f"unknown chunk ref kind {kind}", object_name=key)

    async def _read_native(self, obj: str, offset: int, length: int, start: int, stop: int,
                           key: str) -> bytes:
        """Bytes ``[start, stop)`` (``0 <= start < stop <= length``) of a native chunk.

        A short read means the object is shorter than its ref records. A chunk at offset 0
        is the whole object (spec section 5.2), so a read up to its recorded end asks for
        one byte more: getting it means the object is longer than recorded. A read that
        stops inside the chunk can only check what it gets back.
        """
        if len(self._writes):
            await self._writes.wait_for(obj)  # our own write, still landing
        probe = 1 if offset == 0 and stop == length else 0
        try:
            data = await self._storage.get_range(obj, offset + start, offset + stop + probe)
        except ObjectNotFoundError:
            raise FormatError(
                f"chunk object {obj} referenced by key {key!r} is missing", object_name=obj
            ) from None
        if len(data) < stop - start:
            raise FormatError(
                f"chunk object of key {key!r} is shorter than its ref records "
                f"({length} bytes at offset {offset}): bytes [{offset + start}, "
                f"{offset + stop}) requested, {len(data)} read (truncated or overwritten)",
                object_name=obj,
            )
        if len(data) > stop - start:
            raise FormatError(
                f"chunk object of key {key!r} is longer than the {length} bytes its ref "
                "records (overwritten or corrupt)",
                object_name=obj,
            )
        return data

    async def get_key(self, key: str, start: int = 0, end: int | None = None) -> bytes | None:
        """Bytes ``[start, end)`` of ``key``, or None if it does not exist."""
        path = _keys.meta_path(key)
        if path is not None:
            node = self._node(path)
            return None if node is None else node.metadata[start:end]
        found = self._array_for_key(key)
        if found is not None:
            node, coord = found
            ref = await self._chunk_ref(node, coord)
        else:
            rec = await self._loose_ref(key)
            ref = None if rec is None else _loose_to_ref(rec)
        if ref is None:
            return None
        return await self._read_ref(ref, start, end, key)

    async def size_of(self, key: str) -> int | None:
        path = _keys.meta_path(key)
        if path is not None:
            node = self._node(path)
            return None if node is None else len(node.metadata)
        found = self._array_for_key(key)
        if found is not None:
            ref = await self._chunk_ref(*found)
        else:
            rec = await self._loose_ref(key)
            ref = None if rec is None else _loose_to_ref(rec)
        if ref is None:
            return None
        kind, payload = ref
        if kind == KIND_INLINE:
            return len(payload)
        return int(payload[-1])

    async def key_exists(self, key: str) -> bool:
        path = _keys.meta_path(key)
        if path is not None:
            return self._node(path) is not None
        found = self._array_for_key(key)
        if found is not None:
            return await self._chunk_ref(*found) is not None
        return await self._loose_ref(key) is not None

    async def iter_keys(self, prefix: str = "") -> AsyncIterator[str]:
        """Every key whose name starts with ``prefix`` (plain string prefix)."""
        nodes = self._all_nodes()
        for path, node in sorted(nodes.items()):
            mkey = _keys.META if path == "" else f"{path}/{_keys.META}"
            if mkey.startswith(prefix):
                yield mkey
            if node.array is None:
                continue
            root = "" if path == "" else path + "/"
            if not (root.startswith(prefix) or prefix.startswith(root)):
                continue
            for coord in await self._all_coords(node):
                ck = _keys.chunk_key(path, node.array, coord)
                if ck.startswith(prefix):
                    yield ck
        loose: dict[str, ChunkRefRecord | None] = dict(self._base_loose)
        loose.update(self._changes.loose)
        for k, v in sorted(loose.items(), key=lambda kv: kv[0]):
            if v is not None and k.startswith(prefix):
                yield k

    async def _all_coords(self, node: NodeRecord) -> list[tuple[int, ...]]:
        import numpy as np

        from icechunk_dist.format import ChunkTable

        tables = []
        base = self._base_nodes.get(node.path)
        if base is not None and base.node_id == node.node_id:
            for mref in base.manifests:
                tables.append(await self._manifests.get(self._storage, mref.id))
        ac = self._changes.chunks.get(node.node_id)
        if ac is not None:
            tables.append(ac.table)
        if not tables:
            return []
        merged = ChunkTable.concat(tables).normalized()
        live = merged.coords[merged.kinds != KIND_TOMBSTONE]
        return [tuple(int(v) for v in row) for row in np.asarray(live)]

    # ------------------------------------------------------------------ writes
    async def set_key(self, key: str, data: bytes) -> None:
        """Record a write of ``data`` at ``key`` (chunk objects go to storage right away).

        Raises
        ------
        ReadOnlyError
            If the session is read-only.
        InvalidInputError
            If the key is malformed or the chunk does not fit its array.
        """
        self._check_writable()
        _keys.validate_key(key)
        path = _keys.meta_path(key)
        if path is not None:
            self._set_metadata(path, data)
            return
        found = self._array_for_key(key)
        if found is not None:
            node, coord = found
            _check_chunk(node, coord, data, key)
            ac_ndim = _keys.ndim_of(node.array)  # type: ignore[arg-type]
            if len(data) <= self._config.inline_chunk_threshold_bytes:
                with self._lock:
                    self._chunks_written(node.node_id)
                    self._changes.array_chunks(node.node_id, ac_ndim).set_inline(coord, data)
                return
            raw_id = new_id_bytes()
            # a fresh random id that no one reads before this change-set is committed or
            # read back here: over the network the write goes on in the background
            if self._storage.backend in _WRITE_BEHIND:
                await self._writes.submit(self._storage, chunk_key(encode_id(raw_id)), data)
            else:
                await put_fresh(self._storage, chunk_key(encode_id(raw_id)), data)
            # the content digest makes two writes of the same bytes one write at merge
            # (docs/design/013-ordered-writes-and-identical-chunks.md); never 0 ("unknown")
            digest = xxhash.xxh3_64_intdigest(data) or 1
            with self._lock:
                self._chunks_written(node.node_id)
                self._changes.array_chunks(node.node_id, ac_ndim).set_native(
                    coord, raw_id, len(data), digest
                )
            return
        # a key that is not an array chunk: kept as a loose object
        if len(data) <= self._config.inline_chunk_threshold_bytes:
            rec = ChunkRefRecord(key=key, kind=KIND_INLINE, data=bytes(data), length=len(data))
        else:
            cid = new_id()
            await put_fresh(self._storage, chunk_key(cid), data)
            rec = ChunkRefRecord(key=key, kind=KIND_NATIVE, id=cid, length=len(data))
        with self._lock:
            self._changes.loose[key] = rec

    async def set_virtual_key(self, key: str, url: str, offset: int, length: int,
                              etag: str | None, modified: int = 0, *,
                              validate_container: bool = False) -> None:
        """Record that ``key`` is ``length`` bytes at ``offset`` of the object at ``url``
        (``etag`` / ``modified``: the checksums reads verify).

        Raises
        ------
        InvalidInputError
            On a bad key, a metadata key, negative offset/length, a location that is not a
            URL, or (``validate_container``) one no virtual chunk container covers.
        """
        self._check_writable()
        _keys.validate_key(key)
        if _keys.meta_path(key) is not None:
            raise InvalidInputError(f"{key!r} is a metadata key; only chunks can be virtual")
        if offset < 0 or length < 0 or modified < 0:
            raise InvalidInputError("virtual chunk offset and length must be >= 0")
        if "://" not in url:
            raise InvalidInputError(f"virtual chunk location must be a URL, got {url!r}")
        if validate_container and self._virtual.container_for(url) is None:
            raise InvalidInputError(
                f"no virtual chunk container covers {url!r}: add one with "
                "RepositoryConfig.set_virtual_chunk_container (or pass "
                "validate_container=False)")
        found = self._array_for_key(key)
        with self._lock:
            if found is not None:
                node, coord = found
                _check_chunk(node, coord, b"", key, check_size=False)
                self._chunks_written(node.node_id)
                self._changes.array_chunks(
                    node.node_id, _keys.ndim_of(node.array)  # type: ignore[arg-type]
                ).set_virtual(coord, url, offset, length, etag, modified)
            else:
                self._changes.loose[key] = ChunkRefRecord(
                    key=key, kind=KIND_VIRTUAL, offset=offset, length=length, url=url,
                    etag=etag, modified=modified,
                )

    async def set_virtual_table(self, array_path: str, make: Callable[[int], ChunkTable], *,
                                validate_containers: bool = True
                                ) -> list[tuple[int, ...]] | None:
        """Record many virtual refs of the array at ``array_path`` at once: ``make(ndim)``
        builds their table (columnar; no Python step per ref here).

        Returns the chunk indices of refs dropped because no container covers their
        location (``validate_containers``), or None if none was.

        Raises
        ------
        NotFoundError
            If there is no array at ``array_path``.
        InvalidInputError
            On refs outside the array's chunk grid, or bad columns.
        """
        self._check_writable()
        path = array_path.strip("/") if isinstance(array_path, str) else array_path
        node = self._node(path) if isinstance(path, str) else None
        if node is None or node.array is None:
            raise NotFoundError(f"no array at {array_path!r}")
        info = node.array
        ndim = _keys.ndim_of(info)
        table = make(ndim)
        check_in_grid(table, info, node.path)
        failed: list[tuple[int, ...]] | None = None
        if validate_containers and table.urls:
            covered = np.fromiter((self._virtual.container_for(u) is not None
                                   for u in table.urls), bool, len(table.urls))
            bad = ~covered[table.url_idx]
            if bool(bad.any()):
                failed = [tuple(int(v) for v in row) for row in table.coords[bad]]
                table = table.take(~bad).compact()
                table.sorted_unique = True
        with self._lock:
            self._chunks_written(node.node_id)
            self._changes.array_chunks(node.node_id, ndim).set_table(table)
        return failed

    def _set_metadata(self, path: str, data: bytes) -> None:
        kind, doc = _keys.node_kind(data)
        with self._lock:
            existing = self._node(path)
            info: ArrayInfo | None = None
            if kind == "array" and doc is not None:
                prev = existing.array if existing is not None else None
                info = _keys.array_info_from_metadata(doc, self._config.manifest_split_size, prev)
            same_grid = (
                existing is not None
                and existing.array is not None
                and info is not None
                and existing.array.chunk_shape == info.chunk_shape
                and existing.array.encoding == info.encoding
                and existing.array.separator == info.separator
            )
            if existing is not None and (same_grid or (existing.array is None and info is None)):
                node_id = existing.node_id
            else:
                if existing is not None:
                    self._delete_node_locked(path)
                node_id = new_id()
            rec = NodeRecord(path=path, node_id=node_id, kind=kind,  # type: ignore[arg-type]
                             metadata=bytes(data), array=info)
            self._changes.nodes[path] = rec
            if path not in self._base_nodes or path in self._changes.deleted:
                self._changes.new_paths.add(path)

    async def delete_key(self, key: str) -> None:
        """Record the deletion of ``key`` (a missing key is not an error)."""
        self._check_writable()
        _keys.validate_key(key)
        path = _keys.meta_path(key)
        with self._lock:
            if path is not None:
                if self._node(path) is not None:
                    self._delete_node_locked(path)
                return
        found = self._array_for_key(key)
        if found is not None:
            node, coord = found
            # always recorded (even if nothing is there): zarr deletes chunks equal to the
            # fill value instead of writing them, and a fork's record of every chunk it
            # handled is what lets a merge check that no chunk of a job went missing
            with self._lock:
                self._chunks_written(node.node_id)
                self._changes.array_chunks(
                    node.node_id, _keys.ndim_of(node.array)  # type: ignore[arg-type]
                ).delete(coord)
            return
        with self._lock:
            if key in self._base_loose:
                self._changes.loose[key] = None
            else:
                self._changes.loose.pop(key, None)

    def _delete_node_locked(self, path: str) -> None:
        rec = self._changes.nodes.pop(path, None)
        if rec is not None:
            self._changes.chunks.pop(rec.node_id, None)
        self._changes.new_paths.discard(path)
        base = self._base_nodes.get(path)
        if base is None and path not in self._changes.deleted:
            # a fork deleting a node its session made before the fork: the inherited record
            # is what the merge back takes out of the session
            base = self._inherited.nodes.get(path)
        if base is not None:
            self._changes.deleted[path] = base
            self._changes.chunks.pop(base.node_id, None)

    async def delete_prefix(self, prefix: str) -> None:
        """Delete every key under ``prefix/`` (fast path for whole nodes)."""
        self._check_writable()
        root = prefix.rstrip("/")
        keys = [k async for k in self.iter_keys(root + "/" if root else "")]
        meta = [k for k in keys if _keys.meta_path(k) is not None]
        rest = [k for k in keys if _keys.meta_path(k) is None]
        # chunks first (their arrays must still exist to be resolved), then nodes
        for k in rest:
            await self.delete_key(k)
        for k in meta:
            await self.delete_key(k)


def _loose_to_ref(rec: ChunkRefRecord) -> Ref:
    if rec.kind == KIND_INLINE:
        return (KIND_INLINE, rec.data)
    if rec.kind == KIND_VIRTUAL:
        return (KIND_VIRTUAL, (rec.url, rec.etag, rec.modified, rec.offset, rec.length))
    return (KIND_NATIVE, (rec.id, rec.offset, rec.length))


def _check_chunk(node: NodeRecord, coord: tuple[int, ...], data: bytes, key: str, *,
                 check_size: bool = True) -> None:
    info = node.array
    assert info is not None
    if check_size and info.raw_chunk_nbytes and len(data) != info.raw_chunk_nbytes:
        raise InvalidInputError(
            f"key {key!r}: array {node.path!r} stores uncompressed chunks of exactly "
            f"{info.raw_chunk_nbytes} bytes (its data type and chunk shape), got {len(data)} "
            "bytes: wrong data type or chunk shape for this array"
        )
    if info.shape:
        for c, s, cs in zip(coord, info.shape, info.chunk_shape, strict=True):
            if c * cs >= s:
                raise InvalidInputError(
                    f"key {key!r}: chunk {coord} is outside array {node.path!r} of shape "
                    f"{info.shape} with chunks {info.chunk_shape}"
                )


def node_names(core: SessionCore) -> dict[str, str]:
    """node id -> path of every node ``core`` can see (to name arrays in conflicts)."""
    return {rec.node_id: path for path, rec in core._all_nodes().items()}
