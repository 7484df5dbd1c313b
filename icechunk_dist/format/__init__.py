"""Bytes <-> structs: the on-disk format of icechunk_dist (see docs/spec.md). No I/O here."""

from icechunk_dist.format._builder import TableBuilder
from icechunk_dist.format._codec import FORMAT_VERSION, ObjectType, decode_object, encode_object
from icechunk_dist.format._structs import (
    MAX_ANCESTOR_HINTS,
    ArrayInfo,
    ChunkRefRecord,
    GCRecordData,
    ManifestData,
    ManifestRef,
    NodeRecord,
    RefData,
    RepoInfo,
    SnapshotData,
    TransactionLogData,
    TxChunks,
)
from icechunk_dist.format._virtualrefs import (
    VirtualChunkSpec,
    grid_to_columns,
    micros,
    specs_to_columns,
    split_checksum,
    virtual_table,
)
from icechunk_dist.format.chunktable import (
    KIND_INLINE,
    KIND_NATIVE,
    KIND_TOMBSTONE,
    KIND_VIRTUAL,
    ChunkTable,
)

__all__ = [
    "FORMAT_VERSION",
    "KIND_INLINE",
    "KIND_NATIVE",
    "KIND_TOMBSTONE",
    "KIND_VIRTUAL",
    "MAX_ANCESTOR_HINTS",
    "ArrayInfo",
    "ChunkRefRecord",
    "ChunkTable",
    "GCRecordData",
    "ManifestData",
    "ManifestRef",
    "NodeRecord",
    "ObjectType",
    "RefData",
    "RepoInfo",
    "SnapshotData",
    "TableBuilder",
    "TransactionLogData",
    "TxChunks",
    "VirtualChunkSpec",
    "decode_object",
    "encode_object",
    "grid_to_columns",
    "micros",
    "specs_to_columns",
    "split_checksum",
    "virtual_table",
]
