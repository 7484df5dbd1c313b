"""A repository's history as users read it: its entries (:class:`SnapshotInfo`), the
ancestry, the snapshot of a branch as of a time, and the diff between an ancestor and a
descendant.

Each read is one small function of explicit arguments over the one history walker
(``session/_history.py``); :class:`Repository` resolves refs and delegates here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from icechunk_dist import refs
from icechunk_dist._types import parse_id
from icechunk_dist.errors import InvalidInputError, NotFoundError
from icechunk_dist.format import SnapshotData
from icechunk_dist.session import Diff
from icechunk_dist.session._diff import diff_from_logs
from icechunk_dist.session._history import History
from icechunk_dist.session._io import read_snapshot
from icechunk_dist.storage import Storage

__all__ = [
    "SnapshotInfo",
    "ancestry_batches",
    "check_snapshot",
    "diff",
    "snapshot_as_of",
    "snapshot_info",
]


@dataclass(frozen=True)
class SnapshotInfo:
    """One entry of a repository's history."""

    id: str
    parent_id: str | None
    written_at: datetime
    message: str
    metadata: Mapping[str, Any] = field(default_factory=dict)


async def check_snapshot(storage: Storage, snapshot_id: str) -> SnapshotData:
    """The snapshot a caller's id names, in any case (its ``id`` is the canonical form).

    Raises
    ------
    InvalidInputError
        If ``snapshot_id`` is not a snapshot id.
    NotFoundError
        If there is no such snapshot.
    """
    return await read_snapshot(storage, parse_id(snapshot_id, "snapshot id"))


def snapshot_info(s: SnapshotData) -> SnapshotInfo:
    """The history entry of a snapshot."""
    return SnapshotInfo(id=s.id, parent_id=s.parent_id, written_at=s.written_at,
                        message=s.message, metadata=dict(s.metadata))


async def ancestry_batches(storage: Storage, start: str,
                           concurrency: int) -> AsyncIterator[list[SnapshotData]]:
    """The history from ``start`` back to the initial snapshot, newest first, in batches.

    Raises
    ------
    NotFoundError
        If a snapshot on the chain does not exist.
    FormatError
        If one does not decode.
    """
    history = History(storage, concurrency=concurrency)
    sid: str | None = start
    batch = 128
    # lazy, in batches of growing size; each batch is read concurrently along the
    # snapshots' ancestor hints (docs/design/007-ancestor-hints.md)
    while sid is not None:
        snaps = await history.chain(sid, limit=batch)
        yield snaps
        sid = snaps[-1].parent_id
        batch = min(batch * 2, 4096)


async def snapshot_as_of(storage: Storage, genesis: str, branch: str,
                         as_of: datetime) -> str:
    """The newest snapshot of ``branch``'s history written at or before ``as_of``.

    Raises
    ------
    InvalidInputError
        If ``as_of`` is naive.
    NotFoundError
        If the branch does not exist or nothing on it is old enough.
    """
    if as_of.tzinfo is None:
        raise InvalidInputError("as_of must be timezone-aware (e.g. datetime.now(UTC))")
    tip = await refs.read_branch(storage, branch, genesis)
    assert tip.snapshot_id is not None
    try:
        return (await History(storage).as_of(tip.snapshot_id, as_of)).id
    except NotFoundError:
        raise NotFoundError(f"branch {branch!r} has no snapshot at or before {as_of}") from None


async def diff(storage: Storage, start: str, end: str, concurrency: int) -> Diff:
    """What changed from snapshot ``start`` to its descendant ``end``, read from the
    transaction logs of the commits between them.

    Raises
    ------
    InvalidInputError
        If ``end`` does not descend from ``start``, or expiry re-parented a snapshot between
        them.
    """
    history = History(storage, concurrency=concurrency)
    return diff_from_logs(await history.changes_between(start, end))
