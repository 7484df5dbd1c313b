"""Repository methods that match Icechunk's API: async twins, repository metadata, default
commit metadata, saved config, the ops log and rearrange sessions.

Mixed into :class:`icechunk_dist.Repository`. The sync API stays the primary one. Each async
twin runs its sync counterpart in a worker thread (``asyncio.to_thread``), and that counterpart
does its I/O on the library's own loop. So a caller's event loop is never blocked and never
re-entered, whichever loop it is.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

from icechunk_dist import _repo_docs, _sync, refs
from icechunk_dist._repo_docs import Update
from icechunk_dist.config import RepositoryConfig
from icechunk_dist.errors import FormatError, InvalidInputError, NotFoundError
from icechunk_dist.format import RepoInfo
from icechunk_dist.session import Session
from icechunk_dist.session._history import History
from icechunk_dist.session._io import read_snapshot
from icechunk_dist.storage import Storage

# typed loosely on purpose: importing the higher module here would close an import cycle
Repository = Any
SnapshotInfo = Any

__all__ = ["RepositoryParity", "load_config"]


async def load_config(storage: Storage, info: RepoInfo) -> RepositoryConfig:
    """The saved config (newest :meth:`save_config` version, else the one given at
    creation), validated.

    Raises
    ------
    FormatError
        If the stored config is corrupt or invalid.
    """
    _, saved = await _repo_docs.read_doc(storage, _repo_docs.CONFIG_PREFIX)
    raw = info.config if saved is None else saved
    try:
        return RepositoryConfig.from_dict(raw)
    except InvalidInputError as e:
        raise FormatError(f"the repository's saved config is invalid: {e}",
                          object_name="config") from None


def _json_dict(metadata: Any, what: str) -> dict[str, Any]:
    if not isinstance(metadata, dict) or not all(isinstance(k, str) for k in metadata):
        raise InvalidInputError(f"{what} must be a dict with string keys, got {metadata!r}")
    return dict(metadata)


class RepositoryParity:
    """Icechunk's Repository methods beyond the core (see the module docstring)."""

    _storage: Storage
    _info: RepoInfo
    _config: RepositoryConfig
    _default_commit_metadata: dict[str, Any]

    if TYPE_CHECKING:
        @property
        def _genesis(self) -> str: ...
        def writable_session(self, branch: str) -> Session: ...
        def readonly_session(self, branch: str | None = None, *, tag: str | None = None,
                             snapshot_id: str | None = None,
                             as_of: datetime | None = None) -> Session: ...
        def lookup_branch(self, name: str) -> str: ...
        def lookup_tag(self, name: str) -> str: ...
        def ancestry(self, *, branch: str | None = None, tag: str | None = None,
                     snapshot_id: str | None = None) -> Iterator[SnapshotInfo]: ...
        @classmethod
        def open(cls, storage: Storage,
                 config: RepositoryConfig | None = None) -> Repository: ...
        @classmethod
        def open_or_create(cls, storage: Storage,
                           config: RepositoryConfig | None = None) -> Repository: ...
        @staticmethod
        def exists(storage: Storage) -> bool: ...

    # ------------------------------------------------------------------ async twins
    @classmethod
    async def open_or_create_async(cls, storage: Storage,
                                   config: RepositoryConfig | None = None) -> Repository:
        """Async twin of :meth:`open_or_create`."""
        return await asyncio.to_thread(cls.open_or_create, storage, config)

    @classmethod
    async def exists_async(cls, storage: Storage) -> bool:
        """Async twin of :meth:`exists`."""
        return await asyncio.to_thread(cls.exists, storage)

    async def writable_session_async(self, branch: str) -> Session:
        """Async twin of :meth:`writable_session`."""
        return await asyncio.to_thread(self.writable_session, branch)

    async def readonly_session_async(self, branch: str | None = None, *,
                                     tag: str | None = None, snapshot_id: str | None = None,
                                     as_of: datetime | None = None) -> Session:
        """Async twin of :meth:`readonly_session`."""
        return await asyncio.to_thread(lambda: self.readonly_session(
            branch, tag=tag, snapshot_id=snapshot_id, as_of=as_of))

    async def rearrange_session_async(self, branch: str) -> Session:
        """Async twin of :meth:`rearrange_session`."""
        return await asyncio.to_thread(self.rearrange_session, branch)

    async def lookup_branch_async(self, branch: str) -> str:
        """Async twin of :meth:`lookup_branch`."""
        return await asyncio.to_thread(self.lookup_branch, branch)

    async def lookup_tag_async(self, tag: str) -> str:
        """Async twin of :meth:`lookup_tag`."""
        return await asyncio.to_thread(self.lookup_tag, tag)

    async def ancestry_async(self, *, branch: str | None = None, tag: str | None = None,
                             snapshot_id: str | None = None) -> AsyncIterator[SnapshotInfo]:
        """Async iterator twin of :meth:`ancestry` (newest first); one snapshot read per
        step, off the caller's loop.

        Raises
        ------
        InvalidInputError
            Unless exactly one of ``branch``, ``tag``, ``snapshot_id`` is given.
        """
        it = await asyncio.to_thread(
            lambda: self.ancestry(branch=branch, tag=tag, snapshot_id=snapshot_id))
        done = object()
        while True:
            item = await asyncio.to_thread(next, it, done)
            if item is done:
                return
            yield item  # type: ignore[misc]

    def async_ancestry(self, *, branch: str | None = None, tag: str | None = None,
                       snapshot_id: str | None = None) -> AsyncIterator[SnapshotInfo]:
        """Icechunk's other name for :meth:`ancestry_async`."""
        return self.ancestry_async(branch=branch, tag=tag, snapshot_id=snapshot_id)

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
        _, doc = _sync.run(_repo_docs.read_doc(self._storage, _repo_docs.METADATA_PREFIX))
        return {} if doc is None else doc

    async def get_metadata_async(self) -> dict[str, Any]:
        """Async twin of :meth:`get_metadata`."""
        return await asyncio.to_thread(self.get_metadata)

    def set_metadata(self, metadata: dict[str, Any]) -> None:
        """Replace the repository metadata with ``metadata`` (JSON-like values).

        Raises
        ------
        InvalidInputError
            If it is not a dict of JSON-serialisable values with string keys.
        """
        new = _json_dict(metadata, "repository metadata")
        _sync.run(_repo_docs.update_doc(self._storage, _repo_docs.METADATA_PREFIX,
                                        lambda _old: new))

    async def set_metadata_async(self, metadata: dict[str, Any]) -> None:
        """Async twin of :meth:`set_metadata`."""
        await asyncio.to_thread(self.set_metadata, metadata)

    def update_metadata(self, metadata: dict[str, Any]) -> dict[str, Any]:
        """Merge ``metadata`` into the repository metadata (its keys win) and return the
        result. Concurrent updates are applied one after the other, none is lost.

        Raises
        ------
        InvalidInputError
            If it is not a dict of JSON-serialisable values with string keys.
        """
        upd = _json_dict(metadata, "repository metadata")
        return _sync.run(_repo_docs.update_doc(
            self._storage, _repo_docs.METADATA_PREFIX, lambda old: {**(old or {}), **upd}))

    async def update_metadata_async(self, metadata: dict[str, Any]) -> dict[str, Any]:
        """Async twin of :meth:`update_metadata`."""
        return await asyncio.to_thread(self.update_metadata, metadata)

    def set_default_commit_metadata(self, metadata: dict[str, Any]) -> None:
        """Metadata merged into every commit of sessions opened *after* this call (a
        commit's own metadata wins on equal keys). Pass ``{}`` to clear it.

        Raises
        ------
        InvalidInputError
            If it is not a dict with string keys.
        """
        self._default_commit_metadata = _json_dict(metadata, "default commit metadata")

    def default_commit_metadata(self) -> dict[str, Any]:
        """The default commit metadata set with :meth:`set_default_commit_metadata`."""
        return dict(self._default_commit_metadata)

    # ------------------------------------------------------------------ config
    def save_config(self) -> None:
        """Persist this repository object's config; later :meth:`open` calls use it.

        Raises
        ------
        InvalidInputError
            If the config cannot be serialised.
        """
        doc = self._config.to_dict()
        _sync.run(_repo_docs.update_doc(self._storage, _repo_docs.CONFIG_PREFIX,
                                        lambda _old: doc))

    async def save_config_async(self) -> None:
        """Async twin of :meth:`save_config`."""
        await asyncio.to_thread(self.save_config)

    @staticmethod
    def fetch_config(storage: Storage) -> RepositoryConfig | None:
        """The config saved in the repository at ``storage``, or None if there is none.

        Raises
        ------
        FormatError
            If it is corrupt.
        """
        async def go() -> RepositoryConfig | None:
            from icechunk_dist.session._io import read_repo_info
            from icechunk_dist.storage import ObjectNotFoundError

            try:
                info = await read_repo_info(storage)
            except ObjectNotFoundError:
                return None
            return await load_config(storage, info)

        return _sync.run(go())

    def reopen(self, config: RepositoryConfig | None = None) -> Repository:
        """A new repository object on the same storage with ``config`` merged over this
        one's (not saved: call :meth:`save_config` on the result to persist it).

        Raises
        ------
        InvalidInputError
            If ``config`` is not a RepositoryConfig.
        """
        new = self._config.copy() if config is None else self._config.merge(config)
        repo = type(self)(self._storage, self._info, new)  # type: ignore[call-arg]
        repo._default_commit_metadata = dict(self._default_commit_metadata)
        return repo

    # ------------------------------------------------------------------ ops log
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
        return iter(_sync.run(_repo_docs.ops_log(self._storage, self._genesis,
                                                 self._info.created_at,
                                                 self._config.max_concurrent_requests)))

    async def ops_log_async(self) -> AsyncIterator[Update]:
        """Async iterator twin of :meth:`ops_log`."""
        for u in await asyncio.to_thread(lambda: list(self.ops_log())):
            yield u

    # ------------------------------------------------------------------ sessions
    def rearrange_session(self, branch: str) -> Session:
        """A session that only moves and renames nodes (:meth:`Session.move`), then commits
        the new layout to ``branch`` without rewriting any chunk or manifest.

        Raises
        ------
        NotFoundError
            If the branch does not exist.
        """
        from icechunk_dist.session._rearrange import RearrangeSession

        refs.validate_ref_name(branch, "branch")

        async def go() -> Session:
            tip = await refs.read_branch(self._storage, branch, self._genesis)
            assert tip.snapshot_id is not None
            snap = await read_snapshot(self._storage, tip.snapshot_id)
            return RearrangeSession(storage=self._storage, config=self._config.copy(),
                                    genesis=self._genesis, base=snap, branch=branch,
                                    read_only=False, branch_tip=tip,
                                    default_commit_metadata=self._default_commit_metadata)

        return _sync.run(go())

    async def _snapshot_as_of(self, branch: str, as_of: datetime) -> str:
        if as_of.tzinfo is None:
            raise InvalidInputError("as_of must be timezone-aware (e.g. datetime.now(UTC))")
        tip = await refs.read_branch(self._storage, branch, self._genesis)
        assert tip.snapshot_id is not None
        history = History(self._storage, concurrency=self._config.max_concurrent_requests)
        try:
            return (await history.as_of(tip.snapshot_id, as_of)).id
        except NotFoundError:
            raise NotFoundError(
                f"branch {branch!r} has no snapshot at or before {as_of}") from None
