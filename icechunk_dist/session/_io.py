"""Typed reads and writes of repository objects (snapshots, manifests, logs); the keys they
live under are :mod:`icechunk_dist.keys`."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Iterable
from typing import Literal, TypeVar

from icechunk_dist.config import RepositoryConfig
from icechunk_dist.errors import (
    FormatError,
    InvalidInputError,
    NotFoundError,
    SnapshotNotFoundError,
)
from icechunk_dist.format import (
    MAX_ANCESTOR_HINTS,
    ChunkTable,
    ManifestData,
    ObjectType,
    RepoInfo,
    SnapshotData,
    TransactionLogData,
    decode_object,
    encode_object,
)
from icechunk_dist.keys import (
    REPO_KEY,
    amend_marker_key,
    chunk_key,
    manifest_key,
    snapshot_key,
    transaction_key,
)
from icechunk_dist.storage import ObjectExistsError, ObjectNotFoundError, Storage

__all__ = [
    "REPO_KEY",
    "ManifestCache",
    "amend_marker_key",
    "ancestor_hints",
    "chunk_key",
    "gather_limited",
    "manifest_key",
    "read_manifest",
    "read_repo_info",
    "read_snapshot",
    "read_transaction_log",
    "snapshot_key",
    "transaction_key",
    "write_object",
]

T = TypeVar("T")


async def read_repo_info(storage: Storage) -> RepoInfo:
    """Read and decode the repository marker, checking its configuration.

    Raises
    ------
    FormatError
        If it does not decode or holds an invalid configuration.
    """
    data = await storage.get(REPO_KEY)
    info = decode_object(data, RepoInfo, ObjectType.REPO, name=REPO_KEY)
    try:
        RepositoryConfig.from_dict(info.config)
    except InvalidInputError as e:
        raise FormatError(str(e), object_name=REPO_KEY) from None
    return info


async def read_snapshot(storage: Storage, snapshot_id: str) -> SnapshotData:
    """Read and decode a snapshot.

    Raises
    ------
    NotFoundError
        If no such snapshot exists.
    FormatError
        If it does not decode.
    """
    key = snapshot_key(snapshot_id)
    try:
        raw = await storage.get(key)
    except ObjectNotFoundError:
        raise SnapshotNotFoundError(f"snapshot {snapshot_id} does not exist") from None
    snap = decode_object(raw, SnapshotData, ObjectType.SNAPSHOT, name=key)
    if snap.id != snapshot_id:
        raise FormatError(f"holds snapshot {snap.id}, not {snapshot_id}", object_name=key)
    return snap


def ancestor_hints(parent: SnapshotData) -> tuple[str, ...]:
    """The ``ancestors`` hint of a new snapshot whose parent is ``parent``: the parent's
    parent, then the parent's own hints, truncated (docs/design/007-ancestor-hints.md).

    A parent that expiry re-parented carries hints of a history that is gone: only its new
    parent is passed on."""
    if parent.parent_id is None:
        return ()
    if parent.original_parent_id is not None:
        return (parent.parent_id,)
    return (parent.parent_id, *parent.ancestors[: MAX_ANCESTOR_HINTS - 1])


async def read_transaction_log(storage: Storage, snapshot_id: str) -> TransactionLogData:
    key = transaction_key(snapshot_id)
    try:
        raw = await storage.get(key)
    except ObjectNotFoundError:
        raise NotFoundError(f"transaction log of snapshot {snapshot_id} does not exist") from None
    return decode_object(raw, TransactionLogData, ObjectType.TRANSACTION_LOG, name=key)


async def read_manifest(storage: Storage, manifest_id: str) -> ChunkTable:
    key = manifest_key(manifest_id)
    try:
        raw = await storage.get(key)
    except ObjectNotFoundError:
        raise FormatError("manifest referenced by a snapshot is missing",
                          object_name=key) from None
    m = decode_object(raw, ManifestData, ObjectType.MANIFEST, name=key)
    return ChunkTable.from_manifest(m, name=key)


async def write_object(storage: Storage, key: str, obj: object, otype: ObjectType,
                       level: int) -> None:
    """Write a new immutable object with create-if-absent.

    Ids are 96 random bits, so an object already under ``key`` is our own earlier attempt
    whose response was lost (the retry of a create that landed meets its own object). It is
    read back and taken as success when it holds exactly our bytes.

    Raises
    ------
    ObjectExistsError
        If ``key`` holds different bytes (not our write: for the ``repo`` marker, another
        creator won).
    StorageError
        If the backend fails.
    """
    data = encode_object(obj, otype, level=level)  # type: ignore[arg-type]
    await _put_ours(storage, key, data, "create")


async def put_fresh(storage: Storage, key: str, data: bytes) -> None:
    """Write a chunk object under a fresh random ``key`` (``Storage.put(mode="fresh")``).

    Nobody else ever writes that key, so an object already under it is our own write whose
    response was lost and that a retrying layer repeated (a backend writing fresh keys in
    place refuses the repeat): it is read back and taken as success when it holds exactly
    ``data``, as :func:`write_object` does.

    Raises
    ------
    ObjectExistsError
        If ``key`` holds other bytes.
    StorageError
        If the backend fails.
    """
    await _put_ours(storage, key, data, "fresh")


async def _put_ours(storage: Storage, key: str, data: bytes,
                    mode: Literal["create", "fresh"]) -> None:
    """``put`` of a key only we write; an object already there holding exactly ``data``
    is our own earlier attempt (read back), anything else re-raises ObjectExistsError."""
    try:
        await storage.put(key, data, mode=mode)
    except ObjectExistsError:
        try:
            existing = await storage.get(key)
        except ObjectNotFoundError:  # deleted meanwhile: not something we can claim
            existing = None
        if existing != data:
            raise


class ManifestCache:
    """Decoded manifests by id, bounded by total rows (least recently used evicted).

    With ``shared=True`` (the read path of sessions) a miss first consults a process-wide
    cache of decoded manifests keyed by (storage, manifest id): manifests are immutable, so
    every session of a process (e.g. one unpickled per Dask task) decodes each one once.
    """

    def __init__(self, max_rows: int = 4_000_000, *, shared: bool = False) -> None:
        self._max = max_rows
        self._rows = 0
        self._items: OrderedDict[str, ChunkTable] = OrderedDict()
        self._shared = shared
        # loads in flight, per event loop: concurrent misses of one manifest (zarr reads a
        # selection's chunks at once) wait for one read instead of each reading it
        self._loading: dict[tuple[asyncio.AbstractEventLoop, str],
                            asyncio.Future[ChunkTable]] = {}

    async def get(self, storage: Storage, manifest_id: str) -> ChunkTable:
        hit = self._items.get(manifest_id)
        if hit is not None:
            self._items.move_to_end(manifest_id)
            return hit
        table = _SHARED.get(storage, manifest_id) if self._shared else None
        if table is None:
            key = (asyncio.get_running_loop(), manifest_id)
            while (pending := self._loading.get(key)) is not None:
                try:
                    return await asyncio.shield(pending)
                except asyncio.CancelledError:
                    task = asyncio.current_task()
                    if pending.cancelled() and task is not None and not task.cancelling():
                        continue  # the load we waited for was cancelled, not us: load it
                    raise
            fut: asyncio.Future[ChunkTable] = asyncio.get_running_loop().create_future()
            self._loading[key] = fut
            try:
                table = await read_manifest(storage, manifest_id)
            except asyncio.CancelledError:
                fut.cancel()
                raise
            except BaseException as exc:
                fut.set_exception(exc)
                fut.exception()  # retrieved: no "never retrieved" warning without waiters
                raise
            finally:
                del self._loading[key]
            fut.set_result(table)
            if self._shared:
                _SHARED.put(storage, manifest_id, table)
        if manifest_id not in self._items:
            self._items[manifest_id] = table
            self._rows += len(table)
            while self._rows > self._max and len(self._items) > 1:
                _, old = self._items.popitem(last=False)
                self._rows -= len(old)
        return table


    @staticmethod
    def share(storage: Storage, manifest_id: str, table: ChunkTable) -> None:
        """Remember a manifest this process has just written (it is in storage) for the
        next commit built on it (:meth:`get_base`). Reads never use it: what a reader gets
        is always decoded (and checked) from storage."""
        # as a reader decodes it: digests live in change-sets only, never in manifests
        if table.digests is not None:
            table = dataclasses.replace(table, digests=None)
        _WRITTEN.put(storage, manifest_id, table)

    async def get_base(self, storage: Storage, manifest_id: str) -> ChunkTable:
        """The manifest a commit builds on: one this process wrote itself if it still holds
        it (the previous commit of a loop of small commits), else :meth:`get`."""
        hit = self._items.get(manifest_id)
        if hit is None:
            hit = _WRITTEN.get(storage, manifest_id)
        return hit if hit is not None else await self.get(storage, manifest_id)


class _SharedManifests:
    """The process-wide LRU behind ``ManifestCache(shared=True)`` (bounded by rows)."""

    def __init__(self, max_rows: int) -> None:
        self._max = max_rows
        self._rows = 0
        self._items: OrderedDict[tuple[Storage, str], ChunkTable] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, storage: Storage, manifest_id: str) -> ChunkTable | None:
        with self._lock:
            hit = self._items.get((storage, manifest_id))
            if hit is not None:
                self._items.move_to_end((storage, manifest_id))
            return hit

    def put(self, storage: Storage, manifest_id: str, table: ChunkTable) -> None:
        if len(table) > self._max:
            return
        with self._lock:
            if (storage, manifest_id) in self._items:
                return
            self._items[(storage, manifest_id)] = table
            self._rows += len(table)
            while self._rows > self._max and self._items:
                _, old = self._items.popitem(last=False)
                self._rows -= len(old)


_SHARED = _SharedManifests(1_000_000)
# the manifests this process's commits wrote, for the commits built on them (get_base)
_WRITTEN = _SharedManifests(200_000)


async def gather_limited(aws: Iterable[Awaitable[T]], limit: int) -> list[T]:
    """``asyncio.gather`` with at most ``limit`` awaitables running at once."""
    todo = list(aws)
    if len(todo) <= 1:  # nothing to run concurrently: no task, no semaphore
        return [await aw for aw in todo]
    sem = asyncio.Semaphore(limit)

    async def one(aw: Awaitable[T]) -> T:
        async with sem:
            return await aw

    return list(await asyncio.gather(*(one(a) for a in todo)))
