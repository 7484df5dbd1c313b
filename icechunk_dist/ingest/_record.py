"""The record of landed inputs: which source files a group holds, kept in the group itself.

One JSON document per ingested group, at ``<group>/.icechunk_dist/ingest.json``: an ordinary
(loose) key of the snapshot, so it is reachable from the branch tip alone. It travels with
the snapshot through ``expire_snapshots``, amend and garbage collection, rolls back with
``reset_branch``, and goes with the group when the group is deleted or replaced. Zarr never
lists it (:data:`icechunk_dist.store.PRIVATE_DIR`). Every ingestion commit rewrites it whole,
in the same commit as the data it describes: docs/design/012-landed-inputs-record.md.

Repositories ingested before the record existed carry their inputs only in the metadata of
the ingestion commits (:data:`METADATA_KEY`); :func:`legacy_record` reads those.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import msgspec

from icechunk_dist import _sync
from icechunk_dist.errors import FormatError, InvalidInputError
from icechunk_dist.ingest._sources import SourceFile
from icechunk_dist.store import PRIVATE_DIR

if TYPE_CHECKING:
    from icechunk_dist.repository import Repository
    from icechunk_dist.store import IcechunkStore

__all__ = [
    "METADATA_KEY",
    "Landed",
    "Record",
    "as_metadata",
    "changed",
    "legacy_record",
    "normalize_group",
    "read_record",
    "record_key",
    "write_record",
]

METADATA_KEY = "icechunk_dist.ingest"
"""Commit-metadata key under which each ingestion commit lists the inputs it landed (for
``log``; the authority for re-runs is the record in the tree)."""

_NAME = "ingest.json"


class Landed(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One landed input: its identity when it landed, and where its steps are.

    Attributes
    ----------
    url, size, etag, mtime
        As the source listing gave them (:class:`SourceFile`).
    sha256
        Content checksum, if the run that landed it computed one (``checksum=True``).
    start, steps
        Offset and length of its data along the concat dimension (None in legacy records).
    landed_at
        When it landed (ISO 8601, UTC).
    snapshot
        Legacy records only: the commit that recorded it.
    """

    url: str
    size: int
    etag: str | None = None
    mtime: float | None = None
    sha256: str | None = None
    start: int | None = None
    steps: int | None = None
    landed_at: str | None = None
    snapshot: str | None = None

    @classmethod
    def of(cls, src: SourceFile, *, start: int, steps: int, sha256: str | None) -> Landed:
        """The entry for ``src`` landing now at ``start`` with ``steps`` steps."""
        return cls(url=src.url, size=src.size, etag=src.etag, mtime=src.mtime, sha256=sha256,
                   start=start, steps=steps,
                   landed_at=datetime.now(UTC).isoformat(timespec="seconds"))

    def where(self) -> str:
        """Where it was recorded, for messages."""
        if self.snapshot:
            return f"in snapshot {self.snapshot}"
        return f"at {self.landed_at}" if self.landed_at else "earlier"


class Record(msgspec.Struct, kw_only=True):
    """The landed inputs of one group, in landing order."""

    version: int = 1
    concat_dim: str | None = None
    files: list[Landed] = msgspec.field(default_factory=list)

    def by_url(self) -> dict[str, Landed]:
        """url -> entry (the last entry wins: a re-ingested file replaces its old one)."""
        return {f.url: f for f in self.files}

    def with_files(self, concat_dim: str, landed: list[Landed]) -> Record:
        """This record plus ``landed`` (entries of re-ingested files replace their old
        ones in place)."""
        new = {f.url: f for f in landed}
        kept = [new.pop(f.url, f) for f in self.files]
        return Record(version=1, concat_dim=concat_dim, files=kept + list(new.values()))


def normalize_group(group: str | None) -> str | None:
    """The one spelling of a group path: ``a/b``, ``/a/b`` and ``a/b/`` are ``"a/b"``;
    ``None``, ``""`` and ``"/"`` are the root (``None``).

    Raises
    ------
    InvalidInputError
        On an empty, ``.`` or ``..`` segment (``a//b``, ``../x``), a backslash or control
        character, or the library's private directory name.
    """
    if group is None:
        return None
    if not isinstance(group, str):
        raise InvalidInputError(f"group must be a str, got {type(group).__name__}")
    text = group.strip("/")
    if not text:
        return None
    for seg in text.split("/"):
        if seg in ("", ".", "..") or seg == PRIVATE_DIR or "\\" in seg or any(
                ord(c) < 32 or ord(c) == 127 for c in seg):
            raise InvalidInputError(
                f"group {group!r} is not a group path: use names separated by '/' (a/b), "
                "without empty, '.' or '..' parts"
            )
    return text


def record_key(group: str | None) -> str:
    """The store key of ``group``'s record."""
    return f"{group}/{PRIVATE_DIR}/{_NAME}" if group else f"{PRIVATE_DIR}/{_NAME}"


def read_record(store: IcechunkStore, group: str | None) -> Record | None:
    """The record ``store``'s snapshot (or session) holds for ``group``, or None.

    Raises
    ------
    FormatError
        If the document is not a record.
    """
    from zarr.core.buffer import default_buffer_prototype

    key = record_key(group)
    buf = _sync.run(store.get(key, default_buffer_prototype()))
    if buf is None:
        return None
    try:
        return msgspec.json.decode(buf.to_bytes(), type=Record)
    except msgspec.DecodeError as e:
        raise FormatError(f"the record of landed inputs {key!r} is unreadable: {e}") from None


def write_record(store: IcechunkStore, group: str | None, record: Record) -> None:
    """Write ``record`` into a writable session's store (it lands with the next commit)."""
    from zarr.core.buffer import default_buffer_prototype

    data = msgspec.json.encode(record)
    _sync.run(store.set(record_key(group), default_buffer_prototype().buffer.from_bytes(data)))


def legacy_record(repo: Repository, ref: str, group: str | None) -> Record:
    """The inputs listed in the metadata of the ingestion commits on ``ref``'s ancestry
    (repositories ingested before the record was kept in the tree)."""
    commits: list[list[Landed]] = []  # newest first
    seen: set[str] = set()
    concat_dim = None
    for info in repo.ancestry(branch=ref):
        rec = info.metadata.get(METADATA_KEY) if info.metadata else None
        if not isinstance(rec, dict):
            continue
        try:
            same = normalize_group(rec.get("group") or None) == group
        except InvalidInputError:
            continue
        if not same:
            continue
        if concat_dim is None and rec.get("concat_dim"):
            concat_dim = str(rec["concat_dim"])
        landed = []
        for f in rec.get("files") or ():
            if isinstance(f, dict) and "url" in f and str(f["url"]) not in seen:
                seen.add(str(f["url"]))
                landed.append(Landed(
                    url=str(f["url"]), size=int(f.get("size", -1)), etag=f.get("etag"),
                    mtime=f.get("mtime"), sha256=f.get("sha256"), snapshot=info.id))
        commits.append(landed)
    return Record(concat_dim=concat_dim, files=[f for c in reversed(commits) for f in c])


def changed(old: Landed, new: SourceFile, sha256: str | None) -> str | None:
    """How ``new`` differs from the version that landed, or None if it is the same file.

    The size must match. A content checksum, when both sides have one, decides; else the
    object store's etag; else the modification time.
    """
    if old.size >= 0 and old.size != new.size:
        return f"size {old.size} -> {new.size} bytes"
    if old.sha256 and sha256:
        return None if old.sha256 == sha256 else "content (sha256) differs"
    if old.etag and new.etag:
        return None if old.etag == new.etag else f"etag {old.etag} -> {new.etag}"
    if old.mtime is not None and new.mtime is not None and old.mtime != new.mtime:
        return (f"modified {_when(new.mtime)}, the landed version was modified "
                f"{_when(old.mtime)}")
    return None


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def as_metadata(group: str | None, concat_dim: str, files: list[Landed]) -> dict[str, Any]:
    """The commit metadata of one ingestion commit (what ``log`` shows)."""
    return {METADATA_KEY: {"version": 2, "group": group, "concat_dim": concat_dim,
                           "files": [msgspec.to_builtins(f) for f in files]}}
