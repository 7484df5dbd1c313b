"""Sync calls run on the caller's thread (docs/design/017-sync-calls-in-place.md).

Where the caller's thread runs no event loop, a sync method's storage requests are made from
that thread (no hop to the I/O loop and back); from a thread that runs a loop they still
work, on the I/O loop; a sync method inside our own coroutine is refused; tip hints scheduled
from many threads all land, the newest last; and a forked child's sync calls neither use nor
break its parent's loops.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import ClassVar

import pytest

import icechunk_dist as icd
from icechunk_dist import _sync, refs
from icechunk_dist.format import ObjectType, decode_object
from icechunk_dist.storage import Storage, WrapperStorage


class ThreadRecorder(WrapperStorage):
    """Records the thread every GET is made from."""

    threads: ClassVar[list[str]] = []

    async def get(self, key: str) -> bytes:
        ThreadRecorder.threads.append(threading.current_thread().name)
        return await self.inner.get(key)


def recorded_repo(tmp_path: Path) -> icd.Repository:
    storage = ThreadRecorder(icd.local_filesystem_storage(str(tmp_path / "repo")))
    repo = icd.Repository.create(storage)
    ThreadRecorder.threads.clear()
    return repo


def test_a_sync_call_makes_its_requests_from_the_callers_thread(tmp_path: Path) -> None:
    repo = recorded_repo(tmp_path)
    repo.lookup_branch("main")
    assert ThreadRecorder.threads
    assert set(ThreadRecorder.threads) == {threading.current_thread().name}

    def in_a_worker_thread() -> set[str]:
        ThreadRecorder.threads.clear()
        repo.lookup_branch("main")
        return {threading.current_thread().name, *ThreadRecorder.threads}

    with ThreadPoolExecutor(1, thread_name_prefix="worker") as pool:
        names = pool.submit(in_a_worker_thread).result()
    assert len(names) == 1 and next(iter(names)).startswith("worker")


def test_a_sync_call_from_a_running_loop_still_works(tmp_path: Path) -> None:
    repo = recorded_repo(tmp_path)
    sid = repo.lookup_branch("main")

    async def main() -> str:
        ThreadRecorder.threads.clear()
        return repo.lookup_branch("main")  # blocks this loop; runs on the I/O loop

    assert asyncio.run(main()) == sid
    assert set(ThreadRecorder.threads) == {"icechunk_dist-io"}


def test_a_sync_call_inside_our_own_coroutine_is_refused(tmp_path: Path) -> None:
    repo = recorded_repo(tmp_path)

    async def nested() -> str:
        return repo.lookup_branch("main")

    with pytest.raises(icd.SessionStateError, match="_async variant"):
        _sync.run(nested())
    # and the thread's loop still serves the next call
    assert repo.lookup_branch("main")


def _hint_version(storage: Storage, branch: str) -> int:
    key = f"refs/branch.{branch}/tip"
    return decode_object(storage.get_sync(key), refs._TipHint, ObjectType.REF,
                         name=key).version


def test_tip_hints_scheduled_from_many_threads_all_land(tmp_path: Path) -> None:
    """Eight threads move eight branches 5 times each; every hint ends at its branch's
    newest version and no hint writer is left registered."""
    storage = icd.local_filesystem_storage(str(tmp_path / "repo"))
    repo = icd.Repository.create(storage)
    genesis = repo.lookup_branch("main")
    branches = [f"b{i}" for i in range(8)]
    for b in branches:
        repo.create_branch(b, genesis)

    def move(branch: str) -> None:
        for _ in range(5):
            repo.reset_branch(branch, genesis)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(move, branches))
    _sync.run(_sync.drain_background())
    for b in branches:  # (other tests' writers may still be running: not ours)
        assert (storage, b) not in refs._hints_in_flight
        assert (storage, b) not in refs._hint_wanted
    for b in branches:
        assert _hint_version(storage, b) == 5  # version 0 is the creation, then 5 moves


def test_a_forked_child_leaves_its_parents_loops_working(tmp_path: Path) -> None:
    """The child reads and writes with sync calls on loops of its own (plain local file
    I/O: obstore's runtime does not survive a fork, see check_runtime); the parent's thread
    loop still wakes up for work finished by another thread (a large local read runs in
    one)."""
    repo = icd.Repository.create(icd.local_filesystem_storage(str(tmp_path / "repo")))
    sid = repo.lookup_branch("main")
    big = os.urandom(3 * 1024 * 1024)  # above the inline size: read in a worker thread
    storage = icd.local_filesystem_storage(str(tmp_path / "blobs"))
    storage.put_sync("big", big)
    assert storage.get_sync("big") == big
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            assert repo.lookup_branch("main") == sid
            storage.put_sync("child", b"child", mode="create")
            code = 0 if storage.get_sync("big") == big else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0

    def hung(signum: int, frame: object) -> None:
        raise TimeoutError("the parent's loop no longer wakes up")

    # on the main thread's loop, the one the child inherited: a self-pipe the child had
    # unregistered would never wake it again
    old = signal.signal(signal.SIGALRM, hung)
    signal.alarm(30)
    try:
        assert storage.get_sync("big") == big
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    assert storage.get_sync("child") == b"child"


def test_in_thread_runs_inline_where_no_thread_can_be_started() -> None:
    """At interpreter exit Python 3.12 starts no thread and pools take no work; a tip hint
    written then (through a thread on local disk) must still land, so it runs inline."""
    from concurrent.futures import ThreadPoolExecutor as Pool

    calls: list[str] = []

    def work(x: int) -> int:
        calls.append(threading.current_thread().name)
        return x + 1

    async def main() -> tuple[int, int]:
        loop = asyncio.get_running_loop()
        loop.set_default_executor(Pool(1, thread_name_prefix="pool"))
        in_pool = await _sync.in_thread(work, 1)
        closed = Pool(1)
        closed.shutdown()
        loop.set_default_executor(closed)  # refuses new work, as at exit
        return in_pool, await _sync.in_thread(work, 2)

    assert asyncio.run(main()) == (2, 3)
    assert calls[0].startswith("pool") and calls[1] == threading.current_thread().name


def test_an_error_of_the_function_is_not_retried_inline() -> None:
    calls: list[int] = []

    def fails() -> None:
        calls.append(1)
        raise RuntimeError("cannot schedule new futures after shutdown")  # looks alike

    async def main() -> None:
        await _sync.in_thread(fails)

    with pytest.raises(RuntimeError):
        asyncio.run(main())
    assert calls == [1]
