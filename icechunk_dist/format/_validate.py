"""Checks of what a decoded object says, beyond its types (see docs/spec.md section 4).

msgspec checks that every field has its declared type; these checks add what the rest of the
library relies on: ids are ids, shapes are shapes, numbers are in range. An object read from
storage that passes them cannot make a later step crash (a division by a zero split, a
storage key with a control character, a negative length); one that fails them is a
``FormatError`` naming the object. Pure functions, no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from icechunk_dist._types import ID_CHARS, parse_id
from icechunk_dist.errors import FormatError, InvalidInputError
from icechunk_dist.format._structs import (
    MAX_ANCESTOR_HINTS,
    ArrayInfo,
    ChunkRefRecord,
    ManifestData,
    NodeRecord,
    RefData,
    RepoInfo,
    SnapshotData,
    TransactionLogData,
)

__all__ = ["validate"]

_U63 = 2**63 - 1  # offsets, lengths and sizes are int64-safe
_KINDS = (0, 1, 2)  # native, inline, virtual


class _Bad(Exception):
    """Raised inside the checks; turned into a FormatError naming the object."""


def _id(value: str, what: str) -> None:
    # an id inside an object is written in canonical (upper) case: it names a key
    if len(value) != ID_CHARS:
        raise _Bad(f"{what} {value!r} is not an id")
    try:
        canonical = parse_id(value)
    except InvalidInputError:
        raise _Bad(f"{what} {value!r} is not an id") from None
    if canonical != value:
        raise _Bad(f"{what} {value!r} is not written in upper case")


def _count(value: int, what: str) -> None:
    if not 0 <= value <= _U63:
        raise _Bad(f"{what} {value} is out of range")


def _dims(values: Iterable[int], what: str, *, low: int) -> None:
    for v in values:
        if not low <= v <= _U63:
            raise _Bad(f"{what} has an entry {v} out of range")


def _array(info: ArrayInfo, path: str) -> int:
    """Check an array's grid; return its internal dimensionality (0-d arrays have one)."""
    nd = len(info.shape)
    if len(info.chunk_shape) != nd:
        raise _Bad(f"array {path!r}: shape {info.shape} and chunk shape {info.chunk_shape} "
                   "differ in length")
    _dims(info.shape, f"array {path!r} shape", low=0)
    _dims(info.chunk_shape, f"array {path!r} chunk shape", low=1)
    ndim = max(1, nd)
    if len(info.split_shape) != ndim:
        raise _Bad(f"array {path!r}: split shape {info.split_shape} has the wrong length")
    _dims(info.split_shape, f"array {path!r} split shape", low=1)
    if info.encoding not in ("default", "v2"):
        raise _Bad(f"array {path!r}: unknown chunk key encoding {info.encoding!r}")
    if info.separator not in ("/", "."):
        raise _Bad(f"array {path!r}: chunk key separator {info.separator!r}")
    _count(info.raw_chunk_nbytes, f"array {path!r} raw chunk size")
    return ndim


def _loose(rec: ChunkRefRecord) -> None:
    if rec.kind not in _KINDS:
        raise _Bad(f"loose key {rec.key!r}: unknown chunk ref kind {rec.kind}")
    _count(rec.offset, f"loose key {rec.key!r} offset")
    _count(rec.length, f"loose key {rec.key!r} length")
    _count(rec.modified, f"loose key {rec.key!r} modification time")
    if rec.kind == 0:
        _id(rec.id, f"loose key {rec.key!r} chunk id")


def _node(node: NodeRecord) -> None:
    _id(node.node_id, f"node {node.path!r} id")
    if node.array is None:
        if node.manifests:
            raise _Bad(f"node {node.path!r} has manifests but no chunk grid")
        return
    ndim = _array(node.array, node.path)
    for m in node.manifests:
        _id(m.id, f"node {node.path!r} manifest id")
        if len(m.split) != ndim:
            raise _Bad(f"node {node.path!r}: manifest split {m.split} has the wrong length")
        _dims(m.split, f"node {node.path!r} manifest split", low=0)
        _count(m.count, f"node {node.path!r} manifest row count")


def _snapshot(s: SnapshotData) -> None:
    _id(s.id, "snapshot id")
    if s.parent_id is not None:
        _id(s.parent_id, "parent snapshot id")
    if len(s.ancestors) > MAX_ANCESTOR_HINTS:
        raise _Bad(f"{len(s.ancestors)} ancestor hints, more than {MAX_ANCESTOR_HINTS}")
    for a in s.ancestors:
        _id(a, "ancestor snapshot id")
    paths: set[str] = set()
    for node in s.nodes:
        if node.path in paths:
            raise _Bad(f"node {node.path!r} appears twice")
        paths.add(node.path)
        _node(node)
    for rec in s.loose:
        _loose(rec)


def _manifest(m: ManifestData) -> None:
    # the columns themselves are checked by ChunkTable.from_manifest
    _id(m.node_id, "manifest node id")
    if not 1 <= m.ndim <= 64:
        raise _Bad(f"manifest dimensionality {m.ndim} is out of range")
    _count(m.count, "manifest row count")
    if len(m.urls) != len(m.etags):
        raise _Bad("manifest has different numbers of urls and etags")
    if len(m.modified) not in (0, len(m.urls)):
        raise _Bad("manifest has different numbers of urls and modification times")
    _dims(m.modified, "manifest modification times", low=0)


def _transaction_log(t: TransactionLogData) -> None:
    _id(t.snapshot_id, "transaction log snapshot id")
    for c in t.chunks:
        _id(c.node_id, f"transaction log array {c.path!r} node id")
        if not 1 <= c.ndim <= 64:
            raise _Bad(f"transaction log array {c.path!r}: dimensionality {c.ndim}")
        _count(c.count, f"transaction log array {c.path!r} row count")
        if len(c.coords) != 8 * c.count * c.ndim:
            raise _Bad(f"transaction log array {c.path!r}: {len(c.coords)} coordinate bytes "
                       f"for {c.count} rows of {c.ndim} dimensions")
    for path, shape in t.extended_arrays.items():
        _dims(shape, f"transaction log array {path!r} old shape", low=0)


def _ref(r: RefData) -> None:
    if r.snapshot_id is not None:
        _id(r.snapshot_id, "ref snapshot id")
    _id(r.write_id, "ref write id")


def _repo(r: RepoInfo) -> None:
    if r.format_version < 1:
        raise _Bad(f"format version {r.format_version}")
    _id(r.initial_snapshot_id, "initial snapshot id")


_CHECKS: dict[type[Any], Callable[[Any], None]] = {
    SnapshotData: _snapshot,
    ManifestData: _manifest,
    TransactionLogData: _transaction_log,
    RefData: _ref,
    RepoInfo: _repo,
}


def validate(obj: object, *, name: str) -> None:
    """Check a decoded object's contents.

    Raises
    ------
    FormatError
        If a field holds a value no writer produces (naming the object and the field).
    """
    check = _CHECKS.get(type(obj))
    if check is None:
        return
    try:
        check(obj)
    except _Bad as e:
        raise FormatError(str(e), object_name=name) from None
