"""Forks: :class:`ForkSession`, the picklable sub-session shipped to workers, the records of
their writes, and the per-process registry of the copies of each fork.

``icechunk_dist.dask`` works on forks only through the functions of this module
(``own_changes``, ``fork_with_changes``, ``merge_changes``, ``lineage``, ...), never through a
fork's attributes. ``gather_forks`` pulls every worker's copies of a fork from the registry
(the recipe of plain ``dask.array.to_zarr`` on ``fork.store``, where task results are
discarded); copies are never resolved to one object: each keeps its own change-set
(docs/design/004-fork-copies.md).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from icechunk_dist import _sync
from icechunk_dist._types import new_id
from icechunk_dist.changeset import ChangeSet, MergePolicy
from icechunk_dist.config import RepositoryConfig
from icechunk_dist.errors import (
    ConflictError,
    InvalidInputError,
    SessionStateError,
)
from icechunk_dist.format import ChunkTable, NodeRecord, SnapshotData
from icechunk_dist.session._core import SessionCore, node_names
from icechunk_dist.session._io import read_snapshot
from icechunk_dist.session._writeback import none_pending
from icechunk_dist.storage import Storage, VirtualSources

__all__ = [
    "ForkSession",
    "contributors",
    "distinct",
    "fork_with_changes",
    "lineage",
    "names_of",
    "new_fork",
    "merge_changes",
    "node_names",
    "ready_to_merge",
    "Taken",
    "take_changes",
    "node_record",
    "own_changes",
    "release",
    "take_registered_copies",
    "wait_for_writes",
    "wait_for_writes_sync",
    "written_coords",
]


# snapshots loaded by forks on workers, per process: (storage, id) -> snapshot
_SNAPSHOTS: OrderedDict[tuple[Storage, str], SnapshotData] = OrderedDict()
_SNAP_LOCK = threading.Lock()


async def _load_snapshot_cached(storage: Storage, snapshot_id: str) -> SnapshotData:
    key = (storage, snapshot_id)
    with _SNAP_LOCK:
        hit = _SNAPSHOTS.get(key)
    if hit is not None:
        return hit
    snap = await read_snapshot(storage, snapshot_id)
    with _SNAP_LOCK:
        _SNAPSHOTS[key] = snap
        while len(_SNAPSHOTS) > 32:
            _SNAPSHOTS.popitem(last=False)
    return snap



# ---------------------------------------------------------------------- forks
def _rebuild_fork(state: dict[str, Any]) -> ForkSession:
    # every unpickled copy is its own object with its own change-set (a task's argument
    # must carry back only that task's writes, see docs/design/004-fork-copies.md)
    shared = state.get("shared", False)
    f = ForkSession.__new__(ForkSession)
    f._setup(
        storage=state["storage"], config=state["config"], base=None,
        base_id=state["base_id"], lineage_id=state["lineage_id"], fork_id=state["fork_id"],
        inherited=state["inherited"], changes=state["changes"],
        contributors=set(state["contributors"]), shared=shared,
        generation=state.get("generation", 0), virtual=state.get("virtual"),
    )
    f._carried = frozenset(f._contributors)
    return register(f) if shared else f


def distinct(forks: tuple[ForkSession, ...]) -> tuple[ForkSession, ...]:
    """``forks`` with repeats of the fork ``Session.fork()`` returned dropped: thread pools
    (and dask's threaded scheduler) hand every task that very object, so the recipe
    ``session.merge(*results)`` receives it once per task. Any other repeat is refused by
    the merge as a double merge."""
    if len({id(f) for f in forks}) == len(forks):
        return forks  # no object twice (a distributed write's results)
    out: list[ForkSession] = []
    seen: set[int] = set()
    for f in forks:
        if f._original and id(f) in seen:
            continue
        seen.add(id(f))
        out.append(f)
    return tuple(out)


def _check_same_lineage(storage: Storage, base_id: str, lineage_id: str, f: ForkSession,
                        what: str) -> None:
    if f._storage is not storage and f._storage != storage:
        raise SessionStateError(
            f"fork {f._fork_id} belongs to another repository ({f._storage.describe()})"
        )
    if f._base_id != base_id:
        raise SessionStateError(
            f"fork {f._fork_id} was made from snapshot {f._base_id}, but {what} is based on "
            f"{base_id}: forks merge only into the session they were forked from"
        )
    if f._lineage_id != lineage_id:
        raise SessionStateError(
            f"fork {f._fork_id} was forked from another session than {what}; forks merge "
            "only into their own parent session (or its other forks)"
        )


def ready_to_merge(forks: tuple[Any, ...], *, into: str) -> tuple[ForkSession, ...]:
    """Check that ``forks`` are forks and drop repeats of one object (see :func:`distinct`).

    Raises
    ------
    SessionStateError
        If one is a :class:`Session` (forks merge into sessions, not the reverse).
    InvalidInputError
        If one is not a session at all.
    """
    for f in forks:
        if type(f) is ForkSession:
            continue
        if isinstance(f, SessionCore) and not isinstance(f, ForkSession):
            raise SessionStateError(
                f"merging into {into} accepts only forks; merge forks into the Session "
                "with session.merge(*forks)")
        if not isinstance(f, ForkSession):
            raise InvalidInputError(
                f"merge takes ForkSession objects, got {type(f).__name__}")
    return distinct(forks)


async def wait_for_writes(forks: Sequence[ForkSession]) -> None:
    """Wait until the chunk objects of ``forks`` have landed (a merge must never name an
    object that is not there).

    Raises
    ------
    StorageError
        If one of them could not be written.
    """
    if none_pending():
        return  # no write in flight or failed anywhere in this process
    for f in forks:
        await f._writes.flush()


def wait_for_writes_sync(forks: Sequence[ForkSession]) -> None:
    """:func:`wait_for_writes` from synchronous code (no loop round trip when nothing is in
    flight, the common case on local disk)."""
    if none_pending():
        return
    for f in forks:
        f._writes.flush_sync()


class Taken(NamedTuple):
    """What :func:`take_changes` gathered from forks, in its one pass over them."""

    #: (change-set, inherited metadata) of each fork, in order
    parts: list[tuple[ChangeSet, ChangeSet | None]]
    #: the contributor ids of the merged result
    seen: set[str]
    #: the earliest parent write generation the forks were made at
    generation: int
    #: the node ids the forks wrote chunks of
    written: set[str]
    #: the node ids the forks deleted
    gone: set[str]


def take_changes(forks: Sequence[ForkSession], *, storage: Storage, base_id: str,
                 lineage_id: str, seen: set[str], what: str) -> Taken:
    """The change-sets of ``forks`` to merge into ``what`` (which already holds ``seen``),
    in one pass over the forks (a merge of a thousand forks pays for each fork's objects
    once, see docs/design/018-one-pass-merge.md).

    Raises
    ------
    SessionStateError
        If a fork is of another repository, base or parent session, or already merged.
    """
    seen = set(seen)
    generation = forks[0]._generation if forks else 0
    parts: list[tuple[ChangeSet, ChangeSet | None]] = []
    append = parts.append
    written: set[str] = set()
    gone: set[str] = set()
    for f in forks:
        if not (f._storage is storage and f._base_id == base_id
                and f._lineage_id == lineage_id):
            _check_same_lineage(storage, base_id, lineage_id, f, what)
        if f._generation < generation:
            generation = f._generation
        with f._lock:
            mine = f._contributors
            if not seen.isdisjoint(mine):
                raise SessionStateError(
                    f"fork {sorted(mine & seen)[0]} was already merged into {what}; a "
                    "fork's changes can be merged only once")
            seen |= mine
            cs = f._changes
            append((cs, f._inherited))
            written.update(cs.chunks)
            if cs.deleted:
                gone.update(rec.node_id for rec in cs.deleted.values())
    return Taken(parts, seen, generation, written, gone)


def names_of(forks: Sequence[ForkSession]) -> dict[str, str]:
    """node id -> path of every node ``forks`` can see (to name arrays in conflicts).

    Forks of one session share their base and pending inherited metadata: those are read
    again only when they differ from the previous fork's, then each fork's own node changes
    (a distributed write's forks have none), so naming costs almost nothing per fork.
    """
    names: dict[str, str] = {}
    last: ChangeSet | None = None
    last_base: tuple[str, bool] = ("", False)
    for f in forks:
        inh = f._inherited
        if last is None or f._base_id != last_base[0] or f._base_loaded != last_base[1] or (
                last is not inh and (last.nodes != inh.nodes or last.deleted != inh.deleted)):
            last, last_base = inh, (f._base_id, f._base_loaded)
            names.update(node_names(f))
        else:
            own = f._changes
            if own.nodes or own.deleted:
                names.update({r.node_id: p for p, r in own.deleted.items()})
                names.update(own.node_paths_by_id())
    return names


class ForkSession(SessionCore):
    """A picklable sub-session for a worker: write chunks through :attr:`store`, send the
    fork back, and merge it into its parent :class:`Session`. A fork cannot commit.

    Pickling carries the storage spec, the config, the base snapshot id, the parent's
    pending metadata and the fork's own change-set; never an open client. Unpickling in a
    process that already holds the fork (same fork id) returns that same object, so every
    task of a worker writing through one fork's store shares one change-set.
    """

    @classmethod
    def _new(cls, *, storage: Storage, config: RepositoryConfig, base: SnapshotData,
             lineage_id: str, inherited: ChangeSet, generation: int = 0,
             virtual: VirtualSources | None = None) -> ForkSession:
        f = cls.__new__(cls)
        fid = new_id()
        f._setup(storage=storage, config=config, base=base, base_id=base.id,
                 lineage_id=lineage_id, fork_id=fid, inherited=inherited,
                 changes=ChangeSet(), contributors=set(), shared=True,
                 generation=generation, virtual=virtual)
        f._own = fid
        f._original = True
        register(f)
        return f

    def _setup(self, *, storage: Storage, config: RepositoryConfig, base: SnapshotData | None,
               base_id: str, lineage_id: str, fork_id: str, inherited: ChangeSet,
               changes: ChangeSet, contributors: set[str], shared: bool = False,
               generation: int = 0, virtual: VirtualSources | None = None) -> None:
        placeholder = base if base is not None else SnapshotData(
            id=base_id, parent_id=None, written_at=_EPOCH, message="")
        self._init_core(storage, config, placeholder, changes, False, virtual)
        self._inherited = inherited
        self._base_loaded = base is not None
        self._base_id = base_id
        self._lineage_id = lineage_id
        self._fork_id = fork_id
        # ids of the change-sets this fork holds; its own writes are known as ``_own``
        # (fresh per object), added on the first write. ``_carried``: the ids it held when
        # it was last pickled (or unpickled); a write after that starts a new change-set
        # identity (see _note_write and docs/design/004-fork-copies.md)
        self._contributors = contributors
        self._own = new_id()
        self._carried: frozenset[str] | None = None
        self._original = False  # the very object Session.fork() returned (see _distinct)
        # a fork from Session.fork() is "shared": its copies in each process are listed in
        # the registry (for gather_forks); children, task results and merges are not
        self._shared = shared
        # the parent session's write generation when this fork was made: the session's
        # writes up to it come before the fork's (a merge lets the fork override them)
        self._generation = generation

    def __reduce__(self) -> Any:
        # the copy refers to our chunk objects: they must have landed (or pickling fails)
        self._writes.flush_sync()
        with self._lock:
            # from now on this change-set is also held by the copy: a later write here is a
            # new change-set, and a written copy handed over leaves this process's registry
            if self._own in self._contributors and self._shared:
                release(self)
            self._carried = frozenset(self._contributors)
            state = {
                "storage": self._storage, "config": self._config, "base_id": self._base_id,
                "lineage_id": self._lineage_id, "fork_id": self._fork_id,
                "inherited": self._inherited, "changes": self._changes,
                "contributors": sorted(self._contributors),
                "shared": self._shared, "generation": self._generation,
                "virtual": self._virtual,
            }
        return (_rebuild_fork, (state,))

    def __repr__(self) -> str:
        return (f"<icechunk_dist.ForkSession {self._fork_id} of snapshot {self._base_id}, "
                f"{self._changes.chunk_count()} chunk refs>")

    @property
    def snapshot_id(self) -> str:
        return self._base_id

    @property
    def fork_id(self) -> str:
        """Unique id of this fork."""
        return self._fork_id

    async def _ensure_base(self) -> None:
        if not self._base_loaded:
            snap = await _load_snapshot_cached(self._storage, self._base_id)
            with self._lock:
                if not self._base_loaded:
                    self._base = snap
                    self._base_nodes = {n.path: n for n in snap.nodes}
                    self._base_loose = {r.key: r for r in snap.loose}
                    self._base_loaded = True

    def commit(self, *args: Any, **kwargs: Any) -> str:
        """Forks cannot commit.

        Raises
        ------
        SessionStateError
            Always: merge the fork into its parent session and commit there.
        """
        raise SessionStateError(
            "a ForkSession cannot commit (commits are not allowed on read-only or forked "
            "sessions): send it back to the driver, merge it with session.merge(fork) and "
            "commit the parent session"
        )

    def child(self) -> ForkSession:
        """A fresh, empty fork with the same parent, base and pending metadata."""
        f = ForkSession.__new__(ForkSession)
        fid = new_id()
        f._setup(storage=self._storage, config=self._config,
                 base=self._base if self._base_loaded else None, base_id=self._base_id,
                 lineage_id=self._lineage_id, fork_id=fid, inherited=self._inherited,
                 changes=ChangeSet(), contributors=set(), generation=self._generation,
                 virtual=self._virtual)
        f._own = fid
        return f

    def fork(self) -> ForkSession:
        """Icechunk's name for :meth:`child`: a fresh, empty fork of the same parent session
        (same base snapshot and pending metadata), to hand to another worker; merge it back
        with :meth:`merge` or into the parent with :meth:`Session.merge`."""
        return self.child()

    def _note_write(self) -> None:
        """Called before each write: give this object's writes an identity of their own.

        A copy's first write after it was pickled or unpickled starts a new change-set
        identity: the ids it carried stay with the other copies, so copies of one fork
        written by different tasks merge, while a copy merged twice (or the same copy
        pickled twice) is refused as a double merge.
        """
        with self._lock:
            if self._carried is not None:
                self._contributors = (self._contributors - self._carried) - {self._own}
                self._own = new_id()
                self._carried = None
                if self._shared:
                    register(self)
            self._contributors.add(self._own)

    def _as_contribution(self) -> ForkSession:
        """This fork's changes under a new contributor id (for copies sharing a fork id)."""
        c = self.child()
        with self._lock:
            c._changes = self._changes
            c._writes = self._writes
        if not c._changes.is_empty():
            c._contributors = {c._own}
        return c

    def merge(self, *forks: ForkSession, policy: MergePolicy = "fail") -> ForkSession:
        """Merge other forks of the same parent into this fork (in place); returns self.

        Raises
        ------
        SessionStateError
            If given a :class:`Session`, or a fork of another parent or base, or a fork
            already merged into this one.
        ConflictError
            On overlapping chunk writes (``policy="fail"``).
        """
        forks = ready_to_merge(forks, into="a fork")
        wait_for_writes_sync(forks)
        try:
            with self._lock:
                if any(f is self for f in forks):
                    raise SessionStateError("cannot merge a fork into itself")
                parts, seen, generation, _, _ = take_changes(
                    forks, storage=self._storage, base_id=self._base_id,
                    lineage_id=self._lineage_id, seen=self._contributors,
                    what=f"fork {self._fork_id}")
                names = {**node_names(self), **names_of(forks)}
                self._changes = self._changes.merge_many(parts, policy=policy,
                                                         describe=names)
                self._contributors = seen
                self._generation = min(self._generation, generation)
        except ConflictError as e:
            raise self._named_conflict(e) from None
        release_all(forks)
        return self

    def _named_conflict(self, e: ConflictError) -> ConflictError:
        """``e`` with its array named by path: forks that only wrote chunks of arrays of the
        base snapshot know them by node id until the base is loaded (one cached read)."""
        if e.path is None or self._base_loaded or e.path in node_names(self).values():
            return e
        try:
            _sync.run(self._ensure_base())
        except Exception:
            return e
        path = node_names(self).get(e.path)
        if path is None:
            return e
        return ConflictError(str(e).replace(repr(e.path), repr(path)), path=path,
                             chunk_coords=e.chunk_coords)

    # reads and writes need the base snapshot, which a fork loads lazily on its worker
    async def get_key(self, key: str, start: int = 0, end: int | None = None) -> bytes | None:
        await self._ensure_base()
        return await super().get_key(key, start, end)

    async def size_of(self, key: str) -> int | None:
        await self._ensure_base()
        return await super().size_of(key)

    async def key_exists(self, key: str) -> bool:
        await self._ensure_base()
        return await super().key_exists(key)

    async def set_key(self, key: str, data: bytes) -> None:
        await self._ensure_base()
        self._check_writable()
        self._note_write()
        await super().set_key(key, data)

    async def set_virtual_key(self, key: str, url: str, offset: int, length: int,
                              etag: str | None, modified: int = 0, *,
                              validate_container: bool = False) -> None:
        await self._ensure_base()
        self._check_writable()
        self._note_write()
        await super().set_virtual_key(key, url, offset, length, etag, modified,
                                      validate_container=validate_container)

    async def set_virtual_table(self, array_path: str, make: Callable[[int], ChunkTable], *,
                                validate_containers: bool = True
                                ) -> list[tuple[int, ...]] | None:
        await self._ensure_base()
        self._check_writable()
        self._note_write()
        return await super().set_virtual_table(array_path, make,
                                               validate_containers=validate_containers)

    async def delete_key(self, key: str) -> None:
        await self._ensure_base()
        self._check_writable()
        self._note_write()
        await super().delete_key(key)

    async def iter_keys(self, prefix: str = "") -> Any:
        await self._ensure_base()
        async for k in super().iter_keys(prefix):
            yield k


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


# ---------------------------------------------------------------------- the registry
class _Copies:
    """The copies of one fork (one fork id) that live in this process, once there are two.

    ``gather_forks`` collects them from every worker (:func:`_contribution`); they are not
    resolved to one object, so every copy (a task's argument) keeps only its own writes.
    """

    __slots__ = ("forks",)

    def __init__(self) -> None:
        self.forks: list[ForkSession] = []


def _contribution(copies: Sequence[ForkSession]) -> ForkSession | None:
    """Every write of ``copies`` as one plain fork (identical writes count once)."""
    parts = [f for f in copies if not f._changes.is_empty()]
    if not parts:
        return None
    out = parts[0].child()
    names = names_of(parts)
    with out._lock:
        out._changes = ChangeSet().merge_many(
            [(f._changes, f._inherited) for f in parts], describe=names)
        out._contributors = {out._own}
    return out


# fork id -> this process's copies of that fork: the fork itself while it is the only one
# (every fork of Session.fork() until a copy of it is unpickled here), else a _Copies. A
# merge of a thousand forks then releases each without reading any other object
_REGISTRY: OrderedDict[str, ForkSession | _Copies] = OrderedDict()
_REGISTRY_LOCK = threading.Lock()
_REGISTRY_MAX = 10_000


def _copies_of(entry: ForkSession | _Copies) -> list[ForkSession]:
    return entry.forks if isinstance(entry, _Copies) else [entry]


def register(f: ForkSession) -> ForkSession:
    """List ``f`` among this process's copies of its fork (for gather_forks)."""
    with _REGISTRY_LOCK:
        entry = _REGISTRY.get(f._fork_id)
        if entry is None:
            _REGISTRY[f._fork_id] = f
        else:
            _REGISTRY.move_to_end(f._fork_id)
            if isinstance(entry, _Copies):
                if not any(g is f for g in entry.forks):
                    entry.forks.append(f)
            elif entry is not f:
                group = _REGISTRY[f._fork_id] = _Copies()
                group.forks.extend((entry, f))
        if len(_REGISTRY) > _REGISTRY_MAX:
            # bound the registry by dropping the oldest groups whose copies hold no writes;
            # a copy with writes is never evicted (its writes would be lost silently)
            for key in [k for k, e in _REGISTRY.items()
                        if all(c._changes.is_empty() for c in _copies_of(e))]:
                if len(_REGISTRY) <= _REGISTRY_MAX:
                    break
                del _REGISTRY[key]
    return f


def release(f: ForkSession) -> None:
    """Drop ``f`` from the registry (it was merged or handed over)."""
    release_all((f,))


def release_all(forks: Sequence[ForkSession]) -> None:
    """Drop ``forks`` from the registry, under one acquisition of its lock (a merge of a
    thousand forks releases them all at once)."""
    with _REGISTRY_LOCK:
        for f in forks:
            if not f._shared:
                continue  # only forks of Session.fork() (and their copies) are registered
            entry = _REGISTRY.get(f._fork_id)
            if entry is f:
                del _REGISTRY[f._fork_id]  # the one copy (a fork of Session.fork())
            elif isinstance(entry, _Copies):
                entry.forks = [g for g in entry.forks if g is not f]
                if not entry.forks:
                    del _REGISTRY[f._fork_id]


# ---------------------------------------------------------------------- records of forks
def lineage(f: ForkSession) -> tuple[str, str]:
    """(lineage id of the parent session, base snapshot id): forks with equal lineage merge."""
    return f._lineage_id, f._base_id


def contributors(f: ForkSession) -> frozenset[str]:
    """Ids of the change-sets ``f`` holds (its own writes and the forks merged into it)."""
    with f._lock:
        return frozenset(f._contributors)


def own_changes(f: ForkSession) -> ChangeSet:
    """The change-set of ``f``'s own writes (and merges), not its inherited metadata.

    The object is ``f``'s: do not mutate it. Used to ship a task's writes back as a compact
    columnar record instead of a whole fork.
    """
    f._writes.flush_sync()  # a record must never name an object written behind that has not landed
    with f._lock:
        return f._changes


def fork_with_changes(parent: ForkSession, changes: ChangeSet) -> ForkSession:
    """A fresh child of ``parent`` holding ``changes`` as its own (one new contributor id)."""
    c = parent.child()
    with c._lock:
        c._changes = changes
        if not changes.is_empty():
            c._contributors = {c._own}
    return c


def merge_changes(records: Sequence[ChangeSet], *, names: dict[str, str] | None = None,
                  policy: MergePolicy = "fail") -> ChangeSet:
    """Merge the chunk-write records of tasks (k-way, once per array).

    Raises
    ------
    ConflictError
        If two records wrote the same chunk differently (``policy="fail"``).
    """
    if len(records) == 1:
        return records[0]
    return ChangeSet().merge_many([(r, None) for r in records], policy=policy,
                                  describe=names)


def node_record(f: ForkSession, path: str) -> NodeRecord | None:
    """The node at ``path`` as ``f`` sees it (pending metadata over the base), or None."""
    return f._node(path)


def written_coords(f: ForkSession, node_id: str) -> npt.NDArray[np.int64]:
    """Coordinates of every chunk of node ``node_id`` that ``f`` wrote or deleted."""
    ac = f._changes.chunks.get(node_id)
    if ac is None:
        return np.empty((0, 0), np.int64)
    return np.asarray(ac.table.coords)


def take_registered_copies(fork_id: str) -> ForkSession | None:
    """Remove this process's copies of fork ``fork_id`` from the registry and return their
    writes as one plain fork (None if this process holds none)."""
    with _REGISTRY_LOCK:
        entry = _REGISTRY.pop(fork_id, None)
    return None if entry is None else _contribution(_copies_of(entry))


def new_fork(*, storage: Storage, config: RepositoryConfig, base: SnapshotData,
             lineage_id: str, inherited: ChangeSet, generation: int,
             virtual: VirtualSources | None = None) -> ForkSession:
    """A new shared fork of the session with ``lineage_id`` (what ``Session.fork`` returns),
    made at that session's write ``generation``."""
    return ForkSession._new(storage=storage, config=config, base=base, lineage_id=lineage_id,
                            inherited=inherited, generation=generation, virtual=virtual)
