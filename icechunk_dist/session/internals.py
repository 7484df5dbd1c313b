"""Internal accessors of forks for the layers above the session (``icechunk_dist.dask``).

Not public API: small, stable entry points so that other modules never reach into a fork's
private attributes. Everything here works on :class:`ForkSession` objects.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from icechunk_dist.changeset import ChangeSet, MergePolicy
from icechunk_dist.format import NodeRecord
from icechunk_dist.session._registry import _REGISTRY, _REGISTRY_LOCK
from icechunk_dist.session._session import ForkSession, _node_names

__all__ = [
    "contributors",
    "fork_with_changes",
    "lineage",
    "merge_changes",
    "node_names",
    "node_record",
    "own_changes",
    "take_registered_copies",
    "written_coords",
]


def lineage(f: ForkSession) -> tuple[str, str]:
    """(lineage id of the parent session, base snapshot id): forks with equal lineage merge."""
    return f._lineage_id, f._base_id


def contributors(f: ForkSession) -> frozenset[str]:
    """Ids of the change-sets ``f`` holds (its own writes and the forks merged into it)."""
    with f._lock:
        return frozenset(f._contributors)


def own_changes(f: ForkSession) -> ChangeSet:
    """The change-set of ``f``'s own writes (and merges), not its inherited metadata.

    The object is ``f``'s: do not mutate it. Used to ship a task's writes back as a compact
    columnar record instead of a whole fork.
    """
    f._writes.flush_sync()  # a record must never name an object written behind that has not landed
    with f._lock:
        return f._changes


def fork_with_changes(parent: ForkSession, changes: ChangeSet) -> ForkSession:
    """A fresh child of ``parent`` holding ``changes`` as its own (one new contributor id)."""
    c = parent.child()
    with c._lock:
        c._changes = changes
        if not changes.is_empty():
            c._contributors = {c._own}
    return c


def merge_changes(records: Sequence[ChangeSet], *, names: dict[str, str] | None = None,
                  policy: MergePolicy = "fail") -> ChangeSet:
    """Merge the chunk-write records of tasks (k-way, once per array).

    Raises
    ------
    ConflictError
        If two records wrote the same chunk differently (``policy="fail"``).
    """
    if len(records) == 1:
        return records[0]
    return ChangeSet().merge_many([(r, None) for r in records], policy=policy,
                                  describe=names)


def node_names(f: ForkSession) -> dict[str, str]:
    """node id -> path of every node ``f`` can see (to name arrays in errors)."""
    return _node_names(f)


def node_record(f: ForkSession, path: str) -> NodeRecord | None:
    """The node at ``path`` as ``f`` sees it (pending metadata over the base), or None."""
    return f._node(path)


def written_coords(f: ForkSession, node_id: str) -> npt.NDArray[np.int64]:
    """Coordinates of every chunk of node ``node_id`` that ``f`` wrote or deleted."""
    ac = f._changes.chunks.get(node_id)
    if ac is None:
        return np.empty((0, 0), np.int64)
    return np.asarray(ac.table.coords)


def take_registered_copies(fork_id: str) -> ForkSession | None:
    """Remove this process's copies of fork ``fork_id`` from the registry and return their
    writes as one plain fork (None if this process holds none)."""
    with _REGISTRY_LOCK:
        group = _REGISTRY.pop(fork_id, None)
    return None if group is None else group._as_contribution()
