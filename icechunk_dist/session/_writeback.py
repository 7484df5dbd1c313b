"""Chunk objects written in the background while zarr goes on (write-behind).

A chunk object has a random, never reused id and nobody reads it before the change-set that
refers to it is committed (or read back by its own session), so ``store.set`` need not wait
for the object to land: it starts the write on the library's I/O loop and returns. At most
``window`` writes (and ``max_bytes`` bytes) are in flight; the next ``set`` waits for the
oldest. Every point where a change-set leaves its session waits for all of them first and
raises the first failure: the commit, a merge, pickling a fork. A read of a chunk still being
written waits for its write. A failed write stays an error of the change-set until its
changes are discarded, so a commit can never reference an object that was not written.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections import OrderedDict
from concurrent.futures import Future

from icechunk_dist import _sync
from icechunk_dist.session._io import put_fresh
from icechunk_dist.storage import Storage

__all__ = ["PendingWrites", "none_pending"]

_WINDOW = 64
_MAX_BYTES = 64 * 1024 * 1024


# the PendingWrites of this process with a write in flight or a failed write: when there is
# none, a merge of a thousand forks need not ask each one (none_pending)
_busy: weakref.WeakSet[PendingWrites] = weakref.WeakSet()
_busy_lock = threading.Lock()


def none_pending() -> bool:
    """Whether no change-set of this process has a chunk write in flight or failed."""
    return not _busy


class PendingWrites:
    """The chunk writes of one change-set that may still be in flight (thread-safe)."""

    __slots__ = ("__weakref__", "_bytes", "_error", "_futs", "_lock", "_max_bytes",
                 "_window")

    def __init__(self, window: int = _WINDOW, max_bytes: int = _MAX_BYTES) -> None:
        self._window = window
        self._max_bytes = max_bytes
        self._futs: OrderedDict[str, Future[None]] = OrderedDict()
        self._bytes = 0
        self._error: BaseException | None = None
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._futs)

    def _oldest(self) -> Future[None] | None:
        with self._lock:
            if len(self._futs) < self._window and self._bytes < self._max_bytes:
                return None
            return next(iter(self._futs.values()), None)

    async def submit(self, storage: Storage, key: str, data: bytes) -> None:
        """Start writing ``data`` under ``key``; wait only while the window is full.

        Raises
        ------
        StorageError
            If an earlier write of this change-set failed.
        """
        self.raise_error()
        while (oldest := self._oldest()) is not None:
            await asyncio.wrap_future(oldest)  # its outcome is recorded by _done
        n = len(data)
        fut = asyncio.run_coroutine_threadsafe(put_fresh(storage, key, data), _sync.io_loop())
        with self._lock:
            self._futs[key] = fut
            self._bytes += n
            with _busy_lock:
                _busy.add(self)

        def done(f: Future[None], key: str = key, n: int = n) -> None:
            with self._lock:
                self._futs.pop(key, None)
                self._bytes -= n
                if not f.cancelled() and f.exception() is not None and self._error is None:
                    self._error = f.exception()
                if not self._futs and self._error is None:
                    with _busy_lock:
                        _busy.discard(self)

        fut.add_done_callback(done)

    async def wait_for(self, key: str) -> None:
        """Wait until the write of ``key`` (if one is in flight) has ended."""
        with self._lock:
            fut = self._futs.get(key)
        if fut is not None:
            await asyncio.wrap_future(fut)

    async def flush(self) -> None:
        """Wait for every write in flight; raise the first failure of any write.

        Raises
        ------
        StorageError
            If a write failed.
        """
        while True:
            with self._lock:
                futs = list(self._futs.values())
            if not futs:
                break
            await asyncio.gather(*(asyncio.wrap_future(f) for f in futs),
                                 return_exceptions=True)
        self.raise_error()

    def flush_sync(self) -> None:
        """:meth:`flush` from synchronous code (not from the library's own I/O loop)."""
        if not self._futs:  # one atomic read: nothing in flight (a write adds before it runs)
            self.raise_error()
            return
        _sync.run(self.flush())

    def raise_error(self) -> None:
        err = self._error
        if err is not None:
            raise err
