"""The columns a chunk table shares between rows: virtual chunk locations and chunk ids.

A table holds each distinct virtual location (url, etag, last-modified) once; rows point at
it through ``url_idx``. Every function here works per distinct location or per column, never
per row in Python, so millions of virtual refs over a few thousand files cost a few thousand
Python steps. A table without native rows shares one zero row for its ``ids`` column
(:func:`no_ids`): 12 bytes per virtual ref that are never allocated.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "Locations",
    "compact_locations",
    "concat_ids",
    "is_no_ids",
    "merge_locations",
    "no_ids",
    "remap_url_idx",
    "take_ids",
]

#: (urls, etags, modified): one entry per distinct location; ``modified`` in microseconds
#: since the epoch (0: not recorded)
Locations = tuple[list[str], list[str | None], list[int]]

_ZERO_ID = np.zeros(12, np.uint8)


def no_ids(n: int) -> npt.NDArray[np.uint8]:
    """An ``(n, 12)`` all-zero ids column that takes no memory (a read-only broadcast)."""
    return np.broadcast_to(_ZERO_ID, (n, 12))


def is_no_ids(ids: npt.NDArray[np.uint8]) -> bool:
    """Whether ``ids`` is a :func:`no_ids` column (every row shares one zero id)."""
    return ids.ndim == 2 and len(ids) > 1 and ids.strides[0] == 0


def take_ids(ids: npt.NDArray[np.uint8], index: Any, n: int) -> npt.NDArray[np.uint8]:
    """``ids[index]`` (``n`` rows), still free when ``ids`` is a :func:`no_ids` column."""
    return no_ids(n) if is_no_ids(ids) else ids[index]


def concat_ids(cols: Sequence[npt.NDArray[np.uint8]]) -> npt.NDArray[np.uint8]:
    """The ids columns one after the other (free when all of them are free)."""
    if all(is_no_ids(c) or not len(c) for c in cols):
        return no_ids(sum(len(c) for c in cols))
    return np.concatenate(cols)


def remap_url_idx(url_idx: npt.NDArray[np.int32], remap: npt.NDArray[np.int32]
                  ) -> npt.NDArray[np.int32]:
    """``url_idx`` with each location index ``i >= 0`` replaced by ``remap[i]`` (-1 kept)."""
    if not len(remap):
        return url_idx
    if not len(url_idx) or int(url_idx.min()) >= 0:  # every row virtual: one pass
        return remap[url_idx]
    virt = url_idx >= 0
    return np.where(virt, remap[np.where(virt, url_idx, 0)], np.int32(-1)).astype(np.int32)


def merge_locations(parts: Sequence[Locations]) -> tuple[Locations, list[npt.NDArray[np.int32]]]:
    """One location list for several tables (equal locations once), and for each table the
    array mapping its location indices to the merged ones."""
    index: dict[tuple[str, str | None, int], int] = {}
    urls: list[str] = []
    etags: list[str | None] = []
    modified: list[int] = []
    remaps: list[npt.NDArray[np.int32]] = []
    for u, e, m in parts:
        remap = np.empty(len(u), np.int32)
        for i, key in enumerate(zip(u, e, m, strict=True)):
            j = index.get(key)
            if j is None:
                j = index[key] = len(urls)
                urls.append(key[0])
                etags.append(key[1])
                modified.append(key[2])
            remap[i] = j
        remaps.append(remap)
    return (urls, etags, modified), remaps


def compact_locations(url_idx: npt.NDArray[np.int32], locs: Locations
                      ) -> tuple[npt.NDArray[np.int32], Locations] | None:
    """Locations reduced to the ones rows use, each once (old manifests hold one entry per
    row), with ``url_idx`` remapped; None if they already are."""
    urls, etags, modified = locs
    if not urls:
        return None
    ref = url_idx[url_idx >= 0]
    used = np.flatnonzero(np.bincount(ref, minlength=len(urls))) if len(ref) else \
        np.zeros(0, np.int64)
    if len(used) == len(urls) and len(set(zip(urls, etags, modified, strict=True))) == len(urls):
        return None
    (nu, ne, nm), (remap_used,) = merge_locations(
        [([urls[i] for i in used], [etags[i] for i in used], [modified[i] for i in used])])
    remap = np.full(len(urls), -1, np.int32)
    remap[used] = remap_used
    return remap_url_idx(url_idx, remap), (nu, ne, nm)
