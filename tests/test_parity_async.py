"""Async twins (issue 11): a full write, commit, rebase and read driven from inside a
running event loop (pytest-asyncio), with a concurrent task proving the loop is never
blocked while our calls wait for storage."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
import zarr
import zarr.api.asynchronous as za

import icechunk_dist as icd
from icechunk_dist import ConflictError, Repository, SessionStateError


class Ticker:
    """A task that counts its turns on the loop: if it advanced across an ``await``, the
    loop ran other work while that call was waiting."""

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


async def test_write_commit_rebase_read_from_a_running_loop(tmp_path: Path):
    ticker = Ticker()
    storage = icd.local_filesystem_storage(str(tmp_path / "repo"))
    seen: list[int] = []

    async def step(aw):  # type: ignore[no-untyped-def]
        before = ticker.ticks
        out = await aw
        seen.append(ticker.ticks - before)
        return out

    assert not await step(Repository.exists_async(storage))
    repo = await step(Repository.open_or_create_async(storage))
    assert await step(Repository.exists_async(storage))
    repo = await step(Repository.open_async(storage))

    s = await step(repo.writable_session_async("main"))
    arr = await za.create_array(s.store, name="x", shape=(20,), chunks=(5,), dtype="i4",
                                compressors=None)
    await arr.setitem(slice(None), np.arange(20, dtype="i4"))
    first = await step(s.commit_async("async write"))
    assert await step(repo.lookup_branch_async("main")) == first
    repo.create_tag("v1", first)
    assert await step(repo.lookup_tag_async("v1")) == first

    # two writers: one commits, the other rebases onto it and commits
    a = await step(repo.writable_session_async("main"))
    b = await step(repo.writable_session_async("main"))
    xa = await za.open_array(store=a.store, path="x", mode="r+")
    await xa.setitem(slice(0, 5), np.full(5, -1, dtype="i4"))
    xb = await za.open_array(store=b.store, path="x", mode="r+")
    await xb.setitem(slice(15, 20), np.full(5, -2, dtype="i4"))
    second = await step(a.commit_async("a"))
    with pytest.raises(ConflictError):
        await b.commit_async("b, stale")
    await step(b.rebase_async(icd.ConflictDetector()))
    third = await step(b.commit_async("b, rebased"))

    history = [i.id async for i in repo.ancestry_async(branch="main")]
    assert history[:3] == [third, second, first]
    r = await step(repo.readonly_session_async("main"))
    got = await (await za.open_array(store=r.store, path="x", mode="r")).getitem(slice(None))
    want = np.arange(20)
    want[0:5], want[15:20] = -1, -2
    np.testing.assert_array_equal(got, want)
    old = await step(repo.readonly_session_async(tag="v1"))
    got_old = await (await za.open_array(store=old.store, path="x", mode="r")).getitem(
        slice(None))
    np.testing.assert_array_equal(got_old, np.arange(20))
    await step(repo.update_metadata_async({"k": 1}))
    assert await step(repo.get_metadata_async()) == {"k": 1}
    kinds = [type(u.kind).__name__ async for u in repo.ops_log_async()]
    assert kinds[0] == "MetadataChanged" and kinds.count("NewCommit") == 3

    await ticker.stop()
    # the loop kept running while each call waited: every call let the ticker advance
    assert all(n > 0 for n in seen), seen


async def test_sync_calls_from_a_thread_and_twins_side_by_side(tmp_path: Path):
    """Sync methods still work while a loop runs (in another thread); the async twins and
    the sync API see the same repository."""
    storage = icd.local_filesystem_storage(str(tmp_path / "repo"))
    repo = await asyncio.to_thread(Repository.create, storage)

    def sync_write() -> str:
        s = repo.writable_session("main")
        zarr.create_array(s.store, name="y", shape=(4,), chunks=(2,), dtype="i1")[:] = 3
        return s.commit("sync")

    sid = await asyncio.to_thread(sync_write)
    assert await repo.lookup_branch_async("main") == sid
    s = await repo.writable_session_async("main")
    with pytest.raises(SessionStateError, match="nothing to commit"):
        await s.commit_async("empty")
    with pytest.raises(icd.NotFoundError):
        await repo.lookup_branch_async("no-such-branch")
    rs = await repo.rearrange_session_async("main")
    await rs.move_async("/y", "/z")
    await rs.commit_async("moved")
    r = await repo.readonly_session_async("main")
    assert r.get_node_id("/z") == rs.get_node_id("/z")
    assert [c async for c in r.chunk_coordinates("/z")] == [(0,), (1,)]
    assert await r.chunk_type_async("/z", [0]) is icd.ChunkType.inline
