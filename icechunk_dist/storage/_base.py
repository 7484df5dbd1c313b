"""The storage contract: what every layer above may ask of an object store.

:class:`Storage` is a narrow abstract class over one *repository prefix* of an object store. Keys
are ``/``-separated and relative to that prefix; :func:`validate_key` holds their rules. Backend
errors reach callers only as our errors (translated in :mod:`._retry`): a missing key is
:class:`ObjectNotFoundError`, a lost create-if-absent race :class:`ObjectExistsError`, any
other failure :class:`~icechunk_dist.StorageError`.
"""

from __future__ import annotations

import abc
import builtins
import re
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from icechunk_dist._sync import run
from icechunk_dist.errors import AlreadyExistsError, InvalidInputError, NotFoundError

__all__ = [
    "ObjectExistsError",
    "ObjectMeta",
    "ObjectNotFoundError",
    "PutMode",
    "Storage",
    "validate_key",
    "validate_prefix",
]

PutMode = Literal["overwrite", "create", "fresh", "replace"]


class ObjectNotFoundError(NotFoundError):
    """No object exists under the key.

    Attributes
    ----------
    key
        The key, relative to the storage prefix.
    """

    def __init__(self, message: str, *, key: str | None = None) -> None:
        self.key = key
        super().__init__(message)


class ObjectExistsError(AlreadyExistsError):
    """A ``put(..., mode="create")`` found the key already taken.

    On network backends a create whose response was lost is retried, and the retry then reports
    this error although the first attempt landed. Callers that must tell the two apart (the ref
    protocol) write a unique id into the object and read it back.

    Attributes
    ----------
    key
        The key, relative to the storage prefix.
    """

    def __init__(self, message: str, *, key: str | None = None) -> None:
        self.key = key
        super().__init__(message)


for _cls in (ObjectNotFoundError, ObjectExistsError):
    _cls.__module__ = "icechunk_dist.storage"
del _cls


@dataclass(frozen=True, slots=True)
class ObjectMeta:
    """What a ``head`` or ``list`` says about one object.

    Attributes
    ----------
    key
        Relative to the storage prefix, ``/``-separated, no leading ``/``.
    size
        Length in bytes.
    last_modified
        Time of the last write, timezone-aware UTC.
    etag
        Opaque version tag of the backend, if it has one.
    """

    key: str
    size: int
    last_modified: datetime
    etag: str | None = None


# ---------------------------------------------------------------------------------------------
# keys

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _check_text(what: str, value: str) -> None:
    if not isinstance(value, str):
        raise InvalidInputError(f"a storage {what} must be a str, got {type(value).__name__}")
    if value.startswith("/"):
        raise InvalidInputError(f"storage {what} {value!r} must not start with '/'")
    if "\\" in value:
        raise InvalidInputError(f"storage {what} {value!r} must not contain '\\'")
    if _CONTROL.search(value):
        raise InvalidInputError(f"storage {what} {value!r} must not contain control characters")


def validate_key(key: str) -> str:
    """Check that ``key`` is a well-formed object key and return it.

    A key is non-empty, relative (no leading ``/``), made of non-empty ``/``-separated segments
    none of which is ``.`` or ``..``, and has no backslash or control character. These rules keep
    one key naming the same object on every backend.

    Raises
    ------
    InvalidInputError
        If the key breaks one of the rules.
    """
    _check_text("key", key)
    if not key:
        raise InvalidInputError("a storage key must not be empty")
    for segment in key.split("/"):
        if segment in ("", ".", ".."):
            raise InvalidInputError(f"storage key {key!r} has an empty, '.' or '..' path segment")
    return key


def validate_prefix(prefix: str) -> str:
    """Check a listing prefix (a plain string prefix of keys; may be empty) and return it.

    Raises
    ------
    InvalidInputError
        If the prefix starts with ``/``, has a backslash, a control character or a ``..``
        or ``.`` segment.
    """
    _check_text("prefix", prefix)
    segments = prefix.split("/")
    # the last segment may be partial ("refs/bra"), earlier ones are whole
    if any(s in (".", "..") for s in segments) or any(s == "" for s in segments[:-1]):
        raise InvalidInputError(f"storage prefix {prefix!r} has an empty, '.' or '..' segment")
    return prefix


async def _nothing() -> AsyncIterator[ObjectMeta]:
    return
    yield  # an async generator that yields nothing


# ---------------------------------------------------------------------------------------------
# the contract


class Storage(abc.ABC):
    """One repository prefix of an object store.

    A storage pickles its *spec* (backend, configuration and credentials as given), never an
    open client; clients are created lazily in each process. Equality and hashing go by spec.
    Async methods are the core; ``*_sync`` twins run them through :func:`icechunk_dist._sync.run`.
    """

    @property
    @abc.abstractmethod
    def backend(self) -> str:
        """``"local"``, ``"memory"``, ``"s3"``, ``"gcs"`` or ``"azure"``."""

    @property
    @abc.abstractmethod
    def supports_pickle(self) -> bool:
        """Whether the storage can travel to another process (False only for in-memory)."""

    @abc.abstractmethod
    def describe(self) -> str:
        """Human description of the location, without secrets (``"s3://bucket/prefix"``)."""

    @abc.abstractmethod
    async def get(self, key: str) -> bytes:
        """Return the whole object.

        Raises
        ------
        ObjectNotFoundError
            If there is no object under ``key``.
        InvalidInputError
            If ``key`` is malformed.
        StorageError
            If the backend fails.
        """

    @abc.abstractmethod
    async def get_range(self, key: str, start: int, end: int) -> bytes:
        """Return bytes ``[start, end)``; ``end`` is clamped to the object size.

        Raises
        ------
        ObjectNotFoundError
            If there is no object under ``key``.
        InvalidInputError
            If ``key`` is malformed or ``start``/``end`` negative.
        StorageError
            If the backend fails.
        """

    @abc.abstractmethod
    async def get_suffix(self, key: str, length: int) -> bytes:
        """Return the last ``length`` bytes (fewer if the object is shorter).

        Raises
        ------
        ObjectNotFoundError
            If there is no object under ``key``.
        InvalidInputError
            If ``key`` is malformed or ``length`` negative.
        StorageError
            If the backend fails.
        """

    @abc.abstractmethod
    async def head(self, key: str) -> ObjectMeta:
        """Return the object's metadata.

        Raises
        ------
        ObjectNotFoundError
            If there is no object under ``key``.
        InvalidInputError
            If ``key`` is malformed.
        StorageError
            If the backend fails.
        """

    async def exists(self, key: str) -> bool:
        """Whether an object exists under ``key``.

        Raises
        ------
        InvalidInputError
            If ``key`` is malformed.
        StorageError
            If the backend fails.
        """
        try:
            await self.head(key)
        except ObjectNotFoundError:
            return False
        return True

    @abc.abstractmethod
    async def put(self, key: str, data: bytes, *, mode: PutMode = "overwrite") -> None:
        """Write ``data`` under ``key`` atomically.

        ``mode="create"`` is an atomic create-if-absent on every backend: of many concurrent
        creators exactly one succeeds. ``mode="fresh"`` promises that ``key`` is a fresh random
        name that nobody reads before the writer publishes it (a chunk object, which no
        manifest names until the commit): a backend may then write it in place, without the
        staging and rename that make a partial object invisible (local disk does; a partial
        object of a killed writer is unreferenced garbage, and its length differs from the
        one a manifest would record). ``mode="replace"`` overwrites an object whose place
        exists: on local disk it never creates a directory (a branch's tip hint landing after
        its repository was removed must not bring a directory back); elsewhere it is an
        overwrite.

        Raises
        ------
        ObjectExistsError
            With ``mode="create"``, if the key exists.
        ObjectNotFoundError
            With ``mode="replace"`` on local disk, if the object's directory does not exist.
        InvalidInputError
            If ``key`` or ``mode`` is malformed.
        StorageError
            If the backend fails.
        """

    async def check_conditional_writes(self) -> None:
        """Prove that ``put(mode="create")`` is a real create-if-absent on this backend.

        Network backends write one unique probe key twice with ``mode="create"`` (the second
        must fail) and delete it; local disk and memory are safe by construction and do
        nothing. :meth:`Repository.create <icechunk_dist.Repository.create>` calls this before
        it writes anything, so a server that ignores ``If-None-Match`` (or cannot do
        conditional writes at all) is refused instead of silently losing commits.

        Raises
        ------
        StorageError
            If the second create succeeded (the backend overwrote the key) or the probe
            could not be written.
        """
        return None

    @abc.abstractmethod
    async def delete(self, key: str) -> None:
        """Delete the object; a missing key is not an error.

        Raises
        ------
        InvalidInputError
            If ``key`` is malformed.
        StorageError
            If the backend fails.
        """

    @abc.abstractmethod
    async def delete_many(self, keys: Iterable[str]) -> int:
        """Delete many objects (batched where the backend allows); return how many were asked.

        Raises
        ------
        InvalidInputError
            If a key is malformed.
        StorageError
            If the backend fails.
        """

    @abc.abstractmethod
    def list(self, prefix: str = "") -> AsyncIterator[ObjectMeta]:
        """Iterate over every object whose key starts with ``prefix`` (a plain string prefix).

        Keys are relative to the storage root; the order is unspecified.

        Raises
        ------
        InvalidInputError
            If ``prefix`` is malformed.
        StorageError
            If the backend fails.
        """

    # -- leftovers of unfinished writes --------------------------------------------------------

    def list_staged(self, prefix: str = "") -> AsyncIterator[ObjectMeta]:
        """Iterate over the *staging objects* under ``prefix``: what a write leaves before it
        moves the object into place (local disk: ``<key>#<digits>`` files, renamed or
        linked onto ``<key>``). :meth:`list` never shows them. One that stays was left by a
        writer killed mid-write, or belongs to a write still running: its ``last_modified``
        tells them apart. Backends whose writes leave nothing behind list none (default).

        Raises
        ------
        InvalidInputError
            If ``prefix`` is malformed.
        StorageError
            If the backend fails.
        """
        validate_prefix(prefix)
        return _nothing()

    async def delete_staged(self, keys: Iterable[str]) -> int:
        """Delete staging objects named by :meth:`list_staged` (missing ones are no error);
        return how many were asked.

        Raises
        ------
        InvalidInputError
            If a key is not a staging object of this backend.
        StorageError
            If the backend fails.
        """
        for key in keys:
            raise InvalidInputError(f"{self.describe()} has no staging objects, not {key!r}")
        return 0

    async def is_empty(self) -> bool:
        """Whether nothing is stored under this storage's root: no object (on local disk: no
        file or directory at all). The CLI creates repositories only where this holds.

        Raises
        ------
        InvalidInputError
            If the location cannot be a storage root (local disk: a file is in the way).
        StorageError
            If the backend fails.
        """
        async for _ in self.list(""):
            return False
        return True

    # -- sync twins ---------------------------------------------------------------------------

    def get_sync(self, key: str) -> bytes:
        """Synchronous :meth:`get` (same errors)."""
        return run(self.get(key))

    def put_sync(self, key: str, data: bytes, *, mode: PutMode = "overwrite") -> None:
        """Synchronous :meth:`put` (same errors)."""
        run(self.put(key, data, mode=mode))

    def exists_sync(self, key: str) -> bool:
        """Synchronous :meth:`exists` (same errors)."""
        return run(self.exists(key))

    def delete_sync(self, key: str) -> None:
        """Synchronous :meth:`delete` (same errors)."""
        run(self.delete(key))

    def list_sync(self, prefix: str = "") -> builtins.list[ObjectMeta]:
        """Synchronous :meth:`list`, collected into a list (same errors)."""

        async def collect() -> builtins.list[ObjectMeta]:
            return [meta async for meta in self.list(prefix)]

        return run(collect())
