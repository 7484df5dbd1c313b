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

    __slots__ = ("_extras", "_n", "_native", "_row", "_rows", "ndim")

    def __init__(self, ndim: int) -> None:
        self.ndim = ndim
        self._row = _row_struct(ndim)
        self._rows = bytearray()
        self._n = 0
        self._native = False
        # inline payloads and virtual locations, made at the first such row: a fork's
        # native writes never pay for them (and a merge of many forks reads one slot)
        self._extras: _Extras | None = None

    def __len__(self) -> int:
        return self._n

    _NOID = bytes(12)

    def add_native(self, coord: tuple[int, ...], chunk_id: bytes, length: int,
                   offset: int = 0, digest: int = 0) -> None:
        self._native = True
        self._add(coord, KIND_NATIVE, chunk_id, offset, length, -1, digest)

    def _more(self) -> _Extras:
        x = self._extras
        if x is None:
            x = self._extras = _Extras()
        return x

    def add_inline(self, coord: tuple[int, ...], data: bytes) -> None:
        x = self._more()
        self._add(coord, KIND_INLINE, self._NOID, x.blob_len, len(data), -1)
        x.inline_rows[self._n - 1] = data
        x.blob.append(data)
        x.blob_len += len(data)

    def add_virtual(self, coord: tuple[int, ...], url: str, offset: int, length: int,
                    etag: str | None, modified: int = 0) -> None:
        x = self._more()
        key = (url, etag, modified)
        ui = x.locations.get(key)
        if ui is None:
            ui = x.locations[key] = len(x.urls)
            x.urls.append(url)
            x.etags.append(etag)
            x.modified.append(modified)
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
        x = self._extras
        if kind == KIND_INLINE and x is not None:
            return kind, x.inline_rows[i]
        if kind == KIND_VIRTUAL and x is not None:
            return kind, (x.urls[u], x.etags[u], x.modified[u], o, ln)
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
        if not any(map(attrgetter("_extras"), builders)):
            # native rows and tombstones only (a distributed write's forks)
            return _table(ndim, rows, native)
        # inline payloads and locations: one blob and one location list for all, each
        # builder's rows pointing into them at its place
        extras = [b._extras or _NO_EXTRAS for b in builders]
        (urls, etags, modified), remaps = merge_locations(
            [(x.urls, x.etags, x.modified) for x in extras])
        t = _table(ndim, rows, native, blob=b"".join(p for x in extras for p in x.blob),
                   urls=urls, etags=etags, modified=modified)
        row = blob_len = 0
        for b, x, remap in zip(builders, extras, remaps, strict=True):
            lo, hi = row, row + b._n
            if blob_len and x.blob:
                offsets = t.offsets[lo:hi]
                offsets[t.kinds[lo:hi] == KIND_INLINE] += np.uint64(blob_len)
            if len(remap):
                t.url_idx[lo:hi] = remap_url_idx(t.url_idx[lo:hi], remap)
            row, blob_len = hi, blob_len + x.blob_len
        return t

    def build(self) -> ChunkTable:
        if not self._n:
            return ChunkTable.empty(self.ndim)
        x = self._extras
        if x is None:
            return _table(self.ndim, self._rows, self._native)
        return _table(self.ndim, self._rows, self._native, blob=b"".join(x.blob),
                      urls=list(x.urls), etags=list(x.etags), modified=list(x.modified))


class _Extras:
    """What a builder keeps for inline and virtual rows besides the packed rows."""

    __slots__ = ("blob", "blob_len", "etags", "inline_rows", "locations", "modified", "urls")

    def __init__(self) -> None:
        self.blob: list[bytes] = []
        self.blob_len = 0
        self.urls: list[str] = []
        self.etags: list[str | None] = []
        self.modified: list[int] = []
        self.locations: dict[tuple[str, str | None, int], int] = {}
        self.inline_rows: dict[int, bytes] = {}


_NO_EXTRAS = _Extras()  # read only: stands for a builder without any


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
