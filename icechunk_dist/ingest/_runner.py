"""Running ingestion tasks: on a ``distributed`` client's workers, or on threads here.

A task that fails with one of our errors returns it as a value (:class:`Failed`) instead of
raising it: a run that ends in a clean error (a bad file, a value that does not fit the
repository) must not leave worker tracebacks on stderr, which ``distributed`` logs for every
task that raises. The driver raises the error.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from icechunk_dist.errors import IcechunkDistError
from icechunk_dist.ingest._progress import Progress
from icechunk_dist.session import ForkSession

__all__ = ["Failed", "Runner", "Written", "raise_failed", "resolve_client"]


class Failed:
    """A task's error, returned as a value."""

    __slots__ = ("error",)

    def __init__(self, error: IcechunkDistError) -> None:
        self.error = error

    def __reduce__(self) -> tuple[Any, ...]:
        return (Failed, (self.error,))


class Written:
    """A write task's result: the fork holding its writes, the bytes it wrote, and for
    virtual ingestion the refs it set and the variables it copied instead (name -> why)."""

    __slots__ = ("copied", "fork", "nbytes", "refs")

    def __init__(self, fork: ForkSession, nbytes: int, refs: int = 0,
                 copied: dict[str, str] | None = None) -> None:
        self.fork, self.nbytes, self.refs = fork, nbytes, refs
        self.copied = copied or {}

    def __reduce__(self) -> tuple[Any, ...]:
        return (Written, (self.fork, self.nbytes, self.refs, self.copied))


def raise_failed(results: Sequence[Any]) -> None:
    """Raise the first :class:`Failed` error among ``results``.

    Raises
    ------
    IcechunkDistError
        The failed task's error.
    """
    for r in results:
        if isinstance(r, Failed):
            raise r.error


def _guarded(fn: Callable[..., Any], *args: Any) -> Any:
    """Task: ``fn(*args)``, with our errors returned as :class:`Failed`."""
    try:
        return fn(*args)
    except IcechunkDistError as e:
        return Failed(e)


def _merge(*parts: Written | Failed) -> Written | Failed:
    """Task: merge written forks into a new child (inputs are never mutated: a retried task
    sees the same); a failure passes through."""
    for p in parts:
        if isinstance(p, Failed):
            return p
    written: list[Written] = list(parts)  # type: ignore[arg-type]
    first, *rest = written
    if not rest:
        return first
    try:
        fork = first.fork.child().merge(first.fork, *(w.fork for w in rest))
    except IcechunkDistError as e:
        return Failed(e)
    copied: dict[str, str] = {}
    for w in written:
        for name, why in w.copied.items():
            copied.setdefault(name, why)
    return Written(fork, sum(w.nbytes for w in written), sum(w.refs for w in written),
                   copied)


def resolve_client(client: Any) -> Any:
    """``client``, else the current default ``distributed`` client, else None (threads)."""
    if client is not None:
        return client
    try:
        from distributed import default_client

        return default_client()
    except (ImportError, ValueError):
        return None


class Runner:
    """Runs tasks on a distributed client's workers, or in this process on threads."""

    def __init__(self, client: Any, progress: Progress) -> None:
        self.client = client
        self.progress = progress

    def map(self, fn: Callable[..., Any], items: Sequence[Any], *args: Any,
            what: str) -> list[Any]:
        """``[fn(item, *args) for item in items]`` on the workers, in order; our errors come
        back as :class:`Failed` values. (Progress is shown from two items on.)"""
        progress = self.progress if len(items) > 1 else Progress(False)
        progress.start(what, len(items))
        try:
            if self.client is not None:
                from distributed import as_completed

                with self.client.as_current():
                    futs = [self.client.submit(_guarded, fn, item, *args, pure=False)
                            for item in items]
                    for _f in as_completed(futs):
                        progress.advance(1)
                    return list(self.client.gather(futs))
            with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 2)) as pool:
                futures = [pool.submit(_guarded, fn, item, *args) for item in items]
                out = []
                for f in futures:
                    out.append(f.result())
                    progress.advance(1)
                return out
        finally:
            progress.finish()

    def write_and_merge(self, fn: Callable[..., Written], units: Sequence[Any],
                        sizes: Sequence[tuple[int, int]], *args: Any, split_every: int,
                        what: str) -> Written | Failed:
        """Run ``fn(unit, *args)`` per unit (each returns a :class:`Written`); merge the
        forks in a tree of fan-in ``split_every`` on the workers; return the one result.
        ``sizes`` are the (files, bytes) of each unit, for the progress display."""
        self.progress.start(what, sum(f for f, _b in sizes), sum(b for _f, b in sizes))
        try:
            if self.client is not None:
                from distributed import as_completed

                with self.client.as_current():
                    writes = [self.client.submit(_guarded, fn, u, *args, pure=False)
                              for u in units]
                    index = {w.key: i for i, w in enumerate(writes)}
                    parts = writes
                    while len(parts) > 1:  # the merge tree runs on the workers
                        parts = [self.client.submit(_merge, *parts[i:i + split_every],
                                                    pure=False)
                                 for i in range(0, len(parts), split_every)]
                    for f in as_completed(writes):
                        self.progress.advance(*sizes[index[f.key]])
                    if len(writes) == 1:
                        return _merge(parts[0].result())
                    merged: Written | Failed = parts[0].result()
                    return merged
            with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 2)) as pool:
                futures = [pool.submit(_guarded, fn, u, *args) for u in units]
                results = []
                for f, s in zip(futures, sizes, strict=True):
                    results.append(f.result())
                    self.progress.advance(*s)
        finally:
            self.progress.finish()
        while len(results) > 1:
            results = [_merge(*results[i:i + split_every])
                       for i in range(0, len(results), split_every)]
        return _merge(results[0])
