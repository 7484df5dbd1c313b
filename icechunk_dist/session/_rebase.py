"""Commit with optimistic retries, and rebase onto a moved branch (docs/concurrency.md).

This module works on a :class:`CommitTarget`, the narrow interface a session hands it: it
never imports the session module nor touches a session's attributes.
"""

from __future__ import annotations

import asyncio
import random
from typing import TYPE_CHECKING, Any, Protocol

from icechunk_dist import refs
from icechunk_dist.changeset import ChangeSet
from icechunk_dist.conflicts import (
    VersionSelection,
    adopt_identical_nodes,
    detect_conflicts,
    rebase_changes,
)
from icechunk_dist.errors import (
    ConflictError,
    HistoryRewrittenError,
    InvalidInputError,
    RebaseFailedError,
)
from icechunk_dist.format import SnapshotData, TransactionLogData
from icechunk_dist.session._io import gather_limited, read_snapshot, read_transaction_log
from icechunk_dist.storage import Storage

if TYPE_CHECKING:
    from icechunk_dist.conflicts import ConflictSolver

__all__ = ["CommitTarget", "commit_with_retries", "landed_since", "rebase_session"]


class CommitTarget(Protocol):
    """What commit retries and rebase need from a writable session."""

    @property
    def branch(self) -> str | None: ...

    @property
    def storage(self) -> Storage: ...

    @property
    def genesis(self) -> str: ...

    @property
    def max_concurrent_requests(self) -> int: ...

    @property
    def snapshot_id(self) -> str: ...

    def base_and_changes(self) -> tuple[SnapshotData, ChangeSet]:
        """The base snapshot and the change-set, read together under the session's lock."""
        ...

    def replace_base(self, expected: ChangeSet, base: SnapshotData, changes: ChangeSet
                     ) -> None:
        """Move to ``base`` with ``changes``; ConflictError if the change-set is no longer
        ``expected`` (written to meanwhile)."""
        ...

    async def try_commit_once(self, message: str, meta: dict[str, Any]) -> str:
        """One attempt; ConflictError if the branch is not at the base."""
        ...

_MIN_SLOT = 0.002  # seconds
_MAX_SLEEP = 2.0
_MAX_NOOP_MOVES = 100


async def commit_with_retries(session: CommitTarget, message: str, meta: dict[str, Any],
                              solver: ConflictSolver | None, tries: int) -> str:
    """Try to commit; on a moved branch rebase with ``solver`` and retry with jittered
    exponential backoff, at most ``tries`` rebases."""
    if solver is not None and tries < 1:
        raise InvalidInputError("rebase_tries must be at least 1")
    attempt = 0
    noop_moves = 0
    slot = _MIN_SLOT  # longest rebase + commit attempt seen: the unit of backoff
    loop = asyncio.get_running_loop()
    started = loop.time()
    while True:
        try:
            return await session.try_commit_once(message, meta)
        except RebaseFailedError:
            raise
        except ConflictError as e:
            if (e.actual_parent is not None and e.actual_parent == e.expected_parent
                    and noop_moves < _MAX_NOOP_MOVES):
                # the branch moved without changing snapshot (garbage collection fences
                # writers this way, docs/design/005-gc-vs-writers.md): nothing to rebase
                noop_moves += 1
                continue
            if solver is None or e.actual_parent is None:
                raise
            attempt += 1
            if attempt > tries:
                raise ConflictError(
                    f"gave up after {tries} rebase attempts: the branch keeps moving "
                    f"(last tip {e.actual_parent}); raise rebase_tries or retry later",
                    expected_parent=e.expected_parent, actual_parent=e.actual_parent,
                ) from e
        slot = max(slot, loop.time() - started)
        # full jitter exponential backoff, in units of one attempt's duration: racing
        # committers spread over a window that doubles until they stop colliding. Sleep
        # *before* rebasing, so the retry goes out right after it has read the newest tip
        await asyncio.sleep(random.uniform(0, min(_MAX_SLEEP, slot * 2 ** min(attempt - 2, 16))))
        started = loop.time()
        await rebase_session(session, solver)


async def landed_since(session: CommitTarget, base: SnapshotData, tip_id: str
                       ) -> tuple[SnapshotData, list[TransactionLogData]]:
    """The tip snapshot and the transaction logs of commits after ``base``, oldest first.

    Raises
    ------
    ConflictError
        If the branch no longer descends from ``base`` (it was reset elsewhere), or the
        history in between was expired (the logs no longer describe it).
    """
    chain: list[SnapshotData] = []
    sid: str | None = tip_id
    while sid != base.id:
        if sid is None:
            raise HistoryRewrittenError(
                f"branch {session.branch!r} no longer descends from snapshot "
                f"{base.id} (it was reset); start a new session",
                expected_parent=base.id, actual_parent=tip_id,
            )
        snap = await read_snapshot(session.storage, sid)
        if snap.original_parent_id is not None:
            raise HistoryRewrittenError(
                f"the history of branch {session.branch!r} between snapshot {base.id} and "
                f"{tip_id} was expired (expire_snapshots); start a new session",
                expected_parent=base.id, actual_parent=tip_id,
            )
        chain.append(snap)
        sid = snap.parent_id
    logs = await gather_limited(
        [read_transaction_log(session.storage, s.id) for s in reversed(chain)],
        session.max_concurrent_requests,
    )
    return chain[0], logs


async def rebase_session(session: CommitTarget, solver: ConflictSolver) -> None:
    """Move ``session`` onto its branch tip, or raise RebaseFailedError leaving it intact."""
    assert session.branch is not None
    tip = await refs.read_branch(session.storage, session.branch, session.genesis)
    assert tip.snapshot_id is not None
    base, current = session.base_and_changes()
    if tip.snapshot_id == base.id:
        return
    tip_snap, logs = await landed_since(session, base, tip.snapshot_id)
    for ac in current.chunks.values():
        ac.fold()
    ours, adopted = adopt_identical_nodes(current, base, tip_snap, logs)
    conflicts = adopted + detect_conflicts(ours, base, logs)
    decisions = [(c, solver.choose(c)) for c in conflicts]
    failed = [c for c, d in decisions if d is VersionSelection.Fail]
    if failed:
        raise RebaseFailedError(tip.snapshot_id, failed)
    rebased = rebase_changes(ours, tip_snap, decisions)
    session.replace_base(current, tip_snap, rebased)
