"""Session methods that match Icechunk's API: mode, chunk inspection, amend.

Mixed into :class:`icechunk_dist.Session`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import msgspec
import numpy as np

from icechunk_dist import _sync, refs
from icechunk_dist._documents import amend_marker_key
from icechunk_dist._enums import ChunkType, SessionMode
from icechunk_dist._types import new_id
from icechunk_dist.errors import (
    BranchMovedError,
    InvalidInputError,
    NotFoundError,
    SessionStateError,
)
from icechunk_dist.format import (
    KIND_INLINE,
    KIND_NATIVE,
    KIND_VIRTUAL,
    ChunkTable,
    NodeRecord,
    ObjectType,
    TransactionLogData,
    TxChunks,
)

# typed loosely on purpose: importing the higher module here would close an import cycle
Session = Any

__all__ = ["SessionParity", "combine_transaction_logs"]

_TYPES = {KIND_NATIVE: ChunkType.native, KIND_INLINE: ChunkType.inline,
          KIND_VIRTUAL: ChunkType.virtual}


def _norm(path: str) -> str:
    if not isinstance(path, str):
        raise InvalidInputError(f"a node path must be a string, got {path!r}")
    return path.strip("/")


class SessionParity:
    """Icechunk's Session methods beyond the core (see the module docstring)."""

    def _array_node(self: Any, array_path: str) -> NodeRecord:
        node = self._node(_norm(array_path))
        if node is None:
            raise NotFoundError(f"no node at {array_path!r}")
        if node.array is None:
            raise InvalidInputError(f"{array_path!r} is a group, not an array")
        return node  # type: ignore[no-any-return]

    @property
    def mode(self: Any) -> SessionMode:
        """``SessionMode.readonly`` or ``SessionMode.writable`` (``rearrange`` for
        :meth:`Repository.rearrange_session`)."""
        return SessionMode.readonly if self._read_only else SessionMode.writable

    @property
    def config(self: Any) -> Any:
        """A copy of the repository config this session uses (a ``RepositoryConfig``)."""
        return self._config.copy()

    async def get_node_id_async(self, path: str) -> str:
        """Async twin of :meth:`get_node_id` (no I/O)."""
        return self.get_node_id(path)

    async def merge_async(self: Any, *forks: Any, policy: str = "fail") -> None:
        """Async twin of :meth:`Session.merge` (run off the caller's loop)."""
        await asyncio.to_thread(lambda: self.merge(*forks, policy=policy))

    def get_node_id(self: Any, path: str) -> str:
        """The stable id of the node at ``path`` (it survives moves).

        Raises
        ------
        NotFoundError
            If there is no node there.
        """
        node = self._node(_norm(path))
        if node is None:
            raise NotFoundError(f"no node at {path!r}")
        return str(node.node_id)

    async def chunk_coordinates(self: Any, array_path: str,
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

    async def chunk_type_async(self: Any, array_path: str,
                               chunk_coordinates: Sequence[int]) -> ChunkType:
        """Async twin of :meth:`chunk_type`."""
        node = self._array_node(array_path)
        coord = tuple(int(c) for c in chunk_coordinates)
        if len(coord) != len(node.array.shape):
            raise InvalidInputError(
                f"{len(coord)} coordinates for array {array_path!r} of {len(node.array.shape)} "
                "dimensions")
        ref = await self._chunk_ref(node, coord)
        return ChunkType.uninitialized if ref is None else _TYPES[ref[0]]

    def chunk_type(self: Any, array_path: str, chunk_coordinates: Sequence[int]) -> ChunkType:
        """How the chunk at ``chunk_coordinates`` of the array is stored.

        Raises
        ------
        NotFoundError
            If there is no node at ``array_path``.
        InvalidInputError
            If it is a group or the coordinates do not fit it.
        """
        return _sync.run(self.chunk_type_async(array_path, chunk_coordinates))  # type: ignore[no-any-return]

    async def all_virtual_chunk_locations_async(self: Any) -> list[str]:
        """Async twin of :meth:`all_virtual_chunk_locations`."""
        urls: set[str] = set()
        for path, node in sorted(self._all_nodes().items()):
            if node.array is None:
                continue
            tables = []
            base = self._base_nodes.get(path)
            if base is not None and base.node_id == node.node_id:
                for mref in base.manifests:
                    tables.append(await self._manifests.get(self._storage, mref.id))
            ac = self._changes.chunks.get(node.node_id)
            if ac is not None:
                tables.append(ac.table)
            if not tables:
                continue
            merged = ChunkTable.concat(tables).normalized()
            idx = merged.url_idx[merged.kinds == KIND_VIRTUAL]
            urls.update(merged.urls[int(i)] for i in np.unique(idx) if i >= 0)
        loose = {**self._base_loose, **self._changes.loose}
        urls.update(r.url for r in loose.values() if r is not None and r.kind == KIND_VIRTUAL)
        return sorted(urls)

    def all_virtual_chunk_locations(self: Any) -> list[str]:
        """The distinct object URLs that virtual chunks of this session point into."""
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
        """
        return _sync.run(self.amend_async(message, metadata=metadata, allow_empty=allow_empty))

    async def amend_async(self: Any, message: str, *, metadata: Mapping[str, Any] | None = None,
                          allow_empty: bool = False) -> str:
        """Async twin of :meth:`amend`."""
        from icechunk_dist.session._commit import write_commit
        from icechunk_dist.session._io import (
            read_transaction_log,
            snapshot_key,
            transaction_key,
            write_object,
        )

        s: Session = self
        if s._read_only or s._branch is None:
            raise SessionStateError("cannot amend: " + s._read_only_reason())
        if not isinstance(message, str):
            raise InvalidInputError("commit message must be a string")
        if s._base.parent_id is None:
            raise SessionStateError("the repository's first commit cannot be amended")
        if s._changes.is_empty() and not allow_empty:
            raise SessionStateError("nothing to amend with: this session has no changes "
                                    "(pass allow_empty=True to change only the message)")
        meta = {**s._default_commit_metadata, **dict(metadata or {})}
        await s._flush_writes()  # every chunk object referenced has landed, or we fail
        tip = await refs.read_branch(s._storage, s._branch, s._genesis)
        if tip.snapshot_id != s._base.id:
            raise BranchMovedError(expected_parent=s._base.id, actual_parent=tip.snapshot_id)
        with s._lock:
            changes = s._changes
        for ac in changes.chunks.values():
            ac.fold()
        # the tip's content plus our changes, then re-parented onto the tip's parent
        draft, tx_ours = await write_commit(s._storage, s._config, s._manifests, s._base,
                                            changes, message=message, metadata=meta)
        tx_tip = await read_transaction_log(s._storage, s._base.id)
        sid = new_id()
        snap = msgspec.structs.replace(draft, id=sid, parent_id=s._base.parent_id,
                                       ancestors=s._base.ancestors)
        level = s._config.compression_level
        await write_object(s._storage, transaction_key(sid),
                           combine_transaction_logs(sid, tx_tip, tx_ours),
                           ObjectType.TRANSACTION_LOG, level)
        await s._storage.put(amend_marker_key(sid), s._base.id.encode(), mode="create")
        await write_object(s._storage, snapshot_key(sid), snap, ObjectType.SNAPSHOT, level)
        await refs.write_branch(s._storage, s._branch, expected=tip, snapshot_id=sid,
                                genesis=s._genesis)
        s._become_committed(snap)
        return sid


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

