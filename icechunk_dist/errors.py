"""The one exception tree of icechunk_dist.

Every error raised by the library derives from :class:`IcechunkDistError`. The tree is sorted by
what a handler does about an error: retry after a conflict, report a missing object, fix the
input, and so on. Backend (obstore) errors are translated into :class:`StorageError` inside
``icechunk_dist.storage`` only.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum
from typing import Any

from icechunk_dist._conflict import Conflict

__all__ = [
    "AlreadyExistsError",
    "BranchMovedError",
    "ConflictError",
    "ErrorKind",
    "FormatError",
    "GCConflictError",
    "GaveUpError",
    "HistoryRewrittenError",
    "IcechunkDistError",
    "IcechunkError",
    "InvalidInputError",
    "LostWritesError",
    "InternalError",
    "MergeConflictError",
    "NodeNotFoundError",
    "NotFoundError",
    "ReadOnlyError",
    "RebaseFailedError",
    "RefNotFoundError",
    "RepositoryNotFoundError",
    "SessionStateError",
    "SnapshotNotFoundError",
    "SourceChangedError",
    "StorageError",
    "VirtualChunkAccessError",
]


class ErrorKind(Enum):
    """Machine-readable kind of an error. Append-only: values are never renumbered."""

    GENERIC = 0
    CONFLICT = 1
    REBASE_FAILED = 2
    NOT_FOUND = 3
    REPOSITORY_NOT_FOUND = 4
    ALREADY_EXISTS = 5
    READ_ONLY = 6
    INVALID_INPUT = 7
    SESSION_STATE = 8
    STORAGE = 9
    FORMAT = 10
    GC_CONFLICT = 11
    BRANCH_MOVED = 12
    MERGE_CONFLICT = 13
    HISTORY_REWRITTEN = 14
    LOST_WRITES = 15
    GAVE_UP = 16
    NODE_NOT_FOUND = 17
    SNAPSHOT_NOT_FOUND = 18
    REF_NOT_FOUND = 19
    INTERNAL = 20
    READ_ONLY_REPOSITORY = 21
    VIRTUAL_ACCESS = 22
    SOURCE_CHANGED = 23


def _restore_error(cls: type[BaseException], args: tuple[Any, ...], state: dict[str, Any]) -> Any:
    obj = cls.__new__(cls)
    BaseException.__init__(obj, *args)
    obj.__dict__.update(state)
    return obj


class IcechunkDistError(Exception):
    """Base class of every error raised by icechunk_dist.

    Attributes
    ----------
    message
        The human-readable message (what ``str(e)`` returns), as Icechunk's errors have it.
    kind
        The machine-readable :class:`ErrorKind`.
    """

    kind: ErrorKind = ErrorKind.GENERIC

    @property
    def message(self) -> str:
        """The error's message (``str(e)``)."""
        return str(self)

    def __reduce__(self) -> Any:
        # errors cross process boundaries (Dask); keep their structured fields
        return (_restore_error, (type(self), self.args, dict(self.__dict__)))


IcechunkError = IcechunkDistError
"""Icechunk's name for :class:`IcechunkDistError` (``except icechunk.IcechunkError`` ports)."""


class ConflictError(IcechunkDistError):
    """A write could not land because another write got there first or overlaps it.

    Built like Icechunk's: ``ConflictError(expected_parent, actual_parent, message)``, with
    our change-set fields ``path`` and ``chunk_coords`` as keywords. A single positional
    argument that is not a snapshot id (it contains a space) is taken as the message.

    Attributes
    ----------
    expected_parent, actual_parent
        For a commit whose branch moved: the snapshot the session was based on and the
        snapshot the branch points to now. ``None`` when the conflict is not about a branch.
    path, chunk_coords
        For a conflict between change-sets (merge): the node path and the chunk coordinates.
    """

    kind = ErrorKind.CONFLICT

    def __init__(
        self,
        *args: Any,
        expected_parent: str | None = None,
        actual_parent: str | None = None,
        message: str | None = None,
        kind: ErrorKind | None = None,
        path: str | None = None,
        chunk_coords: Sequence[Sequence[int]] = (),
    ) -> None:
        # positional as Icechunk's: (expected_parent, actual_parent, message, kind); our own
        # older form ConflictError("message", ...) is recognised by the space in the message
        if (len(args) == 1 and isinstance(args[0], str) and (" " in args[0] or not args[0])
                and message is None):
            message, args = args[0], ()
        if len(args) > 4:
            raise TypeError("ConflictError takes at most 4 positional arguments")
        names = ("expected_parent", "actual_parent", "message", "kind")
        given = dict(zip(names, args, strict=False))
        expected_parent = given.get("expected_parent", expected_parent)
        actual_parent = given.get("actual_parent", actual_parent)
        message = given.get("message", message)
        kind = given.get("kind", kind)
        if isinstance(kind, ErrorKind):
            self.kind = kind
        self.expected_parent = expected_parent
        self.actual_parent = actual_parent
        self.path = path
        self.chunk_coords = [tuple(int(c) for c in cc) for cc in chunk_coords]
        if message is None:
            if expected_parent is not None or actual_parent is not None:
                # Icechunk's words first (code matching them ports), then ours
                message = (
                    f"Failed to commit, expected parent: {expected_parent}, actual parent: "
                    f"{actual_parent} (branch update conflict: the session is based on "
                    f"{expected_parent} but the branch now points to {actual_parent}; rebase "
                    "the session (commit(..., rebase_with=...)) or start a new one)"
                )
            else:
                message = "conflict"
        super().__init__(message)


class RebaseFailedError(ConflictError):
    """A rebase met conflicts that its solver did not resolve.

    Attributes
    ----------
    snapshot_id
        The snapshot the session tried to rebase onto.
    conflicts
        The unresolved :class:`~icechunk_dist.conflicts.Conflict` values.
    """

    kind = ErrorKind.REBASE_FAILED

    @property
    def snapshot(self) -> str:
        """Icechunk's name for :attr:`snapshot_id`."""
        return self.snapshot_id

    def __init__(
        self, snapshot_id: str, conflicts: Sequence[Conflict], message: str | None = None
    ) -> None:
        self.snapshot_id = snapshot_id
        self.conflicts: list[Conflict] = list(conflicts)
        if message is None:
            shown = "; ".join(str(c) for c in self.conflicts[:10])
            more = "" if len(self.conflicts) <= 10 else f"; and {len(self.conflicts) - 10} more"
            message = f"rebase onto {snapshot_id} failed with {len(self.conflicts)} conflict(s): "
            message += shown + more
        first = self.conflicts[0] if self.conflicts else None
        super().__init__(
            message=message,
            path=None if first is None else first.path,
            chunk_coords=() if first is None else (first.conflicted_chunks or ()),
        )


class GCConflictError(ConflictError):
    """A garbage collection that ran during this commit deleted objects it needs, or is
    still running; nothing was committed (the branch is unchanged).

    A conflict because another writer, the collector, got there first; rebasing cannot
    help (the deleted chunks are gone), so it is not retried. Write the data again in a new
    session, and give ``garbage_collect`` a cut-off older than your longest write
    (docs/maintenance.md).

    Attributes
    ----------
    run_id
        The garbage-collection run (``gc/<run_id>/...``).
    missing
        Storage keys of the objects that are gone (empty if the run was still running).
    """

    kind = ErrorKind.GC_CONFLICT

    def __init__(self, message: str, *, run_id: str, missing: Sequence[str] = ()) -> None:
        self.run_id = run_id
        self.missing = list(missing)
        super().__init__(message)


class BranchMovedError(ConflictError):
    """The branch no longer points at the snapshot a session (or a ref update) was based on:
    another writer committed, or a garbage collection fenced the branch, first.

    This is the failure Icechunk reports as ``ConflictError``; rebase and retry
    (``commit(..., rebase_with=...)``) or start a new session. ``expected_parent`` and
    ``actual_parent`` say where the branch was and is.
    """

    kind = ErrorKind.BRANCH_MOVED


class MergeConflictError(ConflictError):
    """Two change-sets (forks, or a fork and its session) changed the same thing differently:
    the same chunk with other bytes, one node deleted while the other changed it, one key
    twice. ``path`` and ``chunk_coords`` name it; ``merge(..., policy="last_wins")`` is the
    explicit way out where an override is meant."""

    kind = ErrorKind.MERGE_CONFLICT


class HistoryRewrittenError(ConflictError):
    """The history between a session's base and the branch tip was rewritten (expired,
    amended away or reset), so the commits that landed meanwhile can no longer be read as
    changes: rebase and diff refuse to cross it. Start a new session on the tip."""

    kind = ErrorKind.HISTORY_REWRITTEN


class LostWritesError(IcechunkDistError):
    """Chunks a distributed write was asked to write have no record in the change-sets that
    came back (a worker holding them was lost). Nothing was committed; not a conflict:
    rerun the write.

    Attributes
    ----------
    path, chunk_coords
        The array and (some of) the chunk coordinates without a record.
    """

    kind = ErrorKind.LOST_WRITES

    def __init__(self, message: str, *, path: str | None = None,
                 chunk_coords: Sequence[Sequence[int]] = ()) -> None:
        self.path = path
        self.chunk_coords = [tuple(int(c) for c in cc) for cc in chunk_coords]
        super().__init__(message)


class GaveUpError(IcechunkDistError):
    """An operation stopped after its bounded number of attempts because what it depends on
    kept changing under it (refs moving during a collection's fence or mark). Nothing was
    changed by the attempt that gave up; run it again later."""

    kind = ErrorKind.GAVE_UP


class NotFoundError(IcechunkDistError, KeyError):
    """Something that was asked for does not exist (a ref, a snapshot, a key, an object)."""

    kind = ErrorKind.NOT_FOUND

    def __str__(self) -> str:  # KeyError quotes its argument; we want a readable message
        return str(self.args[0]) if self.args else "not found"


class RepositoryNotFoundError(NotFoundError):
    """No repository exists at the given storage location."""

    kind = ErrorKind.REPOSITORY_NOT_FOUND


class NodeNotFoundError(NotFoundError):
    """No group or array at the given path (of a session's hierarchy)."""

    kind = ErrorKind.NODE_NOT_FOUND


class SnapshotNotFoundError(NotFoundError):
    """No snapshot with the given id (never written, or deleted by garbage collection)."""

    kind = ErrorKind.SNAPSHOT_NOT_FOUND


class RefNotFoundError(NotFoundError):
    """No branch or tag of the given name (or it was deleted)."""

    kind = ErrorKind.REF_NOT_FOUND


class AlreadyExistsError(IcechunkDistError):
    """An object that must be new already exists (a repository, a tag, a branch)."""

    kind = ErrorKind.ALREADY_EXISTS


class ReadOnlyError(IcechunkDistError):
    """A write was attempted through a read-only session or store."""

    kind = ErrorKind.READ_ONLY


class InvalidInputError(IcechunkDistError, ValueError):
    """The caller passed a bad value: a ref name, a key, an option, a shape."""

    kind = ErrorKind.INVALID_INPUT


class SessionStateError(IcechunkDistError):
    """The session cannot do this in its present state (committed, forked, empty commit...)."""

    kind = ErrorKind.SESSION_STATE


class StorageError(IcechunkDistError):
    """The object store failed. Transient failures were already retried."""

    kind = ErrorKind.STORAGE

    def __init__(self, message: str, *, key: str | None = None, cause: Any = None) -> None:
        self.key = key
        self.cause = cause
        super().__init__(message)


class VirtualChunkAccessError(StorageError):
    """A virtual chunk was not read because reading it is not allowed: no virtual chunk
    container of the repository's config covers its URL, or the container that does was
    not authorized (``authorize_virtual_chunk_access=`` of ``Repository.open``). Nothing was
    fetched.

    Attributes
    ----------
    key
        The URL that was refused.
    """

    kind = ErrorKind.VIRTUAL_ACCESS


class SourceChangedError(StorageError):
    """The object a virtual chunk points into changed since the ref was recorded (its etag
    differs, or it was modified after the recorded time): its bytes were not returned.

    Attributes
    ----------
    key
        The URL of the changed object.
    """

    kind = ErrorKind.SOURCE_CHANGED


class InternalError(IcechunkDistError):
    """A bug in icechunk_dist: an invariant that should always hold did not. Please report it
    with the message."""

    kind = ErrorKind.INTERNAL


class FormatError(IcechunkDistError):
    """Bytes read from storage are not a valid icechunk_dist object (corrupt, truncated, foreign).

    Attributes
    ----------
    object_name
        The storage key (or a description) of the object that failed to decode.
    """

    kind = ErrorKind.FORMAT

    def __init__(self, message: str, *, object_name: str | None = None) -> None:
        self.object_name = object_name
        if object_name is not None:
            message = f"{object_name}: {message}"
        super().__init__(message)


for _cls in (
    IcechunkDistError,
    ConflictError,
    RebaseFailedError,
    GCConflictError,
    BranchMovedError,
    MergeConflictError,
    HistoryRewrittenError,
    LostWritesError,
    GaveUpError,
    NotFoundError,
    RepositoryNotFoundError,
    NodeNotFoundError,
    SnapshotNotFoundError,
    RefNotFoundError,
    InternalError,
    AlreadyExistsError,
    ReadOnlyError,
    InvalidInputError,
    SessionStateError,
    StorageError,
    VirtualChunkAccessError,
    SourceChangedError,
    FormatError,
):
    _cls.__module__ = "icechunk_dist"
del _cls
