"""Sessions: a writable or read-only view of one branch, tag or snapshot.

Writes are recorded in a change-set; :meth:`Session.commit` and :meth:`Session.amend` land it
through the one commit pipeline (``_pipeline``). Forks are :mod:`icechunk_dist.session.forks`.
"""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NamedTuple

import msgspec
import numpy as np

from icechunk_dist import _sync, refs
from icechunk_dist._documents import check_online
from icechunk_dist._enums import ChunkType, SessionMode
from icechunk_dist._types import new_id
from icechunk_dist.changeset import ArrayChunks, ChangeSet, MergePolicy
from icechunk_dist.config import RepositoryConfig
from icechunk_dist.errors import (
    InvalidInputError,
    NodeNotFoundError,
    SessionStateError,
)
from icechunk_dist.format import (
    KIND_INLINE,
    KIND_NATIVE,
    KIND_TOMBSTONE,
    KIND_VIRTUAL,
    ChunkTable,
    NodeRecord,
    SnapshotData,
)
from icechunk_dist.session import forks as _forks
from icechunk_dist.session._commit import build_transaction_log
from icechunk_dist.session._core import SessionCore, node_names
from icechunk_dist.session._diff import Diff, diff_from_logs
from icechunk_dist.session._history import History
from icechunk_dist.session._io import ManifestCache, gather_limited
from icechunk_dist.session._pipeline import AmendCommit, CommitKind, DataCommit, run_commit
from icechunk_dist.session._rebase import rebase_onto
from icechunk_dist.session._reindex import IndexMap, grid_of, reindexed, shifter
from icechunk_dist.session._rewrite import RewriteCommit, adopt_split_shapes
from icechunk_dist.session._vrefs import live_locations
from icechunk_dist.session._writeback import PendingWrites
from icechunk_dist.session.forks import ForkSession
from icechunk_dist.storage import Storage, VirtualSources

if TYPE_CHECKING:
    from icechunk_dist.conflicts import ConflictSolver

__all__ = ["ChunkStats", "Session", "SessionSavepoint", "commit_source", "rewrite_manifests"]

_TYPES = {KIND_NATIVE: ChunkType.native, KIND_INLINE: ChunkType.inline,
          KIND_VIRTUAL: ChunkType.virtual}


class _PickleRefusedError(SessionStateError, ValueError):
    """A writable session cannot be pickled (a ``ValueError`` too, as Icechunk's)."""


class _MetadataTypeError(InvalidInputError, TypeError):
    """Commit metadata that cannot be stored (a ``TypeError`` too, as Icechunk's)."""


_PickleRefusedError.__module__ = _MetadataTypeError.__module__ = "icechunk_dist"


def _norm(path: str) -> str:
    if not isinstance(path, str):
        raise InvalidInputError(f"a node path must be a string, got {path!r}")
    return path.strip("/")


class Session(SessionCore):
    """A view of the repository through which zarr reads and (if writable) writes.

    Obtain one from :meth:`Repository.writable_session` or
    :meth:`Repository.readonly_session`; do not construct it directly.
    """

    def __init__(
        self,
        *,
        storage: Storage,
        config: RepositoryConfig,
        genesis: str,
        base: SnapshotData,
        branch: str | None,
        read_only: bool,
        branch_tip: refs.BranchTip | None = None,
        default_commit_metadata: Mapping[str, Any] | None = None,
        virtual: VirtualSources | None = None,
    ) -> None:
        self._init_core(storage, config, base, None, read_only, virtual)
        self._genesis = genesis
        self._branch = branch
        # the branch version ``base`` was read at: the commit's first attempt checks that the
        # next one is absent (one GET) instead of reading the branch again
        # (docs/design/015-one-get-tip-check.md)
        self._branch_tip = (branch_tip if branch_tip is not None and branch is not None
                            and branch_tip.name == branch
                            and branch_tip.snapshot_id == base.id else None)
        self._lineage_id = new_id()
        self._merged_forks: set[str] = set()
        self._state = "open"
        # every object this session writes is younger than this (docs/design/005-...)
        self._started_at = datetime.now(UTC)
        # the Repository's, at opening
        self._default_commit_metadata: dict[str, Any] = dict(default_commit_metadata or {})
        # the data commit of this session, kept across attempts (it reuses manifests)
        self._data_commit = DataCommit()
        # snapshots whose ref write had an unknown outcome (settled by the next attempt)
        self._unsettled: set[str] = set()
        # writes are ordered: a fork made at generation g overrides the session's chunk
        # writes of arrays last written at or before g (docs/design/013-...)
        self._generation = 0
        self._chunk_gen: dict[str, int] = {}

    # ------------------------------------------------------------------ properties
    @property
    def branch(self) -> str | None:
        """The branch this session reads from and commits to (None for tag/snapshot)."""
        return self._branch

    def __repr__(self) -> str:
        mode = "read-only" if self._read_only else "writable"
        where = f"branch {self._branch!r}" if self._branch else "detached"
        return f"<icechunk_dist.Session {mode} {where} at snapshot {self.snapshot_id}>"

    def _read_only_reason(self) -> str:
        if self._state == "committed":
            return ("this session has committed; it is now read-only at snapshot "
                    f"{self.snapshot_id}. Open a new writable_session to write again")
        return "this session is read-only (open repo.writable_session(branch) to write)"

    # ------------------------------------------------------------------ pickling
    def __getstate__(self) -> dict[str, Any]:
        if not self._read_only:
            raise _PickleRefusedError(
                "You must opt-in to pickle writable sessions in a distributed context using "
                "Session.fork(): a writable Session cannot be pickled or sent to another "
                "process, its change-set would be lost or applied twice. Use session.fork() "
                "to get a picklable ForkSession for workers, then session.merge(*forks) and "
                "session.commit(...) on the driver (or icechunk_dist.dask.store_dask; for "
                "xarray, icechunk_dist.xarray.to_icechunk). Read-only sessions pickle."
            )
        return {
            "storage": self._storage, "config": self._config, "genesis": self._genesis,
            "base": self._base, "branch": self._branch, "virtual": self._virtual,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._init_core(state["storage"], state["config"], state["base"], None, True,
                        state.get("virtual"))
        self._genesis = state["genesis"]
        self._branch = state["branch"]
        self._branch_tip = None
        self._lineage_id = new_id()
        self._started_at = datetime.now(UTC)
        self._merged_forks = set()
        self._state = "open"
        self._default_commit_metadata = {}
        self._data_commit = DataCommit()
        self._unsettled = set()

    # ------------------------------------------------------------------ status
    def status(self) -> Diff:
        """The uncommitted changes of this session, as the commit's transaction log will
        record them."""
        with self._lock:
            changes = self._changes
        for ac in changes.chunks.values():
            ac.fold()
        return diff_from_logs([build_transaction_log("", self._base, changes)])

    def discard_changes(self) -> None:
        """Drop every uncommitted change (chunk objects already written become garbage)."""
        self._check_writable()
        with self._lock:
            self._changes = ChangeSet()
            self._writes = PendingWrites()  # writes in flight become garbage

    # ------------------------------------------------------------------ savepoints
    def savepoint(self) -> SessionSavepoint:
        """An opaque copy of this session's uncommitted changes, for :meth:`rollback_to`.

        Used by multi-step writes (``icechunk_dist.xarray.to_icechunk``) so that a write that
        fails half-way leaves the session exactly as it was before the write began.

        Raises
        ------
        ReadOnlyError
            If the session is read-only.
        """
        self._check_writable()
        with self._lock:
            return SessionSavepoint(self, copy.deepcopy(self._changes),
                                    frozenset(self._merged_forks))

    def rollback_to(self, savepoint: SessionSavepoint) -> None:
        """Restore the uncommitted changes recorded by :meth:`savepoint` (chunk objects
        written since become garbage, as with :meth:`discard_changes`).

        Raises
        ------
        InvalidInputError
            If ``savepoint`` was taken from another session.
        ReadOnlyError
            If the session is read-only (for example it committed since).
        """
        if not isinstance(savepoint, SessionSavepoint) or savepoint._session is not self:
            raise InvalidInputError("rollback_to takes a savepoint of this same session")
        self._check_writable()
        with self._lock:
            self._changes = copy.deepcopy(savepoint._changes)
            self._merged_forks = set(savepoint._merged_forks)

    def _array_node(self, array_path: str) -> NodeRecord:
        node = self._node(_norm(array_path))
        if node is None:
            raise NodeNotFoundError(f"node not found at {array_path!r}: no node at that path")
        if node.array is None:
            raise InvalidInputError(f"{array_path!r} is a group, not an array")
        return node  # type: ignore[no-any-return]

    @property
    def mode(self) -> SessionMode:
        """``SessionMode.readonly`` or ``SessionMode.writable`` (``rearrange`` for
        :meth:`Repository.rearrange_session`)."""
        return SessionMode.readonly if self._read_only else SessionMode.writable

    @property
    def config(self) -> Any:
        """A copy of the repository config this session uses (a ``RepositoryConfig``)."""
        return self._config.copy()

    async def get_node_id_async(self, path: str) -> str:
        """Async twin of :meth:`get_node_id` (no I/O)."""
        return self.get_node_id(path)

    def get_node_id(self, path: str) -> str:
        """The stable id of the node at ``path`` (it survives moves).

        Raises
        ------
        NotFoundError
            If there is no node there.
        """
        node = self._node(_norm(path))
        if node is None:
            raise NodeNotFoundError(f"node not found at {path!r}: no node at that path")
        return str(node.node_id)

    async def chunk_coordinates(self, array_path: str,
                                batch_size: int = 1000) -> AsyncIterator[tuple[int, ...]]:
        """Async iterator over the coordinates of every initialized chunk of the array
        (committed and pending; deleted chunks excluded), in sorted order.

        Raises
        ------
        NotFoundError
            If there is no node at ``array_path``.
        InvalidInputError
            If it is a group.
        """
        node = self._array_node(array_path)
        coords = await self._all_coords(node)
        for i, c in enumerate(coords):
            if batch_size and i and i % batch_size == 0:
                await asyncio.sleep(0)
            yield c

    @_sync.on_io_loop
    async def chunk_type_async(self, array_path: str,
                               chunk_coordinates: Sequence[int]) -> ChunkType:
        """Async twin of :meth:`chunk_type`."""
        node = self._array_node(array_path)
        assert node.array is not None
        coord = tuple(int(c) for c in chunk_coordinates)
        if len(coord) != len(node.array.shape):
            raise InvalidInputError(
                f"{len(coord)} coordinates for array {array_path!r} of {len(node.array.shape)} "
                "dimensions")
        ref = await self._chunk_ref(node, coord)
        return ChunkType.uninitialized if ref is None else _TYPES[ref[0]]

    def chunk_type(self, array_path: str, chunk_coordinates: Sequence[int]) -> ChunkType:
        """How the chunk at ``chunk_coordinates`` of the array is stored.

        Raises
        ------
        NotFoundError
            If there is no node at ``array_path``.
        InvalidInputError
            If it is a group or the coordinates do not fit it.
        """
        return _sync.run(self.chunk_type_async(array_path, chunk_coordinates))  # type: ignore[no-any-return]

    async def _merged_table(self, node: NodeRecord) -> ChunkTable | None:
        """The array's chunk refs, committed and pending, one row per coordinate."""
        tables = []
        base = self._base_nodes.get(node.path)
        if base is not None and base.node_id == node.node_id:
            for mref in base.manifests:
                tables.append(await self._manifests.get(self._storage, mref.id))
        ac = self._changes.chunks.get(node.node_id)
        if ac is not None:
            tables.append(ac.table)
        return ChunkTable.concat(tables).normalized() if tables else None

    @_sync.on_io_loop
    async def chunk_stats_async(self, array_path: str) -> ChunkStats:
        """Async twin of :meth:`chunk_stats`."""
        t = await self._merged_table(self._array_node(array_path))
        n, size = ({}, {}) if t is None else (
            {k: int(np.count_nonzero(t.kinds == k)) for k in _TYPES},
            {k: int(t.lengths[t.kinds == k].sum()) for k in _TYPES})
        return ChunkStats(n.get(KIND_NATIVE, 0), n.get(KIND_INLINE, 0), n.get(KIND_VIRTUAL, 0),
                          size.get(KIND_NATIVE, 0) + size.get(KIND_INLINE, 0),
                          size.get(KIND_VIRTUAL, 0))

    def chunk_stats(self, array_path: str) -> ChunkStats:
        """How many chunks of the array are written, of which kind, and their bytes, from
        the manifests (committed and pending; deleted chunks excluded; no chunk is read).

        Raises
        ------
        NotFoundError
            If there is no node at ``array_path``.
        InvalidInputError
            If it is a group.
        """
        return _sync.run(self.chunk_stats_async(array_path))  # type: ignore[no-any-return]

    @_sync.on_io_loop
    async def all_virtual_chunk_locations_async(self) -> list[str]:
        """Async twin of :meth:`all_virtual_chunk_locations`."""
        urls: set[str] = set()
        limit = self._config.max_concurrent_requests
        for path, node in sorted(self._all_nodes().items()):
            if node.array is None:
                continue
            base = self._base_nodes.get(path)
            mids = ([m.id for m in base.manifests]
                    if base is not None and base.node_id == node.node_id else [])
            tables = await gather_limited(
                [self._manifests.get(self._storage, m) for m in mids], limit)
            ac = self._changes.chunks.get(node.node_id)
            urls |= live_locations(tables, None if ac is None else ac.table)
        loose = {**self._base_loose, **self._changes.loose}
        urls.update(r.url for r in loose.values() if r is not None and r.kind == KIND_VIRTUAL)
        return sorted(urls)

    def all_virtual_chunk_locations(self) -> list[str]:
        """The distinct object URLs that virtual chunks of this session point into
        (committed refs not overwritten by pending writes, and pending ones), computed per
        distinct location: millions of refs into thousands of files cost thousands of
        Python steps."""
        return _sync.run(self.all_virtual_chunk_locations_async())  # type: ignore[no-any-return]

    def move(self, from_path: str, to_path: str) -> None:
        """Move or rename a node; only in a session from ``Repository.rearrange_session``.

        Raises
        ------
        SessionStateError
            Always here: this is not a rearrange session.
        """
        raise SessionStateError(
            "moving nodes needs a rearrange session: "
            "session = repo.rearrange_session(branch); session.move(src, dst)"
        )

    async def move_async(self, from_path: str, to_path: str) -> None:
        """Async twin of :meth:`move`."""
        self.move(from_path, to_path)

    # ------------------------------------------------------------------ reindexing
    def reindex_array(self, array_path: str, forward: IndexMap,
                      backward: IndexMap | None = None) -> None:
        """Move the chunks of an array to other chunk indices (Icechunk's ``reindex_array``).

        Every existing chunk inside the array's grid is visited (empty positions are not):
        ``forward(index)`` gives its new index (a sequence of ints inside the grid), or None
        to leave it where it is. Only the chunk refs move; no chunk is read or copied. A
        position a chunk left keeps its old chunk unless ``backward`` is given:
        ``backward(index)`` is the inverse of ``forward``, and each existing chunk that no
        chunk moved onto is cleared (reads as the fill value) when ``backward`` gives None
        for it or the index of an empty position.

        Raises
        ------
        NodeNotFoundError
            If there is no node at ``array_path``.
        InvalidInputError
            If it is not an array with a regular chunk grid, or ``forward`` gives an index
            outside the grid.
        ReadOnlyError
            If the session is read-only.
        """
        _sync.run(self._reindex(array_path, forward, backward))

    def shift_array(self, array_path: str, chunk_offset: Iterable[int]) -> None:
        """Shift every chunk of an array by ``chunk_offset`` chunks per dimension (negative:
        towards 0). Chunks shifted out of the grid are dropped (resize the array first to
        keep them) and the positions they vacate read as the fill value.

        Raises
        ------
        NodeNotFoundError
            If there is no node at ``array_path``.
        InvalidInputError
            If it is not an array with a regular chunk grid, or the offset has the wrong
            number of dimensions.
        ReadOnlyError
            If the session is read-only.
        """
        offset = [int(o) for o in chunk_offset]
        node = self._reindexable(array_path)
        assert node.array is not None
        grid = grid_of(node.array.shape, node.array.chunk_shape)
        if len(offset) != len(grid):
            raise InvalidInputError(
                f"chunk_offset has {len(offset)} dimensions, the array {array_path!r} has "
                f"{len(grid)}")
        _sync.run(self._reindex(array_path, shifter(offset, grid),
                                shifter([-o for o in offset], grid)))

    def _reindexable(self, array_path: str) -> NodeRecord:
        node = self._node(_norm(array_path))
        if node is None:
            raise NodeNotFoundError(f"node not found at {array_path!r}: no node at that path")
        if node.kind != "array":
            raise InvalidInputError(f"{array_path!r} is a group, not an array")
        if node.array is None:
            try:
                grid = str(json.loads(node.metadata)["chunk_grid"]["name"])
            except (ValueError, KeyError, TypeError):
                grid = "unknown"
            raise InvalidInputError(
                f"cannot shift or reindex chunks of the array at {array_path!r}: shift_array "
                "and reindex_array require an array whose metadata declares a `regular` chunk "
                f"grid, found `{grid}` (chunks of other grids have position-dependent sizes, "
                "so moving them would corrupt the array)")
        return node

    async def _reindex(self, array_path: str, forward: IndexMap,
                       backward: IndexMap | None) -> None:
        self._check_writable()
        node = self._reindexable(array_path)
        assert node.array is not None
        grid = grid_of(node.array.shape, node.array.chunk_shape)
        writes = reindexed(await self._live_table(node), grid, forward, backward, array_path)
        if writes is None:
            return
        with self._lock:
            mine = self._changes.chunks.get(node.node_id)
            before = mine.table if mine is not None else ChunkTable.empty(writes.ndim)
            # later rows win: the moves and clears override what the session wrote there
            self._changes.chunks[node.node_id] = ArrayChunks(
                writes.ndim, table=ChunkTable.concat([before, writes]).normalized())

    async def _live_table(self, node: NodeRecord) -> ChunkTable:
        """Every initialized chunk ref of ``node`` (committed and pending), normalized."""
        tables = []
        base = self._base_nodes.get(node.path)
        if base is not None and base.node_id == node.node_id:
            tables.extend(await gather_limited(
                [self._manifests.get(self._storage, m.id) for m in base.manifests],
                self._config.max_concurrent_requests))
        ac = self._changes.chunks.get(node.node_id)
        if ac is not None:
            tables.append(ac.table)
        ndim = max(1, len(node.array.shape)) if node.array is not None else 1
        merged = ChunkTable.concat(tables, ndim).normalized()
        return merged.take(np.flatnonzero(merged.kinds != KIND_TOMBSTONE))

    # ------------------------------------------------------------------ fork / merge
    def fork(self) -> ForkSession:
        """A small picklable sub-session for workers. Writes nothing to storage.

        The fork reads this session's base snapshot plus its pending metadata (arrays created
        in this transaction are writable from the fork), and records its own chunk writes.
        Bring its changes back with :meth:`merge`.

        Raises
        ------
        SessionStateError
            If this session is read-only or already committed.
        """
        if self._read_only:
            raise SessionStateError(
                "cannot fork a read-only session (read-only sessions pickle and can be sent "
                "to workers as they are); " + self._read_only_reason()
            )
        with self._lock:
            inherited = self._changes.copy_metadata()
            inherited.loose = dict(self._changes.loose)
            generation = self._generation
            self._generation += 1  # our writes from now on are concurrent with the fork's
        return _forks.new_fork(storage=self._storage, config=self._config, base=self._base,
                               lineage_id=self._lineage_id, inherited=inherited,
                               generation=generation, virtual=self._virtual)

    def merge(self, *forks: ForkSession, policy: MergePolicy = "fail") -> None:
        """Bring the changes of forks into this session.

        Parameters
        ----------
        forks
            Forks of this session (possibly already merged among themselves).
        policy
            ``"fail"`` (default): two different writes of the same chunk raise
            :class:`MergeConflictError`. ``"last_wins"``: later forks (in argument order)
            win.

        Raises
        ------
        MergeConflictError
            On overlapping writes, naming the array and chunk coordinates.
        SessionStateError
            If a fork is of another session or base, or was already merged.
        """
        self._check_writable()
        ready = _forks.ready_to_merge(forks, into="a Session")
        _forks.wait_for_writes_sync(ready)
        self._merge_ready(ready, policy)

    @_sync.on_io_loop
    async def merge_async(self, *forks: ForkSession, policy: MergePolicy = "fail") -> None:
        """Async twin of :meth:`merge`."""
        self._check_writable()
        ready = _forks.ready_to_merge(forks, into="a Session")
        await _forks.wait_for_writes(ready)
        self._merge_ready(ready, policy)

    def _merge_ready(self, ready: tuple[ForkSession, ...], policy: MergePolicy) -> None:
        with self._lock:
            parts, seen, forked_at, written, gone = _forks.take_changes(
                ready, storage=self._storage, base_id=self._base.id,
                lineage_id=self._lineage_id, seen=self._merged_forks, what="this session")
            # writes in one session are ordered: what this session wrote to an array before
            # the forks were made is overridden by their writes (as any Zarr store would);
            # writes made since (ours, or of forks merged meanwhile) are concurrent with them
            gen = self._chunk_gen
            earlier = {nid for nid in written if gen.get(nid, -1) <= forked_at}
            # and a node a fork deleted takes this session's earlier writes to it along
            deleted = {nid for nid in gone if gen.get(nid, -1) <= forked_at}
            mine = self._changes.without_chunks_of(earlier, [cs for cs, _ in parts],
                                                   dropped=deleted)
            merged = mine.merge_many(parts, policy=policy, describe=node_names(self))
            # a fork's delete of a node this session created before the fork is recorded
            # against that node; here, with no base node behind it, nothing is deleted
            merged.deleted = {p: r for p, r in merged.deleted.items()
                              if (b := self._base_nodes.get(p)) is not None
                              and b.node_id == r.node_id}
            self._changes = merged
            self._merged_forks = seen
            for nid in written:
                gen[nid] = self._generation
            self._generation += 1
        _forks.release_all(ready)

    # ------------------------------------------------------------------ commit
    def commit(
        self,
        message: str,
        metadata: Mapping[str, Any] | None = None,
        *,
        rebase_with: ConflictSolver | None = None,
        rebase_tries: int = 1_000,
        allow_empty: bool = False,
    ) -> str:
        """Commit every change as one new snapshot on the branch and return its id.

        Order: manifests, transaction log, snapshot, then an atomic ref update. After a
        commit the session is read-only at the new snapshot.

        Parameters
        ----------
        message
            The commit message.
        metadata
            JSON-like mapping stored with the snapshot.
        rebase_with
            A conflict solver; if given and the branch moved since this session began, the
            session rebases onto the new tip and retries (see :meth:`rebase`).
        rebase_tries
            Maximum number of rebase attempts.
        allow_empty
            Commit even if nothing changed.

        Raises
        ------
        ConflictError
            If the branch moved and no solver was given (nothing is changed).
        RebaseFailedError
            If the solver met a conflict it does not resolve.
        SessionStateError
            If there is nothing to commit, or the session is not a writable branch session.
        ReadOnlyError
            If the repository status is read-only (``Repository.set_status``).
        """
        return _sync.run(self.commit_async(message, metadata, rebase_with=rebase_with,
                                           rebase_tries=rebase_tries, allow_empty=allow_empty))

    @_sync.on_io_loop
    async def commit_async(
        self,
        message: str,
        metadata: Mapping[str, Any] | None = None,
        *,
        rebase_with: ConflictSolver | None = None,
        rebase_tries: int = 1_000,
        allow_empty: bool = False,
    ) -> str:
        """Async twin of :meth:`commit`."""
        meta = self._commit_checks("commit", message, metadata,
                                   empty=self._changes.is_empty() and not allow_empty)
        return await run_commit(_CommitSource(self), self._commit_kind(), message, meta,
                                solver=rebase_with, tries=rebase_tries)

    def _commit_kind(self) -> CommitKind:
        """How this session's commit builds its snapshot (a rearrange session moves)."""
        return self._data_commit

    def _nothing_to_commit(self, verb: str) -> str:
        return (f"cannot {verb}, no changes made to the session: nothing to {verb} (pass "
                f"allow_empty=True to {verb} anyway)")

    def _commit_checks(self, verb: str, message: str, metadata: Mapping[str, Any] | None, *,
                       empty: bool) -> dict[str, Any]:
        if self._read_only or self._branch is None:
            raise SessionStateError(
                f"cannot {verb}: commits are not allowed on read-only or forked sessions; "
                + self._read_only_reason())
        if not isinstance(message, str):
            raise InvalidInputError("commit message must be a string")
        if empty:
            raise SessionStateError(self._nothing_to_commit(verb))
        if metadata is not None and not isinstance(metadata, Mapping):
            raise _MetadataTypeError(f"commit metadata must be a dict, got {metadata!r}")
        meta = {**self._default_commit_metadata, **dict(metadata or {})}
        try:
            msgspec.json.encode(meta)
        except (TypeError, msgspec.EncodeError) as e:
            raise _MetadataTypeError(
                f"commit metadata must hold JSON values (str, numbers, bools, None, lists, "
                f"dicts with str keys): {e}") from None
        return meta

    # ------------------------------------------------------------------ flush
    def flush(self, message: str, *, metadata: Mapping[str, Any] | None = None) -> str:
        """Write this session's changes as a new snapshot whose parent is the base, without
        moving any branch (Icechunk's detached snapshot); return its id. The session is
        then read-only at it, on no branch. ``repo.reset_branch(branch, id)`` or
        ``repo.create_tag(tag, id)`` makes it reachable; until then garbage collection
        deletes it once it is older than the cut-off.

        Raises
        ------
        SessionStateError
            If the session is read-only.
        ReadOnlyError
            If the repository status is read-only.
        InvalidInputError
            On bad metadata.
        GCConflictError
            If a garbage collection deleted objects the snapshot references.
        """
        return _sync.run(self.flush_async(message, metadata=metadata))  # type: ignore[no-any-return]

    @_sync.on_io_loop
    async def flush_async(self, message: str, *,
                          metadata: Mapping[str, Any] | None = None) -> str:
        """Async twin of :meth:`flush`."""
        meta = self._commit_checks("flush", message, metadata, empty=False)
        # the kind this session commits with (a rearrange session's moves, else its data),
        # through the pipeline's steps that do not move a branch
        sid: str = await run_commit(_CommitSource(self), self._commit_kind(), message, meta,
                                    detached=True)
        self._branch = None
        return sid

    # ------------------------------------------------------------------ amend
    def amend(self, message: str, *, metadata: Mapping[str, Any] | None = None,
              allow_empty: bool = False) -> str:
        """Replace the branch tip by a new commit holding the tip's changes and this
        session's, whose parent is the tip's parent; return its id.

        The replaced commit leaves the branch's history (it stays readable by id until
        garbage collection). After amending the session is read-only at the new snapshot.

        Raises
        ------
        SessionStateError
            If the session is read-only or detached, based on the repository's first
            commit, or has no changes (and ``allow_empty`` is False).
        ConflictError
            If the branch moved since the session began (nothing is changed).
        ReadOnlyError
            If the repository status is read-only (``Repository.set_status``).
        """
        return _sync.run(self.amend_async(message, metadata=metadata, allow_empty=allow_empty))

    @_sync.on_io_loop
    async def amend_async(self, message: str, *, metadata: Mapping[str, Any] | None = None,
                          allow_empty: bool = False) -> str:
        """Async twin of :meth:`amend`."""
        meta = self._commit_checks("amend", message, metadata,
                                   empty=self._changes.is_empty() and not allow_empty)
        if self._base.parent_id is None:
            raise SessionStateError("the repository's first commit cannot be amended")
        return await run_commit(_CommitSource(self), AmendCommit(), message, meta)

    def _chunks_written(self, node_id: str) -> None:
        self._chunk_gen[node_id] = self._generation

    def _become_committed(self, snap: SnapshotData) -> None:
        with self._lock:
            self._set_base(snap)
            self._changes = ChangeSet()
            self._data_commit = DataCommit()
            self._read_only = True
            self._state = "committed"  # the store follows: its read_only reads ours

    def _set_base(self, snap: SnapshotData) -> None:
        self._base = snap
        self._base_nodes = {n.path: n for n in snap.nodes}
        self._base_loose = {r.key: r for r in snap.loose}

    def rebase(self, solver: ConflictSolver) -> None:
        """Move this session's base to the branch tip, replaying its changes on top.

        Raises
        ------
        RebaseFailedError
            If a landed commit conflicts with our changes and ``solver`` does not resolve it.
            The session is unchanged in that case.
        HistoryRewrittenError
            If the history between the base and the tip was expired or reset.
        """
        _sync.run(self.rebase_async(solver))

    @_sync.on_io_loop
    async def rebase_async(self, solver: ConflictSolver) -> None:
        """Async twin of :meth:`rebase`."""
        if self._read_only or self._branch is None:
            raise SessionStateError("cannot rebase: " + self._read_only_reason())
        await rebase_onto(_CommitSource(self), History(
            self._storage, concurrency=self._config.max_concurrent_requests), solver)


class ChunkStats(NamedTuple):
    """One array's chunks as its manifests record them (:meth:`Session.chunk_stats`): how
    many are native (chunk objects of the repository), inline (in the manifest) and virtual
    (references to objects elsewhere); ``stored_bytes`` of the native and inline ones,
    ``virtual_bytes`` that the virtual ones refer to."""

    native: int
    inline: int
    virtual: int
    stored_bytes: int
    virtual_bytes: int

    @property
    def written(self) -> int:
        """All chunks written (native, inline and virtual)."""
        return self.native + self.inline + self.virtual


class SessionSavepoint:
    """What :meth:`Session.savepoint` returns; pass it to :meth:`Session.rollback_to`."""

    __slots__ = ("_changes", "_merged_forks", "_session")

    def __init__(self, session: Session, changes: ChangeSet, merged: frozenset[str]) -> None:
        self._session = session
        self._changes = changes
        self._merged_forks = merged

    def __repr__(self) -> str:
        return f"<icechunk_dist.SessionSavepoint of {self._session!r}>"


class _CommitSource:
    """The narrow view of a session that the commit pipeline and rebase work on."""

    __slots__ = ("_s",)

    def __init__(self, session: Session) -> None:
        self._s = session

    @property
    def storage(self) -> Storage:
        return self._s._storage

    @property
    def config(self) -> RepositoryConfig:
        return self._s._config

    @property
    def genesis(self) -> str:
        return self._s._genesis

    @property
    def branch(self) -> str:
        assert self._s._branch is not None
        return self._s._branch

    @property
    def started_at(self) -> datetime:
        return self._s._started_at

    @property
    def manifests(self) -> ManifestCache:
        return self._s._manifests

    @property
    def unsettled(self) -> set[str]:
        return self._s._unsettled

    @property
    def known_tip(self) -> refs.BranchTip | None:
        tip = self._s._branch_tip
        return tip if tip is not None and tip.snapshot_id == self._s._base.id else None

    async def flush(self) -> None:
        await self._s._flush_writes()

    async def check_online(self) -> None:
        await check_online(self._s._storage, "commit")

    def base_and_changes(self) -> tuple[SnapshotData, ChangeSet]:
        with self._s._lock:
            return self._s._base, self._s._changes

    def replace_base(self, expected: ChangeSet, base: SnapshotData, changes: ChangeSet
                     ) -> None:
        s = self._s
        with s._lock:
            if s._changes is not expected:  # pragma: no cover - concurrent writes meanwhile
                raise SessionStateError("the session was written to during its rebase; "
                                        "retry the commit")
            adopt_split_shapes(changes, base)
            s._set_base(base)
            s._changes = changes

    def become_committed(self, snap: SnapshotData) -> None:
        self._s._become_committed(snap)


def commit_source(session: Session) -> _CommitSource:
    """The view of ``session`` that the commit pipeline works on."""
    return _CommitSource(session)


async def rewrite_manifests(session: Session, message: str,
                            metadata: Mapping[str, Any] | None, *, amend: bool) -> str:
    """Commit ``session`` (fresh, writable, no changes) as a rewrite of every manifest of its
    base (``Repository.rewrite_manifests``); return the new snapshot id.

    Raises
    ------
    BranchMovedError
        If the branch moved since the session began.
    ReadOnlyError
        If the repository status is read-only.
    InvalidInputError
        On bad metadata.
    SessionStateError
        For an amend of the repository's first commit.
    """
    meta = session._commit_checks("commit", message, metadata, empty=False)
    # Icechunk records the splitting it used under its own key of the commit metadata
    own = dict(meta.get("__icechunk") or {})
    own["splitting_config"] = {"split_sizes": session._config.manifest_split_size}
    meta["__icechunk"] = own
    return await run_commit(_CommitSource(session), RewriteCommit(amend=amend), message,
                            meta)
