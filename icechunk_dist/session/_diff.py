"""``Diff``: what changed between snapshots (from transaction logs) or in a session."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from icechunk_dist.conflicts import public_path
from icechunk_dist.format import TransactionLogData

__all__ = ["Diff", "diff_from_logs"]


@dataclass(frozen=True)
class Diff:
    """Changes between two snapshots, or a session's uncommitted changes.

    Paths are absolute (``"/"``, ``"/group/array"``). ``updated_chunks`` maps an array path
    to the sorted coordinates of chunks written or deleted, each a list of ints as in
    Icechunk (``{"/x": [[0, 0], [0, 1]]}``). ``updated_keys`` lists other (non-zarr-chunk)
    keys written or deleted.
    """

    new_groups: set[str] = field(default_factory=set)
    new_arrays: set[str] = field(default_factory=set)
    deleted_groups: set[str] = field(default_factory=set)
    deleted_arrays: set[str] = field(default_factory=set)
    updated_groups: set[str] = field(default_factory=set)
    updated_arrays: set[str] = field(default_factory=set)
    updated_chunks: dict[str, list[list[int]]] = field(default_factory=dict)
    updated_keys: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        object.__setattr__(self, "updated_chunks", {
            p: [[int(v) for v in c] for c in coords]
            for p, coords in self.updated_chunks.items()})

    def is_empty(self) -> bool:
        return not any((self.new_groups, self.new_arrays, self.deleted_groups,
                        self.deleted_arrays, self.updated_groups, self.updated_arrays,
                        self.updated_chunks, self.updated_keys))

    def __str__(self) -> str:
        lines = []
        for label, items in (("new groups", self.new_groups), ("new arrays", self.new_arrays),
                             ("deleted groups", self.deleted_groups),
                             ("deleted arrays", self.deleted_arrays),
                             ("updated groups", self.updated_groups),
                             ("updated arrays", self.updated_arrays),
                             ("other keys", self.updated_keys)):
            if items:
                lines.append(f"{label}: {', '.join(sorted(items))}")
        for path, coords in sorted(self.updated_chunks.items()):
            lines.append(f"chunks changed in {path}: {len(coords)}")
        return "\n".join(lines) or "no changes"


def _fold_deletes(paths: Iterable[str], new: set[str], deleted: set[str],
                  updated: set[str]) -> list[str]:
    """Apply deletions: a node created earlier in the range simply disappears."""
    out = []
    for p in map(public_path, paths):
        if p in new:
            new.discard(p)
        else:
            deleted.add(p)
        updated.discard(p)
        out.append(p)
    return out


def diff_from_logs(logs: Iterable[TransactionLogData]) -> Diff:
    """Fold transaction logs (oldest first) into one :class:`Diff`."""
    new_g: set[str] = set()
    new_a: set[str] = set()
    del_g: set[str] = set()
    del_a: set[str] = set()
    upd_g: set[str] = set()
    upd_a: set[str] = set()
    keys: set[str] = set()
    chunks: dict[str, set[tuple[int, ...]]] = {}
    for tx in logs:
        _fold_deletes(tx.deleted_groups, new_g, del_g, upd_g)
        for p in _fold_deletes(tx.deleted_arrays, new_a, del_a, upd_a):
            chunks.pop(p, None)
        for p in map(public_path, tx.new_groups):
            new_g.add(p)
        for p in map(public_path, tx.new_arrays):
            new_a.add(p)
        for p in map(public_path, tx.updated_groups):
            if p not in new_g:
                upd_g.add(p)
        for p in map(public_path, tx.updated_arrays):
            if p not in new_a:
                upd_a.add(p)
        for c in tx.chunks:
            arr = np.frombuffer(c.coords, "<i8").reshape(c.count, c.ndim)
            chunks.setdefault(public_path(c.path), set()).update(
                tuple(int(v) for v in row) for row in arr
            )
        keys.update(tx.loose_keys)
    return Diff(
        new_groups=new_g, new_arrays=new_a, deleted_groups=del_g, deleted_arrays=del_a,
        updated_groups=upd_g, updated_arrays=upd_a,
        updated_chunks={p: [list(c) for c in sorted(cs)] for p, cs in chunks.items()},
        updated_keys=keys,
    )
