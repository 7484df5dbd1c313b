"""The repository handle: creation, refs, history, sessions."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from icechunk_dist import _sync, refs
from icechunk_dist._maintenance import GCSummary, expire_snapshots, garbage_collect
from icechunk_dist._repository_parity import RepositoryParity, load_config
from icechunk_dist._types import new_id
from icechunk_dist.config import RepositoryConfig
from icechunk_dist.errors import (
    AlreadyExistsError,
    InvalidInputError,
    RepositoryNotFoundError,
)
from icechunk_dist.format import ObjectType, RepoInfo, SnapshotData, TransactionLogData
from icechunk_dist.session import Diff, Session
from icechunk_dist.session._diff import diff_from_logs
from icechunk_dist.session._io import (
    REPO_KEY,
    gather_limited,
    read_chain,
    read_repo_info,
    read_snapshot,
    read_transaction_log,
    snapshot_key,
    transaction_key,
    write_object,
)
from icechunk_dist.storage import ObjectExistsError, ObjectNotFoundError, Storage

__all__ = ["Repository", "SnapshotInfo"]


@dataclass(frozen=True)
class SnapshotInfo:
    """One entry of a repository's history."""

    id: str
    parent_id: str | None
    written_at: datetime
    message: str
    metadata: Mapping[str, Any] = field(default_factory=dict)


def _info(s: SnapshotData) -> SnapshotInfo:
    return SnapshotInfo(id=s.id, parent_id=s.parent_id, written_at=s.written_at,
                        message=s.message, metadata=dict(s.metadata))


class Repository(RepositoryParity):
    """A versioned Zarr repository on object storage.

    Open one with :meth:`create`, :meth:`open` or :meth:`open_or_create`. A repository
    object is cheap, holds no open connection, and pickles (unless its storage is in-memory).
    """

    def __init__(self, storage: Storage, info: RepoInfo,
                 config: RepositoryConfig | None = None) -> None:
        self._storage = storage
        self._info = info
        self._config = config if config is not None else RepositoryConfig.from_dict(info.config)
        self._default_commit_metadata: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"<icechunk_dist.Repository at {self._storage.describe()}>"

    def __reduce__(self) -> Any:
        return (Repository, (self._storage, self._info, self._config))

    @property
    def storage(self) -> Storage:
        return self._storage

    @property
    def config(self) -> RepositoryConfig:
        """A copy of this repository object's config (changing it changes nothing: pass a
        config to :meth:`open` or :meth:`reopen`, and :meth:`save_config` to persist it)."""
        return self._config.copy()

    # ------------------------------------------------------------------ lifecycle
    @classmethod
    def create(cls, storage: Storage, config: RepositoryConfig | None = None) -> Repository:
        """Create a new repository with an empty initial snapshot on branch ``main``.

        Raises
        ------
        AlreadyExistsError
            If a repository already exists at this location.
        """
        return _sync.run(cls.create_async(storage, config))

    @classmethod
    async def create_async(cls, storage: Storage,
                           config: RepositoryConfig | None = None) -> Repository:
        config = config or RepositoryConfig()
        if not isinstance(config, RepositoryConfig):
            raise InvalidInputError("config must be a RepositoryConfig")
        if await storage.exists(REPO_KEY):
            raise AlreadyExistsError(f"a repository already exists at {storage.describe()}")
        # refs rely on create-if-absent: refuse a backend that ignores it (StorageError)
        await storage.check_conditional_writes()
        now = datetime.now(UTC)
        sid = new_id()
        snap = SnapshotData(id=sid, parent_id=None, written_at=now,
                            message="Repository initialized")
        level = config.compression_level
        await write_object(storage, snapshot_key(sid), snap, ObjectType.SNAPSHOT, level)
        await write_object(storage, transaction_key(sid), TransactionLogData(snapshot_id=sid),
                           ObjectType.TRANSACTION_LOG, level)
        info = RepoInfo(format_version=1, created_at=now, initial_snapshot_id=sid,
                        config=config.to_dict())
        try:
            # the marker is created last and atomically: its existence makes the repository
            await write_object(storage, REPO_KEY, info, ObjectType.REPO, level)
        except ObjectExistsError:
            raise AlreadyExistsError(
                f"a repository already exists at {storage.describe()}"
            ) from None
        return cls(storage, info)

    @classmethod
    def open(cls, storage: Storage, config: RepositoryConfig | None = None) -> Repository:
        """Open an existing repository.

        Parameters
        ----------
        storage
            Where the repository is.
        config
            Settings merged over the repository's saved config (its non-None fields win);
            not persisted unless :meth:`save_config` is called.

        Raises
        ------
        RepositoryNotFoundError
            If there is no repository at this location.
        FormatError
            If the repository marker or its saved config is unreadable or invalid.
        InvalidInputError
            If ``config`` is not a RepositoryConfig.
        """
        return _sync.run(cls._open(storage, config))

    @classmethod
    async def open_async(cls, storage: Storage,
                         config: RepositoryConfig | None = None) -> Repository:
        """Async twin of :meth:`open`."""
        return await _sync.run_async(cls._open(storage, config))

    @classmethod
    async def _open(cls, storage: Storage, config: RepositoryConfig | None) -> Repository:
        if config is not None and not isinstance(config, RepositoryConfig):
            raise InvalidInputError("config must be a RepositoryConfig")
        try:
            info = await read_repo_info(storage)
        except ObjectNotFoundError:
            raise RepositoryNotFoundError(
                f"no repository at {storage.describe()}"
            ) from None
        saved = await load_config(storage, info)
        return cls(storage, info, saved if config is None else saved.merge(config))

    @classmethod
    def open_or_create(cls, storage: Storage,
                       config: RepositoryConfig | None = None) -> Repository:
        """Open the repository at ``storage`` (with ``config`` merged over its saved one),
        creating it with ``config`` first if there is none."""
        try:
            return cls.open(storage, config)
        except RepositoryNotFoundError:
            try:
                return cls.create(storage, config)
            except AlreadyExistsError:  # created concurrently by someone else
                return cls.open(storage, config)

    @staticmethod
    def exists(storage: Storage) -> bool:
        """Whether a repository exists at ``storage``."""
        return _sync.run(storage.exists(REPO_KEY))

    # ------------------------------------------------------------------ refs
    @property
    def _genesis(self) -> str:
        return self._info.initial_snapshot_id

    async def _check_snapshot(self, snapshot_id: str) -> SnapshotData:
        """The snapshot a caller's id names (any case; its ``id`` is the canonical form)."""
        from icechunk_dist._types import parse_id

        return await read_snapshot(self._storage, parse_id(snapshot_id, "snapshot id"))

    def create_branch(self, name: str, snapshot_id: str) -> None:
        """Create branch ``name`` pointing at ``snapshot_id``.

        Raises
        ------
        AlreadyExistsError
            If the branch exists.
        NotFoundError
            If the snapshot does not exist.
        InvalidInputError
            If the name is invalid.
        """
        refs.validate_ref_name(name, "branch")

        async def go() -> None:
            sid = (await self._check_snapshot(snapshot_id)).id
            await refs.write_branch(self._storage, name, expected=None,
                                    snapshot_id=sid, genesis=self._genesis)

        _sync.run(go())

    def list_branches(self) -> set[str]:
        """Names of all branches."""
        return _sync.run(refs.list_branches(self._storage, self._genesis))

    def lookup_branch(self, name: str) -> str:
        """Snapshot id at the tip of a branch.

        Raises
        ------
        NotFoundError
            If the branch does not exist.
        """
        refs.validate_ref_name(name, "branch")
        tip = _sync.run(refs.read_branch(self._storage, name, self._genesis))
        assert tip.snapshot_id is not None
        return tip.snapshot_id

    def reset_branch(self, name: str, snapshot_id: str) -> None:
        """Point an existing branch at another snapshot (history is not rewritten).

        Raises
        ------
        NotFoundError
            If the branch or the snapshot does not exist.
        ConflictError
            If the branch moved while resetting.
        """
        refs.validate_ref_name(name, "branch")

        async def go() -> None:
            sid = (await self._check_snapshot(snapshot_id)).id
            tip = await refs.read_branch(self._storage, name, self._genesis)
            await refs.write_branch(self._storage, name, expected=tip,
                                    snapshot_id=sid, genesis=self._genesis)

        _sync.run(go())

    def delete_branch(self, name: str) -> None:
        """Delete a branch (not ``main``).

        Raises
        ------
        InvalidInputError
            For ``main``.
        NotFoundError
            If the branch does not exist.
        """
        refs.validate_ref_name(name, "branch")
        if name == "main":
            raise InvalidInputError("the main branch cannot be deleted")

        async def go() -> None:
            tip = await refs.read_branch(self._storage, name, self._genesis)
            await refs.write_branch(self._storage, name, expected=tip, snapshot_id=None,
                                    genesis=self._genesis)

        _sync.run(go())

    def create_tag(self, name: str, snapshot_id: str) -> None:
        """Create an immutable tag.

        Raises
        ------
        AlreadyExistsError
            If the tag exists, or existed and was deleted (names are never reused).
        NotFoundError
            If the snapshot does not exist.
        """
        refs.validate_ref_name(name, "tag")

        async def go() -> None:
            sid = (await self._check_snapshot(snapshot_id)).id
            await refs.create_tag(self._storage, name, sid)

        _sync.run(go())

    def list_tags(self) -> set[str]:
        """Names of all (non-deleted) tags."""
        return _sync.run(refs.list_tags(self._storage))

    def lookup_tag(self, name: str) -> str:
        """Snapshot id a tag points to.

        Raises
        ------
        NotFoundError
            If there is no such tag.
        """
        refs.validate_ref_name(name, "tag")
        return _sync.run(refs.read_tag(self._storage, name))

    def delete_tag(self, name: str) -> None:
        """Delete a tag; its name can never be used again.

        Raises
        ------
        NotFoundError
            If there is no such tag.
        """
        refs.validate_ref_name(name, "tag")
        _sync.run(refs.delete_tag(self._storage, name))

    # ------------------------------------------------------------------ history
    def lookup_snapshot(self, snapshot_id: str) -> SnapshotInfo:
        """Information about one snapshot.

        Raises
        ------
        NotFoundError
            If it does not exist.
        """
        return _info(_sync.run(self._check_snapshot(snapshot_id)))

    def ancestry(self, *, branch: str | None = None, tag: str | None = None,
                 snapshot_id: str | None = None) -> Iterator[SnapshotInfo]:
        """History from a branch, tag or snapshot back to the initial snapshot, newest first.

        Raises
        ------
        InvalidInputError
            Unless exactly one of ``branch``, ``tag``, ``snapshot_id`` is given.
        """
        start = self._resolve(branch=branch, tag=tag, snapshot_id=snapshot_id)
        sid: str | None = start
        batch = 128
        concurrency = self._config.max_concurrent_requests
        # lazy, in batches of growing size; each batch is read concurrently along the
        # snapshots' ancestor hints (docs/design/007-ancestor-hints.md)
        while sid is not None:
            snaps = _sync.run(read_chain(self._storage, sid, limit=batch,
                                         concurrency=concurrency))
            for snap in snaps:
                yield _info(snap)
            sid = snaps[-1].parent_id
            batch = min(batch * 2, 4096)

    def _resolve(self, *, branch: str | None, tag: str | None, snapshot_id: str | None) -> str:
        given = [x for x in (branch, tag, snapshot_id) if x is not None]
        if len(given) != 1:
            raise InvalidInputError("give exactly one of branch=, tag=, snapshot_id=")
        if branch is not None:
            return self.lookup_branch(branch)
        if tag is not None:
            return self.lookup_tag(tag)
        assert snapshot_id is not None
        return _sync.run(self._check_snapshot(snapshot_id)).id

    def diff(
        self,
        *,
        from_branch: str | None = None,
        from_tag: str | None = None,
        from_snapshot_id: str | None = None,
        to_branch: str | None = None,
        to_tag: str | None = None,
        to_snapshot_id: str | None = None,
    ) -> Diff:
        """What changed from one snapshot to a later one, read from the transaction logs of
        the commits between them.

        Raises
        ------
        InvalidInputError
            If the ``to`` snapshot does not descend from the ``from`` snapshot, or not exactly
            one of each ``from_*`` / ``to_*`` is given.
        """
        start = self._resolve(branch=from_branch, tag=from_tag, snapshot_id=from_snapshot_id)
        end = self._resolve(branch=to_branch, tag=to_tag, snapshot_id=to_snapshot_id)

        concurrency = self._config.max_concurrent_requests

        async def go() -> Diff:
            snaps = await read_chain(self._storage, end, stop=start,
                                     concurrency=concurrency)
            for snap in snaps:
                if snap.original_parent_id is not None:
                    raise InvalidInputError(
                        f"history between {start} and {end} was expired (expire_snapshots "
                        f"re-parented {snap.id}); diff cannot span it"
                    )
            if start != end and (not snaps or snaps[-1].parent_id != start):
                raise InvalidInputError(
                    f"snapshot {end} does not descend from {start}; diff goes from an "
                    "ancestor to a descendant"
                )
            chain = [snap.id for snap in reversed(snaps)]
            logs = await gather_limited(
                [read_transaction_log(self._storage, s) for s in chain], concurrency)
            return diff_from_logs(logs)

        return _sync.run(go())

    def garbage_collect(self, older_than: datetime, *, dry_run: bool = False,
                        incremental: bool = False) -> GCSummary:
        """Delete objects that no live branch or live tag can reach and that were last
        modified before ``older_than``.

        Roots are the initial snapshot, every live branch tip and every live tag; earlier
        versions of branches and deleted tags keep nothing alive. A run can never corrupt
        a commit, whatever the cut-off: a commit in flight whose objects it deleted fails
        with :class:`GCConflictError` before its ref write (docs/maintenance.md).

        Parameters
        ----------
        older_than
            Timezone-aware cut-off; only objects last modified before it are deleted.
            Readers of snapshots that no ref reaches are protected only by it.
        dry_run
            Count what would be deleted without deleting (and without recording a run).
        incremental
            Do not list ``chunks/``: find garbage chunks through the manifests and
            snapshots that become garbage (what commits, expiry and branch changes left).
            Chunks of writes that never produced a manifest (abandoned sessions, lost task
            attempts) are found only by a full run.

        Raises
        ------
        InvalidInputError
            If ``older_than`` is naive (no timezone).
        ConflictError
            If refs keep changing so that marking never settles (nothing deleted).
        StorageError
            If the run outlives its 12-hour limit (it stops deleting; run it again).
        """
        if not isinstance(older_than, datetime) or older_than.tzinfo is None:
            raise InvalidInputError("older_than must be timezone-aware (e.g. datetime.now(UTC))")
        return _sync.run(garbage_collect(self._storage, older_than, dry_run=dry_run,
                                         incremental=incremental))

    def expire_snapshots(self, older_than: datetime, *, delete_expired_branches: bool = False,
                         delete_expired_tags: bool = False) -> set[str]:
        """Rewrite history so that snapshots written before ``older_than`` that no ref points
        at become unreachable; return their ids. :meth:`garbage_collect` then frees them.

        Every branch tip and tag keeps its snapshot id and reads exactly as before; only
        history shrinks: the oldest snapshot of each ref's history written at or after the
        cut-off gets the initial snapshot as parent. The initial snapshot is never expired.

        Parameters
        ----------
        older_than
            Timezone-aware cut-off, compared with each snapshot's ``written_at``
            (exclusive: a snapshot written exactly then is kept).
        delete_expired_branches
            Also delete branches (never ``main``) whose tip is older than the cut-off.
        delete_expired_tags
            Also delete tags whose snapshot is older than the cut-off.

        Raises
        ------
        InvalidInputError
            If ``older_than`` is naive (no timezone).
        """
        if not isinstance(older_than, datetime) or older_than.tzinfo is None:
            raise InvalidInputError("older_than must be timezone-aware (e.g. datetime.now(UTC))")
        return _sync.run(expire_snapshots(self._storage, older_than,
                                          delete_expired_branches=bool(delete_expired_branches),
                                          delete_expired_tags=bool(delete_expired_tags)))

    # ------------------------------------------------------------------ sessions
    def readonly_session(self, branch: str | None = None, *, tag: str | None = None,
                         snapshot_id: str | None = None,
                         as_of: datetime | None = None) -> Session:
        """A read-only session at a branch tip (default ``main``), a tag or a snapshot.

        ``as_of`` (with a branch): the newest snapshot of the branch's history written at or
        before that time.

        Raises
        ------
        NotFoundError
            If the ref or snapshot does not exist, or nothing is old enough for ``as_of``.
        InvalidInputError
            If more than one of branch/tag/snapshot is given, ``as_of`` with a tag or
            snapshot, or a naive ``as_of``.
        """
        if branch is None and tag is None and snapshot_id is None:
            branch = "main"
        if as_of is not None:
            if branch is None:
                raise InvalidInputError("as_of goes with a branch, not a tag or snapshot id")
            refs.validate_ref_name(branch, "branch")
            snapshot_id, branch = _sync.run(self._snapshot_as_of(branch, as_of)), None
        sid = self._resolve(branch=branch, tag=tag, snapshot_id=snapshot_id)
        snap = _sync.run(read_snapshot(self._storage, sid))
        return Session(storage=self._storage, config=self._config, genesis=self._genesis,
                       base=snap, branch=branch, read_only=True)

    def writable_session(self, branch: str) -> Session:
        """A session that records changes and commits them to ``branch``.

        Raises
        ------
        NotFoundError
            If the branch does not exist.
        """
        refs.validate_ref_name(branch, "branch")

        async def go() -> Session:
            tip = await refs.read_branch(self._storage, branch, self._genesis)
            assert tip.snapshot_id is not None
            snap = await read_snapshot(self._storage, tip.snapshot_id)
            s = Session(storage=self._storage, config=self._config, genesis=self._genesis,
                        base=snap, branch=branch, read_only=False, branch_tip=tip)
            s._default_commit_metadata = dict(self._default_commit_metadata)
            return s

        return _sync.run(go())

    @contextlib.contextmanager
    def transaction(self, branch: str, *, message: str,
                    metadata: Mapping[str, Any] | None = None,
                    **commit_kwargs: Any) -> Iterator[Any]:
        """Context manager yielding a writable store; commits on success, discards on error.

        Examples
        --------
        >>> with repo.transaction("main", message="add x") as store:   # doctest: +SKIP
        ...     zarr.create_array(store, name="x", shape=(10,), dtype="i4")
        """
        session = self.writable_session(branch)
        try:
            yield session.store
        except BaseException:
            session.discard_changes()
            raise
        session.commit(message, metadata, **commit_kwargs)
