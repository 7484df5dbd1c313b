"""The one history model: a walker over the snapshot graph (docs/architecture.md section 6).

Every reader of history goes through :class:`History`: rebase and the commit pipeline
(:meth:`History.landed_since`, :meth:`History.find_landed`), time travel
(:meth:`History.as_of`), ``ancestry`` and ``diff`` (:meth:`History.chain`,
:meth:`History.changes_between`), expiry and garbage collection (:meth:`History.reachable`)
and the ops log (:meth:`History.snapshots`).

The walk follows ``parent_id`` only. The ``ancestors`` hints of the snapshots read name the
next ones, which are fetched concurrently (a sliding window of at most ``concurrency``
reads in flight), so n snapshots cost about n / 100 dependent round trips instead of n
(docs/design/007-ancestor-hints.md). A hint that names a snapshot off the chain, or one that
no longer exists after expiry, only costs a wasted read.

Expired history: ``expire_snapshots`` re-parents the oldest kept snapshot of a ref onto the
initial snapshot and records the old parent in ``original_parent_id`` (the expiry mark). The
mark is part of the snapshot's identity: a commit that replaces a marked snapshot (amend)
carries it over. The transaction log of a marked snapshot describes its changes from its
*original* parent, so nothing that reads logs as a sequence of changes (rebase, diff) may
cross one: :meth:`History.landed_since` and :meth:`History.changes_between` raise
:class:`~icechunk_dist.errors.HistoryRewrittenError` (diff: ``InvalidInputError``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from datetime import datetime

from icechunk_dist.errors import (
    HistoryRewrittenError,
    InvalidInputError,
    NotFoundError,
)
from icechunk_dist.format import SnapshotData, TransactionLogData
from icechunk_dist.session._io import gather_limited, read_snapshot, read_transaction_log
from icechunk_dist.storage import Storage

__all__ = ["History"]


class History:
    """Reads of the snapshot graph of one repository, with prefetch along ancestor hints.

    Snapshots read are kept for the life of the object (one operation: a commit, a rebase,
    an expiry run), so a second walk over the same stretch costs nothing.

    Parameters
    ----------
    storage
        The repository's storage.
    concurrency
        At most this many reads in flight.
    """

    def __init__(self, storage: Storage, *, concurrency: int = 64) -> None:
        self._storage = storage
        self._limit = max(1, concurrency)
        self._sem = asyncio.Semaphore(self._limit)
        self._known: dict[str, SnapshotData] = {}

    async def snapshot(self, snapshot_id: str) -> SnapshotData:
        """One snapshot (read once per walker).

        Raises
        ------
        NotFoundError
            If it does not exist.
        FormatError
            If it does not decode.
        """
        hit = self._known.get(snapshot_id)
        if hit is None:
            async with self._sem:
                hit = await read_snapshot(self._storage, snapshot_id)
            self._known[snapshot_id] = hit
        return hit

    def forget(self, snapshot_id: str) -> None:
        """Drop a cached snapshot (it was rewritten in place, by expiry)."""
        self._known.pop(snapshot_id, None)

    # ------------------------------------------------------------------ the walk
    async def walk(self, start: str, *, stop: str | None = None
                   ) -> AsyncIterator[SnapshotData]:
        """The snapshots from ``start`` back along ``parent_id``, newest first, up to the
        initial snapshot or up to ``stop`` (excluded). Stop iterating at any time.

        Raises
        ------
        NotFoundError
            If a snapshot on the chain does not exist.
        FormatError
            If one does not decode.
        """
        tasks: dict[str, asyncio.Task[SnapshotData]] = {}

        def want(sid: str) -> None:
            if sid not in tasks and sid not in self._known:
                tasks[sid] = asyncio.ensure_future(self.snapshot(sid))

        sid: str | None = start
        try:
            while sid is not None and sid != stop:
                task = tasks.pop(sid, None)
                snap = await task if task is not None else await self.snapshot(sid)
                # only snapshots on the chain name what to prefetch: a window of about
                # MAX_ANCESTOR_HINTS reads, and a stale hint costs one wasted read
                for h in (snap.parent_id, *snap.ancestors):
                    if h is None or h == stop or len(tasks) >= self._limit:
                        break
                    want(h)
                yield snap
                sid = snap.parent_id
        finally:
            for t in tasks.values():
                t.cancel()
            # collect every outcome: prefetches of stale hints may have failed, unobserved
            await asyncio.gather(*tasks.values(), return_exceptions=True)

    async def chain(self, start: str, *, stop: str | None = None, limit: int | None = None
                    ) -> list[SnapshotData]:
        """:meth:`walk` collected into a list, at most ``limit`` snapshots."""
        out: list[SnapshotData] = []
        if limit is not None and limit <= 0:
            return out
        async for snap in self.walk(start, stop=stop):
            out.append(snap)
            if limit is not None and len(out) >= limit:
                break
        return out

    # ------------------------------------------------------------------ questions
    async def between(self, base_id: str, tip_id: str, *, what: str
                      ) -> list[SnapshotData]:
        """The snapshots after ``base_id`` up to ``tip_id``, newest first, refusing expired
        or foreign history.

        Raises
        ------
        HistoryRewrittenError
            If ``tip_id`` does not descend from ``base_id`` (a reset, or an amend of the
            base), or a snapshot in between carries an expiry mark.
        """
        out: list[SnapshotData] = []
        async for snap in self.walk(tip_id, stop=base_id):
            if snap.original_parent_id is not None:
                raise HistoryRewrittenError(
                    f"the history of {what} between snapshot {base_id} and {tip_id} was "
                    f"expired (expire_snapshots re-parented {snap.id}); its changes can no "
                    "longer be read as a sequence: start a new session on the tip",
                    expected_parent=base_id, actual_parent=tip_id,
                )
            out.append(snap)
            if snap.parent_id is None:
                raise HistoryRewrittenError(
                    f"{what} no longer descends from snapshot {base_id} (it was reset or "
                    "its tip was amended); start a new session on the tip",
                    expected_parent=base_id, actual_parent=tip_id,
                )
        return out

    async def landed_since(self, base_id: str, tip_id: str, *, what: str
                           ) -> tuple[SnapshotData, list[TransactionLogData]]:
        """The tip snapshot and the transaction logs of the commits after ``base_id``,
        oldest first (what a rebase replays its changes over).

        Raises
        ------
        HistoryRewrittenError
            As :meth:`between`.
        """
        chain = await self.between(base_id, tip_id, what=what)
        logs = await gather_limited(
            [read_transaction_log(self._storage, s.id) for s in reversed(chain)], self._limit)
        return chain[0], logs

    async def changes_between(self, start: str, end: str) -> list[TransactionLogData]:
        """The transaction logs of the commits from ``start`` (excluded) to ``end``, oldest
        first (what ``diff`` combines).

        Raises
        ------
        InvalidInputError
            If ``end`` does not descend from ``start``, or the history between them was
            expired.
        """
        if start == end:
            return []
        try:
            chain = await self.between(start, end, what="the repository")
        except HistoryRewrittenError as e:
            if "expired" in str(e):
                raise InvalidInputError(
                    f"history between {start} and {end} was expired (expire_snapshots "
                    "re-parented a snapshot in between); diff cannot span it") from None
            raise InvalidInputError(
                f"snapshot {end} does not descend from {start}; diff goes from an "
                "ancestor to a descendant") from None
        return await gather_limited(
            [read_transaction_log(self._storage, s.id) for s in reversed(chain)], self._limit)

    async def find_landed(self, tip_id: str | None, base_id: str, candidates: set[str]
                          ) -> SnapshotData | None:
        """The snapshot among ``candidates`` (commits whose ref write had an unknown
        outcome) that is on the branch between ``tip_id`` and ``base_id``, or None.

        A commit whose ref write may have landed is settled on the next attempt: if the
        branch moved to (or past) that snapshot, the commit landed and must not be written
        again.
        """
        if not candidates or tip_id is None:
            return None
        async for snap in self.walk(tip_id, stop=base_id):
            if snap.id in candidates:
                return snap
        return None

    async def as_of(self, tip_id: str, when: datetime) -> SnapshotData:
        """The newest snapshot of the chain from ``tip_id`` written at or before ``when``.

        Raises
        ------
        NotFoundError
            If every snapshot of the chain is newer.
        """
        async for snap in self.walk(tip_id):
            if snap.written_at <= when:
                return snap
        raise NotFoundError(f"no snapshot at or before {when} in the history of {tip_id}")

    async def reachable(self, roots: Iterable[str]) -> dict[str, SnapshotData]:
        """Every snapshot reachable from ``roots`` through parent links (roots included).

        The chains are walked concurrently; a chain stops where it meets one already seen.
        """
        seen: dict[str, SnapshotData] = {}

        async def one(root: str) -> None:
            async for snap in self.walk(root):
                if snap.id in seen:
                    break
                seen[snap.id] = snap

        todo = list(dict.fromkeys(roots))
        # two walks may read the same stretch once each (the cache makes the second free)
        results = await asyncio.gather(*(one(r) for r in todo), return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException):
                raise r
        return seen

    async def snapshots(self, snapshot_ids: Iterable[str]) -> dict[str, SnapshotData]:
        """snapshot id -> snapshot for each of ``snapshot_ids`` that still exists (read
        concurrently; snapshots deleted by garbage collection are left out)."""
        ids = list(dict.fromkeys(snapshot_ids))

        async def one(sid: str) -> SnapshotData | None:
            try:
                return await self.snapshot(sid)
            except NotFoundError:
                return None

        snaps = await gather_limited([one(s) for s in ids], self._limit)
        return {s.id: s for s in snaps if s is not None}
