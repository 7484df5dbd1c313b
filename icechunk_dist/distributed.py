"""Icechunk's helpers for distributed array frameworks (``icechunk.distributed``):
:func:`merge_sessions` and :func:`extract_session`, for ``dask.array.store`` /
``reduction`` recipes that carry forks through a task graph.

``icechunk_dist.dask.store_dask`` and ``session_merge_reduction`` already do the whole
recipe; these are the building blocks Icechunk's users call themselves.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from icechunk_dist.errors import InvalidInputError
from icechunk_dist.session import ForkSession
from icechunk_dist.store import IcechunkStore, StoreBackend

__all__ = ["extract_session", "merge_sessions"]


class _NotAForkError(InvalidInputError, TypeError):
    """``merge_sessions`` was given something other than forks (a ``TypeError`` too, as
    Icechunk's)."""


_NotAForkError.__module__ = "icechunk_dist"


def _flatten(items: Iterable[Any]) -> Iterator[Any]:
    for item in items:
        if isinstance(item, list):
            yield from _flatten(item)
        else:
            yield item


def extract_session(zarray: Any, axis: Any = None, keepdims: Any = None) -> StoreBackend:
    """The session (or fork) behind a zarr array of an icechunk_dist store; ``axis`` and
    ``keepdims`` are ignored (they let it serve as a reduction's chunk function).

    Raises
    ------
    InvalidInputError
        If the array is not on an :class:`~icechunk_dist.IcechunkStore`.
    """
    store = getattr(zarray, "store", None)
    if not isinstance(store, IcechunkStore):
        raise InvalidInputError(
            f"extract_session takes a zarr array of an IcechunkStore, got {zarray!r}")
    return store.session


def merge_sessions(*sessions: ForkSession | list[Any]) -> ForkSession:
    """Merge forks (given flat or in nested lists) into the first one and return it (a
    reduction's combine function); the driver then merges the result into its session.

    Raises
    ------
    InvalidInputError
        If one of them is not a :class:`~icechunk_dist.ForkSession` (also a ``TypeError``),
        or nothing is given.
    MergeConflictError
        If two forks wrote the same chunk differently.
    """
    forks = list(_flatten(sessions))
    if not forks:
        raise InvalidInputError("merge_sessions needs at least one ForkSession")
    for f in forks:
        if not isinstance(f, ForkSession):
            raise _NotAForkError(
                "merge_sessions only accepts ForkSession objects. Received "
                f"{type(f).__name__!r} instance instead. To merge all your forks into a "
                "session, use Session.merge(*forks) instead")
    first: ForkSession = forks[0]
    if len(forks) > 1:
        first.merge(*forks[1:])
    return first
