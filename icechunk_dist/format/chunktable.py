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
import xxhash

from icechunk_dist._types import encode_id
from icechunk_dist.errors import FormatError
from icechunk_dist.format._locations import (
    compact_locations,
    concat_ids,
    is_no_ids,
    merge_locations,
    no_ids,
    remap_url_idx,
    take_ids,
)
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
    ids : uint8 (n, 12) chunk object id (native rows); a table without native rows may
        share one zero row (``format._locations.no_ids``: no memory per row)
    offsets, lengths : uint64 (n,) byte range in the chunk object, the blob or the url
    url_idx : int32 (n,) index into the locations (virtual rows), else -1
    blob : bytes, inline payloads
    urls, etags, modified : one entry per distinct virtual location (url, etag, last
        modified time in microseconds since the epoch, 0 when not recorded); tables built
        here hold each location once, whatever the number of rows pointing into it
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
    modified: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if len(self.modified) != len(self.urls):  # tables built before last-modified times
            self.modified = [0] * len(self.urls)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        if is_no_ids(self.ids):  # pickled as a flag, not as 12 zero bytes per row
            state["ids"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        if state.get("ids") is None:
            state = {**state, "ids": no_ids(len(state["kinds"]))}
        self.__dict__.update(state)

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
        ids = 0 if is_no_ids(self.ids) else self.ids.nbytes
        return int(
            self.coords.nbytes + self.kinds.nbytes + ids + self.offsets.nbytes
            + self.lengths.nbytes + self.url_idx.nbytes + len(self.blob)
        )

    def take(self, index: npt.NDArray[Any]) -> ChunkTable:
        """Rows selected by an integer index or boolean mask (blob and urls are shared)."""
        kinds = self.kinds[index]
        return ChunkTable(
            ndim=self.ndim,
            coords=self.coords[index],
            kinds=kinds,
            ids=take_ids(self.ids, index, len(kinds)),
            offsets=self.offsets[index],
            lengths=self.lengths[index],
            url_idx=self.url_idx[index],
            blob=self.blob,
            urls=self.urls,
            etags=self.etags,
            digests=None if self.digests is None else self.digests[index],
            modified=self.modified,
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
            modified=self.modified,
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
                ids=concat_ids([t.ids for t in tables]),
                offsets=np.concatenate([t.offsets for t in tables]),
                lengths=np.concatenate([t.lengths for t in tables]),
                url_idx=np.concatenate([t.url_idx for t in tables]),
                digests=digests,
            )
        # one entry per distinct location across the tables (per location, not per row)
        (urls, etags, modified), remaps = merge_locations(
            [(t.urls, t.etags, t.modified) for t in tables])
        offsets: list[npt.NDArray[np.uint64]] = []
        url_idx: list[npt.NDArray[np.int32]] = []
        blobs: list[bytes] = []
        blob_base = 0
        for t, remap in zip(tables, remaps, strict=True):
            off = t.offsets
            if t.blob:
                off = off.copy()
                off[t.kinds == KIND_INLINE] += np.uint64(blob_base)
            offsets.append(off)
            url_idx.append(remap_url_idx(t.url_idx, remap))
            blobs.append(t.blob)
            blob_base += len(t.blob)
        return cls(
            ndim=nd,
            coords=np.concatenate([t.coords for t in tables]),
            kinds=np.concatenate([t.kinds for t in tables]),
            ids=concat_ids([t.ids for t in tables]),
            offsets=np.concatenate(offsets),
            lengths=np.concatenate([t.lengths for t in tables]),
            url_idx=np.concatenate(url_idx),
            blob=b"".join(blobs),
            urls=urls,
            etags=etags,
            digests=digests,
            modified=modified,
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

    def without_rows_of(self, other: ChunkTable) -> ChunkTable:
        """Rows whose coordinates ``other`` has none of (``other`` normalized): a binary
        search of the sorted keys where they are integers, not a set operation."""
        if not len(self) or not len(other):
            return self
        lin = linear_keys([self.coords, other.coords]) if other.sorted_unique else None
        if lin is None:
            return self.without(other.keys())
        ka, kb = lin
        pos = np.minimum(np.searchsorted(kb, ka), len(kb) - 1)
        out = self.take(kb[pos] != ka)
        out.sorted_unique = self.sorted_unique
        return out

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
        target = tuple(int(c) for c in coord)
        # a binary search over the rows themselves: building a key per row (a copy of the
        # whole table) would cost more than the search for every chunk read
        coords, lo, hi = self.coords, 0, len(self)
        while lo < hi:
            mid = (lo + hi) // 2
            if tuple(coords[mid].tolist()) < target:
                lo = mid + 1
            else:
                hi = mid
        if lo < len(self) and tuple(coords[lo].tolist()) == target:
            return lo
        return -1

    def split(self, split_shape: Sequence[int]) -> dict[tuple[int, ...], ChunkTable]:
        """Group rows by manifest split (``coords // split_shape``)."""
        if not len(self):
            return {}
        shape = np.asarray(split_shape, np.int64)
        # only the axes along which some row lies beyond the first split need dividing
        # (integer division of millions of coordinates is the cost here)
        cut = np.flatnonzero(self.coords.max(axis=0) >= shape)
        if not len(cut):
            return {tuple(0 for _ in split_shape): self}
        if len(cut) == 1:
            sub = (self.coords[:, int(cut[0])] // shape[cut[0]]).reshape(-1, 1)
        else:
            sub = self.coords[:, cut] // shape[cut]
        lin = linear_keys([sub])

        def key_of(row: int) -> tuple[int, ...]:
            out = [0] * len(split_shape)
            for j, d in enumerate(cut):
                out[int(d)] = int(sub[row, j])
            return tuple(out)

        if lin is not None:
            k = lin[0]
            step = np.flatnonzero(k[1:] != k[:-1]) + 1
            if bool(np.all(k[step] > k[step - 1])):
                # rows already grouped by split, in split order (a sorted table whose
                # splits are row bands): each split is a slice, shared, never copied
                bounds = [0, *step.tolist(), len(k)]
                out_s: dict[tuple[int, ...], ChunkTable] = {}
                for a, b in pairwise(bounds):
                    out_s[key_of(a)] = self.rows(a, b)
                return out_s
            order = np.argsort(k, kind="stable")
            ks = k[order]
            edges = [0, *(np.flatnonzero(ks[1:] != ks[:-1]) + 1).tolist(), len(ks)]
            out_o: dict[tuple[int, ...], ChunkTable] = {}
            for a, b in pairwise(edges):
                rows = order[a:b]
                part = self.take(rows)
                part.sorted_unique = self.sorted_unique
                out_o[key_of(int(rows[0]))] = part
            return out_o
        skeys = coord_keys(sub)
        uniq, inverse = np.unique(skeys, return_inverse=True)
        order = np.argsort(inverse, kind="stable")
        bounds_u = np.searchsorted(inverse[order], np.arange(len(uniq) + 1))
        out: dict[tuple[int, ...], ChunkTable] = {}
        for j in range(len(uniq)):
            rows = order[bounds_u[j] : bounds_u[j + 1]]
            part = self.take(rows)
            part.sorted_unique = self.sorted_unique
            out[key_of(int(rows[0]))] = part
        return out

    def compact(self) -> ChunkTable:
        """Drop blob bytes no row refers to, and keep each location rows use once (after
        takes and merges; old manifests held one location per row)."""
        if not len(self.blob) and not self.urls:
            return self
        offsets = self.offsets
        blob = self.blob
        if blob:
            inl = np.flatnonzero(self.kinds == KIND_INLINE)
            offsets = self.offsets.copy()
            parts = []
            pos = 0
            for i in inl:  # inline rows are small chunks, kept in the manifest
                o, ln = int(self.offsets[i]), int(self.lengths[i])
                parts.append(self.blob[o : o + ln])
                offsets[i] = pos
                pos += ln
            blob = b"".join(parts)
        url_idx = self.url_idx
        urls, etags, modified = self.urls, self.etags, self.modified
        packed = compact_locations(self.url_idx, (urls, etags, modified))
        if packed is not None:
            url_idx, (urls, etags, modified) = packed
        return ChunkTable(
            ndim=self.ndim, coords=self.coords, kinds=self.kinds, ids=self.ids,
            offsets=offsets, lengths=self.lengths, url_idx=url_idx, blob=blob,
            urls=urls, etags=etags, sorted_unique=self.sorted_unique, digests=self.digests,
            modified=modified,
        )

    def fingerprint(self) -> bytes:
        """A 16-byte digest of the rows and locations (equal digests: the same refs)."""
        h = xxhash.xxh3_128()
        for col in (self.coords, self.kinds, self.offsets, self.lengths, self.url_idx):
            h.update(np.ascontiguousarray(col).data)
        h.update(b"no ids" if is_no_ids(self.ids) else np.ascontiguousarray(self.ids).data)
        h.update(self.blob)
        if self.urls:  # the locations rows use (a split shares its table's whole list)
            ref = self.url_idx[self.url_idx >= 0]
            used = np.flatnonzero(np.bincount(ref, minlength=len(self.urls))) if len(ref) \
                else ()
            h.update(repr([(int(i), self.urls[i], self.etags[i], self.modified[i])
                           for i in used]).encode())
        return h.digest()

    def row_payload(self, i: int) -> tuple[int, Any]:
        """(kind, payload) of row ``i``.

        The payload is ``(chunk id text, offset, length)`` for native rows, the bytes for
        inline rows and ``(url, etag, modified, offset, length)`` for virtual rows
        (``modified``: the recorded last-modified time in microseconds, 0 if none).
        """
        kind = int(self.kinds[i])
        o, ln = int(self.offsets[i]), int(self.lengths[i])
        if kind == KIND_INLINE:
            return kind, self.blob[o : o + ln]
        if kind == KIND_VIRTUAL:
            u = int(self.url_idx[i])
            return kind, (self.urls[u], self.etags[u], self.modified[u], o, ln)
        return kind, (encode_id(bytes(self.ids[i])), o, ln)

    # ---------------------------------------------------------------- (de)serialization
    def to_manifest(self, node_id: str) -> ManifestData:
        t = self.normalized().compact()
        return ManifestData(
            node_id=node_id,
            ndim=t.ndim,
            count=len(t),
            coords=_le(t.coords, "<i8"),
            kinds=t.kinds.tobytes(),
            ids=bytes(12 * len(t)) if is_no_ids(t.ids) else t.ids.tobytes(),
            offsets=_le(t.offsets, "<u8"),
            lengths=_le(t.lengths, "<u8"),
            url_idx=_le(t.url_idx, "<i4"),
            blob=t.blob,
            urls=tuple(t.urls),
            etags=tuple(t.etags),
            # written only when some location has one: manifests stay as before otherwise
            modified=tuple(t.modified) if any(t.modified) else (),
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
            ids = np.frombuffer(m.ids, np.uint8).reshape(n, 12)
            # rows without a native chunk share one zero id (no memory per virtual ref)
            ids = ids.copy() if bool(np.any(kinds == KIND_NATIVE)) else no_ids(n)
            offsets = np.frombuffer(m.offsets, "<u8").reshape(n).astype(np.uint64)
            lengths = np.frombuffer(m.lengths, "<u8").reshape(n).astype(np.uint64)
            url_idx = np.frombuffer(m.url_idx, "<i4").reshape(n).astype(np.int32)
        except ValueError as e:
            raise FormatError(f"manifest columns do not match its row count: {e}",
                              object_name=name) from None
        if (len(m.urls) != len(m.etags) or len(m.modified) not in (0, len(m.urls))
                or (n and int(url_idx.max(initial=-1)) >= len(m.urls))):
            raise FormatError("manifest virtual-ref table is inconsistent", object_name=name)
        problem = _row_problem(coords, kinds, offsets, lengths, url_idx, len(m.blob))
        if problem:
            raise FormatError(f"manifest {problem}", object_name=name)
        return cls(
            ndim=nd, coords=coords, kinds=kinds, ids=ids, offsets=offsets, lengths=lengths,
            url_idx=url_idx, blob=m.blob, urls=list(m.urls), etags=list(m.etags),
            sorted_unique=True, modified=list(m.modified),
        )


def _le(col: npt.NDArray[Any], dtype: str) -> bytes:
    """A column's little-endian bytes, with one copy (``astype`` would add another)."""
    return np.ascontiguousarray(col, dtype=dtype).tobytes()


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
