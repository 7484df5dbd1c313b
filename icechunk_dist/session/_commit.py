"""Turning a base snapshot plus a change-set into new manifests, a transaction log and a
snapshot: the objects of the build step of the commit pipeline (``_pipeline``)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from datetime import UTC, datetime
from typing import Any, cast

import numpy as np

from icechunk_dist._types import new_id
from icechunk_dist.changeset import ChangeSet
from icechunk_dist.config import RepositoryConfig
from icechunk_dist.format import (
    KIND_TOMBSTONE,
    ChunkRefRecord,
    ChunkTable,
    ManifestRef,
    NodeRecord,
    ObjectType,
    SnapshotData,
    TransactionLogData,
    TxChunks,
)
from icechunk_dist.session._io import (
    ManifestCache,
    ancestor_hints,
    gather_limited,
    manifest_key,
    snapshot_key,
    transaction_key,
    write_object,
)
from icechunk_dist.storage import Storage

__all__ = [
    "ReuseEntry",
    "ReuseKey",
    "build_transaction_log",
    "combine_transaction_logs",
    "write_manifests",
    "write_snapshot",
]

# (node id, split) -> (base manifest id it was built on, delta digest, manifest written)
ReuseKey = tuple[str, tuple[int, ...]]
ReuseEntry = tuple[str | None, bytes, ManifestRef | None]


def build_transaction_log(snapshot_id: str, base: SnapshotData, changes: ChangeSet
                          ) -> TransactionLogData:
    """Describe what ``changes`` does to ``base`` (nodes and chunk coordinates)."""
    base_nodes = {n.path: n for n in base.nodes}
    new_groups: list[str] = []
    new_arrays: list[str] = []
    upd_groups: list[str] = []
    upd_arrays: list[str] = []
    extended: dict[str, tuple[int, ...]] = {}
    for path, rec in sorted(changes.nodes.items()):
        old = base_nodes.get(path)
        replaced = old is not None and old.node_id != rec.node_id
        if old is None or replaced or (path in changes.new_paths and path not in base_nodes):
            (new_arrays if rec.kind == "array" else new_groups).append(path)
            continue
        (upd_arrays if rec.kind == "array" else upd_groups).append(path)
        if (rec.array is not None and old.array is not None and _only_grew(old, rec)):
            extended[path] = old.array.shape
    del_groups: list[str] = []
    del_arrays: list[str] = []
    for path, rec in sorted(changes.deleted.items()):
        cur = changes.nodes.get(path)
        if cur is not None and cur.node_id == rec.node_id:
            continue
        (del_arrays if rec.kind == "array" else del_groups).append(path)
    id_to_path = {r.node_id: p for p, r in changes.nodes.items()}
    for p, r in base_nodes.items():
        if p not in changes.deleted:
            id_to_path.setdefault(r.node_id, p)
    chunks = []
    for nid in sorted(changes.chunks):
        ac = changes.chunks[nid]
        cpath = id_to_path.get(nid)
        if cpath is None or not len(ac):
            continue
        t = ac.table
        # the coordinates' own buffer (no copy: msgspec encodes any bytes-like value)
        coords = np.ascontiguousarray(t.coords, "<i8").data.cast("B")
        chunks.append(TxChunks(path=cpath, node_id=nid, ndim=t.ndim, count=len(t),
                               coords=cast(bytes, coords)))
    return TransactionLogData(
        snapshot_id=snapshot_id,
        new_groups=tuple(new_groups),
        new_arrays=tuple(new_arrays),
        updated_groups=tuple(upd_groups),
        updated_arrays=tuple(upd_arrays),
        deleted_groups=tuple(del_groups),
        deleted_arrays=tuple(del_arrays),
        chunks=tuple(chunks),
        loose_keys=tuple(sorted(changes.loose)),
        extended_arrays=extended,
    )


def _only_grew(old: NodeRecord, new: NodeRecord) -> bool:
    """True if ``new`` differs from ``old`` only by a shape at least as large on every axis."""
    import json

    a, b = old.array, new.array
    if a is None or b is None or len(a.shape) != len(b.shape) or a.shape == b.shape:
        return False
    if any(y < x for x, y in zip(a.shape, b.shape, strict=True)):
        return False
    try:
        da, db = json.loads(old.metadata), json.loads(new.metadata)
    except ValueError:
        return False
    da.pop("shape", None)
    db.pop("shape", None)
    return bool(da == db)


async def write_manifests(
    storage: Storage,
    config: RepositoryConfig,
    cache: ManifestCache,
    base: SnapshotData,
    changes: ChangeSet,
    *,
    reuse: dict[ReuseKey, ReuseEntry] | None = None,
) -> tuple[tuple[NodeRecord, ...], tuple[ChunkRefRecord, ...], Awaitable[None]]:
    """Write the manifests of ``base`` + ``changes``; return the node records (pointing at
    them), the loose refs of the new snapshot, and an awaitable that finishes the manifest
    writes still in flight (the caller awaits it, with the snapshot's own writes). Nothing
    written here is visible until a snapshot names it and a branch moves to that snapshot.

    ``reuse`` carries the manifests written by earlier attempts of the same commit: a split
    whose base manifest and whose delta are unchanged since (the commits that landed
    meanwhile did not touch it) keeps the manifest already written, so a retry after a
    rebase rewrites only the splits the landed commits touched. It is updated in place.
    """
    base_nodes = {n.path: n for n in base.nodes}
    final: dict[str, NodeRecord] = {
        p: n for p, n in base_nodes.items() if p not in changes.deleted
    }
    final.update(changes.nodes)
    level = config.compression_level
    # manifests are written as they are built, a bounded number of rows in flight, so that
    # a commit of millions of refs never holds all its encoded manifests at once
    writer = _ManifestWriter(storage, level, config.max_concurrent_requests)
    # reuse entries of this attempt: recorded only once every manifest write succeeded, so
    # a retry after a failed write never references a manifest that was not written
    written: dict[ReuseKey, ReuseEntry] = {}
    out_nodes: list[NodeRecord] = []
    for path in sorted(final):
        rec = final[path]
        old = base_nodes.get(path)
        keep = old.manifests if (old is not None and old.node_id == rec.node_id) else ()
        ac = changes.chunks.get(rec.node_id)
        if rec.array is None:
            out_nodes.append(_with_manifests(rec, ()))
            continue
        if ac is None or not len(ac):
            out_nodes.append(_with_manifests(rec, keep))
            continue
        split_shape = rec.array.split_shape
        by_split = {m.split: m for m in keep}
        touched = ac.table.split(split_shape)
        new_refs: dict[tuple[int, ...], ManifestRef] = {
            s: m for s, m in by_split.items() if s not in touched
        }
        need: list[tuple[int, ...]] = []
        fingerprints: dict[tuple[int, ...], bytes] = {}
        for split, delta in touched.items():
            base_mid = by_split[split].id if split in by_split else None
            fp = fingerprints[split] = _fingerprint(delta) if reuse is not None else b""
            prev = reuse.get((rec.node_id, split)) if reuse is not None else None
            if prev is not None and prev[0] == base_mid and prev[1] == fp:
                if prev[2] is not None:
                    new_refs[split] = prev[2]
                continue
            need.append(split)
        need_base = [s for s in need if s in by_split]
        bases = await gather_limited(
            [cache.get_base(storage, by_split[s].id) for s in need_base],
            config.max_concurrent_requests,
        )
        base_tables = dict(zip(need_base, bases, strict=True))
        for split in need:
            delta = touched[split]
            merged = _apply(base_tables.get(split), delta)
            ref: ManifestRef | None = None
            if len(merged):
                mid = new_id()
                await writer.write(manifest_key(mid), merged, rec.node_id)
                ref = ManifestRef(id=mid, split=split, count=len(merged))
                new_refs[split] = ref
            if reuse is not None:
                base_mid = by_split[split].id if split in by_split else None
                written[(rec.node_id, split)] = (base_mid, fingerprints[split], ref)
        out_nodes.append(_with_manifests(rec, tuple(new_refs[s] for s in sorted(new_refs))))
    loose = {r.key: r for r in base.loose}
    for key, lref in changes.loose.items():
        if lref is None:
            loose.pop(key, None)
        else:
            loose[key] = lref

    async def finish() -> None:
        await writer.finish()
        # recorded only once every manifest write succeeded (see ``written``)
        if reuse is not None:
            reuse.update(written)
        # every manifest written is in storage now: the next commit of this process built
        # on ours takes it decoded instead of reading it back (readers always read storage)
        writer.share(cache)

    return tuple(out_nodes), tuple(loose[k] for k in sorted(loose)), finish()


async def write_snapshot(
    storage: Storage,
    level: int,
    *,
    snapshot_id: str,
    parent: SnapshotData | None,
    nodes: tuple[NodeRecord, ...],
    loose: tuple[ChunkRefRecord, ...],
    message: str,
    metadata: dict[str, Any],
    txlog: TransactionLogData,
    parent_id: str | None = None,
    ancestors: tuple[str, ...] = (),
    original_parent_id: str | None = None,
    pending: Awaitable[None] | None = None,
) -> SnapshotData:
    """Write the transaction log and the snapshot, concurrently, and wait for ``pending``
    (the manifest writes still in flight) too. The snapshot's parent is ``parent``, or, for
    an amend, the explicit ``parent_id`` / ``ancestors`` / ``original_parent_id``."""
    if parent is not None:
        parent_id, ancestors = parent.id, ancestor_hints(parent)
    snap = SnapshotData(
        id=snapshot_id,
        parent_id=parent_id,
        written_at=datetime.now(UTC),
        message=message,
        metadata=dict(metadata),
        nodes=nodes,
        loose=loose,
        ancestors=ancestors,
        original_parent_id=original_parent_id,
    )
    # nothing is reachable before the ref write: the two objects go out at once (spec.md
    # section 7), as do the manifests of ``pending`` (what write_manifests left in flight)
    await asyncio.gather(
        write_object(storage, transaction_key(snapshot_id), txlog, ObjectType.TRANSACTION_LOG,
                     level),
        write_object(storage, snapshot_key(snapshot_id), snap, ObjectType.SNAPSHOT, level),
        *([pending] if pending is not None else []),
    )
    return snap


class _ManifestWriter:
    """Writes manifests concurrently while the commit builds the next ones: at most
    ``limit`` writes and ``_MAX_ROWS_IN_FLIGHT`` rows in flight."""

    def __init__(self, storage: Storage, level: int, limit: int) -> None:
        self._storage = storage
        self._level = level
        self._limit = max(1, limit)
        self._tasks: list[tuple[asyncio.Future[None], int]] = []
        self._rows = 0
        # the manifests written (id -> table), up to _SHARE_ROWS rows in all: remembered for
        # the next commit built on them (ManifestCache.share)
        self._small: dict[str, ChunkTable] = {}
        self._small_rows = 0

    async def write(self, key: str, table: ChunkTable, node_id: str) -> None:
        rows = len(table)
        while self._tasks and (len(self._tasks) >= self._limit
                               or self._rows + rows > _MAX_ROWS_IN_FLIGHT):
            await self._wait_oldest()
        fut = asyncio.ensure_future(self._one(key, table, node_id))
        self._tasks.append((fut, rows))
        self._rows += rows
        if self._small_rows + rows <= _SHARE_ROWS:
            self._small[key.rpartition("/")[2]] = table
            self._small_rows += rows

    def share(self, cache: ManifestCache) -> None:
        """Remember the manifests written (all of them have landed) for the commits built
        on them: the first ones up to ``_SHARE_ROWS`` rows in all (a commit of millions of
        refs would evict the cache for nothing)."""
        for mid, table in self._small.items():
            cache.share(self._storage, mid, table)
        self._small.clear()

    async def _one(self, key: str, table: ChunkTable, node_id: str) -> None:
        await write_object(self._storage, key, table.to_manifest(node_id),
                           ObjectType.MANIFEST, self._level)

    async def _wait_oldest(self) -> None:
        fut, rows = self._tasks.pop(0)
        self._rows -= rows
        try:
            await fut
        except BaseException:
            await self._abandon()
            raise

    async def _abandon(self) -> None:
        rest = [f for f, _ in self._tasks]
        self._tasks = []
        self._rows = 0
        # what was written is garbage; let the others end and collect their outcomes
        await asyncio.gather(*rest, return_exceptions=True)

    async def finish(self) -> None:
        while self._tasks:
            await self._wait_oldest()


_MAX_ROWS_IN_FLIGHT = 300_000  # ~15 MiB of columns, plus their encodings
_SHARE_ROWS = 100_000  # rows of the manifests a commit remembers for the next (share)


def _fingerprint(t: ChunkTable) -> bytes:
    """Digest of a (normalized) delta table: equal digests mean the same changes."""
    return t.fingerprint()


def _with_manifests(rec: NodeRecord, manifests: tuple[ManifestRef, ...]) -> NodeRecord:
    return NodeRecord(path=rec.path, node_id=rec.node_id, kind=rec.kind,
                      metadata=rec.metadata, array=rec.array, manifests=manifests)


def _apply(base: ChunkTable | None, delta: ChunkTable) -> ChunkTable:
    """Base rows not overwritten by ``delta``, plus ``delta``'s non-deleted rows, sorted."""
    dead = delta.kinds == KIND_TOMBSTONE
    live = delta.take(~dead) if bool(dead.any()) else delta
    if base is None or not len(base):
        out = live
    else:
        kept = base.without_rows_of(delta)
        # every base row rewritten (a loop of commits of the same chunks): nothing to join
        out = ChunkTable.concat([kept, live]) if len(kept) else live
    out = out.normalized() if not out.sorted_unique else out
    if len(out) and np.any(out.kinds == KIND_TOMBSTONE):  # pragma: no cover - defensive
        out = out.take(out.kinds != KIND_TOMBSTONE)
    return out


def combine_transaction_logs(snapshot_id: str, first: TransactionLogData,
                             second: TransactionLogData) -> TransactionLogData:
    """One log for ``first`` then ``second`` (what an amended commit changed from its
    parent); conservative: a node touched by either is reported."""
    del_g = set(first.deleted_groups) | (set(second.deleted_groups) - set(first.new_groups))
    del_a = set(first.deleted_arrays) | (set(second.deleted_arrays) - set(first.new_arrays))
    gone = set(second.deleted_groups) | set(second.deleted_arrays)
    new_g = (set(first.new_groups) - gone) | set(second.new_groups)
    new_a = (set(first.new_arrays) - gone) | set(second.new_arrays)
    upd_g = (set(first.updated_groups) | set(second.updated_groups)) - new_g - del_g
    upd_a = (set(first.updated_arrays) | set(second.updated_arrays)) - new_a - del_a
    by_node: dict[str, list[TxChunks]] = {}
    for c in (*first.chunks, *second.chunks):
        by_node.setdefault(c.node_id, []).append(c)
    chunks = []
    for nid in sorted(by_node):
        parts = by_node[nid]
        last = parts[-1]
        if last.path in gone and last.path not in new_a:
            continue
        coords = np.unique(np.concatenate([
            np.frombuffer(p.coords, "<i8").reshape(-1, max(p.ndim, 1)) for p in parts]), axis=0)
        chunks.append(TxChunks(path=last.path, node_id=nid, ndim=last.ndim, count=len(coords),
                               coords=coords.astype("<i8").tobytes()))
    extended = {**second.extended_arrays, **first.extended_arrays}
    return TransactionLogData(
        snapshot_id=snapshot_id, new_groups=tuple(sorted(new_g)),
        new_arrays=tuple(sorted(new_a)), updated_groups=tuple(sorted(upd_g)),
        updated_arrays=tuple(sorted(upd_a)), deleted_groups=tuple(sorted(del_g)),
        deleted_arrays=tuple(sorted(del_a)), chunks=tuple(chunks),
        loose_keys=tuple(sorted(set(first.loose_keys) | set(second.loose_keys))),
        extended_arrays={k: v for k, v in extended.items() if k not in new_a},
    )

