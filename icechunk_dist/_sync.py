"""The one bridge between the async core and the sync API.

A sync method runs its coroutine on the calling thread when that thread runs no event loop
(scripts, Dask worker threads: the common case), on an event loop of the thread's own, made
on first use and closed when the thread ends. That saves the hop to another thread and back,
0.2 to 0.4 ms per call on a virtual machine (docs/design/017-sync-calls-in-place.md). A
thread that does run a loop (Jupyter) hands the coroutine to the library's I/O loop, a daemon
thread per process, and waits. The ``*_async`` methods run in place on a loop of ours and on
the I/O loop when awaited from any other loop, so a caller's loop is never held by our work.
Work that must outlive the call (a branch's tip hint) always runs on the I/O loop. Both kinds
of loop survive ``os.fork``: a child makes its own on first use and never touches its
parent's.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import contextvars
import functools
import os
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import Any, ParamSpec, TypeVar

from icechunk_dist.errors import SessionStateError

__all__ = ["aiterate_pages", "background", "drain_background", "in_thread", "io_loop",
           "iterate_pages", "on_io_loop", "run", "run_async"]

T = TypeVar("T")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_thread: threading.Thread | None = None
_pid: int | None = None


# the loops sync calls run on in the threads that made them (see _caller_loop)
_caller_loops: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()
_local = threading.local()
# loops a forked child inherited: never closed (closing one would unregister its parent's
# self-pipe from the epoll instance they share), never used
_abandoned: list[object] = []


def _reset_after_fork() -> None:
    global _loop, _thread, _pid, _lock
    if _loop is not None:
        _abandoned.append(_loop)
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


_background: set[concurrent.futures.Future[None]] = set()
_background_lock = threading.Lock()


def background(coro: Coroutine[Any, Any, None]) -> concurrent.futures.Future[None]:
    """Run ``coro`` on the library's I/O loop without waiting for it: for writes that only
    help (a branch's tip hint) and must not add their latency to the caller's. It must
    handle its own errors. Still running at interpreter exit, it gets a few seconds to
    finish. Callable from any thread and any loop; the future says when it ended."""
    fut = asyncio.run_coroutine_threadsafe(coro, _get_loop())
    with _background_lock:
        _background.add(fut)
    fut.add_done_callback(_forget)
    return fut


def _forget(fut: concurrent.futures.Future[None]) -> None:
    with _background_lock:
        _background.discard(fut)


def _unfinished() -> list[concurrent.futures.Future[None]]:
    with _background_lock:
        return [f for f in _background if not f.done()]


async def drain_background(timeout: float = 30.0) -> None:
    """Wait (at most ``timeout`` seconds) for the background writes started so far (tests,
    and interpreter exit), from any loop."""
    deadline = time.monotonic() + timeout
    while (mine := _unfinished()) and (left := deadline - time.monotonic()) > 0:
        await asyncio.wait([asyncio.wrap_future(f) for f in mine], timeout=left)


def _drain_at_exit() -> None:
    if _pid != os.getpid():
        return
    concurrent.futures.wait(_unfinished(), timeout=5)


# before the interpreter's shutdown of thread pools: a hint write still to start needs one
# (asyncio.to_thread), and a pool shut down refuses new work. concurrent.futures.thread
# registers that shutdown with threading when first imported (lazily, by the first
# executor); importing it here registers it before us, and these hooks run last first
if hasattr(threading, "_register_atexit"):
    import concurrent.futures.thread
    threading._register_atexit(_drain_at_exit)
else:  # pragma: no cover - CPython < 3.9
    atexit.register(_drain_at_exit)


async def in_thread(fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """``asyncio.to_thread``, except where no thread can be started: at interpreter exit
    (Python 3.12 refuses new threads once shutdown began, and thread pools refuse new work)
    ``fn`` runs inline, so a write still landing then (a tip hint) is not lost."""
    loop = asyncio.get_running_loop()
    call = functools.partial(contextvars.copy_context().run, fn, *args, **kwargs)
    try:
        fut = loop.run_in_executor(None, call)
    except RuntimeError:  # raised by the submit itself, never by fn
        return fn(*args, **kwargs)
    return await fut


def io_loop() -> asyncio.AbstractEventLoop:
    """The bridge loop of this process (started on first use): where background I/O that
    must outlive the caller's own event loop runs."""
    return _get_loop()


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion and return its result: on this thread's own loop when the
    thread runs none, else on the library's I/O loop while this thread waits.

    Raises
    ------
    SessionStateError
        If called from inside a coroutine of ours (a sync method called from async code of
        ours: use the ``*_async`` twin instead).
    """
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is None:
        return _run_here(_caller_loop(), coro)
    if running is _loop or running in _caller_loops:
        coro.close()
        raise SessionStateError(
            "a synchronous icechunk_dist method was called from inside its own event loop; "
            "await the *_async variant instead"
        )
    return asyncio.run_coroutine_threadsafe(coro, _get_loop()).result()


class _CallerLoop:
    """The event loop sync calls run on in one thread; closed with the thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.pid = os.getpid()
        _caller_loops.add(self.loop)

    def __del__(self) -> None:  # the thread ended (or the interpreter exits)
        if self.pid == os.getpid() and not self.loop.is_running():
            with contextlib.suppress(Exception):
                self.loop.close()


def _caller_loop() -> asyncio.AbstractEventLoop:
    held: _CallerLoop | None = getattr(_local, "held", None)
    if held is None or held.pid != os.getpid():
        if held is not None:  # inherited through os.fork: see _abandoned
            _abandoned.append(held)
        held = _local.held = _CallerLoop()
    return held.loop


def _run_here(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T]) -> T:
    """``coro`` run to completion on ``loop`` in this thread. Interrupted (Ctrl-C), it is
    cancelled and the loop runs until it has unwound, as ``asyncio.run`` does."""
    task = loop.create_task(coro)
    try:
        return loop.run_until_complete(task)
    except BaseException:
        if not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                loop.run_until_complete(task)
        raise


async def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Await ``coro`` run on one of our loops, from any event loop, without blocking it.

    The async twins of the API use this: on a loop of ours (the I/O loop, or a thread's loop
    running a sync call) it runs in place; on any other loop that loop only waits on a
    future, so it keeps running its other tasks, and no work of ours ever runs on it.
    """
    running = asyncio.get_running_loop()
    if running is _loop or running in _caller_loops:
        return await coro
    loop = _get_loop()
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
