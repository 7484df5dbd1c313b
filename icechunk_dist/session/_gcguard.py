"""Garbage-collection run records, and the commit's check against them.

The protocol and its proof are in ``docs/design/005-gc-vs-writers.md``; in short:

- a collector writes ``gc/<run id>/start`` before it moves any branch or deletes anything,
  then moves every branch by one no-op version, marks, deletes, moves every branch again,
  and writes ``gc/<run id>/done``;
- a commit, after writing its snapshot and just before its ref write, LISTs ``gc/`` once.
  A run that may have deleted objects written by this session (its cut-off is later than
  the session's start and it did not finish before that start) makes the commit wait for
  the run to finish and then check (HEAD, concurrently) that every object it adds still
  exists; if one is missing it raises :class:`~icechunk_dist.errors.GCConflictError` and
  the branch is not moved.

The run id is ``<start ms>.<cut-off ms>.<random id>`` (13-digit decimal milliseconds since
the epoch): it sorts by start time, and the single LIST tells a commit each run's cut-off
without reading any record.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np

from icechunk_dist._types import encode_id, new_id
from icechunk_dist.changeset import ChangeSet
from icechunk_dist.errors import GCConflictError
from icechunk_dist.format import KIND_NATIVE, SnapshotData
from icechunk_dist.keys import (
    GC_PREFIX,
    chunk_key,
    gc_done_key,
    gc_start_key,
    manifest_key,
    snapshot_key,
    transaction_key,
)
from icechunk_dist.session._io import gather_limited
from icechunk_dist.storage import Storage

__all__ = [
    "GC_PREFIX",
    "MAX_RUN",
    "GCRun",
    "added_keys",
    "check_before_ref_write",
    "done_key",
    "list_runs",
    "new_run_id",
    "start_key",
]

# how far the clocks of writers, collectors and the object store may disagree
CLOCK_SKEW = timedelta(minutes=15)
# a run without a ``done`` record this old is treated as crashed (finished at some time)
STALE_AFTER = timedelta(hours=24)
# a collector stops deleting (with an error) once it has run this long: well inside
# STALE_AFTER, so a live run is never mistaken for a crashed one
MAX_RUN = timedelta(hours=12)
# how long a commit waits for a running collection before giving up with GCConflictError
WAIT_LIMIT_SECONDS = 900.0
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _ms(t: datetime) -> int:
    return max(0, min(10**13 - 1, int((t - _EPOCH).total_seconds() * 1000)))


def new_run_id(started_at: datetime, older_than: datetime) -> str:
    """A run id that sorts by start time and carries the cut-off."""
    return f"{_ms(started_at):013d}.{_ms(older_than):013d}.{new_id()}"


start_key = gc_start_key
done_key = gc_done_key


@dataclass(frozen=True)
class GCRun:
    """One run as the ``gc/`` listing shows it (storage clock for ``*_seen``)."""

    run_id: str
    older_than_ms: int
    started_seen: datetime | None
    done_seen: datetime | None

    @property
    def finished(self) -> bool:
        return self.done_seen is not None


async def list_runs(storage: Storage) -> list[GCRun]:
    """Every recorded run, oldest first, from one LIST of ``gc/``."""
    starts: dict[str, datetime] = {}
    dones: dict[str, datetime] = {}
    async for meta in storage.list(GC_PREFIX):
        run_id, _, leaf = meta.key[len(GC_PREFIX):].partition("/")
        if leaf == "start":
            starts[run_id] = meta.last_modified
        elif leaf == "done":
            dones[run_id] = meta.last_modified
    out: list[GCRun] = []
    for run_id in sorted(set(starts) | set(dones)):
        parts = run_id.split(".")
        if len(parts) != 3 or not (parts[0].isdigit() and parts[1].isdigit()):
            continue  # not ours; ignored
        out.append(GCRun(run_id, int(parts[1]), starts.get(run_id), dones.get(run_id)))
    return out


def _relevant(run: GCRun, session_started: datetime) -> bool:
    """Could ``run`` have deleted (or still delete) an object written after the start?"""
    floor = session_started - CLOCK_SKEW
    if run.older_than_ms <= _ms(floor):
        return False  # it only deletes objects older than its cut-off
    return run.done_seen is None or run.done_seen >= floor


def _stale(run: GCRun) -> bool:
    seen = run.started_seen
    return seen is not None and datetime.now(UTC) - seen > STALE_AFTER + CLOCK_SKEW


def added_keys(snap: SnapshotData, base: SnapshotData, changes: ChangeSet) -> list[str]:
    """Keys of every object the commit of ``snap`` (on ``base``) adds to what is reachable:
    the chunk objects its change-set wrote, the manifests that ``base`` does not have (new
    or reused from an earlier attempt), its transaction log and itself."""
    keys: set[str] = {snapshot_key(snap.id), transaction_key(snap.id)}
    old = {m.id for n in base.nodes for m in n.manifests}
    keys.update(manifest_key(m.id) for n in snap.nodes for m in n.manifests if m.id not in old)
    for ac in changes.chunks.values():
        t = ac.table
        native = t.ids[t.kinds == KIND_NATIVE]
        if len(native):
            for raw in np.unique(native.view("V12").ravel()):
                keys.add(chunk_key(encode_id(bytes(raw))))
    for rec in changes.loose.values():
        if rec is not None and rec.kind == KIND_NATIVE:
            keys.add(chunk_key(rec.id))
    return sorted(keys)


async def _wait_finished(storage: Storage, run: GCRun) -> None:
    deadline = time.monotonic() + WAIT_LIMIT_SECONDS
    pause = 0.05
    while True:
        if await storage.exists(done_key(run.run_id)):
            return
        if time.monotonic() > deadline:
            raise GCConflictError(
                f"garbage collection {run.run_id} is still running after "
                f"{WAIT_LIMIT_SECONDS:.0f} s and may delete objects this commit needs; "
                "nothing was committed. Commit again when it has finished",
                run_id=run.run_id,
            )
        await asyncio.sleep(pause)
        pause = min(2.0, pause * 2)


async def check_before_ref_write(storage: Storage, session_started: datetime, limit: int,
                                 *, snap: SnapshotData, base: SnapshotData,
                                 changes: ChangeSet, runs: list[GCRun] | None = None) -> None:
    """The commit's side of the protocol; call it after the snapshot is written and right
    before the ref write. ``runs``: the LIST of ``gc/``, if the caller made it already
    (after it read the branch tip, see ``_pipeline``).

    Raises
    ------
    GCConflictError
        If a garbage collection deleted an object this commit references, or kept running
        longer than the commit is willing to wait.
    """
    listed = runs if runs is not None else await list_runs(storage)
    runs = [r for r in listed if _relevant(r, session_started)]
    if not runs:
        return
    for run in runs:
        if not run.finished and not _stale(run):
            await _wait_finished(storage, run)
    wanted = added_keys(snap, base, changes)
    found = await gather_limited([storage.exists(k) for k in wanted], limit)
    missing = [k for k, ok in zip(wanted, found, strict=True) if not ok]
    if missing:
        run_id = runs[-1].run_id
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5
                                          else "")
        raise GCConflictError(
            f"garbage collection {run_id} deleted {len(missing)} object(s) this commit "
            f"references ({shown}); nothing was committed and the branch is unchanged. "
            "Write the data again in a new session, and run garbage_collect with a cut-off "
            "older than the longest write in flight",
            run_id=run_id, missing=missing,
        )
