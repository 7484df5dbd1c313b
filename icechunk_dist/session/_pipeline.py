"""The one commit pipeline: every path that moves a branch to a new snapshot runs it
(docs/architecture.md section 3, docs/design/011-one-commit-pipeline.md).

One attempt is, in order:

1. **flush**: every chunk object the change-set names has landed (or the commit fails);
2. **tip check**: read the branch (and, at the same time, check that the repository status
   is online: ``_documents.check_online``); if it is not at the session's base, settle an earlier
   attempt whose ref write had an unknown outcome (it may have landed), else the branch
   moved: rebase with the solver (kinds that can) and retry with backoff, or raise
   :class:`~icechunk_dist.errors.BranchMovedError`. A session that knows the branch version
   its base was read at (``known_tip``) reads it in one GET: the base is still the tip if
   the next version is absent (docs/design/015-one-get-tip-check.md);
3. **build**: the kind writes manifests, transaction log and snapshot (nothing visible yet);
4. **GC check**: a garbage collection that may have deleted what the snapshot references
   makes the commit wait for it and verify (``_gcguard``), or fail with
   :class:`~icechunk_dist.errors.GCConflictError`;
5. **ref write**: create the branch's next version; a lost response is settled by the write
   id (``refs``), an error of unknown outcome is remembered so the next attempt settles it,
   and a fence (the branch moved to the same snapshot: a collection running) is retried
   without a rebase.

The kinds (:class:`DataCommit`, :class:`AmendCommit`, :class:`MoveCommit`) only say how
the snapshot is built on the base; none of them can skip a step.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from icechunk_dist import refs
from icechunk_dist._types import new_id
from icechunk_dist.changeset import ChangeSet
from icechunk_dist.config import RepositoryConfig
from icechunk_dist.errors import (
    BranchMovedError,
    InvalidInputError,
    SessionStateError,
    StorageError,
)
from icechunk_dist.format import NodeRecord, SnapshotData, TransactionLogData
from icechunk_dist.session._commit import (
    ReuseEntry,
    ReuseKey,
    build_transaction_log,
    combine_transaction_logs,
    write_manifests,
    write_snapshot,
)
from icechunk_dist.session._gcguard import check_before_ref_write, list_runs
from icechunk_dist.session._history import History
from icechunk_dist.session._io import ManifestCache, amend_marker_key, read_transaction_log
from icechunk_dist.session._rebase import rebase_onto
from icechunk_dist.storage import Storage

if TYPE_CHECKING:
    from icechunk_dist.conflicts import ConflictSolver

__all__ = [
    "AmendCommit",
    "CommitKind",
    "CommitSource",
    "DataCommit",
    "MoveCommit",
    "run_commit",
]

_MIN_SLOT = 0.002  # seconds
_MAX_SLEEP = 2.0
# fences in a row before giving up: a collection fences each branch twice per run
_MAX_FENCES = 100


class CommitSource(Protocol):
    """What the pipeline needs from the session it commits (a narrow view, no internals)."""

    @property
    def storage(self) -> Storage: ...

    @property
    def config(self) -> RepositoryConfig: ...

    @property
    def genesis(self) -> str: ...

    @property
    def branch(self) -> str: ...

    @property
    def started_at(self) -> datetime:
        """Every object this session wrote is younger than this (for the GC check)."""
        ...

    @property
    def manifests(self) -> ManifestCache: ...

    @property
    def unsettled(self) -> set[str]:
        """Snapshots whose ref write had an unknown outcome (settled by the next attempt)."""
        ...

    @property
    def known_tip(self) -> refs.BranchTip | None:
        """The branch version the session's base was read at, if it knows it (its first
        tip check is then one GET)."""
        ...

    async def flush(self) -> None:
        """Wait until every chunk object of the change-set has landed."""
        ...

    async def check_online(self) -> None:
        """Refuse the commit (``ReadOnlyError``) if the repository status is read-only."""
        ...

    def base_and_changes(self) -> tuple[SnapshotData, ChangeSet]:
        """The base snapshot and the change-set, read together under the session's lock."""
        ...

    def replace_base(self, expected: ChangeSet, base: SnapshotData, changes: ChangeSet
                     ) -> None:
        """Move to ``base`` with ``changes`` (after a rebase)."""
        ...

    def become_committed(self, snap: SnapshotData) -> None:
        """The commit landed at ``snap``: the session is now read-only there."""
        ...


class CommitKind(Protocol):
    """How one kind of commit builds its snapshot on the base (step 3)."""

    #: whether a moved branch may be rebased onto (with a solver) and the commit retried
    rebases: bool

    async def build(self, source: CommitSource, history: History, base: SnapshotData,
                    changes: ChangeSet, message: str, metadata: dict[str, Any]
                    ) -> SnapshotData:
        """Write what the snapshot needs and the snapshot itself; return it."""
        ...


# ---------------------------------------------------------------------- the kinds
@dataclass
class DataCommit:
    """A commit of a session's change-set on its base (``Session.commit``)."""

    rebases: bool = True
    # manifests written by earlier attempts of this commit (see _commit.write_manifests)
    reuse: dict[ReuseKey, ReuseEntry] = field(default_factory=dict)

    async def build(self, source: CommitSource, history: History, base: SnapshotData,
                    changes: ChangeSet, message: str, metadata: dict[str, Any]
                    ) -> SnapshotData:
        sid = new_id()
        nodes, loose, pending = await write_manifests(
            source.storage, source.config, source.manifests, base, changes, reuse=self.reuse)
        return await write_snapshot(
            source.storage, source.config.compression_level, snapshot_id=sid,
            parent=base, nodes=nodes, loose=loose, message=message, metadata=metadata,
            txlog=build_transaction_log(sid, base, changes), pending=pending)


@dataclass
class AmendCommit:
    """Replace the branch tip (the session's base) by a snapshot holding the tip's content
    plus the change-set, whose parent is the tip's parent (``Session.amend``).

    The replaced snapshot's expiry mark (``original_parent_id``) is carried over: it is part
    of the snapshot's identity, so rebase and diff keep refusing to cross the expired
    history (docs/design/011-one-commit-pipeline.md). An amend is not rebased: the tip it
    replaces must be the one the session read.
    """

    rebases: bool = False

    async def build(self, source: CommitSource, history: History, base: SnapshotData,
                    changes: ChangeSet, message: str, metadata: dict[str, Any]
                    ) -> SnapshotData:
        # read the tip again: expiry may have re-parented it (and marked it) in place
        history.forget(base.id)
        tip = await history.snapshot(base.id)
        if tip.parent_id is None:
            raise SessionStateError("the repository's first commit cannot be amended")
        sid = new_id()
        nodes, loose, pending = await write_manifests(source.storage, source.config,
                                                      source.manifests, tip, changes)
        tx_tip = await read_transaction_log(source.storage, tip.id)
        txlog = combine_transaction_logs(sid, tx_tip, build_transaction_log(sid, tip, changes))
        # the marker tells the ops log this ref update was an amend (refs never say why)
        await source.storage.put(amend_marker_key(sid), tip.id.encode(), mode="create")
        return await write_snapshot(
            source.storage, source.config.compression_level, snapshot_id=sid,
            parent=None, parent_id=tip.parent_id, ancestors=tip.ancestors,
            original_parent_id=tip.original_parent_id, pending=pending,
            nodes=nodes, loose=loose, message=message, metadata=metadata, txlog=txlog)


@dataclass
class MoveCommit:
    """A commit of moved nodes (``RearrangeSession.commit``): the base's node records under
    their new paths, no chunk or manifest written. Not rebased: repeat the moves on the tip.
    """

    nodes: Callable[[], tuple[tuple[NodeRecord, ...], tuple[Any, ...]]]
    txlog: Callable[[str], TransactionLogData]
    rebases: bool = False

    async def build(self, source: CommitSource, history: History, base: SnapshotData,
                    changes: ChangeSet, message: str, metadata: dict[str, Any]
                    ) -> SnapshotData:
        sid = new_id()
        nodes, loose = self.nodes()
        return await write_snapshot(
            source.storage, source.config.compression_level, snapshot_id=sid,
            parent=base, nodes=nodes, loose=loose, message=message, metadata=metadata,
            txlog=self.txlog(sid))


# ---------------------------------------------------------------------- the pipeline
async def run_commit(source: CommitSource, kind: CommitKind, message: str,
                     metadata: dict[str, Any], *, solver: ConflictSolver | None = None,
                     tries: int = 1_000, detached: bool = False) -> str:
    """Run the pipeline until the branch moves to our snapshot; return its id.

    Raises
    ------
    BranchMovedError
        If the branch moved and there is no solver (or the kind does not rebase), or it kept
        moving for ``tries`` rebases. Nothing is changed.
    RebaseFailedError
        If the solver met a conflict it does not resolve (the session is unchanged).
    HistoryRewrittenError
        If the history between the base and the tip was expired or reset.
    GCConflictError
        If a garbage collection deleted objects the snapshot references.
    StorageError
        If the backend failed; a ref write of unknown outcome is settled by the next commit
        attempt of the same session.
    """
    if solver is not None and tries < 1:
        raise InvalidInputError("rebase_tries must be at least 1")
    history = History(source.storage, concurrency=source.config.max_concurrent_requests)
    if detached:
        return await _detached(source, kind, history, message, metadata)
    loop = asyncio.get_running_loop()
    rebases = 0
    fences = 0
    slot = _MIN_SLOT  # longest attempt seen: the unit of backoff
    known = source.known_tip
    while True:
        started = loop.time()
        await source.flush()
        base, changes = source.base_and_changes()
        # the status check costs no round trip of its own: it runs with the tip read
        tip, online = await asyncio.gather(
            _read_tip(source, known if known is not None and known.snapshot_id == base.id
                      and not source.unsettled else None),
            source.check_online(), return_exceptions=True)
        known = None  # later attempts read the tip in full
        for outcome in (online, tip):
            if isinstance(outcome, BaseException):
                raise outcome
        assert isinstance(tip, refs.BranchTip)
        moved: BranchMovedError | None = None
        if tip.snapshot_id != base.id:
            landed = await history.find_landed(tip.snapshot_id, base.id, source.unsettled)
            if landed is not None:  # an earlier attempt whose outcome was unknown landed
                source.become_committed(landed)
                return landed.id
            moved = BranchMovedError(expected_parent=base.id, actual_parent=tip.snapshot_id)
        else:
            for ac in changes.chunks.values():
                ac.fold()
            meta = metadata
            if solver is not None and kind.rebases:
                # Icechunk's bookkeeping: how many rebases this commit took
                own = {**(metadata.get("__icechunk") or {}), "rebase_attempts": rebases}
                meta = {**metadata, "__icechunk": own}
            # the LIST of gc/ must come after the tip read (docs/design/005-gc-vs-writers.md:
            # a run that starts after it fences the branch before deleting, failing our ref
            # write); it need not wait for our objects, so it runs while the build writes them
            runs = asyncio.ensure_future(list_runs(source.storage))
            try:
                snap = await kind.build(source, history, base, changes, message, meta)
            except BaseException:
                runs.cancel()
                await asyncio.gather(runs, return_exceptions=True)
                raise
            # a garbage collection that ran meanwhile may have deleted what we reference
            await check_before_ref_write(source.storage, source.started_at,
                                         source.config.max_concurrent_requests,
                                         snap=snap, base=base, changes=changes,
                                         runs=await runs)
            try:
                await refs.write_branch(source.storage, source.branch, expected=tip,
                                        snapshot_id=snap.id, genesis=source.genesis)
            except BranchMovedError as e:
                if e.actual_parent == e.expected_parent and fences < _MAX_FENCES:
                    # moved to the same snapshot: a collection fenced the branch
                    # (docs/design/005-gc-vs-writers.md); nothing to rebase, build again
                    fences += 1
                    continue
                moved = e
            except StorageError:
                source.unsettled.add(snap.id)  # it may have landed: the next attempt checks
                raise
            else:
                source.become_committed(snap)
                return snap.id
        # the branch moved
        if solver is None or not kind.rebases or moved.actual_parent is None:
            raise moved
        rebases += 1
        if rebases > tries:
            raise BranchMovedError(
                f"gave up after {tries} rebase attempts: the branch keeps moving (last tip "
                f"{moved.actual_parent}); raise rebase_tries or retry later",
                expected_parent=moved.expected_parent, actual_parent=moved.actual_parent,
            ) from moved
        slot = max(slot, loop.time() - started)
        # full jitter exponential backoff, in units of one attempt's duration: racing
        # committers spread over a window that doubles until they stop colliding. Sleep
        # *before* rebasing, so the retry goes out right after it has read the newest tip
        await asyncio.sleep(random.uniform(0, min(_MAX_SLEEP, slot * 2 ** min(rebases - 2, 16))))
        await rebase_onto(source, history, solver)


async def _read_tip(source: CommitSource, known: refs.BranchTip | None) -> refs.BranchTip:
    """The branch tip: ``known`` (the version the session's base was read at) if the next
    version is still absent, one GET; else a full read of the branch (docs/design/015-...).

    Versions are created one after the other and never deleted, so "version n + 1 is absent"
    says exactly what a full read that ends at version n says: the tip is version n.
    """
    if known is not None and not await refs.version_taken(source.storage, source.branch,
                                                          known.version + 1):
        return known
    return await refs.read_branch(source.storage, source.branch, source.genesis)


async def _detached(source: CommitSource, kind: CommitKind, history: History, message: str,
                    metadata: dict[str, Any]) -> str:
    """``run_commit(detached=True)``: the steps of an attempt that do not involve a branch
    (``Session.flush``: a snapshot no ref points to). Flush and the online check, build,
    then the check against collections; no tip check, no ref write, no retries."""
    outcomes = await asyncio.gather(source.flush(), source.check_online(),
                                    return_exceptions=True)
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome
    base, changes = source.base_and_changes()
    for ac in changes.chunks.values():
        ac.fold()
    snap = await kind.build(source, history, base, changes, message, metadata)
    await check_before_ref_write(source.storage, source.started_at,
                                 source.config.max_concurrent_requests,
                                 snap=snap, base=base, changes=changes)
    source.become_committed(snap)
    return snap.id
