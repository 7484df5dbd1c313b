"""Garbage collection and snapshot expiry (docs/maintenance.md, docs/design/005-gc-vs-writers.md).

Reachable: the initial snapshot, the tip of every live branch, every live tag, and all their
ancestors; the transaction logs of those snapshots, the manifests they point to, and the chunk
objects those manifests (and loose refs) name. Anything else that was last modified before
the cut-off is garbage and deleted. Earlier versions of a branch and deleted tags keep
nothing alive.

A run fences writers so that it can never corrupt a commit, whatever cut-off it is given:
it records itself (``gc/<run id>/start``) before it moves anything, moves every branch by a
no-op version, marks, deletes, moves every branch again and records that it finished
(``gc/<run id>/done``). A commit checks those records right before its ref write
(``icechunk_dist.session._gcguard``).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt

from icechunk_dist import refs
from icechunk_dist._types import encode_id
from icechunk_dist.errors import ConflictError, GaveUpError, NotFoundError, StorageError
from icechunk_dist.format import (
    KIND_INLINE,
    KIND_NATIVE,
    KIND_VIRTUAL,
    ChunkTable,
    GCRecordData,
    ManifestData,
    ObjectType,
    SnapshotData,
    decode_object,
    encode_object,
)
from icechunk_dist.keys import (
    CHUNKS_PREFIX,
    MANIFESTS_PREFIX,
    OBJECT_PREFIXES,
    SNAPSHOTS_PREFIX,
    TRANSACTIONS_PREFIX,
)
from icechunk_dist.session._gcguard import MAX_RUN, done_key, new_run_id, start_key
from icechunk_dist.session._history import History
from icechunk_dist.session._io import (
    ManifestCache,
    chunk_key,
    gather_limited,
    read_repo_info,
    read_snapshot,
    snapshot_key,
    write_object,
)
from icechunk_dist.storage import ObjectNotFoundError, Storage

__all__ = [
    "ChunkStorageStats",
    "GCSummary",
    "chunk_storage_stats",
    "expire_snapshots",
    "garbage_collect",
    "reachable_snapshots",
]

_LIMIT = 64
_MARK_TRIES = 5


@dataclass(frozen=True)
class GCSummary:
    """What :meth:`Repository.garbage_collect` deleted (or would delete, dry run)."""

    chunks_deleted: int
    manifests_deleted: int
    snapshots_deleted: int
    transaction_logs_deleted: int
    bytes_deleted: int
    dry_run: bool
    incremental: bool = False
    #: staging files of writes that never finished (writers killed mid-write); full runs only
    staging_files_deleted: int = 0
    #: Icechunk's count of attribute files (a format that has none here): always 0
    attributes_deleted: int = 0

    def __str__(self) -> str:
        verb = "would delete" if self.dry_run else "deleted"
        return (f"{verb} {self.chunks_deleted} chunks, {self.manifests_deleted} manifests, "
                f"{self.snapshots_deleted} snapshots, {self.transaction_logs_deleted} "
                f"transaction logs, {self.staging_files_deleted} staging files of unfinished "
                f"writes ({self.bytes_deleted} bytes)")


@dataclass(frozen=True)
class ChunkStorageStats:
    """Bytes of the chunks that the reachable snapshots use, by kind (Icechunk's
    ``ChunkStorageStats``): each native chunk object and each virtual byte range counted
    once, inline chunks as often as manifests hold them."""

    native_bytes: int
    virtual_bytes: int
    inlined_bytes: int

    def non_virtual_bytes(self) -> int:
        """Bytes stored in the repository itself: native plus inline."""
        return self.native_bytes + self.inlined_bytes

    def total_bytes(self) -> int:
        """Every kind together, virtual included."""
        return self.native_bytes + self.virtual_bytes + self.inlined_bytes


# ---------------------------------------------------------------------------------- roots
async def _live_refs(storage: Storage, genesis: str) -> tuple[dict[str, str], dict[str, str]]:
    """(branch -> tip snapshot, tag -> snapshot) of every live branch and live tag."""
    branches: dict[str, str] = {}
    for name in sorted(await refs.list_branches(storage, genesis)):
        try:
            tip = await refs.read_branch(storage, name, genesis)
        except NotFoundError:  # deleted meanwhile
            continue
        if tip.snapshot_id is not None:
            branches[name] = tip.snapshot_id
    tags: dict[str, str] = {}
    for name in sorted(await refs.list_tags(storage)):
        try:
            tags[name] = await refs.read_tag(storage, name)
        except NotFoundError:
            continue
    return branches, tags


async def _roots(storage: Storage, genesis: str) -> set[str]:
    branches, tags = await _live_refs(storage, genesis)
    return {genesis, *branches.values(), *tags.values()}


async def _walk(storage: Storage, roots: Iterable[str]) -> dict[str, SnapshotData]:
    """Every snapshot reachable from ``roots`` through parent links (the one walker)."""
    return await History(storage, concurrency=_LIMIT).reachable(roots)


async def reachable_snapshots(storage: Storage) -> set[str]:
    """Ids of every snapshot reachable from a live branch, a live tag or the initial one."""
    genesis = (await read_repo_info(storage)).initial_snapshot_id
    return set(await _walk(storage, await _roots(storage, genesis)))


async def _fence(storage: Storage, genesis: str) -> None:
    """Move every live branch by one version that keeps its snapshot: a commit that read
    its tip before this cannot land its ref afterwards (its version is taken), so it reads
    the tip again and, with it, the ``gc/`` records."""
    for name in sorted(await refs.list_branches(storage, genesis)):
        for _ in range(100):
            try:
                tip = await refs.read_branch(storage, name, genesis)
            except NotFoundError:
                break
            try:
                await refs.write_branch(storage, name, expected=tip,
                                        snapshot_id=tip.snapshot_id, genesis=genesis)
                break
            except ConflictError:
                continue  # it moved anyway: read the new tip and move it again
        else:  # pragma: no cover - a branch moving 100 times during one fence
            raise GaveUpError(f"garbage collection could not fence branch {name!r}: it "
                                "keeps moving; nothing was deleted by this step, retry")


# ---------------------------------------------------------------------------------- mark
def _native_ids(table: ChunkTable) -> set[str]:
    native = table.ids[table.kinds == KIND_NATIVE]
    if not len(native):
        return set()
    return {encode_id(bytes(raw)) for raw in np.unique(native.view("V12").ravel())}


async def _mark_full(storage: Storage, snaps: dict[str, SnapshotData]
                     ) -> tuple[set[str], set[str]]:
    """(manifest ids, chunk ids) reachable from ``snaps``: reads every manifest once."""
    manifests = {m.id for s in snaps.values() for n in s.nodes for m in n.manifests}
    chunks = {r.id for s in snaps.values() for r in s.loose if r.kind == KIND_NATIVE}
    cache = ManifestCache(max_rows=1)
    ordered = sorted(manifests)
    for i in range(0, len(ordered), _LIMIT):
        tables = await gather_limited([cache.get(storage, m) for m in ordered[i:i + _LIMIT]],
                                      _LIMIT)
        for t in tables:
            chunks |= _native_ids(t)
    return manifests, chunks


async def _list_old(storage: Storage, prefix: str, older_than: datetime
                    ) -> dict[str, tuple[str, int]]:
    """id -> (key, size) of every object under ``prefix`` last modified before the cut-off."""
    out: dict[str, tuple[str, int]] = {}
    async for meta in storage.list(prefix):
        if meta.last_modified < older_than:
            out[meta.key[len(prefix):]] = (meta.key, meta.size)
    return out


async def _staged_old(storage: Storage, older_than: datetime) -> list[tuple[str, int]]:
    """(key, size) of every staging object left by a write that never finished (its writer
    was killed between writing and renaming it) and last written before the cut-off. A live
    writer keeps writing to its staging file, so with a sane cut-off it is never listed;
    should a reckless one catch it, that write fails and its commit with it, as for its
    chunks. Listings never show staging objects: only this finds them."""
    return sorted([(m.key, m.size) async for m in storage.list_staged("")
                   if m.last_modified < older_than])


async def _doomed_full(storage: Storage, snaps: dict[str, SnapshotData],
                       older_than: datetime) -> dict[str, list[tuple[str, int]]]:
    manifests, chunks = await _mark_full(storage, snaps)
    keep = {CHUNKS_PREFIX: chunks, MANIFESTS_PREFIX: manifests, SNAPSHOTS_PREFIX: set(snaps),
            TRANSACTIONS_PREFIX: set(snaps)}
    doomed: dict[str, list[tuple[str, int]]] = {}
    for prefix in OBJECT_PREFIXES:
        old = await _list_old(storage, prefix, older_than)
        doomed[prefix] = [v for k, v in sorted(old.items()) if k not in keep[prefix]]
    return doomed


async def _doomed_incremental(storage: Storage, snaps: dict[str, SnapshotData],
                              older_than: datetime) -> dict[str, list[tuple[str, int]]]:
    """Like a full run, without listing ``chunks/`` and reading only the manifests that
    matter: the candidate chunks are those named by the doomed manifests and snapshots
    (a chunk is older than every object that names it, so they are all older than the
    cut-off), and a chunk id is only ever named at one array (node id) and coordinate, so
    only the reachable manifests of those splits can keep it alive."""
    live_manifests = {m.id for s in snaps.values() for n in s.nodes for m in n.manifests}
    live_loose = {r.id for s in snaps.values() for r in s.loose if r.kind == KIND_NATIVE}
    # node id -> split shape -> split -> reachable manifest ids. A node keeps its split shape
    # unless Repository.rewrite_manifests re-split it: then its snapshots use several
    layout: dict[str, dict[tuple[int, ...], dict[tuple[int, ...], set[str]]]] = {}
    for s in snaps.values():
        for n in s.nodes:
            if n.array is None or not n.manifests:
                continue
            by_split = layout.setdefault(n.node_id, {}).setdefault(n.array.split_shape,
                                                                   defaultdict(set))
            for m in n.manifests:
                by_split[m.split].add(m.id)
    doomed: dict[str, list[tuple[str, int]]] = {}
    for prefix in (MANIFESTS_PREFIX, SNAPSHOTS_PREFIX, TRANSACTIONS_PREFIX):
        old = await _list_old(storage, prefix, older_than)
        live = live_manifests if prefix == MANIFESTS_PREFIX else set(snaps)
        doomed[prefix] = [v for k, v in sorted(old.items()) if k not in live]
    candidates: set[str] = set()
    for key, _ in doomed[SNAPSHOTS_PREFIX]:
        try:
            snap = await read_snapshot(storage, key[len(SNAPSHOTS_PREFIX):])
        except NotFoundError:
            continue
        candidates |= {r.id for r in snap.loose if r.kind == KIND_NATIVE} - live_loose
    # node id -> (chunk ids named by doomed manifests, their coordinates)
    named: dict[str, tuple[set[str], list[npt.NDArray[np.int64]]]] = {}
    for key, _ in doomed[MANIFESTS_PREFIX]:
        try:
            raw = await storage.get(key)
        except ObjectNotFoundError:
            continue
        md = decode_object(raw, ManifestData, ObjectType.MANIFEST, name=key)
        table = ChunkTable.from_manifest(md, name=key)
        if md.node_id not in layout:  # no reachable snapshot has this array
            candidates |= _native_ids(table)
            continue
        native = table.kinds == KIND_NATIVE
        ids, coords = named.setdefault(md.node_id, (set(), []))
        ids.update(encode_id(bytes(r)) for r in table.ids[native].view("V12").ravel())
        coords.append(np.asarray(table.coords)[native])
    cache = ManifestCache(max_rows=1)
    for node_id, (cids, parts) in sorted(named.items()):
        where = np.concatenate(parts)
        # alive: named by a reachable manifest of a split holding one of these positions,
        # under any split shape the node's reachable snapshots use
        read: set[str] = set()
        alive: set[str] = set()
        for split_shape, by_split in layout[node_id].items():
            touched = {tuple(int(v) for v in row)
                       for row in where // np.asarray(split_shape, dtype=where.dtype)}
            for split in sorted(touched):
                for mid in sorted(by_split.get(split, set()) - read):
                    read.add(mid)
                    alive |= _native_ids(await cache.get(storage, mid))
        rest = cids - alive
        # Session.reindex_array / shift_array move a chunk to another position: one not
        # found there may be named elsewhere in the array, so the rest of its reachable
        # manifests decide (read only when there are candidates left)
        others = sorted({m for by_split in layout[node_id].values()
                         for mids in by_split.values() for m in mids} - read)
        for mid in others:
            if not rest:
                break
            rest -= _native_ids(await cache.get(storage, mid))
        candidates |= rest
    candidates -= live_loose
    doomed[CHUNKS_PREFIX] = [(chunk_key(c), 0) for c in sorted(candidates)]
    return doomed


async def chunk_storage_stats(storage: Storage) -> ChunkStorageStats:
    """:class:`ChunkStorageStats` of every snapshot reachable from a live ref (each
    distinct manifest read once; loose refs of the snapshots included).

    Raises
    ------
    FormatError
        If a snapshot or manifest is corrupt.
    """
    genesis = (await read_repo_info(storage)).initial_snapshot_id
    snaps = await _walk(storage, await _roots(storage, genesis))
    ids: list[npt.NDArray[Any]] = []
    lengths: list[npt.NDArray[np.uint64]] = []
    ranges: set[tuple[str, int, int]] = set()
    inlined = 0
    cache = ManifestCache(max_rows=1)
    ordered = sorted({m.id for s in snaps.values() for n in s.nodes for m in n.manifests})
    for i in range(0, len(ordered), _LIMIT):
        for t in await gather_limited([cache.get(storage, m) for m in ordered[i:i + _LIMIT]],
                                      _LIMIT):
            native = t.kinds == KIND_NATIVE
            ids.append(t.ids[native].view("V12").ravel())
            lengths.append(t.lengths[native])
            inlined += int(t.lengths[t.kinds == KIND_INLINE].sum())
            for row in np.flatnonzero(t.kinds == KIND_VIRTUAL):
                ranges.add((t.urls[int(t.url_idx[row])], int(t.offsets[row]),
                            int(t.lengths[row])))
    loose = {(r.key, r.kind, r.id, r.url, r.offset, r.length, r.data)
             for s in snaps.values() for r in s.loose}
    native_loose: dict[str, int] = {}
    for _key, kind, cid, url, offset, length, data in loose:
        if kind == KIND_NATIVE:
            native_loose[cid] = length
        elif kind == KIND_VIRTUAL:
            ranges.add((url, offset, length))
        elif kind == KIND_INLINE:
            inlined += len(data)
    native_bytes = sum(native_loose.values())
    if ids:
        all_ids, all_lengths = np.concatenate(ids), np.concatenate(lengths)
        _, first = np.unique(all_ids, return_index=True)
        native_bytes += int(all_lengths[first].sum())
    return ChunkStorageStats(native_bytes=native_bytes,
                             virtual_bytes=sum(n for _, _, n in ranges),
                             inlined_bytes=inlined)


# ---------------------------------------------------------------------------------- sweep
async def garbage_collect(storage: Storage, older_than: datetime, *, dry_run: bool,
                          incremental: bool = False) -> GCSummary:
    """Mark from every live ref, then delete unreachable objects older than ``older_than``.

    Raises
    ------
    StorageError
        If the run would outlive the limit that writers rely on (it stops deleting).
    ConflictError
        If the refs keep changing so that marking never settles.
    """
    info = await read_repo_info(storage)
    genesis = info.initial_snapshot_id
    level = int(info.config.get("compression_level", 3))
    started = datetime.now(UTC)
    clock = time.monotonic()
    run_id = new_run_id(started, older_than)
    record = GCRecordData(run_id=run_id, started_at=started, older_than=older_than,
                          incremental=incremental)
    if not dry_run:
        # recorded before anything moves or goes: commits that may be affected see it
        await write_object(storage, start_key(run_id), record, ObjectType.GC_RECORD, level)
        await _fence(storage, genesis)
    roots = await _roots(storage, genesis)
    for _ in range(_MARK_TRIES):
        snaps = await _walk(storage, roots)
        if incremental:
            doomed = await _doomed_incremental(storage, snaps, older_than)
        else:
            doomed = await _doomed_full(storage, snaps, older_than)
        # a ref created meanwhile at a snapshot we did not mark: mark again
        now_roots = await _roots(storage, genesis)
        if now_roots <= set(snaps):
            break
        roots = now_roots | roots
    else:  # pragma: no cover - refs changing under every one of several marks
        raise GaveUpError("garbage collection gave up: refs kept changing while marking; "
                            "nothing was deleted")
    # staging files are found by walking everything: a full run's job
    staged = [] if incremental else await _staged_old(storage, older_than)
    if incremental:
        # sizes of chunks are not listed; HEAD them (also drops ids already gone)
        old_chunks = doomed[CHUNKS_PREFIX]
        metas = await gather_limited([_size(storage, k) for k, _ in old_chunks], _LIMIT)
        doomed[CHUNKS_PREFIX] = [(k, s) for (k, _), s in zip(old_chunks, metas, strict=True)
                                 if s is not None]
    if not dry_run:
        # chunks and manifests first: a snapshot is never left pointing at deleted objects
        for prefix in OBJECT_PREFIXES:
            keys = [k for k, _ in doomed[prefix]]
            for i in range(0, len(keys), 1000):
                if time.monotonic() - clock > MAX_RUN.total_seconds():
                    raise StorageError(
                        f"garbage collection {run_id} stopped: it ran longer than "
                        f"{MAX_RUN}, the limit commits rely on; run it again"
                    )
                await storage.delete_many(keys[i : i + 1000])
        for i in range(0, len(staged), 1000):
            await storage.delete_staged([k for k, _ in staged[i : i + 1000]])
        await _fence(storage, genesis)
    summary = GCSummary(
        chunks_deleted=len(doomed[CHUNKS_PREFIX]),
        manifests_deleted=len(doomed[MANIFESTS_PREFIX]),
        snapshots_deleted=len(doomed[SNAPSHOTS_PREFIX]),
        transaction_logs_deleted=len(doomed[TRANSACTIONS_PREFIX]),
        bytes_deleted=sum(s for v in (*doomed.values(), staged) for _, s in v),
        dry_run=dry_run,
        incremental=incremental,
        staging_files_deleted=len(staged),
    )
    if not dry_run:
        done = msgspec.structs.replace(
            record, finished_at=datetime.now(UTC), chunks_deleted=summary.chunks_deleted,
            manifests_deleted=summary.manifests_deleted,
            snapshots_deleted=summary.snapshots_deleted,
            transaction_logs_deleted=summary.transaction_logs_deleted,
            bytes_deleted=summary.bytes_deleted,
        )
        await write_object(storage, done_key(run_id), done, ObjectType.GC_RECORD, level)
    return summary


async def _size(storage: Storage, key: str) -> int | None:
    try:
        return (await storage.head(key)).size
    except ObjectNotFoundError:
        return None


# ---------------------------------------------------------------------------------- expiry
async def expire_snapshots(storage: Storage, older_than: datetime, *,
                           delete_expired_branches: bool, delete_expired_tags: bool
                           ) -> set[str]:
    """Make snapshots older than ``older_than`` that no ref points at unreachable.

    For every tag, then every branch (each in name order), the oldest snapshot of its
    history written at or after the cut-off is re-parented onto the initial snapshot (the
    object is rewritten in place with the same id and content; ``original_parent_id``
    keeps the old parent). A ref whose own snapshot is older than the cut-off keeps that
    snapshot and loses its history; with ``delete_expired_*`` such refs are deleted (never
    ``main``). Returns the ids of the snapshots that were reachable before and are not now.
    """
    info = await read_repo_info(storage)
    genesis = info.initial_snapshot_id
    level = int(info.config.get("compression_level", 3))
    branches, tags = await _live_refs(storage, genesis)
    history = History(storage, concurrency=_LIMIT)
    before = set(await history.reachable({genesis, *branches.values(), *tags.values()}))
    todo = [("tag", n, s) for n, s in tags.items()] + [
        ("branch", n, s) for n, s in branches.items()]
    for kind, name, tip in todo:
        chain = await history.chain(tip)
        root = chain[-1]
        editable = chain[0]
        for snap in chain:
            if snap.written_at >= older_than:
                editable = snap
        if editable.id != root.id and editable.parent_id != root.id:
            edited = msgspec.structs.replace(
                editable, parent_id=root.id,
                original_parent_id=editable.original_parent_id or editable.parent_id)
            # the one in-place rewrite of the format (docs/spec.md section 7): same id and
            # content, another parent; readers see the old or the new object, both whole
            await storage.put(snapshot_key(editable.id),
                              encode_object(edited, ObjectType.SNAPSHOT, level=level),
                              mode="overwrite")
            history.forget(editable.id)
        if chain[0].written_at < older_than:
            if kind == "tag" and delete_expired_tags:
                await refs.delete_tag(storage, name)
            elif kind == "branch" and delete_expired_branches and name != "main":
                try:
                    cur = await refs.read_branch(storage, name, genesis)
                    if cur.snapshot_id == tip:
                        await refs.write_branch(storage, name, expected=cur, snapshot_id=None,
                                                genesis=genesis)
                except (NotFoundError, ConflictError):
                    pass  # moved or deleted meanwhile: no longer expired
    after = await reachable_snapshots(storage)
    return before - after

