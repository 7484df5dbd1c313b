"""Virtual refs of a session, columnar: the grid check of bulk refs, and the locations a
session's virtual chunks point into (per distinct location, never per ref in Python)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from icechunk_dist.errors import InvalidInputError
from icechunk_dist.format import KIND_VIRTUAL, ArrayInfo, ChunkTable
from icechunk_dist.format.chunktable import coord_keys, linear_keys

__all__ = ["check_in_grid", "live_locations"]


def check_in_grid(table: ChunkTable, info: ArrayInfo, path: str) -> None:
    """Refuse refs outside the chunk grid of the array at ``path``.

    Raises
    ------
    InvalidInputError
        Naming how many refs are outside, and one of them.
    """
    if not len(table):
        return
    if info.shape:
        grid = np.asarray([-(-s // c) for s, c in zip(info.shape, info.chunk_shape,
                                                    strict=True)], np.int64)
        outside = np.any(table.coords >= grid, axis=1)
    else:
        outside = np.any(table.coords != 0, axis=1)  # a 0-d array has chunk (0,) only
    if bool(outside.any()):
        first = tuple(int(v) for v in table.coords[np.argmax(outside)])
        raise InvalidInputError(
            f"{int(outside.sum())} virtual ref(s) outside array {path!r} of shape "
            f"{info.shape} with chunks {info.chunk_shape}, e.g. {first}")


def _used(table: ChunkTable, rows: npt.NDArray[np.bool_]) -> set[str]:
    idx = table.url_idx[rows]
    if not len(idx):
        return set()
    return {table.urls[int(i)] for i in np.flatnonzero(np.bincount(idx,
                                                                    minlength=len(table.urls)))}


def _overwritten(base: ChunkTable, changes: ChunkTable) -> npt.NDArray[np.bool_]:
    """Rows of ``base`` whose coordinates ``changes`` writes (or deletes)."""
    lin = linear_keys([base.coords, changes.coords])
    if lin is None:
        return np.isin(coord_keys(base.coords), coord_keys(changes.coords))
    kb, kc = lin
    if not changes.sorted_unique:
        kc = np.unique(kc)
    pos = np.minimum(np.searchsorted(kc, kb), len(kc) - 1)
    return np.asarray(kc[pos] == kb)


def live_locations(base: Sequence[ChunkTable], changes: ChunkTable | None) -> set[str]:
    """URLs the virtual chunks of one array point into: ``changes`` (normalized, tombstones
    included) over the ``base`` manifests' rows it does not overwrite."""
    out: set[str] = set()
    if changes is not None and len(changes):
        out |= _used(changes, changes.kinds == KIND_VIRTUAL)
    for t in base:
        rows = t.kinds == KIND_VIRTUAL
        if changes is not None and len(changes) and bool(rows.any()):
            rows &= ~_overwritten(t, changes)
        out |= _used(t, rows)
    return out
