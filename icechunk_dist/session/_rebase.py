"""Rebase: replay a session's change-set onto its branch's tip (docs/concurrency.md).

Works on a :class:`RebaseTarget`, the narrow view a session hands it (the commit pipeline's
``CommitSource`` satisfies it): it never imports the session module nor touches a session's
attributes. The commits that landed since the base are read through the one history walker
(``_history``), which refuses to cross expired or reset history.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from icechunk_dist import refs
from icechunk_dist.changeset import ChangeSet
from icechunk_dist.conflicts import (
    VersionSelection,
    adopt_identical_nodes,
    detect_conflicts,
    rebase_changes,
)
from icechunk_dist.errors import RebaseFailedError
from icechunk_dist.format import SnapshotData
from icechunk_dist.session._history import History
from icechunk_dist.storage import Storage

if TYPE_CHECKING:
    from icechunk_dist.conflicts import ConflictSolver

__all__ = ["RebaseTarget", "rebase_onto"]


class RebaseTarget(Protocol):
    """What a rebase needs from a writable session."""

    @property
    def storage(self) -> Storage: ...

    @property
    def genesis(self) -> str: ...

    @property
    def branch(self) -> str: ...

    def base_and_changes(self) -> tuple[SnapshotData, ChangeSet]:
        """The base snapshot and the change-set, read together under the session's lock."""
        ...

    def replace_base(self, expected: ChangeSet, base: SnapshotData, changes: ChangeSet
                     ) -> None:
        """Move to ``base`` with ``changes``."""
        ...


async def rebase_onto(target: RebaseTarget, history: History, solver: ConflictSolver
                      ) -> None:
    """Move ``target`` onto its branch tip, or raise leaving it intact.

    Raises
    ------
    RebaseFailedError
        If a landed commit conflicts with the change-set and ``solver`` does not resolve it.
    HistoryRewrittenError
        If the branch no longer descends from the base, or the history in between was
        expired.
    """
    tip = await refs.read_branch(target.storage, target.branch, target.genesis)
    assert tip.snapshot_id is not None
    base, current = target.base_and_changes()
    if tip.snapshot_id == base.id:
        return
    tip_snap, logs = await history.landed_since(base.id, tip.snapshot_id,
                                                what=f"branch {target.branch!r}")
    for ac in current.chunks.values():
        ac.fold()
    ours, adopted = adopt_identical_nodes(current, base, tip_snap, logs)
    conflicts = adopted + detect_conflicts(ours, base, logs)
    decisions = [(c, solver.choose(c)) for c in conflicts]
    failed = [c for c, d in decisions if d is VersionSelection.Fail]
    if failed:
        raise RebaseFailedError(tip.snapshot_id, failed)
    rebased = rebase_changes(ours, tip_snap, decisions)
    target.replace_base(current, tip_snap, rebased)
