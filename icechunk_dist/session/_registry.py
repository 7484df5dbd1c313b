"""Per-process registry of the copies of each fork made by ``Session.fork()``.

``icechunk_dist.dask.gather_forks`` pulls every worker's copies of a fork (the recipe of plain
``dask.array.to_zarr`` on ``fork.store``, where task results are discarded). Copies are never
resolved to one object: each keeps its own change-set (docs/design/004-fork-copies.md).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

from icechunk_dist.changeset import ChangeSet

# typed loosely on purpose: importing the higher module here would close an import cycle
ForkSession = Any

__all__ = ["_REGISTRY", "_REGISTRY_LOCK", "_register", "_release"]


class _Copies:
    """The copies of one fork (one fork id) that live in this process.

    ``gather_forks`` collects them from every worker (``_as_contribution``); they are not
    resolved to one object, so every copy (a task's argument) keeps only its own writes.
    """

    __slots__ = ("forks",)

    def __init__(self) -> None:
        self.forks: list[ForkSession] = []

    def _as_contribution(self) -> ForkSession | None:
        """Every write of these copies as one plain fork (identical writes count once)."""
        parts = [f for f in self.forks if not f._changes.is_empty()]
        if not parts:
            return None
        out = parts[0].child()
        names: dict[str, str] = {}
        for f in parts:
            names.update({rec.node_id: path for path, rec in f._all_nodes().items()})
        with out._lock:
            out._changes = ChangeSet().merge_many(
                [(f._changes, f._inherited) for f in parts], describe=names)
            out._contributors = {out._own}
        return out


_REGISTRY: OrderedDict[str, _Copies] = OrderedDict()
_REGISTRY_LOCK = threading.Lock()
_REGISTRY_MAX = 10_000


def _register(f: ForkSession) -> ForkSession:
    with _REGISTRY_LOCK:
        group = _REGISTRY.get(f._fork_id)
        if group is None:
            group = _REGISTRY[f._fork_id] = _Copies()
        else:
            _REGISTRY.move_to_end(f._fork_id)
        if not any(g is f for g in group.forks):
            group.forks.append(f)
        if len(_REGISTRY) > _REGISTRY_MAX:
            # bound the registry by dropping the oldest groups whose copies hold no writes;
            # a copy with writes is never evicted (its writes would be lost silently)
            for key in [k for k, g in _REGISTRY.items()
                        if all(c._changes.is_empty() for c in g.forks)]:
                if len(_REGISTRY) <= _REGISTRY_MAX:
                    break
                del _REGISTRY[key]
    return f


def _release(f: ForkSession) -> None:
    with _REGISTRY_LOCK:
        group = _REGISTRY.get(f._fork_id)
        if group is not None:
            group.forks = [g for g in group.forks if g is not f]
            if not group.forks:
                del _REGISTRY[f._fork_id]
