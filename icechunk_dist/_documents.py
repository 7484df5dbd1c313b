"""Small documents of a repository outside the snapshot graph: the saved config and the user
metadata (versioned), and the markers of amended commits.

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
from datetime import UTC, datetime
from typing import Any

import msgspec

from icechunk_dist.config import RepositoryConfig
from icechunk_dist.errors import FormatError, InvalidInputError
from icechunk_dist.format import RepoInfo
from icechunk_dist.keys import CONFIG_PREFIX, METADATA_PREFIX, doc_version_key
from icechunk_dist.storage import ObjectExistsError, Storage

__all__ = [
    "DocVersion",
    "check_json_dict",
    "list_versions",
    "load_config",
    "merge_metadata",
    "read_doc",
    "read_metadata",
    "read_version",
    "save_config",
    "update_doc",
    "write_metadata",
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
