"""Small documents of a repository outside the snapshot graph: the saved config, the user
metadata and the repository status (versioned), and the markers of amended commits.

A versioned document is a sequence of immutable JSON objects ``<prefix>/<12 digits>``. The
digits count down, so the newest version sorts first. A change creates version ``n + 1`` with
a create-only put, so of two concurrent writers exactly one wins and the other re-reads and
retries (like branches, ``refs.py``). Nothing is ever overwritten, and every version stays
readable (the ops log, ``_opslog.py``, reads them).

An amend marker ``amends/<snapshot id>`` holds the id of the commit that snapshot replaced;
``Session.amend`` writes it before moving the branch, and the ops log tells amends from
resets by it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from typing import Any

import msgspec

from icechunk_dist.config import RepositoryConfig
from icechunk_dist.errors import ErrorKind, FormatError, InvalidInputError, ReadOnlyError
from icechunk_dist.format import RepoInfo
from icechunk_dist.keys import CONFIG_PREFIX, METADATA_PREFIX, STATUS_PREFIX, doc_version_key
from icechunk_dist.storage import ObjectExistsError, ObjectNotFoundError, Storage

__all__ = [
    "DocVersion",
    "RepoAvailability",
    "RepoStatus",
    "check_json_dict",
    "check_online",
    "list_versions",
    "load_config",
    "merge_metadata",
    "read_doc",
    "read_metadata",
    "read_status",
    "read_version",
    "save_config",
    "status_from_doc",
    "update_doc",
    "write_metadata",
    "write_status",
]



class DocVersion(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One stored version of a document."""

    version: int
    written_at: datetime
    doc: dict[str, Any]


async def list_versions(storage: Storage, prefix: str) -> list[str]:
    """Keys of every version of the document at ``prefix``, newest first."""
    keys = [m.key async for m in storage.list(prefix)]
    return sorted(k for k in keys if len(k.rsplit("/", 1)[-1]) == 12
                  and k.rsplit("/", 1)[-1].isdigit())


async def read_version(storage: Storage, key: str) -> DocVersion:
    """One version of a document.

    Raises
    ------
    FormatError
        If it is not a valid document version.
    """
    raw = await storage.get(key)
    try:
        return msgspec.json.decode(raw, type=DocVersion)
    except (msgspec.DecodeError, msgspec.ValidationError) as e:
        raise FormatError(f"not a valid repository document: {e}", object_name=key) from None


async def read_doc(storage: Storage, prefix: str) -> tuple[int, dict[str, Any] | None]:
    """(version, document) of the newest version, or (-1, None) if there is none.

    Raises
    ------
    FormatError
        If the newest version is corrupt.
    """
    keys = await list_versions(storage, prefix)
    if not keys:
        return -1, None
    d = await read_version(storage, keys[0])
    return d.version, d.doc


async def update_doc(storage: Storage, prefix: str,
                     change: Callable[[dict[str, Any] | None], dict[str, Any]]
                     ) -> dict[str, Any]:
    """Write ``change(current_or_None) -> new`` as the next version; retried when a
    concurrent writer created that version first. Returns the document written.

    Raises
    ------
    InvalidInputError
        If the new document is not JSON-serialisable.
    """
    while True:
        version, current = await read_doc(storage, prefix)
        new: dict[str, Any] = change(None if current is None else dict(current))
        body = DocVersion(version=version + 1, written_at=datetime.now(UTC), doc=new)
        try:
            data = msgspec.json.encode(body)
        except (TypeError, msgspec.EncodeError) as e:
            raise InvalidInputError(f"not JSON-serialisable: {e}") from None
        try:
            await storage.put(doc_version_key(prefix, version + 1), data, mode="create")
        except ObjectExistsError:
            continue  # someone else wrote that version: re-read and apply again
        return new


# ---------------------------------------------------------------------- the saved config
async def load_config(storage: Storage, info: RepoInfo) -> RepositoryConfig:
    """The saved config (newest :func:`save_config` version, else the one given at
    creation), validated.

    Raises
    ------
    FormatError
        If the stored config is corrupt or invalid.
    """
    _, saved = await read_doc(storage, CONFIG_PREFIX)
    raw = info.config if saved is None else saved
    try:
        return RepositoryConfig.from_dict(raw)
    except InvalidInputError as e:
        raise FormatError(f"the repository's saved config is invalid: {e}",
                          object_name="config") from None


async def save_config(storage: Storage, config: RepositoryConfig) -> None:
    """Persist ``config`` as the newest version of the saved config.

    Raises
    ------
    InvalidInputError
        If the config cannot be serialised.
    """
    doc = config.to_dict()
    await update_doc(storage, CONFIG_PREFIX, lambda _old: doc)


# ---------------------------------------------------------------------- user metadata
def check_json_dict(metadata: Any, what: str) -> dict[str, Any]:
    """A copy of ``metadata`` if it is a dict with string keys.

    Raises
    ------
    InvalidInputError
        Otherwise (``what`` names it in the message).
    """
    if not isinstance(metadata, dict) or not all(isinstance(k, str) for k in metadata):
        raise InvalidInputError(f"{what} must be a dict with string keys, got {metadata!r}")
    return dict(metadata)


async def read_metadata(storage: Storage) -> dict[str, Any]:
    """The repository-level user metadata ({} if never set).

    Raises
    ------
    FormatError
        If the stored metadata is corrupt.
    """
    _, doc = await read_doc(storage, METADATA_PREFIX)
    return {} if doc is None else doc


async def write_metadata(storage: Storage, metadata: dict[str, Any]) -> None:
    """Replace the repository metadata.

    Raises
    ------
    InvalidInputError
        If it is not a dict of JSON-serialisable values with string keys.
    """
    new = check_json_dict(metadata, "repository metadata")
    await update_doc(storage, METADATA_PREFIX, lambda _old: new)


async def merge_metadata(storage: Storage, metadata: dict[str, Any]) -> dict[str, Any]:
    """Merge ``metadata`` into the repository metadata (its keys win); return the result.

    Raises
    ------
    InvalidInputError
        If it is not a dict of JSON-serialisable values with string keys.
    """
    upd = check_json_dict(metadata, "repository metadata")
    return await update_doc(storage, METADATA_PREFIX, lambda old: {**(old or {}), **upd})


# ---------------------------------------------------------------------- repository status
class RepoAvailability(Enum):
    """Whether a repository takes writes: ``online`` (reads and writes) or ``read_only``
    (reads only). Icechunk's names and values."""

    online = 0
    read_only = 1


@dataclass(frozen=True)
class RepoStatus:
    """A repository's availability, when it was set, and why (Icechunk's ``RepoStatus``).

    Parameters
    ----------
    availability
        :class:`RepoAvailability`.
    set_at
        Timezone-aware time it was set; now (UTC) when not given.
    limited_availability_reason
        Why the repository is not online (shown in the errors of refused writes).

    Raises
    ------
    InvalidInputError
        If ``availability`` is not a :class:`RepoAvailability`, ``set_at`` is naive or the
        reason is not a string.
    """

    availability: RepoAvailability
    set_at: datetime = field(default=None)  # type: ignore[assignment]  # now, when not given
    limited_availability_reason: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.availability, RepoAvailability):
            raise InvalidInputError(
                f"availability must be a RepoAvailability, got {self.availability!r}")
        if self.set_at is None:
            object.__setattr__(self, "set_at", datetime.now(UTC))
        elif not isinstance(self.set_at, datetime) or self.set_at.tzinfo is None:
            raise InvalidInputError("set_at must be a timezone-aware datetime")
        reason = self.limited_availability_reason
        if reason is not None and not isinstance(reason, str):
            raise InvalidInputError(f"limited_availability_reason must be a str, got {reason!r}")

    def to_doc(self) -> dict[str, Any]:
        """The stored form (a JSON object)."""
        return {"availability": self.availability.name, "set_at": self.set_at.isoformat(),
                "limited_availability_reason": self.limited_availability_reason}


def status_from_doc(doc: dict[str, Any], name: str = STATUS_PREFIX) -> RepoStatus:
    """A stored status document as a :class:`RepoStatus`.

    Raises
    ------
    FormatError
        If it is not one.
    """
    try:
        return RepoStatus(RepoAvailability[doc["availability"]],
                          datetime.fromisoformat(doc["set_at"]),
                          doc.get("limited_availability_reason"))
    except (KeyError, TypeError, ValueError, InvalidInputError) as e:
        raise FormatError(f"not a valid repository status: {e}", object_name=name) from None


async def _current_status(storage: Storage) -> RepoStatus | None:
    """The newest stored status, or None if the status was never set (online). One GET in
    that common case (a GET: local storage answers it without a hop to obstore's runtime):
    the first version's key is known, only later ones need a listing."""
    try:
        await storage.get(doc_version_key(STATUS_PREFIX, 0))
    except ObjectNotFoundError:
        return None
    _, doc = await read_doc(storage, STATUS_PREFIX)
    return None if doc is None else status_from_doc(doc)


async def read_status(storage: Storage, created_at: datetime) -> RepoStatus:
    """The repository status; online since ``created_at`` (the repository's creation) when
    it was never set.

    Raises
    ------
    FormatError
        If the stored status is corrupt.
    """
    status = await _current_status(storage)
    return RepoStatus(RepoAvailability.online, created_at) if status is None else status


async def write_status(storage: Storage, status: RepoStatus) -> None:
    """Persist ``status`` as the newest version of the repository status (never refused:
    this is how a read-only repository is put back online).

    Raises
    ------
    InvalidInputError
        If ``status`` is not a :class:`RepoStatus`.
    """
    if not isinstance(status, RepoStatus):
        raise InvalidInputError(f"set_status takes a RepoStatus, got {status!r}")
    doc = status.to_doc()
    await update_doc(storage, STATUS_PREFIX, lambda _old: doc)


async def check_online(storage: Storage, doing: str) -> None:
    """Refuse ``doing`` (a phrase: "commit", "create a branch") unless the repository is
    online.

    Raises
    ------
    ReadOnlyError
        If the repository status is read-only (kind ``READ_ONLY_REPOSITORY``).
    FormatError
        If the stored status is corrupt.
    """
    status = await _current_status(storage)
    if status is None or status.availability is RepoAvailability.online:
        return
    reason = status.limited_availability_reason
    err = ReadOnlyError(
        f"the repository status is read-only: cannot {doing} (set read-only at "
        f"{status.set_at.isoformat()}{f': {reason}' if reason else ''}); "
        "repo.set_status(RepoStatus(RepoAvailability.online)) allows writes again")
    err.kind = ErrorKind.READ_ONLY_REPOSITORY
    raise err
