"""Columnar chunk references: the one in-memory shape of chunk refs on every hot path.

A :class:`ChunkTable` holds ``n`` rows as numpy columns. No Python object exists per chunk.
Tables are kept sorted by coordinates (lexicographically) and free of duplicate coordinates
once :meth:`ChunkTable.normalized` has run; lookups are binary searches.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from itertools import pairwise
from typing import Any

import numpy as np
import numpy.typing as npt

from icechunk_dist._types import encode_id
from icechunk_dist.errors import FormatError
from icechunk_dist.format._structs import ManifestData

__all__ = ["KIND_INLINE", "KIND_NATIVE", "KIND_TOMBSTONE", "KIND_VIRTUAL", "ChunkTable"]

KIND_NATIVE = 0
KIND_INLINE = 1
KIND_VIRTUAL = 2
KIND_TOMBSTONE = 3  # a deletion, only inside change-sets; never in a manifest

I64 = npt.NDArray[np.int64]


def coord_keys(coords: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """One sortable fixed-size bytes key per row (big-endian unsigned coordinates)."""
    c = np.ascontiguousarray(coords, dtype=">u8")
    if c.ndim != 2:
        raise ValueError("coords must be 2-D")
    return c.view(f"V{8 * c.shape[1]}").ravel()


_I63 = 2**63 - 1


def linear_keys(coord_arrays: Sequence[npt.NDArray[Any]]) -> list[I64] | None:
    """One int64 key per row of every ``(n, ndim)`` coordinate array, ordered exactly like
    :func:`coord_keys` and comparable across the arrays (each coordinate in a fixed-width bit
    field, or row-major over the extent shared by all the arrays), or None when a coordinate
    is negative or the grid does not fit in 63 bits (then use :func:`coord_keys`). Integer
    keys sort and search far faster than fixed-size bytes."""
    present = [c for c in coord_arrays if len(c)]
    if not present:
        return [np.zeros(0, np.int64) for _ in coord_arrays]
    ndim = present[0].shape[1]
    if ndim == 0:
        return None
    lo = min(int(c.min()) for c in present)
    if lo < 0:
        return None
    hi = max(int(c.max()) for c in present)
    bits = 63 // ndim
    if hi < (1 << bits):
        # every coordinate fits in a fixed field of ``bits`` bits: no per-axis extents needed
        strides = [1 << (bits * (ndim - 1 - d)) for d in range(ndim)]
    else:
        ext = np.max(np.stack([c.max(axis=0) for c in present]), axis=0) + 1
        strides = [1] * ndim
        total = 1
        for d in range(ndim - 1, -1, -1):
            strides[d] = total
            total *= int(ext[d])
            if total > _I63:
                return None
    st = np.asarray(strides, np.int64)
    out: list[I64] = []
    for c in coord_arrays:
        if ndim == 1:
            out.append(np.ascontiguousarray(c[:, 0], np.int64) if len(c)
                       else np.zeros(0, np.int64))
        else:
            out.append(c.astype(np.int64, copy=False) @ st if len(c)
                       else np.zeros(0, np.int64))
    return out


@dataclass(eq=False)
class ChunkTable:
    """Chunk refs of one array, columnar.

    Attributes
    ----------
    coords : int64 (n, ndim)
    kinds : uint8 (n,)  native / inline / virtual / tombstone
    ids : uint8 (n, 12) chunk object id (native rows)
    offsets, lengths : uint64 (n,) byte range in the chunk object, the blob or the url
    url_idx : int32 (n,) index into ``urls`` (virtual rows), else -1
    blob : bytes, inline payloads
    urls, etags : per distinct virtual location
    digests : uint64 (n,) or None
        Content digest (xxh3-64) of each native chunk's bytes, recorded when the chunk was
        written (0: not known, e.g. rows read from a manifest). Kept in change-sets only, never
        in manifests: a merge takes two writes of one chunk with equal digests and lengths as
        one write (docs/design/013-ordered-writes-and-identical-chunks.md).
    """

    ndim: int
    coords: I64
    kinds: npt.NDArray[np.uint8]
    ids: npt.NDArray[np.uint8]
    offsets: npt.NDArray[np.uint64]
    lengths: npt.NDArray[np.uint64]
    url_idx: npt.NDArray[np.int32]
    blob: bytes = b""
    urls: list[str] = field(default_factory=list)
    etags: list[str | None] = field(default_factory=list)
    sorted_unique: bool = False
    digests: npt.NDArray[np.uint64] | None = None

    # ---------------------------------------------------------------- construction
    @classmethod
    def empty(cls, ndim: int) -> ChunkTable:
        return cls(
            ndim=ndim,
            coords=np.zeros((0, ndim), np.int64),
            kinds=np.zeros(0, np.uint8),
            ids=np.zeros((0, 12), np.uint8),
            offsets=np.zeros(0, np.uint64),
            lengths=np.zeros(0, np.uint64),
            url_idx=np.zeros(0, np.int32),
            sorted_unique=True,
        )

    def __len__(self) -> int:
        return int(self.kinds.shape[0])

    @property
    def nbytes(self) -> int:
        return int(
            self.coords.nbytes + self.kinds.nbytes + self.ids.nbytes + self.offsets.nbytes
            + self.lengths.nbytes + self.url_idx.nbytes + len(self.blob)
        )

    def take(self, index: npt.NDArray[Any]) -> ChunkTable:
        """Rows selected by an integer index or boolean mask (blob and urls are shared)."""
        return ChunkTable(
            ndim=self.ndim,
            coords=self.coords[index],
            kinds=self.kinds[index],
            ids=self.ids[index],
            offsets=self.offsets[index],
            lengths=self.lengths[index],
            url_idx=self.url_idx[index],
            blob=self.blob,
            urls=self.urls,
            etags=self.etags,
            digests=None if self.digests is None else self.digests[index],
        )

    def rows(self, start: int, stop: int) -> ChunkTable:
        """Rows ``[start, stop)`` as views of these columns (no copy; blob and urls shared)."""
        return ChunkTable(
            ndim=self.ndim,
            coords=self.coords[start:stop],
            kinds=self.kinds[start:stop],
            ids=self.ids[start:stop],
            offsets=self.offsets[start:stop],
            lengths=self.lengths[start:stop],
            url_idx=self.url_idx[start:stop],
            blob=self.blob,
            urls=self.urls,
            etags=self.etags,
            sorted_unique=self.sorted_unique,
            digests=None if self.digests is None else self.digests[start:stop],
        )

    @classmethod
    def concat(cls, tables: Sequence[ChunkTable], ndim: int | None = None) -> ChunkTable:
        """Stack tables in order (later rows win in :meth:`normalized`)."""
        tables = [t for t in tables if len(t)] or list(tables[:1])
        if not tables:
            if ndim is None:
                raise ValueError("concat of nothing needs ndim")
            return cls.empty(ndim)
        if len(tables) == 1:
            return tables[0]
        nd = tables[0].ndim
        if any(t.ndim != nd for t in tables):
            raise ValueError("cannot concat chunk tables of different dimensionality")
        digests = None
        if any(t.digests is not None for t in tables):
            digests = np.concatenate([t.digests if t.digests is not None
                                      else np.zeros(len(t), np.uint64) for t in tables])
        if not any(t.blob or t.urls for t in tables):
            # no inline payloads, no virtual locations: nothing to re-base, one
            # concatenation per column (the common case: merges of native refs)
            return cls(
                ndim=nd,
                coords=np.concatenate([t.coords for t in tables]),
                kinds=np.concatenate([t.kinds for t in tables]),
                ids=np.concatenate([t.ids for t in tables]),
                offsets=np.concatenate([t.offsets for t in tables]),
                lengths=np.concatenate([t.lengths for t in tables]),
                url_idx=np.concatenate([t.url_idx for t in tables]),
                digests=digests,
            )
        offsets: list[npt.NDArray[np.uint64]] = []
        url_idx: list[npt.NDArray[np.int32]] = []
        blobs: list[bytes] = []
        urls: list[str] = []
        etags: list[str | None] = []
        blob_base = 0
        for t in tables:
            off = t.offsets.copy()
            inl = t.kinds == KIND_INLINE
            off[inl] += np.uint64(blob_base)
            offsets.append(off)
            ui = t.url_idx.copy()
            ui[ui >= 0] += len(urls)
            url_idx.append(ui)
            blobs.append(t.blob)
            blob_base += len(t.blob)
            urls.extend(t.urls)
            etags.extend(t.etags)
        return cls(
            ndim=nd,
            coords=np.concatenate([t.coords for t in tables]),
            kinds=np.concatenate([t.kinds for t in tables]),
            ids=np.concatenate([t.ids for t in tables]),
            offsets=np.concatenate(offsets),
            lengths=np.concatenate([t.lengths for t in tables]),
            url_idx=np.concatenate(url_idx),
            blob=b"".join(blobs),
            urls=urls,
            etags=etags,
            digests=digests,
        )

    # ---------------------------------------------------------------- ordering
    def keys(self) -> npt.NDArray[Any]:
        return coord_keys(self.coords)

    def normalized(self) -> ChunkTable:
        """Sorted by coordinates with one row per coordinate: the last occurrence wins."""
        if self.sorted_unique:
            return self
        n = len(self)
        if n == 0:
            out = self.take(np.zeros(0, np.int64))
            out.sorted_unique = True
            return out
        lin = linear_keys([self.coords])
        if lin is not None:
            # fast path: one int64 per row, same order as coord_keys
            k = lin[0]
            if n == 1 or bool(np.all(k[1:] > k[:-1])):
                # already sorted and unique (e.g. forks of disjoint regions, in order):
                # share the columns (tables are never modified in place) instead of copying
                return replace(self, sorted_unique=True)
            else:
                # stable, so equal keys keep write order and the last of each run wins;
                # timsort merges pre-sorted runs (concatenated tables) in linear time
                order = np.argsort(k, kind="stable")
                ks = k[order]
                last = np.ones(n, bool)
                last[:-1] = ks[1:] != ks[:-1]
                idx = order[last]
        else:
            keys = self.keys()
            # reverse so that np.unique's first occurrence is the last written row
            rev = keys[::-1]
            _, first = np.unique(rev, return_index=True)
            idx = (n - 1) - first  # sorted by key already
        out = self.take(idx)
        out.sorted_unique = True
        return out

    def duplicates_with(self, other: ChunkTable) -> I64:
        """Coordinates present in both tables (both normalized), as an (m, ndim) array."""
        if not len(self) or not len(other):
            return np.zeros((0, self.ndim), np.int64)
        lin = linear_keys([self.coords, other.coords])
        if lin is None:
            mask = np.isin(self.keys(), other.keys())
        elif self.sorted_unique and other.sorted_unique:
            # both sorted: binary-search the smaller table in the larger (no sort at all)
            ka, kb = lin
            if len(kb) <= len(ka):
                pos = np.minimum(np.searchsorted(ka, kb), len(ka) - 1)
                mask = np.zeros(len(ka), bool)
                mask[pos[ka[pos] == kb]] = True
            else:
                pos = np.minimum(np.searchsorted(kb, ka), len(kb) - 1)
                mask = kb[pos] == ka
        else:
            mask = np.isin(lin[0], lin[1])
        return self.coords[mask]

    def without(self, coords_keys: npt.NDArray[Any]) -> ChunkTable:
        """Rows whose coordinates are not among ``coords_keys``."""
        if not len(self) or not len(coords_keys):
            return self
        out = self.take(~np.isin(self.keys(), coords_keys))
        out.sorted_unique = self.sorted_unique
        return out

    def find(self, coord: Sequence[int]) -> int:
        """Row index of ``coord`` in a normalized table, or -1."""
        if not len(self):
            return -1
        if not self.sorted_unique:
            raise ValueError("find needs a normalized table")
        key = coord_keys(np.asarray([coord], np.int64))
        keys = self.keys()
        i = int(np.searchsorted(keys, key[0]))
        if i < len(keys) and keys[i] == key[0]:
            return i
        return -1

    def split(self, split_shape: Sequence[int]) -> dict[tuple[int, ...], ChunkTable]:
        """Group rows by manifest split (``coords // split_shape``)."""
        if not len(self):
            return {}
        sidx = self.coords // np.asarray(split_shape, np.int64)
        lin = linear_keys([sidx])
        if lin is not None:
            k = lin[0]
            step = np.flatnonzero(k[1:] != k[:-1]) + 1
            if bool(np.all(k[step] > k[step - 1])):
                # rows already grouped by split, in split order (a sorted table whose
                # splits are row bands): each split is a slice, shared, never copied
                bounds = [0, *step.tolist(), len(k)]
                out_s: dict[tuple[int, ...], ChunkTable] = {}
                for a, b in pairwise(bounds):
                    out_s[tuple(int(v) for v in sidx[a])] = self.rows(a, b)
                return out_s
            order = np.argsort(k, kind="stable")
            ks = k[order]
            cut = [0, *(np.flatnonzero(ks[1:] != ks[:-1]) + 1).tolist(), len(ks)]
            out_o: dict[tuple[int, ...], ChunkTable] = {}
            for a, b in pairwise(cut):
                rows = order[a:b]
                part = self.take(rows)
                part.sorted_unique = self.sorted_unique
                out_o[tuple(int(v) for v in sidx[rows[0]])] = part
            return out_o
        skeys = coord_keys(sidx)
        uniq, inverse = np.unique(skeys, return_inverse=True)
        order = np.argsort(inverse, kind="stable")
        edges = np.searchsorted(inverse[order], np.arange(len(uniq) + 1))
        out: dict[tuple[int, ...], ChunkTable] = {}
        for j in range(len(uniq)):
            rows = order[edges[j] : edges[j + 1]]
            part = self.take(rows)
            part.sorted_unique = self.sorted_unique
            out[tuple(int(v) for v in sidx[rows[0]])] = part
        return out

    def compact(self) -> ChunkTable:
        """Drop blob bytes and urls no row refers to (after takes and merges)."""
        inl = self.kinds == KIND_INLINE
        virt = self.url_idx >= 0
        if not len(self.blob) and not self.urls:
            return self
        offsets = self.offsets.copy()
        parts = []
        pos = 0
        for i in np.flatnonzero(inl):
            o, ln = int(self.offsets[i]), int(self.lengths[i])
            parts.append(self.blob[o : o + ln])
            offsets[i] = pos
            pos += ln
        url_idx = self.url_idx.copy()
        urls: list[str] = []
        etags: list[str | None] = []
        remap: dict[int, int] = {}
        for i in np.flatnonzero(virt):
            old = int(self.url_idx[i])
            if old not in remap:
                remap[old] = len(urls)
                urls.append(self.urls[old])
                etags.append(self.etags[old])
            url_idx[i] = remap[old]
        return ChunkTable(
            ndim=self.ndim, coords=self.coords, kinds=self.kinds, ids=self.ids,
            offsets=offsets, lengths=self.lengths, url_idx=url_idx, blob=b"".join(parts),
            urls=urls, etags=etags, sorted_unique=self.sorted_unique, digests=self.digests,
        )

    def row_payload(self, i: int) -> tuple[int, Any]:
        """(kind, payload) of row ``i``.

        The payload is ``(chunk id text, offset, length)`` for native rows, the bytes for
        inline rows and ``(url, etag, offset, length)`` for virtual rows.
        """
        kind = int(self.kinds[i])
        o, ln = int(self.offsets[i]), int(self.lengths[i])
        if kind == KIND_INLINE:
            return kind, self.blob[o : o + ln]
        if kind == KIND_VIRTUAL:
            u = int(self.url_idx[i])
            return kind, (self.urls[u], self.etags[u], o, ln)
        return kind, (encode_id(bytes(self.ids[i])), o, ln)

    # ---------------------------------------------------------------- (de)serialization
    def to_manifest(self, node_id: str) -> ManifestData:
        t = self.normalized().compact()
        return ManifestData(
            node_id=node_id,
            ndim=t.ndim,
            count=len(t),
            coords=t.coords.astype("<i8").tobytes(),
            kinds=t.kinds.tobytes(),
            ids=t.ids.tobytes(),
            offsets=t.offsets.astype("<u8").tobytes(),
            lengths=t.lengths.astype("<u8").tobytes(),
            url_idx=t.url_idx.astype("<i4").tobytes(),
            blob=t.blob,
            urls=tuple(t.urls),
            etags=tuple(t.etags),
        )

    @classmethod
    def from_manifest(cls, m: ManifestData, *, name: str) -> ChunkTable:
        """Rebuild a table from a decoded manifest, checking every column's size.

        Raises
        ------
        FormatError
            If the columns disagree with the declared row count.
        """
        n, nd = m.count, m.ndim
        try:
            if n < 0 or nd < 1:
                raise ValueError("bad count or ndim")
            coords = np.frombuffer(m.coords, "<i8").reshape(n, nd).astype(np.int64)
            kinds = np.frombuffer(m.kinds, np.uint8).reshape(n).copy()
            ids = np.frombuffer(m.ids, np.uint8).reshape(n, 12).copy()
            offsets = np.frombuffer(m.offsets, "<u8").reshape(n).astype(np.uint64)
            lengths = np.frombuffer(m.lengths, "<u8").reshape(n).astype(np.uint64)
            url_idx = np.frombuffer(m.url_idx, "<i4").reshape(n).astype(np.int32)
        except ValueError as e:
            raise FormatError(f"manifest columns do not match its row count: {e}",
                              object_name=name) from None
        if len(m.urls) != len(m.etags) or (n and int(url_idx.max(initial=-1)) >= len(m.urls)):
            raise FormatError("manifest virtual-ref table is inconsistent", object_name=name)
        problem = _row_problem(coords, kinds, offsets, lengths, url_idx, len(m.blob))
        if problem:
            raise FormatError(f"manifest {problem}", object_name=name)
        return cls(
            ndim=nd, coords=coords, kinds=kinds, ids=ids, offsets=offsets, lengths=lengths,
            url_idx=url_idx, blob=m.blob, urls=list(m.urls), etags=list(m.etags),
            sorted_unique=True,
        )


def _row_problem(coords: I64, kinds: npt.NDArray[np.uint8], offsets: npt.NDArray[np.uint64],
                 lengths: npt.NDArray[np.uint64], url_idx: npt.NDArray[np.int32],
                 blob_len: int) -> str:
    """What is wrong with a manifest's rows (empty if nothing): the checks readers rely on."""
    if not len(kinds):
        return ""
    if int(kinds.max()) > KIND_VIRTUAL:
        return f"row kind {int(kinds.max())} is unknown"
    if int(coords.min()) < 0:
        return "has a negative chunk coordinate"
    limit = np.uint64(2**63 - 1)
    if bool(np.any(offsets > limit)) or bool(np.any(lengths > limit)):
        return "has a byte offset or length out of range"
    inline = kinds == KIND_INLINE
    if bool(np.any(inline)):
        ends = offsets[inline] + lengths[inline]  # both < 2**63: no overflow
        if int(ends.max()) > blob_len:
            return "has an inline chunk outside its blob"
    virtual = kinds == KIND_VIRTUAL
    if bool(np.any(url_idx[virtual] < 0)) or bool(np.any(url_idx[~virtual] != -1)):
        return "has a url index on the wrong kind of row"
    keys = linear_keys([coords])
    if keys is not None:
        k = keys[0]
        ordered = bool(np.all(k[1:] > k[:-1]))
    else:
        ck = coord_keys(coords)  # fixed-size bytes: sortable, not comparable with ">"
        ordered = bool(np.all(np.argsort(ck, kind="stable") == np.arange(len(ck))))
        ordered = ordered and len(np.unique(ck)) == len(ck)
    if not ordered:
        return "rows are not sorted by coordinate without duplicates"
    return ""


class TableBuilder:
    """Append-only accumulator used while zarr hands chunks over one at a time."""

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
        self._inline_rows: dict[int, bytes] = {}
        self._digests: list[int] = []

    def __len__(self) -> int:
        return len(self._kinds)

    _NOID = bytes(12)

    def add_native(self, coord: tuple[int, ...], chunk_id: bytes, length: int,
                   offset: int = 0, digest: int = 0) -> None:
        self._add(coord, KIND_NATIVE, chunk_id, offset, length, -1, digest)

    def add_inline(self, coord: tuple[int, ...], data: bytes) -> None:
        self._inline_rows[len(self._kinds)] = data
        self._add(coord, KIND_INLINE, self._NOID, self._blob_len, len(data), -1)
        self._blob.append(data)
        self._blob_len += len(data)

    def add_virtual(self, coord: tuple[int, ...], url: str, offset: int, length: int,
                    etag: str | None) -> None:
        self._urls.append(url)
        self._etags.append(etag)
        self._add(coord, KIND_VIRTUAL, self._NOID, offset, length, len(self._urls) - 1)

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
            return kind, (self._urls[u], self._etags[u], o, ln)
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
            if not (b._blob or b._urls):
                out._offsets.extend(b._offsets)
                out._url_idx.extend(b._url_idx)
                continue
            row, blob, url = len(out._offsets), out._blob_len, len(out._urls)
            out._offsets.extend(o + blob if k == KIND_INLINE else o
                                for k, o in zip(b._kinds, b._offsets, strict=True))
            out._url_idx.extend(u + url if u >= 0 else u for u in b._url_idx)
            out._inline_rows.update({row + i: d for i, d in b._inline_rows.items()})
            out._blob.extend(b._blob)
            out._blob_len += b._blob_len
            out._urls.extend(b._urls)
            out._etags.extend(b._etags)
        return out.build()

    def build(self) -> ChunkTable:
        n = len(self._kinds)
        if n == 0:
            return ChunkTable.empty(self.ndim)
        return ChunkTable(
            ndim=self.ndim,
            coords=np.asarray(self._coords, np.int64).reshape(n, self.ndim),
            kinds=np.asarray(self._kinds, np.uint8),
            ids=np.frombuffer(b"".join(self._ids), np.uint8).reshape(n, 12).copy(),
            offsets=np.asarray(self._offsets, np.uint64),
            lengths=np.asarray(self._lengths, np.uint64),
            url_idx=np.asarray(self._url_idx, np.int32),
            blob=b"".join(self._blob),
            urls=list(self._urls),
            etags=list(self._etags),
            digests=(np.asarray(self._digests, np.uint64) if any(self._digests) else None),
        )
