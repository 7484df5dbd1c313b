"""The repository handle: creation, refs, history, sessions, repository documents.

Every operation is written once, as an ``*_async`` coroutine. It runs on the library's own
event loop whichever loop awaits it (``_sync.on_io_loop``), and its sync twin runs the same
coroutine there and waits (``_sync.run``). History reads, the repository marker, the saved
config and metadata, and the ops log live in modules of functions (``_ancestry.py``,
``_marker.py``, ``_documents.py``, ``_opslog.py``) that the methods call with explicit
arguments.
"""

from __future__ import annotations

import asyncio
import contextlib
import warnings
from collections.abc import AsyncIterator, Iterator, Mapping
from datetime import datetime
from enum import IntEnum
from typing import Any, Literal, Self

from icechunk_dist import _ancestry, _documents, _marker, _opslog, _sync, refs
from icechunk_dist._ancestry import SnapshotInfo, snapshot_info
from icechunk_dist._documents import RepoStatus, check_online
from icechunk_dist._maintenance import (
    ChunkStorageStats,
    GCSummary,
    chunk_storage_stats,
    expire_snapshots,
    garbage_collect,
)
from icechunk_dist._opslog import Update
from icechunk_dist._types import parse_id
from icechunk_dist.config import RepositoryConfig
from icechunk_dist.conflicts import ConflictSolver
from icechunk_dist.credentials import AnyCredential, normalize_authorization
from icechunk_dist.errors import (
    AlreadyExistsError,
    BranchMovedError,
    InvalidInputError,
    RepositoryNotFoundError,
)
from icechunk_dist.format import RepoInfo
from icechunk_dist.session import Diff, Session
from icechunk_dist.session._io import REPO_KEY, read_snapshot
from icechunk_dist.session._rearrange import RearrangeSession
from icechunk_dist.session._session import rewrite_manifests
from icechunk_dist.storage import Storage, VirtualSources

__all__ = ["Repository", "SnapshotInfo", "SpecVersion"]


class SpecVersion(IntEnum):
    """Icechunk's on-disk format versions, for its ``spec_version=`` / ``create_version=``
    arguments. icechunk_dist writes its own format, which has every feature of Icechunk's
    version 2 (amend, repository metadata and status, rearrange sessions): ``v2`` (or
    ``None``) is accepted; ``v1`` is refused."""

    v1 = 1
    v2 = 2

    @staticmethod
    def current() -> SpecVersion:
        """The version a new repository is created with."""
        return SpecVersion.v2


def _check_spec_version(value: Any, name: str) -> None:
    if value is None or (isinstance(value, int) and not isinstance(value, bool)
                         and value == SpecVersion.v2):
        return
    if isinstance(value, int) and value == SpecVersion.v1:
        raise InvalidInputError(
            f"{name}=1 asks for Icechunk's version 1 format, which icechunk_dist does not "
            f"write; leave {name} out (or pass 2): repositories here have every feature of "
            "Icechunk's version 2")
    raise InvalidInputError(f"{name} must be None or 2 (SpecVersion.v2), got {value!r}")


def _restore(cls: type[Repository], storage: Storage, info: RepoInfo,
             config: RepositoryConfig, default_commit_metadata: dict[str, Any],
             authorized: Mapping[str, Any] | None = None) -> Repository:
    repo = cls(storage, info, config, authorized)
    repo._default_commit_metadata = default_commit_metadata
    return repo



def _check_cutoff(when: Any, name: str) -> None:
    if not isinstance(when, datetime) or when.tzinfo is None:
        raise InvalidInputError(f"{name} must be timezone-aware (e.g. datetime.now(UTC))")


class Repository:
    """A versioned Zarr repository on object storage.

    Open one with :meth:`create`, :meth:`open` or :meth:`open_or_create`. A repository
    object is cheap, holds no open connection, and pickles (unless its storage is in-memory).
    Each method has an ``*_async`` twin with the same arguments and errors.
    """

    def __init__(self, storage: Storage, info: RepoInfo,
                 config: RepositoryConfig | None = None,
                 authorize: Mapping[str, AnyCredential | None] | None = None) -> None:
        self._storage = storage
        self._info = info
        self._config = config if config is not None else RepositoryConfig.from_dict(info.config)
        self._default_commit_metadata: dict[str, Any] = {}
        # the virtual chunk containers sessions may read (docs/virtual.md)
        self._authorized = normalize_authorization(authorize)
        self._virtual = VirtualSources(self._config.containers(), self._authorized,
                                       self._config.max_concurrent_requests)

    def __repr__(self) -> str:
        return f"<icechunk_dist.Repository at {self._storage.describe()}>"

    def __reduce__(self) -> Any:
        # the default commit metadata and the authorization travel with the repository
        return (_restore, (type(self), self._storage, self._info, self._config,
                           dict(self._default_commit_metadata), self._authorized))

    @property
    def authorized_virtual_container_prefixes(self) -> set[str]:
        """The url prefixes of the virtual chunk containers this repository object may read
        (``authorize_virtual_chunk_access``)."""
        return set(self._authorized)

    @property
    def storage(self) -> Storage:
        return self._storage

    @property
    def config(self) -> RepositoryConfig:
        """A copy of this repository object's config (changing it changes nothing: pass a
        config to :meth:`open` or :meth:`reopen`, and :meth:`save_config` to persist it)."""
        return self._config.copy()

    @property
    def _genesis(self) -> str:
        return self._info.initial_snapshot_id

    # ------------------------------------------------------------------ lifecycle
    @classmethod
    def create(cls, storage: Storage, config: RepositoryConfig | None = None, *,
               spec_version: SpecVersion | int | None = None,
               authorize_virtual_chunk_access: Mapping[str, Any] | None = None) -> Self:
        """Create a new repository with an empty initial snapshot on branch ``main``.

        Parameters
        ----------
        storage
            Where the repository will live.
        config
            Its settings (saved with it).
        spec_version
            Icechunk's format version: None or 2 (:class:`SpecVersion`); the repository is
            written in icechunk_dist's format, which has every feature of version 2.
        authorize_virtual_chunk_access
            As :meth:`open`: the virtual chunk containers sessions of this object may read,
            url prefix -> credentials.

        Raises
        ------
        AlreadyExistsError
            If a repository already exists at this location.
        InvalidInputError
            If ``config`` is not a RepositoryConfig, ``spec_version`` is 1, or the
            authorization is not a mapping of url prefix to credentials.
        StorageError
            If the backend ignores create-only writes (refs rely on them).
        """
        return _sync.run(cls.create_async(
            storage, config, spec_version=spec_version,
            authorize_virtual_chunk_access=authorize_virtual_chunk_access))

    @classmethod
    @_sync.on_io_loop
    async def create_async(cls, storage: Storage, config: RepositoryConfig | None = None, *,
                           spec_version: SpecVersion | int | None = None,
                           authorize_virtual_chunk_access: Mapping[str, Any] | None = None
                           ) -> Self:
        """Async twin of :meth:`create`."""
        _check_spec_version(spec_version, "spec_version")
        authorized = normalize_authorization(authorize_virtual_chunk_access)
        info = await _marker.create_repository(storage, config or RepositoryConfig())
        return cls(storage, info, None, authorized)

    @classmethod
    def open(cls, storage: Storage, config: RepositoryConfig | None = None, *,
             authorize_virtual_chunk_access: Mapping[str, Any] | None = None) -> Self:
        """Open an existing repository.

        Parameters
        ----------
        storage
            Where the repository is.
        config
            Settings merged over the repository's saved config (its non-None fields win);
            not persisted unless :meth:`save_config` is called.
        authorize_virtual_chunk_access
            url prefix -> credentials (``icechunk_dist.credentials``) or None, for each
            virtual chunk container of the config that sessions may read; virtual chunks
            of any other container are refused (``VirtualChunkAccessError``). Never saved.

        Raises
        ------
        RepositoryNotFoundError
            If there is no repository at this location.
        FormatError
            If the repository marker or its saved config is unreadable or invalid.
        InvalidInputError
            If ``config`` is not a RepositoryConfig, or the authorization is not a mapping
            of url prefix to credentials.
        """
        return _sync.run(cls.open_async(
            storage, config, authorize_virtual_chunk_access=authorize_virtual_chunk_access))

    @classmethod
    @_sync.on_io_loop
    async def open_async(cls, storage: Storage,
                         config: RepositoryConfig | None = None, *,
                         authorize_virtual_chunk_access: Mapping[str, Any] | None = None
                         ) -> Self:
        """Async twin of :meth:`open`."""
        authorized = normalize_authorization(authorize_virtual_chunk_access)
        info, merged = await _marker.open_repository(storage, config)
        return cls(storage, info, merged, authorized)

    @classmethod
    def open_or_create(cls, storage: Storage, config: RepositoryConfig | None = None, *,
                       create_version: SpecVersion | int | None = None,
                       authorize_virtual_chunk_access: Mapping[str, Any] | None = None
                       ) -> Self:
        """Open the repository at ``storage`` (with ``config`` merged over its saved one),
        creating it with ``config`` first if there is none (safe if two processes race).
        ``authorize_virtual_chunk_access`` as :meth:`open`.

        ``create_version`` is Icechunk's format version for a repository that has to be
        created: None or 2 (:class:`SpecVersion`), as for :meth:`create`.

        Raises
        ------
        FormatError
            If an existing repository's marker or saved config is invalid.
        InvalidInputError
            If ``config`` is not a RepositoryConfig, ``create_version`` is 1, or the
            authorization is not a mapping of url prefix to credentials.
        """
        return _sync.run(cls.open_or_create_async(
            storage, config, create_version=create_version,
            authorize_virtual_chunk_access=authorize_virtual_chunk_access))

    @classmethod
    @_sync.on_io_loop
    async def open_or_create_async(cls, storage: Storage,
                                   config: RepositoryConfig | None = None, *,
                                   create_version: SpecVersion | int | None = None,
                                   authorize_virtual_chunk_access: Mapping[str, Any] | None
                                   = None) -> Self:
        """Async twin of :meth:`open_or_create`."""
        _check_spec_version(create_version, "create_version")
        auth = authorize_virtual_chunk_access
        try:
            return await cls.open_async(storage, config, authorize_virtual_chunk_access=auth)
        except RepositoryNotFoundError:
            try:
                return await cls.create_async(storage, config, spec_version=create_version,
                                              authorize_virtual_chunk_access=auth)
            except AlreadyExistsError:  # created concurrently by someone else
                return await cls.open_async(storage, config,
                                            authorize_virtual_chunk_access=auth)

    @staticmethod
    def exists(storage: Storage) -> bool:
        """Whether a repository exists at ``storage``.

        Raises
        ------
        StorageError
            If the storage cannot be reached.
        """
        return _sync.run(Repository.exists_async(storage))

    @staticmethod
    @_sync.on_io_loop
    async def exists_async(storage: Storage) -> bool:
        """Async twin of :meth:`exists`."""
        return await storage.exists(REPO_KEY)

    @staticmethod
    def fetch_spec_version(storage: Storage) -> SpecVersion | None:
        """Icechunk's format version of the repository at ``storage`` (always
        ``SpecVersion.v2`` here: see :class:`SpecVersion`), or None if there is none.

        Raises
        ------
        StorageError
            If the storage cannot be reached.
        """
        return _sync.run(Repository.fetch_spec_version_async(storage))

    @staticmethod
    @_sync.on_io_loop
    async def fetch_spec_version_async(storage: Storage) -> SpecVersion | None:
        """Async twin of :meth:`fetch_spec_version`."""
        return SpecVersion.v2 if await storage.exists(REPO_KEY) else None

    @property
    def spec_version(self) -> SpecVersion:
        """Icechunk's format version this repository has the features of: ``v2``."""
        return SpecVersion.v2

    # ------------------------------------------------------------------ config
    @staticmethod
    def fetch_config(storage: Storage) -> RepositoryConfig | None:
        """The config saved in the repository at ``storage``.

        Raises
        ------
        RepositoryNotFoundError
            If there is no repository there (as Icechunk's).
        FormatError
            If it is corrupt.
        """
        return _sync.run(Repository.fetch_config_async(storage))

    @staticmethod
    @_sync.on_io_loop
    async def fetch_config_async(storage: Storage) -> RepositoryConfig | None:
        """Async twin of :meth:`fetch_config`."""
        return await _marker.fetch_config(storage)

    def save_config(self) -> None:
        """Persist this repository object's config; later :meth:`open` calls use it.

        Raises
        ------
        InvalidInputError
            If the config cannot be serialised.
        ReadOnlyError
            If the repository status is read-only.
        """
        _sync.run(self.save_config_async())

    @_sync.on_io_loop
    async def save_config_async(self) -> None:
        """Async twin of :meth:`save_config`."""
        await check_online(self._storage, "save the config")
        await _documents.save_config(self._storage, self._config)

    def reopen(self, config: RepositoryConfig | None = None, *,
               authorize_virtual_chunk_access: Any = ...) -> Self:
        """A new repository object on the same storage with ``config`` merged over this
        one's (not saved: call :meth:`save_config` on the result to persist it). No I/O.
        ``authorize_virtual_chunk_access``: replaces this object's authorization (None:
        nothing authorized); left out, it is kept.

        As Icechunk's, the new object starts without default commit metadata
        (:meth:`set_default_commit_metadata` belongs to one repository object).

        Raises
        ------
        InvalidInputError
            If ``config`` is not a RepositoryConfig, or the authorization is invalid.
        """
        new = self._config.copy() if config is None else self._config.merge(config)
        auth = (self._authorized if authorize_virtual_chunk_access is ...
                else authorize_virtual_chunk_access)
        return type(self)(self._storage, self._info, new, normalize_authorization(auth))

    @_sync.on_io_loop
    async def reopen_async(self, config: RepositoryConfig | None = None, *,
                           authorize_virtual_chunk_access: Any = ...) -> Self:
        """Async twin of :meth:`reopen`."""
        return self.reopen(config, authorize_virtual_chunk_access=authorize_virtual_chunk_access)

    # ------------------------------------------------------------------ metadata
    @property
    def metadata(self) -> dict[str, Any]:
        """The repository-level user metadata (a fresh read)."""
        return self.get_metadata()

    def get_metadata(self) -> dict[str, Any]:
        """The repository-level user metadata.

        Raises
        ------
        FormatError
            If the stored metadata is corrupt.
        """
        return _sync.run(self.get_metadata_async())

    @_sync.on_io_loop
    async def get_metadata_async(self) -> dict[str, Any]:
        """Async twin of :meth:`get_metadata`."""
        return await _documents.read_metadata(self._storage)

    def set_metadata(self, metadata: dict[str, Any]) -> None:
        """Replace the repository metadata with ``metadata`` (JSON-like values).

        Raises
        ------
        InvalidInputError
            If it is not a dict of JSON-serialisable values with string keys.
        ReadOnlyError
            If the repository status is read-only.
        """
        _sync.run(self.set_metadata_async(metadata))

    @_sync.on_io_loop
    async def set_metadata_async(self, metadata: dict[str, Any]) -> None:
        """Async twin of :meth:`set_metadata`."""
        await check_online(self._storage, "set the repository metadata")
        await _documents.write_metadata(self._storage, metadata)

    def update_metadata(self, metadata: dict[str, Any]) -> dict[str, Any]:
        """Merge ``metadata`` into the repository metadata (its keys win) and return the
        result. Concurrent updates are applied one after the other, none is lost.

        Raises
        ------
        InvalidInputError
            If it is not a dict of JSON-serialisable values with string keys.
        ReadOnlyError
            If the repository status is read-only.
        """
        return _sync.run(self.update_metadata_async(metadata))

    @_sync.on_io_loop
    async def update_metadata_async(self, metadata: dict[str, Any]) -> dict[str, Any]:
        """Async twin of :meth:`update_metadata`."""
        await check_online(self._storage, "update the repository metadata")
        return await _documents.merge_metadata(self._storage, metadata)

    def set_default_commit_metadata(self, metadata: dict[str, Any]) -> None:
        """Metadata merged into every commit of sessions opened *after* this call (a
        commit's own metadata wins on equal keys). Pass ``{}`` to clear it. No I/O.

        Raises
        ------
        InvalidInputError
            If it is not a dict with string keys.
        """
        self._default_commit_metadata = _documents.check_json_dict(
            metadata, "default commit metadata")

    def default_commit_metadata(self) -> dict[str, Any]:
        """The default commit metadata set with :meth:`set_default_commit_metadata`."""
        return dict(self._default_commit_metadata)

    # ------------------------------------------------------------------ status
    @property
    def status(self) -> RepoStatus:
        """The repository status (a fresh read): :meth:`get_status`."""
        return self.get_status()

    def get_status(self) -> RepoStatus:
        """The repository status: ``RepoAvailability.online`` (since the repository's
        creation, unless set otherwise) or ``read_only``.

        Raises
        ------
        FormatError
            If the stored status is corrupt.
        """
        return _sync.run(self.get_status_async())

    @_sync.on_io_loop
    async def get_status_async(self) -> RepoStatus:
        """Async twin of :meth:`get_status`."""
        return await _documents.read_status(self._storage, self._info.created_at)

    def set_status(self, status: RepoStatus) -> None:
        """Set the repository status, for every process that uses the repository.

        While it is ``RepoAvailability.read_only``, reads work and every write is refused
        with :class:`ReadOnlyError` ("the repository status is read-only"): writable and
        rearrange sessions, commits and amends (also of sessions opened before), branch and
        tag changes, metadata and config saves, garbage collection and expiry. Setting the
        status is never refused; it shows in the ops log (``UpdateType.RepoStatusChanged``).

        Raises
        ------
        InvalidInputError
            If ``status`` is not a :class:`RepoStatus`.
        """
        _sync.run(self.set_status_async(status))

    @_sync.on_io_loop
    async def set_status_async(self, status: RepoStatus) -> None:
        """Async twin of :meth:`set_status`."""
        await _documents.write_status(self._storage, status)

    # ------------------------------------------------------------------ refs
    def create_branch(self, branch: str, snapshot_id: str) -> None:
        """Create branch ``branch`` pointing at ``snapshot_id``.

        Raises
        ------
        AlreadyExistsError
            If the branch exists.
        NotFoundError
            If the snapshot does not exist.
        InvalidInputError
            If the name is invalid.
        ReadOnlyError
            If the repository status is read-only (:meth:`set_status`).
        """
        _sync.run(self.create_branch_async(branch, snapshot_id))

    @_sync.on_io_loop
    async def create_branch_async(self, branch: str, snapshot_id: str) -> None:
        """Async twin of :meth:`create_branch`."""
        refs.validate_ref_name(branch, "branch")
        await check_online(self._storage, f"create branch {branch!r}")
        sid = (await _ancestry.check_snapshot(self._storage, snapshot_id)).id
        await refs.write_branch(self._storage, branch, expected=None,
                                snapshot_id=sid, genesis=self._genesis)

    def list_branches(self) -> set[str]:
        """Names of all branches."""
        return _sync.run(self.list_branches_async())

    @_sync.on_io_loop
    async def list_branches_async(self) -> set[str]:
        """Async twin of :meth:`list_branches`."""
        return await refs.list_branches(self._storage, self._genesis)

    def lookup_branch(self, branch: str) -> str:
        """Snapshot id at the tip of a branch.

        Raises
        ------
        NotFoundError
            If the branch does not exist.
        """
        return _sync.run(self.lookup_branch_async(branch))

    @_sync.on_io_loop
    async def lookup_branch_async(self, branch: str) -> str:
        """Async twin of :meth:`lookup_branch`."""
        refs.validate_ref_name(branch, "branch")
        tip = await refs.read_branch(self._storage, branch, self._genesis)
        assert tip.snapshot_id is not None
        return tip.snapshot_id

    def reset_branch(self, branch: str, snapshot_id: str, *,
                     from_snapshot_id: str | None = None) -> None:
        """Point an existing branch at another snapshot (history is not rewritten).

        Parameters
        ----------
        branch
            The branch to move.
        snapshot_id
            Where it will point.
        from_snapshot_id
            If given, reset only if the branch points there now.

        Raises
        ------
        NotFoundError
            If the branch or the snapshot does not exist.
        BranchMovedError
            If the branch does not point at ``from_snapshot_id``, or moved while resetting.
        ReadOnlyError
            If the repository status is read-only (:meth:`set_status`).
        """
        _sync.run(self.reset_branch_async(branch, snapshot_id,
                                          from_snapshot_id=from_snapshot_id))

    @_sync.on_io_loop
    async def reset_branch_async(self, branch: str, snapshot_id: str, *,
                                 from_snapshot_id: str | None = None) -> None:
        """Async twin of :meth:`reset_branch`."""
        refs.validate_ref_name(branch, "branch")
        await check_online(self._storage, f"reset branch {branch!r}")
        sid = (await _ancestry.check_snapshot(self._storage, snapshot_id)).id
        if from_snapshot_id is not None:
            from_snapshot_id = parse_id(from_snapshot_id, "snapshot id")
        tip = await refs.read_branch(self._storage, branch, self._genesis)
        if from_snapshot_id is not None and tip.snapshot_id != from_snapshot_id:
            raise BranchMovedError(
                f"branch update conflict: branch {branch!r} points to {tip.snapshot_id}, "
                f"not to from_snapshot_id={from_snapshot_id}; nothing was changed",
                expected_parent=from_snapshot_id, actual_parent=tip.snapshot_id)
        await refs.write_branch(self._storage, branch, expected=tip,
                                snapshot_id=sid, genesis=self._genesis)

    def delete_branch(self, branch: str) -> None:
        """Delete a branch (not ``main``).

        Raises
        ------
        InvalidInputError
            For ``main``.
        NotFoundError
            If the branch does not exist.
        ReadOnlyError
            If the repository status is read-only (:meth:`set_status`).
        """
        _sync.run(self.delete_branch_async(branch))

    @_sync.on_io_loop
    async def delete_branch_async(self, branch: str) -> None:
        """Async twin of :meth:`delete_branch`."""
        refs.validate_ref_name(branch, "branch")
        if branch == "main":
            raise InvalidInputError("the main branch cannot be deleted")
        await check_online(self._storage, f"delete branch {branch!r}")
        tip = await refs.read_branch(self._storage, branch, self._genesis)
        await refs.write_branch(self._storage, branch, expected=tip, snapshot_id=None,
                                genesis=self._genesis)

    def create_tag(self, tag: str, snapshot_id: str) -> None:
        """Create an immutable tag.

        Raises
        ------
        AlreadyExistsError
            If the tag exists, or existed and was deleted (names are never reused).
        NotFoundError
            If the snapshot does not exist.
        ReadOnlyError
            If the repository status is read-only (:meth:`set_status`).
        """
        _sync.run(self.create_tag_async(tag, snapshot_id))

    @_sync.on_io_loop
    async def create_tag_async(self, tag: str, snapshot_id: str) -> None:
        """Async twin of :meth:`create_tag`."""
        refs.validate_ref_name(tag, "tag")
        await check_online(self._storage, f"create tag {tag!r}")
        sid = (await _ancestry.check_snapshot(self._storage, snapshot_id)).id
        await refs.create_tag(self._storage, tag, sid)

    def list_tags(self) -> set[str]:
        """Names of all (non-deleted) tags."""
        return _sync.run(self.list_tags_async())

    @_sync.on_io_loop
    async def list_tags_async(self) -> set[str]:
        """Async twin of :meth:`list_tags`."""
        return await refs.list_tags(self._storage)

    def lookup_tag(self, tag: str) -> str:
        """Snapshot id a tag points to.

        Raises
        ------
        NotFoundError
            If there is no such tag.
        """
        return _sync.run(self.lookup_tag_async(tag))

    @_sync.on_io_loop
    async def lookup_tag_async(self, tag: str) -> str:
        """Async twin of :meth:`lookup_tag`."""
        refs.validate_ref_name(tag, "tag")
        return await refs.read_tag(self._storage, tag)

    def delete_tag(self, tag: str) -> None:
        """Delete a tag; its name can never be used again.

        Raises
        ------
        NotFoundError
            If there is no such tag.
        ReadOnlyError
            If the repository status is read-only (:meth:`set_status`).
        """
        _sync.run(self.delete_tag_async(tag))

    @_sync.on_io_loop
    async def delete_tag_async(self, tag: str) -> None:
        """Async twin of :meth:`delete_tag`."""
        refs.validate_ref_name(tag, "tag")
        await check_online(self._storage, f"delete tag {tag!r}")
        await refs.delete_tag(self._storage, tag)

    # ------------------------------------------------------------------ history
    async def _resolve(self, *, branch: str | None, tag: str | None,
                       snapshot_id: str | None) -> str:
        given = [x for x in (branch, tag, snapshot_id) if x is not None]
        if len(given) != 1:
            raise InvalidInputError("give exactly one of branch=, tag=, snapshot_id=")
        if branch is not None:
            return await self.lookup_branch_async(branch)
        if tag is not None:
            return await self.lookup_tag_async(tag)
        assert snapshot_id is not None
        return (await _ancestry.check_snapshot(self._storage, snapshot_id)).id

    def lookup_snapshot(self, snapshot_id: str) -> SnapshotInfo:
        """Information about one snapshot.

        Raises
        ------
        NotFoundError
            If it does not exist.
        """
        return _sync.run(self.lookup_snapshot_async(snapshot_id))

    @_sync.on_io_loop
    async def lookup_snapshot_async(self, snapshot_id: str) -> SnapshotInfo:
        """Async twin of :meth:`lookup_snapshot`."""
        return snapshot_info(await _ancestry.check_snapshot(self._storage, snapshot_id))

    def ancestry(self, *, branch: str | None = None, tag: str | None = None,
                 snapshot_id: str | None = None) -> Iterator[SnapshotInfo]:
        """History from a branch, tag or snapshot back to the initial snapshot, newest
        first, read lazily in batches.

        Raises
        ------
        InvalidInputError
            Unless exactly one of ``branch``, ``tag``, ``snapshot_id`` is given.
        """
        return _sync.iterate_pages(self._ancestry_pages(branch, tag, snapshot_id))

    async def ancestry_async(self, *, branch: str | None = None, tag: str | None = None,
                             snapshot_id: str | None = None) -> AsyncIterator[SnapshotInfo]:
        """Async iterator twin of :meth:`ancestry`."""
        async for info in _sync.aiterate_pages(self._ancestry_pages(branch, tag, snapshot_id)):
            yield info

    def async_ancestry(self, *, branch: str | None = None, tag: str | None = None,
                       snapshot_id: str | None = None) -> AsyncIterator[SnapshotInfo]:
        """Icechunk's name for :meth:`ancestry_async`."""
        return self.ancestry_async(branch=branch, tag=tag, snapshot_id=snapshot_id)

    async def _ancestry_pages(self, branch: str | None, tag: str | None,
                              snapshot_id: str | None) -> AsyncIterator[list[SnapshotInfo]]:
        start = await self._resolve(branch=branch, tag=tag, snapshot_id=snapshot_id)
        async for snaps in _ancestry.ancestry_batches(self._storage, start,
                                                     self._config.max_concurrent_requests):
            yield [snapshot_info(s) for s in snaps]

    def diff(self, *, from_branch: str | None = None, from_tag: str | None = None,
             from_snapshot_id: str | None = None, to_branch: str | None = None,
             to_tag: str | None = None, to_snapshot_id: str | None = None) -> Diff:
        """What changed from one snapshot to a later one, read from the transaction logs of
        the commits between them.

        Raises
        ------
        InvalidInputError
            If the ``to`` snapshot does not descend from the ``from`` snapshot, or not exactly
            one of each ``from_*`` / ``to_*`` is given.
        """
        return _sync.run(self.diff_async(
            from_branch=from_branch, from_tag=from_tag, from_snapshot_id=from_snapshot_id,
            to_branch=to_branch, to_tag=to_tag, to_snapshot_id=to_snapshot_id))

    @_sync.on_io_loop
    async def diff_async(self, *, from_branch: str | None = None, from_tag: str | None = None,
                         from_snapshot_id: str | None = None, to_branch: str | None = None,
                         to_tag: str | None = None, to_snapshot_id: str | None = None) -> Diff:
        """Async twin of :meth:`diff`."""
        start = await self._resolve(branch=from_branch, tag=from_tag,
                                    snapshot_id=from_snapshot_id)
        end = await self._resolve(branch=to_branch, tag=to_tag, snapshot_id=to_snapshot_id)
        return await _ancestry.diff(self._storage, start, end,
                                   self._config.max_concurrent_requests)

    def ops_log(self) -> Iterator[Update]:
        """Who moved which ref when, newest first: commits, amends, branch creation, reset
        and deletion, tag creation and deletion, config and metadata changes, and the
        creation of the repository. Read from the immutable objects each change creates,
        so every update that landed is there, whatever process made it.

        Raises
        ------
        FormatError
            If a ref or document object is corrupt.
        """
        return iter(_sync.run(self._ops_log()))

    async def ops_log_async(self) -> AsyncIterator[Update]:
        """Async iterator twin of :meth:`ops_log`."""
        for update in await _sync.run_async(self._ops_log()):
            yield update

    async def _ops_log(self) -> list[Update]:
        return await _opslog.ops_log(self._storage, self._genesis, self._info.created_at,
                                     self._config.max_concurrent_requests)

    # ------------------------------------------------------------------ maintenance
    def garbage_collect(self, delete_object_older_than: datetime, *, dry_run: bool = False,
                        incremental: bool = False) -> GCSummary:
        """Delete objects that no live branch or live tag can reach and that were last
        modified before ``delete_object_older_than``.

        Roots are the initial snapshot, every live branch tip and every live tag; earlier
        versions of branches and deleted tags keep nothing alive. A run can never corrupt
        a commit, whatever the cut-off: a commit in flight whose objects it deleted fails
        with :class:`GCConflictError` before its ref write (docs/maintenance.md).

        Parameters
        ----------
        delete_object_older_than
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
            If the cut-off is naive (no timezone).
        ConflictError
            If refs keep changing so that marking never settles (nothing deleted).
        StorageError
            If the run outlives its 12-hour limit (it stops deleting; run it again).
        ReadOnlyError
            If the repository status is read-only (:meth:`set_status`).
        """
        return _sync.run(self.garbage_collect_async(
            delete_object_older_than, dry_run=dry_run, incremental=incremental))

    @_sync.on_io_loop
    async def garbage_collect_async(self, delete_object_older_than: datetime, *,
                                    dry_run: bool = False,
                                    incremental: bool = False) -> GCSummary:
        """Async twin of :meth:`garbage_collect`."""
        _check_cutoff(delete_object_older_than, "delete_object_older_than")
        if not dry_run:
            await check_online(self._storage, "garbage collect")
        return await garbage_collect(self._storage, delete_object_older_than,
                                     dry_run=dry_run, incremental=incremental)

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
        ReadOnlyError
            If the repository status is read-only (:meth:`set_status`).
        """
        return _sync.run(self.expire_snapshots_async(
            older_than, delete_expired_branches=delete_expired_branches,
            delete_expired_tags=delete_expired_tags))

    @_sync.on_io_loop
    async def expire_snapshots_async(self, older_than: datetime, *,
                                     delete_expired_branches: bool = False,
                                     delete_expired_tags: bool = False) -> set[str]:
        """Async twin of :meth:`expire_snapshots`."""
        _check_cutoff(older_than, "older_than")
        await check_online(self._storage, "expire snapshots")
        return await expire_snapshots(self._storage, older_than,
                                      delete_expired_branches=bool(delete_expired_branches),
                                      delete_expired_tags=bool(delete_expired_tags))

    def chunk_storage_stats(self) -> ChunkStorageStats:
        """Bytes of the chunks that the snapshots reachable from a branch or tag use:
        native (each chunk object once), virtual (each byte range once) and inline.
        Unreachable snapshots (after ``reset_branch`` or ``expire_snapshots``) do not count;
        :meth:`garbage_collect` frees them.

        Raises
        ------
        FormatError
            If a snapshot or manifest is corrupt.
        """
        return _sync.run(self.chunk_storage_stats_async())

    @_sync.on_io_loop
    async def chunk_storage_stats_async(self) -> ChunkStorageStats:
        """Async twin of :meth:`chunk_storage_stats`."""
        return await chunk_storage_stats(self._storage)

    def total_chunks_storage(self) -> int:
        """Deprecated, as in Icechunk: ``chunk_storage_stats().native_bytes``.

        Raises
        ------
        FormatError
            If a snapshot or manifest is corrupt.
        """
        warnings.warn(
            "The ``total_chunks_storage`` method has been deprecated in favour of the "
            "``chunk_storage_stats`` method: use ``.chunk_storage_stats().native_bytes``",
            DeprecationWarning, stacklevel=2)
        return self.chunk_storage_stats().native_bytes

    async def total_chunks_storage_async(self) -> int:
        """Deprecated async twin of :meth:`total_chunks_storage`."""
        warnings.warn(
            "The ``total_chunks_storage_async`` method has been deprecated in favour of the "
            "``chunk_storage_stats_async`` method: use "
            "``.chunk_storage_stats_async().native_bytes``",
            DeprecationWarning, stacklevel=2)
        return (await self.chunk_storage_stats_async()).native_bytes

    def rewrite_manifests(self, message: str, *, branch: str,
                          metadata: dict[str, Any] | None = None,
                          commit_method: Literal["new_commit", "amend"] = "new_commit") -> str:
        """Rewrite the manifests of every array on ``branch`` with this repository object's
        manifest splitting (``RepositoryConfig.manifest``), in one commit; return its id.

        The data does not change (the commit's diff is empty); arrays whose split size was
        fixed when they were created get the configured one. The commit's metadata holds
        the splitting used under ``"__icechunk"`` -> ``"splitting_config"``.

        Parameters
        ----------
        message
            The commit message.
        branch
            The branch to rewrite.
        metadata
            More commit metadata.
        commit_method
            ``"new_commit"`` (default), or ``"amend"`` to replace the branch tip.

        Raises
        ------
        NotFoundError
            If the branch does not exist.
        ConflictError
            If the branch moved while rewriting (nothing is changed; run it again).
        ReadOnlyError
            If the repository status is read-only.
        InvalidInputError
            On a bad ``commit_method`` or metadata.
        SessionStateError
            For ``"amend"`` of the repository's first commit.
        """
        return _sync.run(self.rewrite_manifests_async(
            message, branch=branch, metadata=metadata, commit_method=commit_method))

    @_sync.on_io_loop
    async def rewrite_manifests_async(
            self, message: str, *, branch: str, metadata: dict[str, Any] | None = None,
            commit_method: Literal["new_commit", "amend"] = "new_commit") -> str:
        """Async twin of :meth:`rewrite_manifests`."""
        if commit_method not in ("new_commit", "amend"):
            raise InvalidInputError(
                f"commit_method must be 'new_commit' or 'amend', got {commit_method!r}")
        session = await self.writable_session_async(branch)
        return await rewrite_manifests(session, message, metadata,
                                       amend=commit_method == "amend")

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
        return _sync.run(self.readonly_session_async(branch, tag=tag, snapshot_id=snapshot_id,
                                                      as_of=as_of))

    @_sync.on_io_loop
    async def readonly_session_async(self, branch: str | None = None, *,
                                     tag: str | None = None, snapshot_id: str | None = None,
                                     as_of: datetime | None = None) -> Session:
        """Async twin of :meth:`readonly_session`."""
        if branch is None and tag is None and snapshot_id is None:
            branch = "main"
        if as_of is not None:
            if branch is None:
                raise InvalidInputError("as_of goes with a branch, not a tag or snapshot id")
            refs.validate_ref_name(branch, "branch")
            snapshot_id = await _ancestry.snapshot_as_of(self._storage, self._genesis,
                                                        branch, as_of)
            branch = None
        sid = await self._resolve(branch=branch, tag=tag, snapshot_id=snapshot_id)
        snap = await read_snapshot(self._storage, sid)
        return Session(storage=self._storage, config=self._config, genesis=self._genesis,
                       base=snap, branch=branch, read_only=True, virtual=self._virtual)

    def writable_session(self, branch: str) -> Session:
        """A session that records changes and commits them to ``branch``.

        Raises
        ------
        NotFoundError
            If the branch does not exist.
        ReadOnlyError
            If the repository status is read-only (:meth:`set_status`).
        """
        return _sync.run(self.writable_session_async(branch))

    @_sync.on_io_loop
    async def writable_session_async(self, branch: str) -> Session:
        """Async twin of :meth:`writable_session`."""
        return await self._branch_session(branch, Session, self._config)

    def rearrange_session(self, branch: str) -> Session:
        """A session that only moves and renames nodes (:meth:`Session.move`), then commits
        the new layout to ``branch`` without rewriting any chunk or manifest.

        Raises
        ------
        NotFoundError
            If the branch does not exist.
        ReadOnlyError
            If the repository status is read-only (:meth:`set_status`).
        """
        return _sync.run(self.rearrange_session_async(branch))

    @_sync.on_io_loop
    async def rearrange_session_async(self, branch: str) -> Session:
        """Async twin of :meth:`rearrange_session`."""
        return await self._branch_session(branch, RearrangeSession, self._config.copy())

    async def _branch_session(self, branch: str, kind: type[Session],
                              config: RepositoryConfig) -> Session:
        refs.validate_ref_name(branch, "branch")
        doing = ("create a writable session" if kind is Session
                 else "create a rearrange session")
        # both at once: the status check costs no extra round trip
        online, tip = await asyncio.gather(
            check_online(self._storage, doing),
            refs.read_branch(self._storage, branch, self._genesis), return_exceptions=True)
        for outcome in (online, tip):
            if isinstance(outcome, BaseException):
                raise outcome
        assert isinstance(tip, refs.BranchTip)
        assert tip.snapshot_id is not None
        snap = await read_snapshot(self._storage, tip.snapshot_id)
        return kind(storage=self._storage, config=config, genesis=self._genesis, base=snap,
                    branch=branch, read_only=False, branch_tip=tip,
                    default_commit_metadata=self._default_commit_metadata,
                    virtual=self._virtual)

    @contextlib.contextmanager
    def transaction(self, branch: str, *, message: str,
                    metadata: Mapping[str, Any] | None = None,
                    rebase_with: ConflictSolver | None = None, rebase_tries: int = 1_000,
                    allow_empty: bool = False) -> Iterator[Any]:
        """Context manager yielding a writable store; commits on success, discards on error.

        Raises
        ------
        NotFoundError
            If the branch does not exist.
        ConflictError
            If the branch moved and no solver was given (nothing is changed).
        SessionStateError
            If nothing was written (unless ``allow_empty``).

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
        session.commit(message, metadata, rebase_with=rebase_with, rebase_tries=rebase_tries,
                       allow_empty=allow_empty)
