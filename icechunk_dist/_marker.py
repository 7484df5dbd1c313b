"""The repository marker (``repo``, spec.md): what creating a repository writes, and reading
the marker back with the saved config."""

from __future__ import annotations

from datetime import UTC, datetime

from icechunk_dist import _documents
from icechunk_dist._types import new_id
from icechunk_dist.config import RepositoryConfig
from icechunk_dist.errors import AlreadyExistsError, InvalidInputError, RepositoryNotFoundError
from icechunk_dist.format import ObjectType, RepoInfo, SnapshotData, TransactionLogData
from icechunk_dist.session._io import (
    REPO_KEY,
    read_repo_info,
    snapshot_key,
    transaction_key,
    write_object,
)
from icechunk_dist.storage import ObjectExistsError, ObjectNotFoundError, Storage

__all__ = ["create_repository", "fetch_config", "open_repository"]


async def create_repository(storage: Storage, config: RepositoryConfig) -> RepoInfo:
    """Write an empty initial snapshot, then the marker; return the marker.

    Raises
    ------
    AlreadyExistsError
        If a repository already exists at this location.
    InvalidInputError
        If ``config`` is not a RepositoryConfig.
    StorageError
        If the backend ignores create-only writes.
    """
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
    except (ObjectExistsError, InvalidInputError) as e:
        # no repository was made here: take back what we wrote, so a failed create leaves
        # the location as it found it (another creator won, or something is in the way)
        await storage.delete_many([snapshot_key(sid), transaction_key(sid)])
        if isinstance(e, InvalidInputError):
            raise
        raise AlreadyExistsError(
            f"a repository already exists at {storage.describe()}"
        ) from None
    return info


async def open_repository(storage: Storage, config: RepositoryConfig | None
                          ) -> tuple[RepoInfo, RepositoryConfig]:
    """The marker, and the saved config with ``config`` merged over it.

    Raises
    ------
    RepositoryNotFoundError
        If there is no repository at this location.
    FormatError
        If the marker or the saved config is unreadable or invalid.
    InvalidInputError
        If ``config`` is not a RepositoryConfig.
    """
    if config is not None and not isinstance(config, RepositoryConfig):
        raise InvalidInputError("config must be a RepositoryConfig")
    try:
        info = await read_repo_info(storage)
    except ObjectNotFoundError:
        raise RepositoryNotFoundError(
            f"the repository doesn't exist: no repository at {storage.describe()}") from None
    saved = await _documents.load_config(storage, info)
    return info, saved if config is None else saved.merge(config)


async def fetch_config(storage: Storage) -> RepositoryConfig | None:
    """The saved config of the repository at ``storage``.

    Raises
    ------
    RepositoryNotFoundError
        If there is no repository there (as Icechunk's).
    FormatError
        If it is corrupt.
    """
    try:
        info = await read_repo_info(storage)
    except ObjectNotFoundError:
        raise RepositoryNotFoundError(
            f"the repository doesn't exist: no repository at {storage.describe()}") from None
    return await _documents.load_config(storage, info)
