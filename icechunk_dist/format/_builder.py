"""The append-only builder of chunk tables, for writes that arrive one chunk at a time."""

from __future__ import annotations

import functools
import struct
from collections.abc import Sequence
from operator import attrgetter
from typing import Any

import numpy as np

from icechunk_dist._types import encode_id
from icechunk_dist.format._locations import merge_locations, no_ids, remap_url_idx
from icechunk_dist.format.chunktable import (
    KIND_INLINE,
    KIND_NATIVE,
    KIND_TOMBSTONE,
    KIND_VIRTUAL,
    ChunkTable,
)

__all__ = ["TableBuilder"]


class TableBuilder:
    """Append-only accumulator used while zarr hands chunks over one at a time. Each distinct
    virtual location is kept once, however many rows point into it.

    Rows are packed records in one ``bytearray`` (coordinates, kind, chunk id, offset,
    length, location index, digest), not lists of Python objects: building a table reads
    the buffer once as a record array, and :meth:`build_all` joins the buffers of many
    builders (a merge of thousands of forks' few writes each) in one pass over them.
    """

    __slots__ = (
        "_blob",
        "_blob_len",
        "_etags",
        "_inline_rows",
        "_locations",
        "_modified",
        "_n",
        "_native",
        "_row",
        "_rows",
        "_urls",
        "ndim",
    )

    def __init__(self, ndim: int) -> None:
        self.ndim = ndim
        self._row = _row_struct(ndim)
        self._rows = bytearray()
        self._n = 0
        self._blob: list[bytes] = []
        self._blob_len = 0
        self._urls: list[str] = []
        self._etags: list[str | None] = []
        self._modified: list[int] = []
        self._locations: dict[tuple[str, str | None, int], int] = {}
        self._inline_rows: dict[int, bytes] = {}
        self._native = False

    def __len__(self) -> int:
        return self._n

    _NOID = bytes(12)

    def add_native(self, coord: tuple[int, ...], chunk_id: bytes, length: int,
                   offset: int = 0, digest: int = 0) -> None:
        self._native = True
        self._add(coord, KIND_NATIVE, chunk_id, offset, length, -1, digest)

    def add_inline(self, coord: tuple[int, ...], data: bytes) -> None:
        self._inline_rows[self._n] = data
        self._add(coord, KIND_INLINE, self._NOID, self._blob_len, len(data), -1)
        self._blob.append(data)
        self._blob_len += len(data)

    def add_virtual(self, coord: tuple[int, ...], url: str, offset: int, length: int,
                    etag: str | None, modified: int = 0) -> None:
        key = (url, etag, modified)
        ui = self._locations.get(key)
        if ui is None:
            ui = self._locations[key] = len(self._urls)
            self._urls.append(url)
            self._etags.append(etag)
            self._modified.append(modified)
        self._add(coord, KIND_VIRTUAL, self._NOID, offset, length, ui)

    def add_tombstone(self, coord: tuple[int, ...]) -> None:
        self._add(coord, KIND_TOMBSTONE, self._NOID, 0, 0, -1)

    def _add(self, coord: tuple[int, ...], kind: int, cid: bytes, off: int, ln: int,
             ui: int, digest: int = 0) -> None:
        if len(coord) != self.ndim:
            raise ValueError(f"coordinate {coord} has {len(coord)} dims, expected {self.ndim}")
        if len(cid) != 12:
            raise ValueError(f"a chunk id is 12 bytes, got {len(cid)}")
        self._rows += self._row.pack(*coord, kind, cid, off, ln, ui, digest)
        self._n += 1

    def build_row(self, i: int) -> tuple[int, object]:
        """(kind, payload) of row ``i``, as :meth:`ChunkTable.row_payload`."""
        *_, kind, cid, o, ln, u, _d = self._row.unpack_from(self._rows, i * self._row.size)
        if kind == KIND_INLINE:
            return kind, self._inline_rows[i]
        if kind == KIND_VIRTUAL:
            return kind, (self._urls[u], self._etags[u], self._modified[u], o, ln)
        return kind, (encode_id(cid), o, ln)

    @classmethod
    def build_all(cls, builders: Sequence[TableBuilder]) -> ChunkTable:
        """The rows of ``builders``, in order, as one table (what :meth:`ChunkTable.concat`
        of their :meth:`build` gives), from one join of their row buffers: a merge of many
        forks' few writes each pays numpy's fixed costs once, not once per fork."""
        ndim = builders[0].ndim
        if any(b.ndim != ndim for b in builders):
            raise ValueError("cannot build chunk tables of different dimensionality")
        rows = b"".join(map(attrgetter("_rows"), builders))
        native = any(map(attrgetter("_native"), builders))
        if not any(b._blob or b._urls for b in builders):
            # native rows and tombstones only (a distributed write's forks)
            return _table(ndim, rows, native)
        # inline payloads and locations: one blob and one location list for all, each
        # builder's rows pointing into them at its place
        (urls, etags, modified), remaps = merge_locations(
            [(b._urls, b._etags, b._modified) for b in builders])
        t = _table(ndim, rows, native, blob=b"".join(p for b in builders for p in b._blob),
                   urls=urls, etags=etags, modified=modified)
        row = blob_len = 0
        for b, remap in zip(builders, remaps, strict=True):
            lo, hi = row, row + b._n
            if blob_len and b._blob:
                offsets = t.offsets[lo:hi]
                offsets[t.kinds[lo:hi] == KIND_INLINE] += np.uint64(blob_len)
            if len(remap):
                t.url_idx[lo:hi] = remap_url_idx(t.url_idx[lo:hi], remap)
            row, blob_len = hi, blob_len + b._blob_len
        return t

    def build(self) -> ChunkTable:
        if not self._n:
            return ChunkTable.empty(self.ndim)
        return _table(self.ndim, self._rows, self._native, blob=b"".join(self._blob),
                      urls=list(self._urls), etags=list(self._etags),
                      modified=list(self._modified))


@functools.cache
def _row_struct(ndim: int) -> struct.Struct:
    """One packed row: coordinates, kind, chunk id, offset, length, location, digest."""
    return struct.Struct("=" + "q" * ndim + "B12sQQiQ")


@functools.cache
def _row_dtype(ndim: int) -> np.dtype[Any]:
    """:func:`_row_struct` as a numpy record (native byte order, no padding)."""
    return np.dtype([("coords", np.int64, (ndim,)), ("kinds", np.uint8),
                     ("ids", np.uint8, (12,)), ("offsets", np.uint64),
                     ("lengths", np.uint64), ("url_idx", np.int32), ("digests", np.uint64)])


def _table(ndim: int, rows: bytes | bytearray, native: bool, *, blob: bytes = b"",
           urls: list[str] | None = None, etags: list[str | None] | None = None,
           modified: list[int] | None = None) -> ChunkTable:
    """A table of the packed ``rows``; every column is its own contiguous, writable copy
    (the builder's buffer stays appendable)."""
    rec = np.frombuffer(rows, _row_dtype(ndim))
    n = len(rec)
    digests = rec["digests"]
    return ChunkTable(
        ndim=ndim,
        coords=np.array(rec["coords"], np.int64).reshape(n, ndim),
        kinds=np.array(rec["kinds"]),
        ids=np.array(rec["ids"]) if native else no_ids(n),
        offsets=np.array(rec["offsets"]),
        lengths=np.array(rec["lengths"]),
        url_idx=np.array(rec["url_idx"]),
        blob=blob,
        urls=urls if urls is not None else [],
        etags=etags if etags is not None else [],
        digests=np.array(digests) if digests.any() else None,
        modified=modified if modified is not None else [],
    )
