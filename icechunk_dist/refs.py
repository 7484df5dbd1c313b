"""Branches and tags on object storage, with create-only writes (no compare-and-swap needed).

A branch is a sequence of immutable versions ``refs/branch.<name>/<12 digits>``; the digits
count *down* (``999999999999 - n``) so the newest version sorts first. Moving a branch from
version ``n`` is an atomic create-if-absent of version ``n + 1``: of two writers racing from
the same version exactly one creates it, on every backend (local disk has no CAS in obstore,
but it has atomic create). Each version carries a random ``write_id`` so that a lost response
to our own successful create (or a create whose outcome is unknown) is recognised as success
after reading the version back, not reported as a conflict or a failure.

Reading a tip costs O(1) requests whatever the length of the history: an overwritable hint
``refs/branch.<name>/tip`` names the newest version its writer created; the reader GETs it,
then the named version and the next one, and walks on until a version is absent. The hint
only says where to look; the create-only versions decide (docs/design/006-o1-branch-tips.md).

A tag is ``refs/tag.<name>/ref`` (create-only, immutable); deleting it creates
``refs/tag.<name>/deleted``, and since ``ref`` stays, the name can never be reused.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import re
import threading
from dataclasses import dataclass
from datetime import UTC, datetime

import msgspec

from icechunk_dist import _sync
from icechunk_dist._types import new_id
from icechunk_dist.errors import (
    AlreadyExistsError,
    BranchMovedError,
    FormatError,
    InvalidInputError,
    NotFoundError,
    RefNotFoundError,
    StorageError,
)
from icechunk_dist.format import ObjectType, RefData, decode_object, encode_object
from icechunk_dist.keys import (
    BRANCH_LIST_PREFIX,
    TAG_LIST_PREFIX,
    VERSION_DIGITS,
    branch_hint_key,
    branch_prefix,
    branch_version_key,
    tag_deleted_key,
    tag_key,
)
from icechunk_dist.storage import ObjectExistsError, ObjectNotFoundError, Storage

__all__ = [
    "BranchTip",
    "create_tag",
    "delete_tag",
    "list_branches",
    "list_tags",
    "read_branch",
    "read_tag",
    "validate_ref_name",
    "version_taken",
    "write_branch",
]

_MAXV = 10**VERSION_DIGITS - 1
_MAX_PROBES = 4  # versions walked past a lagging hint before one listing is cheaper
_log = logging.getLogger(__name__)
_BAD = re.compile(r"[\x00-\x1f\x7f/\\]")
# The longest name every backend can store: a name is one key component, ``branch.<name>``
# or ``tag.<name>``, and a file name on local disk holds at most 255 bytes (NAME_MAX). The
# longer prefix, ``branch.``, leaves 248 bytes of UTF-8; the same limit for tags keeps every
# branch name usable as a tag name. S3 and GCS keys hold 1024 bytes in all, Azure blob names
# 1024 characters (docs/spec.md section 6).
MAX_REF_NAME_BYTES = 255 - len("branch.")


def validate_ref_name(name: str, what: str = "ref") -> str:
    """Check a branch or tag name.

    Raises
    ------
    InvalidInputError
        If the name is empty, longer than :data:`MAX_REF_NAME_BYTES` bytes of UTF-8,
        contains ``/``, ``\\``, ``..`` or control characters, or is ``.``.
    """
    if not isinstance(name, str) or not name:
        raise InvalidInputError(f"{what} name must be a non-empty string, got {name!r}")
    if _BAD.search(name) or ".." in name or name in (".",):
        raise InvalidInputError(
            f"invalid {what} name {name!r}: no '/', '\\\\', '..' or control characters"
        )
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:  # a lone surrogate: no backend can store it
        raise InvalidInputError(f"invalid {what} name {name!r}: not valid Unicode") from None
    if size > MAX_REF_NAME_BYTES:
        raise InvalidInputError(
            f"{what} name too long: {size} bytes of UTF-8, at most {MAX_REF_NAME_BYTES} "
            f"(the longest a local file name can hold after the 'branch.' prefix): {name!r}"
        )
    return name


@dataclass(frozen=True)
class BranchTip:
    """The newest version of a branch: ``snapshot_id`` None means deleted."""

    name: str
    version: int
    snapshot_id: str | None


class _TipHint(msgspec.Struct, frozen=True):
    """The overwritable tip hint ``refs/branch.<name>/tip``: a copy of the newest version the
    last writer created, plus its number. Its first fields are :class:`RefData`'s, so a reader
    that decodes every object under ``refs/`` as a ``RefData`` reads it too."""

    snapshot_id: str | None
    write_id: str
    written_at: datetime
    version: int


async def read_branch(storage: Storage, name: str, genesis: str | None) -> BranchTip:
    """Read the tip of a branch. ``genesis`` is main's initial snapshot (version -1).

    Costs O(1) requests in the length of the branch's history: one GET of the tip hint,
    then GETs of the version it names and of the next one (see :func:`_read_tip`).

    Raises
    ------
    NotFoundError
        If the branch never existed or is deleted.
    StorageError
        If the backend fails.
    FormatError
        If a ref version does not decode.
    """
    tip = await _read_tip(storage, name, genesis)
    if tip.snapshot_id is None:
        raise RefNotFoundError(f"ref not found: branch {name!r} does not exist")
    return tip


async def _read_version(storage: Storage, name: str, version: int) -> RefData | None:
    """Version ``version`` of a branch, or None if it was never created."""
    key = branch_version_key(name, version)
    try:
        raw = await storage.get(key)
    except ObjectNotFoundError:
        return None
    return decode_object(raw, RefData, ObjectType.REF, name=key)


async def version_taken(storage: Storage, name: str, version: int) -> bool:
    """Whether version ``version`` of branch ``name`` exists (one GET): a writer that read
    version ``version - 1`` learns whether the branch moved since, without reading its tip.

    Raises
    ------
    StorageError
        If the backend fails.
    FormatError
        If the version does not decode.
    """
    return await _read_version(storage, name, version) is not None


async def _read_hint(storage: Storage, name: str) -> int | None:
    """The version the tip hint names, or None if there is no usable hint."""
    key = branch_hint_key(name)
    try:
        hint = decode_object(await storage.get(key), _TipHint, ObjectType.REF, name=key)
    except (ObjectNotFoundError, FormatError):
        return None  # absent, or written by a writer that crashed mid-way: only a hint
    return hint.version if 0 <= hint.version <= _MAXV else None


async def _read_tip(storage: Storage, name: str, genesis: str | None) -> BranchTip:
    """Find the newest version of a branch without listing its history.

    Versions are contiguous (version ``n+1`` is only ever created by a writer that read
    version ``n``) and never deleted, so the tip is the last present version before the
    first absent one. The hint says where to start looking: GET it, then GET the version it
    names and the next one together; walk on while the next one exists (the hint lags when
    a writer died between its ref write and its hint write, or when two hint writes landed
    out of order). The version objects decide, never the hint. A missing or unusable hint
    starts the walk at version 0; a walk longer than ``_MAX_PROBES`` (a history written
    without hints) or a hint naming an absent version falls back to one listing.
    """
    pending = _hints_in_flight.get((storage, name))
    if pending is not None and not pending.done():
        # this process's own hint write, still in flight: wait (briefly: the hint is only
        # a hint) rather than GET one more
        await asyncio.wait([asyncio.wrap_future(pending)], timeout=_HINT_WAIT)
    start = await _read_hint(storage, name)
    if start is None:
        first = await _read_version(storage, name, 0)
        if first is None:
            return _no_versions(name, genesis)
        return await _walk(storage, name, 0, first, limit=_MAX_PROBES)
    here, after = await asyncio.gather(_read_version(storage, name, start),
                                       _read_version(storage, name, start + 1))
    if here is None:  # a hint ahead of the versions: not written by this protocol
        return await _list_tip(storage, name, genesis)
    if after is None:
        return BranchTip(name, start, here.snapshot_id)
    return await _walk(storage, name, start + 1, after, limit=_MAX_PROBES)


async def _walk(storage: Storage, name: str, version: int, data: RefData, *,
                limit: int | None) -> BranchTip:
    """From a present ``version``, GET the next ones until one is absent."""
    steps = 0
    while True:
        nxt = await _read_version(storage, name, version + 1)
        if nxt is None:
            return BranchTip(name, version, data.snapshot_id)
        version, data, steps = version + 1, nxt, steps + 1
        if limit is not None and steps >= limit:
            return await _list_tip(storage, name, None, at_least=version)


async def _list_tip(storage: Storage, name: str, genesis: str | None, *,
                    at_least: int = -1) -> BranchTip:
    """The fallback: list the branch's versions, then walk on from the newest one listed
    (a listing may miss the newest keys; the walk finds them)."""
    best = at_least
    async for meta in storage.list(branch_prefix(name)):
        leaf = meta.key.rsplit("/", 1)[-1]
        if len(leaf) == 12 and leaf.isdigit():
            best = max(best, _MAXV - int(leaf))
    if best < 0:
        first = await _read_version(storage, name, 0)
        if first is None:
            return _no_versions(name, genesis)
        best = 0
    data = await _read_version(storage, name, best)
    if data is None:  # pragma: no cover - versions are never deleted
        raise NotFoundError(f"version {best} of branch {name!r} vanished while reading it")
    return await _walk(storage, name, best, data, limit=None)


def _no_versions(name: str, genesis: str | None) -> BranchTip:
    if name == "main" and genesis is not None:
        return BranchTip(name, -1, genesis)
    raise RefNotFoundError(f"ref not found: branch {name!r} does not exist")


# this process's tip hint writes not landed yet, by (storage, branch): readers of the same
# process wait for them, so what they see does not depend on how fast a hint lands. Commits
# schedule hints from any thread (sync calls run on their caller's thread), the writers run
# on the library's I/O loop: the two maps change only under _hint_lock.
_hints_in_flight: dict[tuple[Storage, str], concurrent.futures.Future[None]] = {}
_hint_wanted: dict[tuple[Storage, str], tuple[int, RefData]] = {}
_hint_lock = threading.Lock()
_HINT_WAIT = 2.0  # seconds


def _forget_hints_after_fork() -> None:
    """A forked child has none of its parent's hint writers: it must neither wait for them
    nor take them for its own."""
    global _hint_lock
    _hints_in_flight.clear()
    _hint_wanted.clear()
    _hint_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_hints_after_fork)


def _schedule_hint(storage: Storage, name: str, version: int, ref: RefData) -> None:
    """Write the branch's tip hint in the background, one write at a time per branch and
    the newest version wanted: hints never land out of order from one process, and a burst
    of moves costs a few hint writes, not one each."""
    slot = (storage, name)
    with _hint_lock:
        wanted = _hint_wanted.get(slot)
        if wanted is None or version > wanted[0]:
            _hint_wanted[slot] = (version, ref)
        if slot in _hints_in_flight:
            return  # the running writer picks the newest up before it ends
        done: concurrent.futures.Future[None] = concurrent.futures.Future()
        _hints_in_flight[slot] = done
    _sync.background(_write_hints(storage, name, done))


async def _write_hints(storage: Storage, name: str,
                       done: concurrent.futures.Future[None]) -> None:
    slot = (storage, name)
    written = -1
    try:
        while True:
            with _hint_lock:  # the last check and the end are one step: no move is missed
                wanted = _hint_wanted.get(slot)
                if wanted is None or wanted[0] <= written:
                    _hint_wanted.pop(slot, None)
                    _hints_in_flight.pop(slot, None)
                    break
            await _write_hint(storage, name, *wanted)
            written = wanted[0]
    finally:
        with _hint_lock:
            if _hints_in_flight.get(slot) is done:  # ended early (cancelled at exit)
                _hint_wanted.pop(slot, None)
                del _hints_in_flight[slot]
        done.set_result(None)


async def _write_hint(storage: Storage, name: str, version: int, ref: RefData) -> None:
    """Best effort: the branch moved whether or not the hint follows."""
    hint = _TipHint(snapshot_id=ref.snapshot_id, write_id=ref.write_id,
                    written_at=ref.written_at, version=version)
    try:
        # "replace": on local disk, a hint landing after the repository was removed must
        # not bring its directory back
        await storage.put(branch_hint_key(name), encode_object(hint, ObjectType.REF),
                          mode="replace")
    except ObjectNotFoundError:
        _log.debug("branch %r moved to version %d, but its directory is gone: no tip hint",
                   name, version)
    except StorageError as exc:
        _log.warning("branch %r moved to version %d but its tip hint was not updated: %s",
                     name, version, exc)


async def write_branch(
    storage: Storage,
    name: str,
    *,
    expected: BranchTip | None,
    snapshot_id: str | None,
    genesis: str | None,
) -> BranchTip:
    """Move branch ``name`` from ``expected`` to ``snapshot_id`` atomically.

    ``expected=None`` creates the branch (it must not exist or be deleted). The create of
    the next version decides; a create whose outcome is unknown (its response was lost and
    every retry failed) is settled by reading the version back and comparing ``write_id``.

    Raises
    ------
    ConflictError
        If another writer moved the branch first (``actual_parent`` is its new tip).
    AlreadyExistsError
        When creating a branch that exists.
    StorageError
        If the backend fails and the write did not land, or if its outcome could not be
        read back (the message says it may have landed).
    """
    if expected is None:
        try:
            current = await _read_tip(storage, name, genesis)
        except NotFoundError:
            current = BranchTip(name, -1, None)
        if current.snapshot_id is not None:
            raise AlreadyExistsError(f"branch {name!r} already exists")
        expected = current
    version = expected.version + 1
    key = branch_version_key(name, version)
    write_id = new_id()
    ref = RefData(snapshot_id=snapshot_id, write_id=write_id, written_at=datetime.now(UTC))
    mine = await _create_settled(storage, key, encode_object(ref, ObjectType.REF), write_id,
                                 f"moving branch {name!r} to version {version}")
    if not mine:
        actual = await _read_tip(storage, name, genesis)
        raise BranchMovedError(expected_parent=expected.snapshot_id,
                            actual_parent=actual.snapshot_id)
    # the hint only says where readers start (docs/design/006-o1-branch-tips.md): a lagging
    # one costs them a GET, so the move does not wait for it
    _schedule_hint(storage, name, version, ref)
    return BranchTip(name, version, snapshot_id)


async def _create_settled(storage: Storage, key: str, data: bytes, write_id: str,
                          what: str) -> bool:
    """Create ``key``; True if the object there is ours, False if another writer's.

    Raises
    ------
    StorageError
        If the create failed and did not land, or its outcome cannot be read back.
    """
    try:
        await storage.put(key, data, mode="create")
        return True
    except ObjectExistsError:
        failure: StorageError | None = None
    except StorageError as exc:  # unknown outcome: it may have landed before the failures
        failure = exc
    try:
        theirs = decode_object(await storage.get(key), RefData, ObjectType.REF, name=key)
    except ObjectNotFoundError:
        if failure is None:  # pragma: no cover - refs are never deleted
            raise StorageError(f"{what}: {key!r} existed, then vanished", key=key) from None
        raise failure from None  # it did not land: a clean failure
    except StorageError as exc:
        raise StorageError(
            f"{what}: the write may have landed, and reading it back failed ({exc}); "
            "read the ref again before retrying", key=key, cause=failure or exc,
        ) from exc
    return theirs.write_id == write_id


async def list_branches(storage: Storage, genesis: str | None) -> set[str]:
    names: set[str] = set()
    async for meta in storage.list(BRANCH_LIST_PREFIX):
        names.add(meta.key[len(BRANCH_LIST_PREFIX) :].split("/", 1)[0])
    out = set()
    for n in names:
        try:
            await read_branch(storage, n, genesis)
            out.add(n)
        except NotFoundError:
            pass
    if "main" not in names and genesis is not None:
        out.add("main")
    return out


async def create_tag(storage: Storage, name: str, snapshot_id: str) -> None:
    """Create an immutable tag.

    Raises
    ------
    AlreadyExistsError
        If the tag exists or existed (deleted tag names are not reused).
    StorageError
        If the backend fails (the message says so when the write may have landed).
    """
    write_id = new_id()
    ref = RefData(snapshot_id=snapshot_id, write_id=write_id, written_at=datetime.now(UTC))
    if await _create_settled(storage, tag_key(name), encode_object(ref, ObjectType.REF),
                             write_id, f"creating tag {name!r}"):
        return
    if await storage.exists(tag_deleted_key(name)):
        raise AlreadyExistsError(f"tag {name!r} was deleted; tag names are never reused")
    raise AlreadyExistsError(f"tag {name!r} already exists")


async def read_tag(storage: Storage, name: str) -> str:
    """Snapshot id a tag points to.

    Raises
    ------
    NotFoundError
        If the tag does not exist or was deleted.
    """
    key = tag_key(name)
    try:
        data = decode_object(await storage.get(key), RefData, ObjectType.REF, name=key)
    except ObjectNotFoundError:
        raise RefNotFoundError(f"ref not found: tag {name!r} does not exist") from None
    if await storage.exists(tag_deleted_key(name)):
        raise RefNotFoundError(f"ref not found: tag {name!r} was deleted")
    assert data.snapshot_id is not None
    return data.snapshot_id


async def delete_tag(storage: Storage, name: str) -> None:
    """Delete a tag by creating its ``deleted`` marker.

    Raises
    ------
    NotFoundError
        If there is no such tag, or another caller deleted it first.
    StorageError
        If the backend fails (the message says so when the write may have landed).
    """
    await read_tag(storage, name)
    write_id = new_id()
    ref = RefData(snapshot_id=None, write_id=write_id, written_at=datetime.now(UTC))
    if not await _create_settled(storage, tag_deleted_key(name),
                                 encode_object(ref, ObjectType.REF), write_id,
                                 f"deleting tag {name!r}"):
        raise RefNotFoundError(f"ref not found: tag {name!r} was deleted")


async def list_tags(storage: Storage) -> set[str]:
    refs: set[str] = set()
    deleted: set[str] = set()
    async for meta in storage.list(TAG_LIST_PREFIX):
        name, _, leaf = meta.key[len(TAG_LIST_PREFIX) :].partition("/")
        (refs if leaf == "ref" else deleted if leaf == "deleted" else set()).add(name)
    return refs - deleted
