"""Branches and tags on object storage, with create-only writes (no compare-and-swap needed).

A branch is a sequence of immutable versions ``refs/branch.<name>/<12 digits>``; the digits
count *down* (``999999999999 - n``) so the newest version sorts first. Moving a branch from
version ``n`` is an atomic create-if-absent of version ``n + 1``: of two writers racing from
the same version exactly one creates it, on every backend (local disk has no CAS in obstore,
but it has atomic create). Each version carries a random ``write_id`` so that a lost response
to our own successful create is recognised as success, not reported as a conflict.

A tag is ``refs/tag.<name>/ref`` (create-only, immutable); deleting it creates
``refs/tag.<name>/deleted``, and since ``ref`` stays, the name can never be reused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from icechunk_dist._types import new_id
from icechunk_dist.errors import AlreadyExistsError, ConflictError, InvalidInputError, NotFoundError
from icechunk_dist.format import ObjectType, RefData, decode_object, encode_object
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
    "write_branch",
]

_MAXV = 10**12 - 1
_BAD = re.compile(r"[\x00-\x1f\x7f/\\]")


def validate_ref_name(name: str, what: str = "ref") -> str:
    """Check a branch or tag name.

    Raises
    ------
    InvalidInputError
        If the name is empty, too long, contains ``/``, ``\\``, ``..`` or control characters.
    """
    if not isinstance(name, str) or not name:
        raise InvalidInputError(f"{what} name must be a non-empty string, got {name!r}")
    if len(name) > 255 or _BAD.search(name) or ".." in name or name in (".",):
        raise InvalidInputError(
            f"invalid {what} name {name!r}: no '/', '\\\\', '..', control characters, "
            "at most 255 characters"
        )
    return name


def _branch_prefix(name: str) -> str:
    return f"refs/branch.{name}/"


def _version_key(name: str, version: int) -> str:
    return f"{_branch_prefix(name)}{_MAXV - version:012d}"


@dataclass(frozen=True)
class BranchTip:
    """The newest version of a branch: ``snapshot_id`` None means deleted."""

    name: str
    version: int
    snapshot_id: str | None


async def read_branch(storage: Storage, name: str, genesis: str | None) -> BranchTip:
    """Read the tip of a branch. ``genesis`` is main's initial snapshot (version -1).

    Raises
    ------
    NotFoundError
        If the branch never existed or is deleted.
    """
    tip = await _read_tip(storage, name, genesis)
    if tip.snapshot_id is None:
        raise NotFoundError(f"branch {name!r} does not exist")
    return tip


async def _read_tip(storage: Storage, name: str, genesis: str | None) -> BranchTip:
    best: str | None = None
    async for meta in storage.list(_branch_prefix(name)):
        leaf = meta.key.rsplit("/", 1)[-1]
        if len(leaf) == 12 and leaf.isdigit() and (best is None or leaf < best):
            best = leaf
    if best is None:
        if name == "main" and genesis is not None:
            return BranchTip(name, -1, genesis)
        raise NotFoundError(f"branch {name!r} does not exist")
    key = _branch_prefix(name) + best
    data = decode_object(await storage.get(key), RefData, ObjectType.REF, name=key)
    return BranchTip(name, _MAXV - int(best), data.snapshot_id)


async def write_branch(
    storage: Storage,
    name: str,
    *,
    expected: BranchTip | None,
    snapshot_id: str | None,
    genesis: str | None,
) -> BranchTip:
    """Move branch ``name`` from ``expected`` to ``snapshot_id`` atomically.

    ``expected=None`` creates the branch (it must not exist or be deleted).

    Raises
    ------
    ConflictError
        If another writer moved the branch first (``actual_parent`` is its new tip).
    AlreadyExistsError
        When creating a branch that exists.
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
    key = _version_key(name, version)
    write_id = new_id()
    ref = RefData(snapshot_id=snapshot_id, write_id=write_id, written_at=datetime.now(UTC))
    try:
        await storage.put(key, encode_object(ref, ObjectType.REF), mode="create")
    except ObjectExistsError:
        try:
            theirs = decode_object(await storage.get(key), RefData, ObjectType.REF, name=key)
        except ObjectNotFoundError:  # pragma: no cover - versions are never deleted
            theirs = None
        if theirs is not None and theirs.write_id == write_id:
            return BranchTip(name, version, snapshot_id)  # our write landed; response lost
        actual = await _read_tip(storage, name, genesis)
        raise ConflictError(
            expected_parent=expected.snapshot_id, actual_parent=actual.snapshot_id
        ) from None
    return BranchTip(name, version, snapshot_id)


async def list_branches(storage: Storage, genesis: str | None) -> set[str]:
    names: set[str] = set()
    async for meta in storage.list("refs/branch."):
        names.add(meta.key[len("refs/branch.") :].split("/", 1)[0])
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


def _tag_key(name: str) -> str:
    return f"refs/tag.{name}/ref"


def _tag_deleted_key(name: str) -> str:
    return f"refs/tag.{name}/deleted"


async def create_tag(storage: Storage, name: str, snapshot_id: str) -> None:
    """Create an immutable tag.

    Raises
    ------
    AlreadyExistsError
        If the tag exists or existed (deleted tag names are not reused).
    """
    ref = RefData(snapshot_id=snapshot_id, write_id=new_id(), written_at=datetime.now(UTC))
    try:
        await storage.put(_tag_key(name), encode_object(ref, ObjectType.REF), mode="create")
    except ObjectExistsError:
        if await storage.exists(_tag_deleted_key(name)):
            raise AlreadyExistsError(
                f"tag {name!r} was deleted; tag names are never reused"
            ) from None
        raise AlreadyExistsError(f"tag {name!r} already exists") from None


async def read_tag(storage: Storage, name: str) -> str:
    """Snapshot id a tag points to.

    Raises
    ------
    NotFoundError
        If the tag does not exist or was deleted.
    """
    key = _tag_key(name)
    try:
        data = decode_object(await storage.get(key), RefData, ObjectType.REF, name=key)
    except ObjectNotFoundError:
        raise NotFoundError(f"tag {name!r} does not exist") from None
    if await storage.exists(_tag_deleted_key(name)):
        raise NotFoundError(f"tag {name!r} was deleted")
    assert data.snapshot_id is not None
    return data.snapshot_id


async def delete_tag(storage: Storage, name: str) -> None:
    await read_tag(storage, name)
    ref = RefData(snapshot_id=None, write_id=new_id(), written_at=datetime.now(UTC))
    try:
        await storage.put(_tag_deleted_key(name), encode_object(ref, ObjectType.REF),
                          mode="create")
    except ObjectExistsError:
        raise NotFoundError(f"tag {name!r} was deleted") from None


async def list_tags(storage: Storage) -> set[str]:
    refs: set[str] = set()
    deleted: set[str] = set()
    async for meta in storage.list("refs/tag."):
        name, _, leaf = meta.key[len("refs/tag.") :].partition("/")
        (refs if leaf == "ref" else deleted if leaf == "deleted" else set()).add(name)
    return refs - deleted
