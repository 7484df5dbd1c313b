"""The append-only builder of chunk tables, for writes that arrive one chunk at a time."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import chain

import numpy as np

from icechunk_dist._types import encode_id
from icechunk_dist.format._locations import no_ids
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
    virtual location is kept once, however many rows point into it."""

    __slots__ = (
        "_blob",
        "_blob_len",
        "_coords",
        "_digests",
        "_etags",
        "_ids",
        "_inline_rows",
        "_kinds",
        "_lengths",
        "_locations",
        "_modified",
        "_native",
        "_offsets",
        "_url_idx",
        "_urls",
        "ndim",
    )

    def __init__(self, ndim: int) -> None:
        self.ndim = ndim
        self._coords: list[tuple[int, ...]] = []
        self._kinds: list[int] = []
        self._ids: list[bytes] = []
        self._offsets: list[int] = []
        self._lengths: list[int] = []
        self._url_idx: list[int] = []
        self._blob: list[bytes] = []
        self._blob_len = 0
        self._urls: list[str] = []
        self._etags: list[str | None] = []
        self._modified: list[int] = []
        self._locations: dict[tuple[str, str | None, int], int] = {}
        self._inline_rows: dict[int, bytes] = {}
        self._digests: list[int] = []
        self._native = False

    def __len__(self) -> int:
        return len(self._kinds)

    _NOID = bytes(12)

    def add_native(self, coord: tuple[int, ...], chunk_id: bytes, length: int,
                   offset: int = 0, digest: int = 0) -> None:
        self._native = True
        self._add(coord, KIND_NATIVE, chunk_id, offset, length, -1, digest)

    def add_inline(self, coord: tuple[int, ...], data: bytes) -> None:
        self._inline_rows[len(self._kinds)] = data
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
        self._coords.append(coord)
        self._kinds.append(kind)
        self._ids.append(cid)
        self._offsets.append(off)
        self._lengths.append(ln)
        self._url_idx.append(ui)
        self._digests.append(digest)

    def build_row(self, i: int) -> tuple[int, object]:
        """(kind, payload) of row ``i``, as :meth:`ChunkTable.row_payload`."""
        kind = self._kinds[i]
        if kind == KIND_INLINE:
            return kind, self._inline_rows[i]
        o, ln = self._offsets[i], self._lengths[i]
        if kind == KIND_VIRTUAL:
            u = self._url_idx[i]
            return kind, (self._urls[u], self._etags[u], self._modified[u], o, ln)
        return kind, (encode_id(self._ids[i]), o, ln)

    @classmethod
    def build_all(cls, builders: Sequence[TableBuilder]) -> ChunkTable:
        """The rows of ``builders``, in order, as one table (what :meth:`ChunkTable.concat`
        of their :meth:`build` gives), built with one conversion per column: a merge of
        many forks' few writes each pays numpy's fixed costs once, not once per fork."""
        out = cls(builders[0].ndim)
        for b in builders:
            if b.ndim != out.ndim:
                raise ValueError("cannot build chunk tables of different dimensionality")
            out._coords.extend(b._coords)
            out._kinds.extend(b._kinds)
            out._ids.extend(b._ids)
            out._lengths.extend(b._lengths)
            out._digests.extend(b._digests)
            out._native = out._native or b._native
            if not (b._blob or b._urls):
                out._offsets.extend(b._offsets)
                out._url_idx.extend(b._url_idx)
                continue
            row, blob = len(out._offsets), out._blob_len
            # each distinct location once in the result too
            remap = []
            for key in zip(b._urls, b._etags, b._modified, strict=True):
                ui = out._locations.get(key)
                if ui is None:
                    ui = out._locations[key] = len(out._urls)
                    out._urls.append(key[0])
                    out._etags.append(key[1])
                    out._modified.append(key[2])
                remap.append(ui)
            out._offsets.extend(o + blob if k == KIND_INLINE else o
                                for k, o in zip(b._kinds, b._offsets, strict=True))
            out._url_idx.extend(remap[u] if u >= 0 else u for u in b._url_idx)
            out._inline_rows.update({row + i: d for i, d in b._inline_rows.items()})
            out._blob.extend(b._blob)
            out._blob_len += b._blob_len
        return out.build()

    def build(self) -> ChunkTable:
        n = len(self._kinds)
        if n == 0:
            return ChunkTable.empty(self.ndim)
        ids = (np.frombuffer(b"".join(self._ids), np.uint8).reshape(n, 12).copy()
               if self._native else no_ids(n))
        return ChunkTable(
            ndim=self.ndim,
            # one pass over the tuples' ints (asarray of a list of tuples is ~3x slower)
            coords=np.fromiter(chain.from_iterable(self._coords), np.int64,
                               count=n * self.ndim).reshape(n, self.ndim),
            kinds=np.asarray(self._kinds, np.uint8),
            ids=ids,
            offsets=np.asarray(self._offsets, np.uint64),
            lengths=np.asarray(self._lengths, np.uint64),
            url_idx=np.asarray(self._url_idx, np.int32),
            blob=b"".join(self._blob),
            urls=list(self._urls),
            etags=list(self._etags),
            digests=(np.asarray(self._digests, np.uint64) if any(self._digests) else None),
            modified=list(self._modified),
        )
