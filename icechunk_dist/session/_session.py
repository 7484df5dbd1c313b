"""Sessions: a writable or read-only view of one branch, tag or snapshot; and forks."""

from __future__ import annotations

import copy
import threading
from collections import OrderedDict
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from icechunk_dist import _sync, refs
from icechunk_dist._types import new_id
from icechunk_dist.changeset import ChangeSet, MergePolicy
from icechunk_dist.config import RepositoryConfig
from icechunk_dist.errors import (
    BranchMovedError,
    ConflictError,
    InvalidInputError,
    SessionStateError,
    StorageError,
)
from icechunk_dist.format import SnapshotData
from icechunk_dist.session import _rebase
from icechunk_dist.session._commit import find_landed, write_commit
from icechunk_dist.session._core import SessionCore
from icechunk_dist.session._diff import Diff, diff_from_logs
from icechunk_dist.session._gcguard import check_before_ref_write
from icechunk_dist.session._io import read_snapshot
from icechunk_dist.session._parity import SessionParity
from icechunk_dist.session._registry import _REGISTRY as _REGISTRY
from icechunk_dist.session._registry import _REGISTRY_LOCK as _REGISTRY_LOCK
from icechunk_dist.session._registry import _register, _release
from icechunk_dist.session._writeback import PendingWrites
from icechunk_dist.storage import Storage

if TYPE_CHECKING:
    from icechunk_dist.conflicts import ConflictSolver

__all__ = ["ForkSession", "Session"]


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


class Session(SessionParity, SessionCore):
    """A view of the repository through which zarr reads and (if writable) writes.

    Obtain one from :meth:`Repository.writable_session` or
    :meth:`Repository.readonly_session`; do not construct it directly.
    """

    def __init__(
        self,
        *,
        storage: Storage,
        config: RepositoryConfig,
        genesis: str,
        base: SnapshotData,
        branch: str | None,
        read_only: bool,
        branch_tip: refs.BranchTip | None = None,
    ) -> None:
        self._init_core(storage, config, base, None, read_only)
        self._genesis = genesis
        self._branch = branch
        self._tip = branch_tip
        self._lineage_id = new_id()
        self._merged_forks: set[str] = set()
        self._state = "open"
        # every object this session writes is younger than this (docs/design/004-...)
        self._started_at = datetime.now(UTC)
        self._default_commit_metadata: dict[str, Any] = {}  # Repository's, at opening
        # manifests written by earlier attempts of this session's commit (see write_commit)
        self._manifest_reuse: dict[Any, Any] = {}
        # snapshots whose ref write had an unknown outcome (see _try_commit_once)
        self._unsettled: set[str] = set()

    # ------------------------------------------------------------------ properties
    @property
    def branch(self) -> str | None:
        """The branch this session reads from and commits to (None for tag/snapshot)."""
        return self._branch

    def __repr__(self) -> str:
        mode = "read-only" if self._read_only else "writable"
        where = f"branch {self._branch!r}" if self._branch else "detached"
        return f"<icechunk_dist.Session {mode} {where} at snapshot {self.snapshot_id}>"

    def _read_only_reason(self) -> str:
        if self._state == "committed":
            return ("this session has committed; it is now read-only at snapshot "
                    f"{self.snapshot_id}. Open a new writable_session to write again")
        return "this session is read-only (open repo.writable_session(branch) to write)"

    # ------------------------------------------------------------------ pickling
    def __getstate__(self) -> dict[str, Any]:
        if not self._read_only:
            raise SessionStateError(
                "a writable Session cannot be pickled or sent to another process: its "
                "change-set would be lost or applied twice. Use session.fork() to get a "
                "picklable ForkSession for workers, then session.merge(*forks) and "
                "session.commit(...) on the driver (or icechunk_dist.dask.store_dask)."
            )
        return {
            "storage": self._storage, "config": self._config, "genesis": self._genesis,
            "base": self._base, "branch": self._branch,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._init_core(state["storage"], state["config"], state["base"], None, True)
        self._genesis = state["genesis"]
        self._branch = state["branch"]
        self._tip = None
        self._lineage_id = new_id()
        self._started_at = datetime.now(UTC)
        self._merged_forks = set()
        self._state = "open"
        self._default_commit_metadata = {}
        self._manifest_reuse = {}
        self._unsettled = set()

    # ------------------------------------------------------------------ status
    def status(self) -> Diff:
        """The uncommitted changes of this session, as the commit's transaction log will
        record them."""
        from icechunk_dist.session._commit import build_transaction_log

        with self._lock:
            changes = self._changes
        for ac in changes.chunks.values():
            ac.fold()
        return diff_from_logs([build_transaction_log("", self._base, changes)])

    def discard_changes(self) -> None:
        """Drop every uncommitted change (chunk objects already written become garbage)."""
        self._check_writable()
        with self._lock:
            self._changes = ChangeSet()
            self._writes = PendingWrites()  # writes in flight become garbage

    # ------------------------------------------------------------------ savepoints
    def savepoint(self) -> SessionSavepoint:
        """An opaque copy of this session's uncommitted changes, for :meth:`rollback_to`.

        Used by multi-step writes (``icechunk_dist.xarray.to_icechunk``) so that a write that
        fails half-way leaves the session exactly as it was before the write began.

        Raises
        ------
        ReadOnlyError
            If the session is read-only.
        """
        self._check_writable()
        with self._lock:
            return SessionSavepoint(self, copy.deepcopy(self._changes),
                                    frozenset(self._merged_forks))

    def rollback_to(self, savepoint: SessionSavepoint) -> None:
        """Restore the uncommitted changes recorded by :meth:`savepoint` (chunk objects
        written since become garbage, as with :meth:`discard_changes`).

        Raises
        ------
        InvalidInputError
            If ``savepoint`` was taken from another session.
        ReadOnlyError
            If the session is read-only (for example it committed since).
        """
        if not isinstance(savepoint, SessionSavepoint) or savepoint._session is not self:
            raise InvalidInputError("rollback_to takes a savepoint of this same session")
        self._check_writable()
        with self._lock:
            self._changes = copy.deepcopy(savepoint._changes)
            self._merged_forks = set(savepoint._merged_forks)

    # ------------------------------------------------------------------ fork / merge
    def fork(self) -> ForkSession:
        """A small picklable sub-session for workers. Writes nothing to storage.

        The fork reads this session's base snapshot plus its pending metadata (arrays created
        in this transaction are writable from the fork), and records its own chunk writes.
        Bring its changes back with :meth:`merge`.

        Raises
        ------
        SessionStateError
            If this session is read-only or already committed.
        """
        if self._read_only:
            raise SessionStateError(
                "only a writable session can fork; " + self._read_only_reason()
            )
        with self._lock:
            inherited = self._changes.copy_metadata()
            inherited.loose = dict(self._changes.loose)
        return ForkSession._new(
            storage=self._storage, config=self._config, base=self._base,
            lineage_id=self._lineage_id, inherited=inherited,
        )

    def merge(self, *forks: ForkSession, policy: MergePolicy = "fail") -> None:
        """Bring the changes of forks into this session.

        Parameters
        ----------
        forks
            Forks of this session (possibly already merged among themselves).
        policy
            ``"fail"`` (default): two different writes of the same chunk raise
            :class:`ConflictError`. ``"last_wins"``: later forks (in argument order) win.

        Raises
        ------
        ConflictError
            On overlapping writes, naming the array and chunk coordinates.
        SessionStateError
            If a fork is of another session or base, or was already merged.
        """
        self._check_writable()
        for f in forks:
            if not isinstance(f, ForkSession):
                raise InvalidInputError(
                    f"Session.merge takes ForkSession objects, got {type(f).__name__}"
                )
        forks = _distinct(forks)
        for f in forks:  # their chunk objects must have landed before we refer to them
            f._writes.flush_sync()
        with self._lock:
            seen = set(self._merged_forks)
            names = _node_names(self)
            parts: list[tuple[ChangeSet, ChangeSet | None]] = []
            for f in forks:
                _check_same_lineage(self._storage, self._base.id, self._lineage_id, f,
                                    "this session")
                again = f._contributors & seen
                if again:
                    raise SessionStateError(
                        f"fork {sorted(again)[0]} was already merged into this session; "
                        "a fork's changes can be merged only once"
                    )
                seen |= f._contributors
                parts.append((f._changes, f._inherited))
            self._changes = self._changes.merge_many(parts, policy=policy, describe=names)
            self._merged_forks = seen
        for f in forks:
            _release(f)

    # ------------------------------------------------------------------ commit
    def commit(
        self,
        message: str,
        metadata: Mapping[str, Any] | None = None,
        *,
        rebase_with: ConflictSolver | None = None,
        rebase_tries: int = 1_000,
        allow_empty: bool = False,
    ) -> str:
        """Commit every change as one new snapshot on the branch and return its id.

        Order: manifests, transaction log, snapshot, then an atomic ref update. After a
        commit the session is read-only at the new snapshot.

        Parameters
        ----------
        message
            The commit message.
        metadata
            JSON-like mapping stored with the snapshot.
        rebase_with
            A conflict solver; if given and the branch moved since this session began, the
            session rebases onto the new tip and retries (see :meth:`rebase`).
        rebase_tries
            Maximum number of rebase attempts.
        allow_empty
            Commit even if nothing changed.

        Raises
        ------
        ConflictError
            If the branch moved and no solver was given (nothing is changed).
        RebaseFailedError
            If the solver met a conflict it does not resolve.
        SessionStateError
            If there is nothing to commit, or the session is not a writable branch session.
        """
        return _sync.run(self.commit_async(message, metadata, rebase_with=rebase_with,
                                           rebase_tries=rebase_tries, allow_empty=allow_empty))

    async def commit_async(
        self,
        message: str,
        metadata: Mapping[str, Any] | None = None,
        *,
        rebase_with: ConflictSolver | None = None,
        rebase_tries: int = 1_000,
        allow_empty: bool = False,
    ) -> str:
        """Async twin of :meth:`commit`."""
        if self._read_only or self._branch is None:
            raise SessionStateError("cannot commit: " + self._read_only_reason())
        if not isinstance(message, str):
            raise InvalidInputError("commit message must be a string")
        meta = {**self._default_commit_metadata, **dict(metadata or {})}
        if self._changes.is_empty() and not allow_empty:
            raise SessionStateError(
                "nothing to commit: this session has no changes (pass allow_empty=True to "
                "commit anyway)"
            )
        return await _rebase.commit_with_retries(_CommitHandle(self), message, meta,
                                                 rebase_with, rebase_tries)

    async def _try_commit_once(self, message: str, meta: dict[str, Any]) -> str:
        """One attempt: raise ConflictError if the branch is not at our base."""
        assert self._branch is not None
        await self._flush_writes()  # every chunk object referenced has landed, or we fail
        tip = await refs.read_branch(self._storage, self._branch, self._genesis)
        if tip.snapshot_id != self._base.id:
            landed = await find_landed(self._storage, tip.snapshot_id, self._base.id,
                                       self._unsettled)
            if landed is not None:  # an earlier attempt whose outcome was unknown landed
                self._become_committed(landed)
                return landed.id
            raise BranchMovedError(expected_parent=self._base.id, actual_parent=tip.snapshot_id)
        with self._lock:
            changes = self._changes
        for ac in changes.chunks.values():
            ac.fold()
        snap, _tx = await write_commit(self._storage, self._config, self._manifests,
                                       self._base, changes, message=message, metadata=meta,
                                       reuse=self._manifest_reuse)
        # a garbage collection that ran meanwhile may have deleted what we reference
        await check_before_ref_write(self._storage, self._started_at,
                                     self._config.max_concurrent_requests, snap=snap,
                                     base=self._base, changes=changes)
        try:
            await refs.write_branch(self._storage, self._branch, expected=tip,
                                    snapshot_id=snap.id, genesis=self._genesis)
        except StorageError:
            self._unsettled.add(snap.id)  # it may have landed: the next attempt checks
            raise
        self._become_committed(snap)
        return snap.id

    def _become_committed(self, snap: SnapshotData) -> None:
        with self._lock:
            self._base = snap
            self._base_nodes = {n.path: n for n in snap.nodes}
            self._base_loose = {r.key: r for r in snap.loose}
            self._changes = ChangeSet()
            self._manifest_reuse = {}
            self._read_only = True
            self._state = "committed"
            if self._store is not None:
                self._store._read_only_flag_from_session()

    def rebase(self, solver: ConflictSolver) -> None:
        """Move this session's base to the branch tip, replaying its changes on top.

        Raises
        ------
        RebaseFailedError
            If a landed commit conflicts with our changes and ``solver`` does not resolve it.
            The session is unchanged in that case.
        """
        _sync.run(self.rebase_async(solver))

    async def rebase_async(self, solver: ConflictSolver) -> None:
        """Async twin of :meth:`rebase`."""
        if self._read_only or self._branch is None:
            raise SessionStateError("cannot rebase: " + self._read_only_reason())
        await _rebase.rebase_session(_CommitHandle(self), solver)


class SessionSavepoint:
    """What :meth:`Session.savepoint` returns; pass it to :meth:`Session.rollback_to`."""

    __slots__ = ("_changes", "_merged_forks", "_session")

    def __init__(self, session: Session, changes: ChangeSet, merged: frozenset[str]) -> None:
        self._session = session
        self._changes = changes
        self._merged_forks = merged

    def __repr__(self) -> str:
        return f"<icechunk_dist.SessionSavepoint of {self._session!r}>"


class _CommitHandle:
    """The narrow view of a session that ``_rebase`` works on (its ``CommitTarget``)."""

    __slots__ = ("_s",)

    def __init__(self, session: Session) -> None:
        self._s = session

    @property
    def branch(self) -> str | None:
        return self._s._branch

    @property
    def storage(self) -> Storage:
        return self._s._storage

    @property
    def genesis(self) -> str:
        return self._s._genesis

    @property
    def max_concurrent_requests(self) -> int:
        return self._s._config.max_concurrent_requests

    @property
    def snapshot_id(self) -> str:
        return self._s.snapshot_id

    def base_and_changes(self) -> tuple[SnapshotData, ChangeSet]:
        with self._s._lock:
            return self._s._base, self._s._changes

    def replace_base(self, expected: ChangeSet, base: SnapshotData, changes: ChangeSet
                     ) -> None:
        s = self._s
        with s._lock:
            if s._changes is not expected:  # pragma: no cover - concurrent writes meanwhile
                raise ConflictError("the session changed during rebase; retry")
            s._base = base
            s._base_nodes = {n.path: n for n in base.nodes}
            s._base_loose = {r.key: r for r in base.loose}
            s._changes = changes

    async def try_commit_once(self, message: str, meta: dict[str, Any]) -> str:
        return await self._s._try_commit_once(message, meta)


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
    )
    f._carried = frozenset(f._contributors)
    return _register(f) if shared else f


def _distinct(forks: tuple[ForkSession, ...]) -> tuple[ForkSession, ...]:
    """``forks`` with repeats of the fork ``Session.fork()`` returned dropped: thread pools
    (and dask's threaded scheduler) hand every task that very object, so the recipe
    ``session.merge(*results)`` receives it once per task. Any other repeat is refused by
    the merge as a double merge."""
    out: list[ForkSession] = []
    for f in forks:
        if f._original and any(g is f for g in out):
            continue
        out.append(f)
    return tuple(out)


def _node_names(core: SessionCore) -> dict[str, str]:
    """node id -> path of every node ``core`` can see (to name arrays in conflicts)."""
    return {rec.node_id: path for path, rec in core._all_nodes().items()}


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
             lineage_id: str, inherited: ChangeSet) -> ForkSession:
        f = cls.__new__(cls)
        fid = new_id()
        f._setup(storage=storage, config=config, base=base, base_id=base.id,
                 lineage_id=lineage_id, fork_id=fid, inherited=inherited,
                 changes=ChangeSet(), contributors=set(), shared=True)
        f._own = fid
        f._original = True
        _register(f)
        return f

    def _setup(self, *, storage: Storage, config: RepositoryConfig, base: SnapshotData | None,
               base_id: str, lineage_id: str, fork_id: str, inherited: ChangeSet,
               changes: ChangeSet, contributors: set[str], shared: bool = False) -> None:
        placeholder = base if base is not None else SnapshotData(
            id=base_id, parent_id=None, written_at=_EPOCH, message="")
        self._init_core(storage, config, placeholder, changes, False)
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

    def __reduce__(self) -> Any:
        # the copy refers to our chunk objects: they must have landed (or pickling fails)
        self._writes.flush_sync()
        with self._lock:
            # from now on this change-set is also held by the copy: a later write here is a
            # new change-set, and a written copy handed over leaves this process's registry
            if self._own in self._contributors and self._shared:
                _release(self)
            self._carried = frozenset(self._contributors)
            state = {
                "storage": self._storage, "config": self._config, "base_id": self._base_id,
                "lineage_id": self._lineage_id, "fork_id": self._fork_id,
                "inherited": self._inherited, "changes": self._changes,
                "contributors": sorted(self._contributors),
                "shared": self._shared,
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
            "a ForkSession cannot commit: send it back to the driver, merge it with "
            "session.merge(fork) and commit the parent session"
        )

    def child(self) -> ForkSession:
        """A fresh, empty fork with the same parent, base and pending metadata."""
        f = ForkSession.__new__(ForkSession)
        fid = new_id()
        f._setup(storage=self._storage, config=self._config,
                 base=self._base if self._base_loaded else None, base_id=self._base_id,
                 lineage_id=self._lineage_id, fork_id=fid, inherited=self._inherited,
                 changes=ChangeSet(), contributors=set())
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
                    _register(self)
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
        for f in forks:
            if isinstance(f, Session):
                raise SessionStateError(
                    "ForkSession.merge accepts only forks; merge forks into the Session "
                    "with session.merge(*forks)"
                )
            if not isinstance(f, ForkSession):
                raise InvalidInputError(f"cannot merge a {type(f).__name__} into a fork")
        forks = _distinct(forks)
        for f in forks:  # their chunk objects must have landed before we refer to them
            f._writes.flush_sync()
        try:
            with self._lock:
                seen = set(self._contributors)
                names = _node_names(self)
                parts: list[tuple[ChangeSet, ChangeSet | None]] = []
                for f in forks:
                    if f is self:
                        raise SessionStateError("cannot merge a fork into itself")
                    _check_same_lineage(self._storage, self._base_id, self._lineage_id, f,
                                        f"fork {self._fork_id}")
                    again = f._contributors & seen
                    if again:
                        raise SessionStateError(
                            f"fork {sorted(again)[0]} was already merged into fork "
                            f"{self._fork_id}"
                        )
                    seen |= f._contributors
                    names.update(_node_names(f))
                    parts.append((f._changes, f._inherited))
                self._changes = self._changes.merge_many(parts, policy=policy,
                                                         describe=names)
                self._contributors = seen
        except ConflictError as e:
            raise self._named_conflict(e) from None
        for f in forks:
            _release(f)
        return self

    def _named_conflict(self, e: ConflictError) -> ConflictError:
        """``e`` with its array named by path: forks that only wrote chunks of arrays of the
        base snapshot know them by node id until the base is loaded (one cached read)."""
        if e.path is None or self._base_loaded or e.path in self._all_nodes():
            return e
        try:
            _sync.run(self._ensure_base())
        except Exception:
            return e
        path = _node_names(self).get(e.path)
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
                              etag: str | None) -> None:
        await self._ensure_base()
        self._check_writable()
        self._note_write()
        await super().set_virtual_key(key, url, offset, length, etag)

    async def delete_key(self, key: str) -> None:
        await self._ensure_base()
        self._check_writable()
        self._note_write()
        await super().delete_key(key)

    async def iter_keys(self, prefix: str = "") -> Any:
        await self._ensure_base()
        async for k in super().iter_keys(prefix):
            yield k


def _epoch() -> Any:
    from datetime import UTC, datetime

    return datetime(1970, 1, 1, tzinfo=UTC)


_EPOCH = _epoch()
