"""Rearrange sessions: move and rename nodes without rewriting chunks (schema evolution).

A node keeps its id when it moves, and manifests are keyed by node id and chunk
coordinates, not by path. So a move only rewrites the snapshot's node records: the moved
arrays keep their manifests, and no chunk or manifest object is written. The commit's
transaction log records each move as the old paths deleted and the new paths created, so
a concurrent writer who wrote chunks under an old path gets a named conflict at its commit.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import msgspec

from icechunk_dist import _sync
from icechunk_dist._enums import SessionMode
from icechunk_dist.errors import (
    AlreadyExistsError,
    InvalidInputError,
    NodeNotFoundError,
    SessionStateError,
)
from icechunk_dist.format import ChunkRefRecord, NodeRecord, TransactionLogData
from icechunk_dist.session._diff import Diff, diff_from_logs
from icechunk_dist.session._pipeline import CommitKind, MoveCommit, run_commit
from icechunk_dist.session._session import Session, commit_source
from icechunk_dist.session.forks import ForkSession

if TYPE_CHECKING:
    from icechunk_dist.conflicts import ConflictSolver

__all__ = ["RearrangeSession"]

_ONLY = ("a rearrange session only moves and renames nodes (session.move); open "
         "repo.writable_session(branch) to write data")


def _norm(path: str) -> str:
    if not isinstance(path, str):
        raise InvalidInputError(f"a node path must be a string, got {path!r}")
    return path.strip("/")


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root + "/")


class RearrangeSession(Session):
    """A writable session that only moves nodes: :meth:`move`, then :meth:`commit`."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._moves: list[tuple[str, str]] = []

    @property
    def mode(self) -> SessionMode:
        if self._read_only:
            return SessionMode.readonly
        return SessionMode.rearrange

    @property
    def has_uncommitted_changes(self) -> bool:
        return bool(self._moves)

    def __getstate__(self) -> dict[str, Any]:
        if not self._read_only:
            raise SessionStateError("a rearrange session cannot be pickled")
        return super().__getstate__()

    def move(self, from_path: str, to_path: str) -> None:
        """Move (rename) the node at ``from_path``, and everything under it, to ``to_path``.

        Reads through this session see the new layout at once. Nothing is written until
        :meth:`commit`, and no chunk is copied even then.

        Raises
        ------
        NotFoundError
            If there is no node at ``from_path`` or no parent node of ``to_path``.
        AlreadyExistsError
            If something exists at ``to_path``.
        InvalidInputError
            If the root is moved, a node is moved into itself, or the new parent is an
            array.
        SessionStateError
            If the session has committed.
        """
        if self._read_only:
            raise SessionStateError("cannot move: " + self._read_only_reason())
        src, dst = _norm(from_path), _norm(to_path)
        if src == "" or dst == "":
            raise InvalidInputError("the root group cannot be moved, nor replaced by a move")
        if _under(dst, src):
            raise InvalidInputError(f"cannot move {from_path!r} into itself ({to_path!r})")
        with self._lock:
            nodes = self._base_nodes
            if src not in nodes:
                raise NodeNotFoundError(f"node not found at {from_path!r}: no node at that path")
            if dst in nodes:
                raise AlreadyExistsError(f"a node already exists at {to_path!r}; a move "
                                         "never overwrites")
            parent = dst.rsplit("/", 1)[0] if "/" in dst else ""
            if parent not in nodes:
                raise NodeNotFoundError(f"the new parent {'/' + parent!r} of {to_path!r} does "
                                    "not exist; create the group first")
            if nodes[parent].array is not None:
                raise InvalidInputError(f"the new parent {'/' + parent!r} is an array")
            renamed = {}
            for p, rec in nodes.items():
                if _under(p, src):
                    q = dst + p[len(src):]
                    renamed[q] = msgspec.structs.replace(rec, path=q)
                else:
                    renamed[p] = rec
            loose = {}
            for k, lrec in self._base_loose.items():
                if k.startswith(src + "/"):
                    k = dst + k[len(src):]
                    lrec = msgspec.structs.replace(lrec, key=k)
                loose[k] = lrec
            self._base_nodes, self._base_loose = renamed, loose
            self._moves.append((src, dst))

    async def move_async(self, from_path: str, to_path: str) -> None:
        """Async twin of :meth:`move` (no I/O: the move is recorded in memory)."""
        self.move(from_path, to_path)

    def discard_changes(self) -> None:
        """Forget every move."""
        with self._lock:
            self._base_nodes = {n.path: n for n in self._base.nodes}
            self._base_loose = {r.key: r for r in self._base.loose}
            self._moves = []

    def fork(self) -> ForkSession:
        raise SessionStateError(_ONLY)

    async def amend_async(self, message: str, *, metadata: Mapping[str, Any] | None = None,
                          allow_empty: bool = False) -> str:
        raise SessionStateError("a rearrange session commits its moves with commit(), "
                                "it does not amend")

    def rebase(self, solver: ConflictSolver) -> None:
        raise SessionStateError("a rearrange session cannot rebase: open a new one on the "
                                "branch tip and repeat the moves")

    async def rebase_async(self, solver: ConflictSolver) -> None:
        self.rebase(solver)

    async def set_key(self, key: str, data: bytes) -> None:
        raise SessionStateError(_ONLY)

    async def set_virtual_key(self, key: str, url: str, offset: int, length: int,
                              etag: str | None, modified: int = 0, *,
                              validate_container: bool = False) -> None:
        raise SessionStateError(_ONLY)

    async def set_virtual_table(self, array_path: str, make: Any, *,
                                validate_containers: bool = True) -> Any:
        raise SessionStateError(_ONLY)

    async def delete_key(self, key: str) -> None:
        raise SessionStateError(_ONLY)

    async def delete_prefix(self, prefix: str) -> None:
        raise SessionStateError(_ONLY)

    def _transaction_log(self, snapshot_id: str) -> TransactionLogData:
        before = {n.path: n for n in self._base.nodes}
        after = self._base_nodes
        gone = [p for p in before if p not in after or after[p].node_id != before[p].node_id]
        came = [p for p in after if p not in before or after[p].node_id != before[p].node_id]
        return TransactionLogData(
            snapshot_id=snapshot_id,
            new_groups=tuple(sorted(p for p in came if after[p].array is None)),
            new_arrays=tuple(sorted(p for p in came if after[p].array is not None)),
            deleted_groups=tuple(sorted(p for p in gone if before[p].array is None)),
            deleted_arrays=tuple(sorted(p for p in gone if before[p].array is not None)),
            loose_keys=tuple(sorted(set(self._base_loose) ^ {r.key for r in self._base.loose})),
        )

    def status(self) -> Diff:
        """The moves so far, as the commit's transaction log will record them."""
        return diff_from_logs([self._transaction_log("")])

    def _commit_kind(self) -> CommitKind:
        return MoveCommit(nodes=self._moved_nodes, txlog=self._transaction_log)

    def _moved_nodes(self) -> tuple[tuple[NodeRecord, ...], tuple[ChunkRefRecord, ...]]:
        with self._lock:
            return (tuple(self._base_nodes[p] for p in sorted(self._base_nodes)),
                    tuple(self._base_loose[k] for k in sorted(self._base_loose)))

    @_sync.on_io_loop
    async def commit_async(self, message: str, metadata: Mapping[str, Any] | None = None, *,
                           rebase_with: ConflictSolver | None = None,
                           rebase_tries: int = 1_000, allow_empty: bool = False) -> str:
        """Commit the moves as one new snapshot, through the commit pipeline (see
        :meth:`Session.commit`). ``rebase_with`` is accepted for Icechunk's signature but a
        rearrange session does not rebase: on a moved branch, open a new one and repeat the
        moves.

        Raises
        ------
        BranchMovedError
            If the branch moved since the session began (nothing is changed).
        GCConflictError
            If a garbage collection removed what the commit needs.
        SessionStateError
            If there are no moves (and ``allow_empty`` is False) or the session committed.
        """
        meta = self._commit_checks("commit", message, metadata,
                                   empty=not self._moves and not allow_empty)
        sid: str = await run_commit(commit_source(self), self._commit_kind(), message, meta)
        self._moves = []
        return sid

    def _nothing_to_commit(self, verb: str) -> str:
        return "nothing to commit: no node was moved"
