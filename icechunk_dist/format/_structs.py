"""The versioned msgspec Structs stored in a repository (see ``docs/spec.md``).

Schema evolution rules (msgspec's): new fields are appended with defaults, fields are never
reordered, renamed or retyped. Unknown fields written by newer versions are ignored.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import msgspec

__all__ = [
    "MAX_ANCESTOR_HINTS",
    "ArrayInfo",
    "ChunkRefRecord",
    "GCRecordData",
    "ManifestData",
    "ManifestRef",
    "NodeRecord",
    "RefData",
    "RepoInfo",
    "SnapshotData",
    "TxChunks",
    "TransactionLogData",
]

NodeKind = Literal["array", "group", "other"]

#: most ancestor ids a snapshot carries as a prefetch hint (``SnapshotData.ancestors``)
MAX_ANCESTOR_HINTS = 100


class ArrayInfo(msgspec.Struct, frozen=True):
    """What the engine needs to know about an array's chunk grid.

    ``encoding`` is ``"default"`` (keys ``c/1/2``) or ``"v2"`` (keys ``1.2``); ``separator`` is
    the character between coordinates. ``split_shape`` tiles the chunk grid into manifest
    splits: chunk ``c`` lives in split ``c // split_shape``.
    """

    shape: tuple[int, ...]
    chunk_shape: tuple[int, ...]
    encoding: str = "default"
    separator: str = "/"
    split_shape: tuple[int, ...] = ()
    # exact byte size of every encoded chunk when the codecs make it knowable (uncompressed
    # fixed-size data types), else 0; writes of another size are refused
    raw_chunk_nbytes: int = 0


class ManifestRef(msgspec.Struct, frozen=True):
    """Pointer from a snapshot's node to one manifest split."""

    id: str
    split: tuple[int, ...]
    count: int


class ChunkRefRecord(msgspec.Struct, frozen=True):
    """One chunk reference held outside manifests (keys that are not array chunks)."""

    key: str
    kind: int  # 0 native, 1 inline, 2 virtual
    id: str = ""
    offset: int = 0
    length: int = 0
    data: bytes = b""
    url: str = ""
    etag: str | None = None
    # virtual refs: the source's last-modified time the ref was recorded with, in
    # microseconds since the epoch (0: none; a newer source is refused when read)
    modified: int = 0


class NodeRecord(msgspec.Struct, frozen=True):
    """A group, array or other metadata document in a snapshot.

    ``metadata`` is the exact ``zarr.json`` document zarr wrote (opaque bytes to us apart from
    what ``array`` records). ``node_id`` is stable for the life of a node and names its chunks.
    """

    path: str
    node_id: str
    kind: NodeKind
    metadata: bytes
    array: ArrayInfo | None = None
    manifests: tuple[ManifestRef, ...] = ()


class SnapshotData(msgspec.Struct, frozen=True):
    """An immutable snapshot: the whole tree of nodes and where their chunk refs live."""

    id: str
    parent_id: str | None
    written_at: datetime
    message: str
    metadata: dict[str, Any] = {}
    nodes: tuple[NodeRecord, ...] = ()
    loose: tuple[ChunkRefRecord, ...] = ()
    # set by ``expire_snapshots`` when it re-parents this snapshot onto the initial snapshot:
    # the parent its transaction log is relative to (history between them was expired)
    original_parent_id: str | None = None
    # ids of the nearest ancestors beyond the parent, nearest first (at most
    # MAX_ANCESTOR_HINTS): a prefetch hint for history walks, never an authority
    # (docs/design/007-ancestor-hints.md); readers follow ``parent_id``
    ancestors: tuple[str, ...] = ()


class ManifestData(msgspec.Struct, frozen=True):
    """One manifest split of one array, columnar.

    Arrays are little-endian raw buffers: ``coords`` int64 (count x ndim), ``kinds`` uint8,
    ``ids`` 12 bytes per row, ``offsets``/``lengths`` uint64, ``url_idx`` int32 (-1 unless
    virtual). Inline chunk payloads are concatenated in ``blob`` (offset/length point into it).
    ``urls``, ``etags`` and ``modified`` describe each distinct virtual location once
    (``url_idx`` points into them); ``modified`` (last-modified times in microseconds since
    the epoch, 0 for none) is empty when no location has one. Manifests written before
    locations were deduplicated hold one location per virtual row; readers accept both.
    """

    node_id: str
    ndim: int
    count: int
    coords: bytes
    kinds: bytes
    ids: bytes
    offsets: bytes
    lengths: bytes
    url_idx: bytes
    blob: bytes = b""
    urls: tuple[str, ...] = ()
    etags: tuple[str | None, ...] = ()
    modified: tuple[int, ...] = ()


class TxChunks(msgspec.Struct, frozen=True):
    """Chunk coordinates written (or deleted) in one array by one commit, columnar int64."""

    path: str
    node_id: str
    ndim: int
    count: int
    coords: bytes


class TransactionLogData(msgspec.Struct, frozen=True):
    """What one commit changed; read by rebase to detect conflicts, and by ``diff``."""

    snapshot_id: str
    new_groups: tuple[str, ...] = ()
    new_arrays: tuple[str, ...] = ()
    updated_groups: tuple[str, ...] = ()
    updated_arrays: tuple[str, ...] = ()
    deleted_groups: tuple[str, ...] = ()
    deleted_arrays: tuple[str, ...] = ()
    chunks: tuple[TxChunks, ...] = ()
    loose_keys: tuple[str, ...] = ()
    # arrays whose only metadata change is a larger shape (append), with the old shape
    extended_arrays: dict[str, tuple[int, ...]] = {}


class RefData(msgspec.Struct, frozen=True):
    """One version of a branch or a tag. ``snapshot_id`` None marks a deleted branch."""

    snapshot_id: str | None
    write_id: str
    written_at: datetime


class GCRecordData(msgspec.Struct, frozen=True):
    """One garbage-collection run (``gc/<run id>/start`` and ``gc/<run id>/done``).

    Written before the run deletes anything (``finished_at`` None) and again when it has
    finished deleting. Commits read these to decide whether to verify that the objects they
    reference still exist (docs/design/005-gc-vs-writers.md); incremental runs read the
    last ``done`` record.
    """

    run_id: str
    started_at: datetime
    older_than: datetime
    incremental: bool = False
    finished_at: datetime | None = None
    chunks_deleted: int = 0
    manifests_deleted: int = 0
    snapshots_deleted: int = 0
    transaction_logs_deleted: int = 0
    bytes_deleted: int = 0


class RepoInfo(msgspec.Struct, frozen=True):
    """The repository marker object: its existence is what makes a repository."""

    format_version: int
    created_at: datetime
    initial_snapshot_id: str
    config: dict[str, Any] = {}
