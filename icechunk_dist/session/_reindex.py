"""Moving the chunk refs of an array to other chunk indices (``Session.reindex_array`` and
``Session.shift_array``, Icechunk's calls): plain functions of chunk tables, no I/O.

Only refs move; no chunk is read or copied. The session applies the result to its
change-set (``_session.py``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import numpy as np

from icechunk_dist.errors import InvalidInputError
from icechunk_dist.format import KIND_TOMBSTONE, ChunkTable

__all__ = ["IndexMap", "grid_of", "reindexed", "shifter"]

#: a chunk-index map of ``reindex_array``: old index -> new index, or None (leave it)
IndexMap = Callable[[list[int]], Iterable[int] | None]


def grid_of(shape: tuple[int, ...], chunk_shape: tuple[int, ...]) -> tuple[int, ...]:
    """Chunks per dimension of a regular chunk grid."""
    return tuple(math.ceil(s / c) for s, c in zip(shape, chunk_shape, strict=True))


def _index_of(value: Iterable[int] | None, grid: tuple[int, ...], array_path: str, *,
              check: bool) -> tuple[int, ...] | None:
    """A chunk index a map returned, as a tuple (None stays None). With ``check`` an index
    outside the grid is an error; without, it reads as None.

    Raises
    ------
    InvalidInputError
        If it is not a sequence of ints, or (with ``check``) it is outside the grid.
    """
    if value is None:
        return None
    try:
        index = tuple(int(v) for v in value)
    except (TypeError, ValueError):
        raise InvalidInputError(
            f"a reindexing map must return a sequence of ints or None, got {value!r}"
        ) from None
    bounds = grid or (1,)  # a 0-d array has one chunk, at (0,)
    if len(index) == len(bounds) and all(0 <= i < n for i, n in zip(index, bounds,
                                                                    strict=True)):
        return index
    if check:
        raise InvalidInputError(
            f"invalid chunk index: coordinates {list(index)} are not valid for the array at "
            f"{array_path!r} (its chunk grid is {list(grid)})")
    return None


def shifter(offset: list[int], grid: tuple[int, ...]) -> IndexMap:
    """The map of a shift by ``offset`` chunks: ``index + offset``, None outside the grid."""
    def move(index: list[int]) -> list[int] | None:
        new = [i + o for i, o in zip(index, offset, strict=True)]
        return new if all(0 <= v < n for v, n in zip(new, grid, strict=True)) else None
    return move


def reindexed(live: ChunkTable, grid: tuple[int, ...], forward: IndexMap,
              backward: IndexMap | None, array_path: str) -> ChunkTable | None:
    """The writes that reindex an array whose initialized chunks are ``live`` (normalized,
    no tombstones): each chunk inside the grid moved where ``forward`` says, and, with
    ``backward``, a tombstone at each position that nothing moved onto and whose source
    (``backward`` of it) is outside the grid or empty. None if there is nothing to write.

    Icechunk's rules: only existing chunks are visited, both maps see the state before the
    reindexing, and without ``backward`` a vacated position keeps its chunk.

    Raises
    ------
    InvalidInputError
        If ``forward`` gives something that is not a chunk index inside the grid.
    """
    ndim = max(1, len(grid))
    coords = np.asarray(live.coords)
    if len(grid):  # a resize leaves deletes of positions now outside the grid: not chunks
        inside = np.all((coords >= 0) & (coords < np.asarray(grid)), axis=1)
        live = live.take(np.flatnonzero(inside))
        coords = np.asarray(live.coords)
    present = {tuple(int(v) for v in row) for row in coords}
    rows: list[int] = []
    moved_to: list[tuple[int, ...]] = []
    for i, row in enumerate(coords):
        new = _index_of(forward([int(v) for v in row]), grid, array_path, check=True)
        if new is not None:
            rows.append(i)
            moved_to.append(new)
    cleared: list[tuple[int, ...]] = []
    if backward is not None:
        for old in sorted(present - set(moved_to)):
            source = _index_of(backward(list(old)), grid, array_path, check=False)
            if source is None or source not in present:
                cleared.append(old)
    if not rows and not cleared:
        return None
    moved = live.take(np.asarray(rows, np.int64))
    moved.coords = np.asarray(moved_to, np.int64).reshape(len(rows), ndim)
    moved.sorted_unique = False
    n = len(cleared)
    gone = ChunkTable(
        ndim=ndim, coords=np.asarray(cleared, np.int64).reshape(n, ndim),
        kinds=np.full(n, KIND_TOMBSTONE, np.uint8), ids=np.zeros((n, 12), np.uint8),
        offsets=np.zeros(n, np.uint64), lengths=np.zeros(n, np.uint64),
        url_idx=np.full(n, -1, np.int32))
    # moved rows and tombstones never share a position
    return ChunkTable.concat([moved, gone], ndim).normalized()
