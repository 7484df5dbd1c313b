"""The ops log: who moved which ref when (:func:`ops_log`), and its entries (:class:`Update`,
:class:`UpdateType`).

The log is read from objects that already exist, one per ref update: branch versions, tag
objects, config, metadata and status versions (``_documents.py``), plus one marker per amended
commit and the records of garbage-collection runs (``gc/<run id>/done``). Nothing extra is
written when a ref moves, so the log cannot miss an update that landed. The no-op branch
versions a collection writes to fence committers (docs/design/005-gc-vs-writers.md) are not
updates: the collection shows as one ``GCRan`` entry instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from icechunk_dist._documents import list_versions, read_version, status_from_doc
from icechunk_dist.format import GCRecordData, ObjectType, RefData, decode_object
from icechunk_dist.keys import (
    AMEND_PREFIX,
    CONFIG_PREFIX,
    METADATA_PREFIX,
    REFS_PREFIX,
    STATUS_PREFIX,
    gc_done_key,
    gc_start_key,
)
from icechunk_dist.session._gcguard import MAX_RUN, list_runs
from icechunk_dist.session._history import History
from icechunk_dist.session._io import gather_limited
from icechunk_dist.storage import ObjectNotFoundError, Storage

__all__ = ["Update", "UpdateType", "ops_log"]


class UpdateType:
    """The kind of one ops-log entry; each variant is a nested class (as in Icechunk)."""

    def __init__(self, **fields: Any) -> None:
        self.__dict__.update(fields)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.__dict__.items())
        return f"UpdateType.{type(self).__name__}({args})"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.__dict__ == other.__dict__

    __hash__ = None  # type: ignore[assignment]


class _RepoInitialized(UpdateType):
    """The repository was created."""


class _BranchCreated(UpdateType):
    """A branch was created (``name``)."""

    name: str


class _BranchDeleted(UpdateType):
    """A branch was deleted (``name``, ``previous_snap_id``)."""

    name: str
    previous_snap_id: str


class _BranchReset(UpdateType):
    """A branch was reset to another snapshot (``name``, ``previous_snap_id``)."""

    name: str
    previous_snap_id: str


class _NewCommit(UpdateType):
    """A commit landed on a branch (``branch``, ``new_snap_id``)."""

    branch: str
    new_snap_id: str


class _CommitAmended(UpdateType):
    """The tip commit of a branch was amended (``branch``, ``previous_snap_id``,
    ``new_snap_id``)."""

    branch: str
    previous_snap_id: str
    new_snap_id: str


class _TagCreated(UpdateType):
    """A tag was created (``name``)."""

    name: str


class _TagDeleted(UpdateType):
    """A tag was deleted (``name``)."""

    name: str


class _ConfigChanged(UpdateType):
    """The saved repository config changed."""


class _MetadataChanged(UpdateType):
    """The repository metadata changed."""


class _GCRan(UpdateType):
    """A garbage collection finished (``Repository.garbage_collect``, not a dry run)."""


class _RepoStatusChanged(UpdateType):
    """The repository status was set (``status``: the new :class:`RepoStatus`)."""

    status: Any


for _name, _cls in [("RepoInitialized", _RepoInitialized), ("BranchCreated", _BranchCreated),
                    ("BranchDeleted", _BranchDeleted), ("BranchReset", _BranchReset),
                    ("NewCommit", _NewCommit), ("CommitAmended", _CommitAmended),
                    ("TagCreated", _TagCreated), ("TagDeleted", _TagDeleted),
                    ("ConfigChanged", _ConfigChanged), ("MetadataChanged", _MetadataChanged),
                    ("GCRan", _GCRan), ("RepoStatusChanged", _RepoStatusChanged)]:
    _cls.__name__ = _cls.__qualname__ = _name
    setattr(UpdateType, _name, _cls)


@dataclass(frozen=True)
class Update:
    """One entry of the ops log: what happened (``kind``) and when (``updated_at``).

    ``backup_path`` is always None (nothing is overwritten here, so there are no backups).
    """

    kind: UpdateType
    updated_at: datetime
    backup_path: str | None = None


async def _ref(storage: Storage, key: str) -> RefData:
    return decode_object(await storage.get(key), RefData, ObjectType.REF, name=key)


async def _gc_runs(storage: Storage) -> tuple[list[Update], list[tuple[datetime, datetime]]]:
    """(a ``GCRan`` entry per finished collection, the time window of every collection).

    A window runs from the run's start to its end (or, for a run without a ``done`` record,
    crashed or still running, to the longest a run may last)."""
    entries: list[Update] = []
    windows: list[tuple[datetime, datetime]] = []
    for run in await list_runs(storage):
        key = gc_done_key(run.run_id) if run.finished else gc_start_key(run.run_id)
        try:
            rec = decode_object(await storage.get(key), GCRecordData, ObjectType.GC_RECORD,
                                name=key)
        except ObjectNotFoundError:  # a run's record vanished meanwhile: nothing to show
            continue
        if rec.finished_at is not None:
            entries.append(Update(_GCRan(), rec.finished_at))
        windows.append((rec.started_at, rec.finished_at or rec.started_at + MAX_RUN))
    return entries, windows


async def ops_log(storage: Storage, genesis: str, created_at: datetime,
                  limit: int = 32) -> list[Update]:
    """Every ref update, config, metadata and status change and garbage collection of the
    repository, newest first.

    Raises
    ------
    FormatError
        If a ref, document or collection record is corrupt.
    """
    gc_entries, gc_windows = await _gc_runs(storage)
    out: list[Update] = [Update(_RepoInitialized(), created_at), *gc_entries]
    branch_keys: dict[str, list[str]] = {}
    tag_keys: list[tuple[str, str]] = []
    async for meta in storage.list(REFS_PREFIX):
        rest = meta.key[len(REFS_PREFIX):]
        head, _, leaf = rest.partition("/")
        if head.startswith("branch.") and len(leaf) == 12 and leaf.isdigit():
            branch_keys.setdefault(head[len("branch."):], []).append(meta.key)
        elif head.startswith("tag.") and leaf in ("ref", "deleted"):
            tag_keys.append((head[len("tag."):], meta.key))
    for name, key in tag_keys:
        ref = await _ref(storage, key)
        tk: UpdateType = (_TagCreated(name=name) if key.endswith("/ref")
                          else _TagDeleted(name=name))
        out.append(Update(tk, ref.written_at))
    amended = {m.key[len(AMEND_PREFIX):] async for m in storage.list(AMEND_PREFIX)}
    versions: dict[str, list[RefData]] = {}
    for name, keys in branch_keys.items():
        keys.sort(reverse=True)  # oldest version first
        versions[name] = await gather_limited([_ref(storage, k) for k in keys], limit)
    # the parents of every snapshot a branch moved to, read at once through the history
    # walker; a snapshot that expiry re-parented is known by its original parent too, and
    # one that garbage collection deleted is left out
    history = History(storage, concurrency=limit)
    moved_to = {r.snapshot_id for rs in versions.values() for r in rs if r.snapshot_id}
    snaps = await history.snapshots(moved_to)
    for name, refs in versions.items():
        prev: str | None = genesis if name == "main" else None
        for ref in refs:
            new = ref.snapshot_id
            snap = snaps.get(new) if new is not None else None
            kind: UpdateType
            if new is not None and new == prev and any(
                    a <= ref.written_at <= b for a, b in gc_windows):
                continue  # a collection's fence: the branch did not move
            if new is None:
                kind = _BranchDeleted(name=name, previous_snap_id=prev)
            elif prev is None:
                kind = _BranchCreated(name=name)
            elif snap is not None and prev in (snap.parent_id, snap.original_parent_id):
                kind = _NewCommit(branch=name, new_snap_id=new)
            elif new in amended:
                kind = _CommitAmended(branch=name, previous_snap_id=prev, new_snap_id=new)
            else:
                kind = _BranchReset(name=name, previous_snap_id=prev)
            out.append(Update(kind, ref.written_at))
            prev = new
    for prefix, cls in ((CONFIG_PREFIX, _ConfigChanged), (METADATA_PREFIX, _MetadataChanged)):
        docs = await gather_limited([read_version(storage, k)
                                     for k in await list_versions(storage, prefix)], limit)
        out.extend(Update(cls(), d.written_at) for d in docs)
    keys = await list_versions(storage, STATUS_PREFIX)
    docs = await gather_limited([read_version(storage, k) for k in keys], limit)
    out.extend(Update(_RepoStatusChanged(status=status_from_doc(d.doc, k)), d.written_at)
               for k, d in zip(keys, docs, strict=True))
    out.sort(key=lambda u: u.updated_at, reverse=True)
    return out
