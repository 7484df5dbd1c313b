"""Many virtual refs at once: Icechunk's :class:`VirtualChunkSpec`, and the columns they
become (:func:`virtual_table`), checked and turned into one :class:`ChunkTable` with numpy,
never a Python step per ref beyond reading the specs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt

from icechunk_dist.errors import InvalidInputError
from icechunk_dist.format._locations import compact_locations, no_ids
from icechunk_dist.format.chunktable import KIND_VIRTUAL, ChunkTable

__all__ = [
    "VirtualChunkSpec",
    "grid_to_columns",
    "micros",
    "specs_to_columns",
    "split_checksum",
    "virtual_table",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
_I63 = 2**63 - 1


@dataclass(slots=True)
class VirtualChunkSpec:
    """One virtual chunk ref (Icechunk's ``VirtualChunkSpec``).

    Attributes
    ----------
    index
        The chunk's coordinates in the array's chunk grid.
    location
        URL of the object holding the chunk (``s3://bucket/file.nc``, ``file:///data/x.nc``).
    offset, length
        The chunk's byte range in that object.
    etag_checksum
        The object's etag when the ref was made: a read refuses the chunk if it differs.
    last_updated_at_checksum
        A timezone-aware time: a read refuses the chunk if the object was modified after it.
    """

    index: Sequence[int]
    location: str
    offset: int
    length: int
    etag_checksum: str | None = None
    last_updated_at_checksum: datetime | None = None


def micros(when: datetime | None) -> int:
    """``when`` in microseconds since the epoch (0 for None).

    Raises
    ------
    InvalidInputError
        On a naive datetime or one before the epoch.
    """
    if when is None:
        return 0
    if not isinstance(when, datetime) or when.tzinfo is None:
        raise InvalidInputError(
            f"a last-modified checksum is a timezone-aware datetime, got {when!r}")
    us = (when - _EPOCH) // _US
    if us <= 0:
        raise InvalidInputError(f"a last-modified checksum must be after 1970, got {when}")
    return int(us)


def specs_to_columns(specs: Sequence[VirtualChunkSpec], ndim: int) -> dict[str, Any]:
    """The keyword arguments of :func:`virtual_table` for ``specs``.

    Raises
    ------
    InvalidInputError
        On an index of the wrong length or a bad checksum.
    """
    n = len(specs)
    try:
        coords = np.array([s.index for s in specs], dtype=np.int64).reshape(n, ndim)
        offsets = np.fromiter((s.offset for s in specs), np.int64, n)
        lengths = np.fromiter((s.length for s in specs), np.int64, n)
    except (ValueError, TypeError, OverflowError, AttributeError) as e:
        raise InvalidInputError(
            f"virtual chunk specs need integer offsets, lengths and {ndim}-dimensional "
            f"indexes: {e}") from None
    keys: dict[tuple[str, str | None, datetime | None], int] = {}
    ids = np.fromiter(
        (keys.setdefault((s.location, s.etag_checksum, s.last_updated_at_checksum), len(keys))
         for s in specs), np.int64, n)
    locs = list(keys)
    return {"coords": coords, "location_ids": ids, "offsets": offsets, "lengths": lengths,
            "locations": [k[0] for k in locs], "etags": [k[1] for k in locs],
            "modified": [micros(k[2]) for k in locs]}


def _column(name: str, values: Any, n: int) -> npt.NDArray[np.int64]:
    a = np.asarray(values)
    if a.shape != (n,) or (n and a.dtype.kind not in "iu"):
        raise InvalidInputError(f"{name} must be a 1-d integer array of {n} values")
    if n and a.dtype.kind == "u" and int(a.max()) > _I63:
        raise InvalidInputError(f"{name} has a value out of range")
    return a.astype(np.int64, copy=False)


def virtual_table(ndim: int, *, coords: Any, location_ids: Any, offsets: Any, lengths: Any,
                  locations: Sequence[str], etags: Sequence[str | None] | None = None,
                  modified: Sequence[int] | None = None) -> ChunkTable:
    """The normalized table of virtual refs given as columns (a later row of one chunk wins).

    ``coords`` is ``(n, ndim)``, ``location_ids``/``offsets``/``lengths`` are ``(n,)``;
    ``locations``/``etags``/``modified`` (microseconds, 0 for none) hold one entry per
    location the ids point at.

    Raises
    ------
    InvalidInputError
        On columns of the wrong shape or type, negative values, location ids out of range,
        or locations that are not URLs.
    """
    c = np.asarray(coords)
    if c.ndim == 1 and ndim == 1:
        c = c.reshape(-1, 1)
    if c.ndim != 2 or c.shape[1] != ndim or (len(c) and c.dtype.kind not in "iu"):
        raise InvalidInputError(f"coords must be an integer array of shape (n, {ndim}), got "
                                f"shape {c.shape}")
    n = len(c)
    c = c.astype(np.int64, copy=False)
    ids = _column("location_ids", location_ids, n)
    off = _column("offsets", offsets, n)
    ln = _column("lengths", lengths, n)
    locations = list(locations)
    tags: list[str | None] = [None] * len(locations) if etags is None else list(etags)
    mods: list[int] = [0] * len(locations) if modified is None else [int(m) for m in modified]
    if len(tags) != len(locations) or len(mods) != len(locations):
        raise InvalidInputError("etags and modified hold one entry per location")
    for url, tag, mod in zip(locations, tags, mods, strict=True):
        if not isinstance(url, str) or "://" not in url:
            raise InvalidInputError(f"virtual chunk location must be a URL, got {url!r}")
        if tag is not None and not isinstance(tag, str):
            raise InvalidInputError(f"an etag is a string, got {tag!r}")
        if mod < 0:
            raise InvalidInputError(f"a modification time is >= 0, got {mod}")
    if n:
        if int(c.min()) < 0:
            raise InvalidInputError("chunk coordinates must be >= 0")
        if int(off.min()) < 0 or int(ln.min()) < 0:
            raise InvalidInputError("virtual chunk offset and length must be >= 0")
        if int(ids.min()) < 0 or int(ids.max()) >= len(locations):
            raise InvalidInputError(
                f"location ids must index the {len(locations)} locations given")
    table = ChunkTable(
        ndim=ndim, coords=c, kinds=np.full(n, KIND_VIRTUAL, np.uint8), ids=no_ids(n),
        offsets=off.astype(np.uint64), lengths=ln.astype(np.uint64),
        url_idx=ids.astype(np.int32), urls=locations, etags=tags, modified=mods,
    ).normalized()
    packed = compact_locations(table.url_idx, (table.urls, table.etags, table.modified))
    if packed is not None:
        url_idx, (urls, tags, mods) = packed
        table = ChunkTable(ndim=ndim, coords=table.coords, kinds=table.kinds, ids=table.ids,
                           offsets=table.offsets, lengths=table.lengths, url_idx=url_idx,
                           urls=urls, etags=tags, modified=mods, sorted_unique=True)
    return table


def split_checksum(checksum: str | datetime | None) -> tuple[str | None, int]:
    """Icechunk's ``checksum`` argument (an etag, or a last-modified datetime) as
    ``(etag, modified microseconds)``.

    Raises
    ------
    InvalidInputError
        On another type, or a naive datetime.
    """
    if checksum is None or isinstance(checksum, str):
        return checksum, 0
    if isinstance(checksum, datetime):
        return None, micros(checksum)
    raise InvalidInputError(f"a checksum is an etag string or a datetime, got {checksum!r}")


def grid_to_columns(grid: Sequence[int], locations: Sequence[str], offsets: Any,
                    lengths: Any, arr_offset: Sequence[int] | None,
                    checksum: str | datetime | None) -> dict[str, Any]:
    """The keyword arguments of :func:`virtual_table` for Icechunk's ``set_virtual_refs_arr``:
    one location per chunk of ``grid`` in C order, ``""`` for none.

    Raises
    ------
    InvalidInputError
        On columns that do not match the grid.
    """
    shape = tuple(int(g) for g in grid)
    n = int(np.prod(shape)) if shape else 1
    if len(locations) != n:
        raise InvalidInputError(f"{len(locations)} locations for a chunk grid of {n} chunks")
    index: dict[str, int] = {"": -1}  # no ref
    ids = np.fromiter((index.setdefault(u, len(index) - 1) for u in locations), np.int64, n)
    locs = list(index)[1:]
    keep = ids >= 0
    coords = np.stack(np.unravel_index(np.arange(n), shape), axis=1).astype(np.int64) \
        if shape else np.zeros((1, 1), np.int64)
    if arr_offset is not None:
        if len(arr_offset) != len(shape):
            raise InvalidInputError("arr_offset has one entry per dimension of the grid")
        coords += np.asarray(arr_offset, np.int64)
    etag, modified = split_checksum(checksum)
    off = np.asarray(offsets).reshape(-1)
    ln = np.asarray(lengths).reshape(-1)
    if len(off) != n or len(ln) != n:
        raise InvalidInputError("offsets and lengths hold one value per chunk of the grid")
    return {"coords": coords[keep], "location_ids": ids[keep], "offsets": off[keep],
            "lengths": ln[keep], "locations": locs, "etags": [etag] * len(locs),
            "modified": [modified] * len(locs)}
