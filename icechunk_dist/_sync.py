"""The one bridge between the async core and the sync API.

A single daemon thread per process runs an event loop; sync methods submit their coroutine to
it and wait. This works with and without a running loop in the caller (scripts, Jupyter, Dask
workers, zarr's own loop thread) and survives ``os.fork``: the child process starts a new loop
thread on first use.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import os
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import Any, ParamSpec, TypeVar

from icechunk_dist.errors import SessionStateError

__all__ = ["aiterate_pages", "background", "drain_background", "io_loop", "iterate_pages",
           "on_io_loop", "run", "run_async"]

T = TypeVar("T")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_thread: threading.Thread | None = None
_pid: int | None = None


def _reset_after_fork() -> None:
    global _loop, _thread, _pid, _lock
    _loop = None
    _thread = None
    _pid = None
    _lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


def _get_loop() -> asyncio.AbstractEventLoop:
    global _loop, _thread, _pid
    with _lock:
        if _loop is None or _pid != os.getpid() or _thread is None or not _thread.is_alive():
            loop = asyncio.new_event_loop()
            thread = threading.Thread(
                target=loop.run_forever, name="icechunk_dist-io", daemon=True
            )
            thread.start()
            _loop, _thread, _pid = loop, thread, os.getpid()
        return _loop


_background: set[asyncio.Task[Any]] = set()


def background(coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
    """Run ``coro`` on the running loop without waiting for it: for writes that only help
    (a branch's tip hint) and must not add their latency to the caller's. It must handle
    its own errors. Still running at interpreter exit, it gets a few seconds to finish."""
    task = asyncio.get_running_loop().create_task(coro)
    _background.add(task)
    task.add_done_callback(_background.discard)
    return task


async def drain_background(timeout: float = 30.0) -> None:
    """Wait (at most ``timeout`` seconds) for the background writes started so far on the
    running loop (tests, and interpreter exit). Those of a loop that has closed are
    dropped: they cannot finish."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        for task in list(_background):
            other = task.get_loop()
            if other is not loop and (task.done() or other.is_closed()):
                _background.discard(task)
        mine = [t for t in _background if t.get_loop() is loop and not t.done()]
        left = deadline - loop.time()
        if not mine or left <= 0:
            return
        await asyncio.wait(mine, timeout=left)


def _drain_at_exit() -> None:
    loop = _loop
    if not _background or loop is None or _pid != os.getpid() or not loop.is_running():
        return
    with contextlib.suppress(Exception):
        asyncio.run_coroutine_threadsafe(drain_background(), loop).result(timeout=5)


atexit.register(_drain_at_exit)


def io_loop() -> asyncio.AbstractEventLoop:
    """The bridge loop of this process (started on first use): where background I/O that
    must outlive the caller's own event loop runs."""
    return _get_loop()


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion on the bridge loop and return its result.

    Raises
    ------
    SessionStateError
        If called from the bridge loop itself (a sync method called from async code of ours:
        use the ``*_async`` twin instead).
    """
    loop = _get_loop()
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        coro.close()
        raise SessionStateError(
            "a synchronous icechunk_dist method was called from inside its own event loop; "
            "await the *_async variant instead"
        )
    return asyncio.run_coroutine_threadsafe(coro, loop).result()


async def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Await ``coro`` run on the bridge loop, from any event loop, without blocking it.

    The async twins of the API use this: the caller's loop only waits on a future, so it
    keeps running its other tasks, and no sync method of ours ever runs on it.
    """
    loop = _get_loop()
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        return await coro
    return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, loop))


P = ParamSpec("P")


def on_io_loop(method: Callable[P, Coroutine[Any, Any, T]]
               ) -> Callable[P, Coroutine[Any, Any, T]]:
    """``method`` run on the library's loop whichever loop awaits it (as Icechunk's calls run
    on its own runtime): the caller's loop only waits on a future, so our storage calls and
    decoding never hold it, even where a read completes without suspending. Every ``*_async``
    method of the API is written once this way; its sync twin is ``run(self.x_async(...))``.
    """
    @functools.wraps(method)
    async def wrapped(*args: P.args, **kwargs: P.kwargs) -> T:
        return await run_async(method(*args, **kwargs))

    return wrapped


async def _next_page(pages: AsyncIterator[list[T]]) -> list[T] | None:
    return await anext(pages, None)


def iterate_pages(pages: AsyncIterator[list[T]]) -> Iterator[T]:
    """The items of ``pages``, each page fetched on the library's loop when needed."""
    while (page := run(_next_page(pages))) is not None:
        yield from page


async def aiterate_pages(pages: AsyncIterator[list[T]]) -> AsyncIterator[T]:
    """The items of ``pages``, each page fetched on the library's loop when needed."""
    while (page := await run_async(_next_page(pages))) is not None:
        for item in page:
            yield item
