"""Session's async twins (issue 20): written once as ``*_async``, called with Icechunk's
argument names, returning what the sync twins return, and never holding the caller's loop
(they run on the library's loop, ``_sync.on_io_loop``)."""

from __future__ import annotations

import asyncio
import inspect
from pathlib import Path
from typing import Any

import numpy as np
import zarr

import icechunk_dist as icd

# Icechunk's Session async methods and the parameter names Icechunk gives them
ICECHUNK_SESSION_ASYNC = {
    "commit_async": ["message", "metadata", "rebase_with", "rebase_tries", "allow_empty"],
    "amend_async": ["message", "metadata", "allow_empty"],
    "rebase_async": ["solver"],
    "merge_async": ["forks"],
    "chunk_type_async": ["array_path", "chunk_coordinates"],
    "all_virtual_chunk_locations_async": [],
    "move_async": ["from_path", "to_path"],
}


def test_every_session_async_twin_exists_with_icechunks_parameter_names() -> None:
    for name, params in ICECHUNK_SESSION_ASYNC.items():
        method = getattr(icd.Session, name)
        assert inspect.iscoroutinefunction(method), name
        got = [p for p in inspect.signature(method).parameters if p != "self"]
        assert got[: len(params)] == params, (name, got)
        sync = getattr(icd.Session, name.removesuffix("_async"))
        assert [p for p in inspect.signature(sync).parameters if p != "self"] == got, name


class _Ticker:
    def __init__(self) -> None:
        self.ticks = 0
        self._stop = False
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while not self._stop:
            self.ticks += 1
            await asyncio.sleep(0)

    async def stop(self) -> None:
        self._stop = True
        await self._task


async def test_session_async_twins_with_icechunk_keywords(tmp_path: Path) -> None:
    ticker = _Ticker()
    repo = await icd.Repository.create_async(icd.local_filesystem_storage(str(tmp_path)))
    s = await repo.writable_session_async("main")
    zarr.create_array(s.store, name="x", shape=(8,), chunks=(4,), dtype="i4", fill_value=0)
    zarr.create_group(s.store, path="g")
    first = await s.commit_async(message="create", metadata={"k": 1}, rebase_with=None,
                                 rebase_tries=5, allow_empty=False)

    s = await repo.writable_session_async("main")
    fork = s.fork()
    zarr.open_array(fork.store, path="x", mode="r+")[:4] = 5
    before = ticker.ticks
    await s.merge_async(fork)
    assert await s.chunk_type_async(array_path="/x", chunk_coordinates=[0]) \
        is icd.ChunkType.inline  # 16 bytes: kept in the manifest
    assert await s.chunk_type_async(array_path="/x", chunk_coordinates=[1]) \
        is icd.ChunkType.uninitialized
    assert await s.all_virtual_chunk_locations_async() == []
    # another writer lands first: the commit rebases with the solver given by keyword
    other = await repo.writable_session_async("main")
    zarr.open_array(other.store, path="x", mode="r+")[4:] = 6
    await other.commit_async(message="other")
    second = await s.commit_async(message="fork data", rebase_with=icd.ConflictDetector())
    assert ticker.ticks > before  # the loop ran other work while our calls waited

    s = await repo.writable_session_async("main")
    zarr.open_array(s.store, path="x", mode="r+")[:4] = 7
    amended = await s.amend_async(message="amended", metadata={"a": 2}, allow_empty=False)
    info = repo.lookup_snapshot(amended)
    assert info.parent_id == repo.lookup_snapshot(second).parent_id and info.metadata == {"a": 2}

    late = await repo.writable_session_async("main")
    zarr.open_array(late.store, path="x", mode="r+")[4:] = 8
    third = await repo.writable_session_async("main")
    zarr.create_group(third.store, path="h")
    await third.commit_async(message="h")
    await late.rebase_async(solver=icd.ConflictDetector())
    await late.commit_async(message="late")

    r = await repo.rearrange_session_async("main")
    await r.move_async(from_path="/g", to_path="/g2")
    moved = await r.commit_async(message="move")
    assert repo.lookup_branch("main") == moved
    ro = await repo.readonly_session_async(branch="main")
    np.testing.assert_array_equal(zarr.open_array(ro.store, path="x", mode="r")[:],
                                  [7] * 4 + [8] * 4)
    assert ro.get_node_id("/g2") and first
    await ticker.stop()


def test_sync_twins_work_outside_a_loop(tmp_path: Path) -> None:
    repo = icd.Repository.create(icd.local_filesystem_storage(str(tmp_path)))
    s = repo.writable_session("main")
    zarr.create_array(s.store, name="x", shape=(4,), chunks=(2,), dtype="i4", fill_value=0)
    sid = s.commit("sync")
    assert repo.lookup_branch("main") == sid
    s = repo.writable_session("main")
    zarr.open_array(s.store, path="x", mode="r+")[:] = 1
    out: list[Any] = []

    async def inside() -> None:  # a sync method called from inside a foreign loop works
        out.append(s.commit("from a foreign loop"))

    asyncio.run(inside())
    assert repo.lookup_branch("main") == out[0]
