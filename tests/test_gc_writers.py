"""Garbage collection racing real writers never corrupts a commit (issue 10, bug 2).

The guarantee (docs/maintenance.md, docs/design/005-gc-vs-writers.md): a commit whose new
chunks or reused manifests a collection deleted fails with GCConflictError before its ref
write, and the branch keeps its last good snapshot; a commit the collection did not touch
lands normally.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr

import icechunk_dist as icd
from icechunk_dist import BasicConflictSolver, RepositoryConfig
from icechunk_dist.storage import ObjectMeta, Storage, WrapperStorage


class HookStorage(WrapperStorage):
    """Real storage that awaits ``hooks[n]`` right before the n-th write of a ref version of
    ``main`` (counting from 1), i.e. after the committer's last check. The tip hint is not a
    version: it is written in the background after a move, at a time no test controls."""

    def __init__(self, inner: Storage) -> None:
        super().__init__(inner)
        self.hooks: dict[int, Callable[[], Awaitable[None]]] = {}
        self.ref_puts = 0

    @property
    def supports_pickle(self) -> bool:
        return False  # holds hooks and counters of this process

    def describe(self) -> str:
        return "hook:" + self.inner.describe()

    async def put(self, key: str, data: bytes, *, mode: Any = "overwrite") -> None:
        if key.startswith("refs/branch.main/") and not key.endswith("/tip"):
            self.ref_puts += 1
            hook = self.hooks.pop(self.ref_puts, None)
            if hook is not None:
                await hook()
        await self.inner.put(key, data, mode=mode)



def _soon() -> datetime:
    """A cut-off later than every write so far: the most aggressive collection."""
    return datetime.now(UTC) + timedelta(seconds=5)


def _repo_with_array(root: Path) -> icd.Repository:
    repo = icd.Repository.create(icd.local_filesystem_storage(root))
    s = repo.writable_session("main")
    zarr.create_array(s.store, name="x", shape=(1000,), chunks=(100,), dtype="f8",
                      fill_value=0.0)
    zarr.create_array(s.store, name="y", shape=(1000,), chunks=(100,), dtype="f8",
                      fill_value=0.0)
    s.commit("arrays")
    return repo


def _read(repo: icd.Repository, path: str) -> Any:
    return zarr.open_array(repo.readonly_session("main").store, path=path, mode="r")[:]


def test_gc_racing_a_fork_writer_fails_the_commit_before_its_ref_write(tmp_path: Path) -> None:
    repo = _repo_with_array(tmp_path)
    tip = repo.lookup_branch("main")
    s = repo.writable_session("main")
    fork = s.fork()
    values = np.random.default_rng(0).random(1000)
    zarr.open_array(fork.store, path="x")[:] = values  # 10 chunk objects
    deleted = repo.garbage_collect(_soon())
    assert deleted.chunks_deleted == 10  # the fork's chunks are not reachable yet
    s.merge(fork)
    with pytest.raises(icd.ConflictError) as err:
        s.commit("racing the collector")
    assert isinstance(err.value, icd.GCConflictError)
    assert len(err.value.missing) == 10 and "chunks/" in str(err.value)
    assert repo.lookup_branch("main") == tip  # nothing landed
    np.testing.assert_array_equal(_read(repo, "x"), np.zeros(1000))
    # the next writer commits normally
    s2 = repo.writable_session("main")
    zarr.open_array(s2.store, path="x")[:] = 1.0
    s2.commit("again")
    np.testing.assert_array_equal(_read(repo, "x"), np.ones(1000))


def test_gc_that_deleted_nothing_of_ours_lets_the_commit_land(tmp_path: Path) -> None:
    repo = _repo_with_array(tmp_path)
    old = datetime.now(UTC) - timedelta(days=1)
    s = repo.writable_session("main")
    zarr.open_array(s.store, path="x")[:] = 3.0
    repo.garbage_collect(old)  # a normal grace period: our chunks are too young
    s.commit("fine")
    np.testing.assert_array_equal(_read(repo, "x"), np.full(1000, 3.0))


def test_reused_manifests_collected_between_rebase_retries(tmp_path: Path) -> None:
    """Attempt 1 writes manifests and loses the race; the collector runs after attempt 2's
    last check and deletes them; attempt 2's ref write is fenced off, and the retry finds
    the reused manifests gone."""
    storage = HookStorage(icd.local_filesystem_storage(tmp_path))
    repo = icd.Repository.create(storage)
    s = repo.writable_session("main")
    for name in ("x", "y"):
        zarr.create_array(s.store, name=name, shape=(1000,), chunks=(100,), dtype="f8",
                          fill_value=0.0)
    s.commit("arrays")
    storage.ref_puts = 0
    plain = icd.Repository.open(storage.inner)

    def other_writer() -> None:
        other = plain.writable_session("main")
        zarr.open_array(other.store, path="y")[:] = 2.0
        other.commit("other")

    async def other_writer_lands() -> None:
        await asyncio.to_thread(other_writer)

    async def collector_runs() -> None:
        from icechunk_dist._maintenance import garbage_collect

        await garbage_collect(storage.inner, _soon(), dry_run=False)

    ours = repo.writable_session("main")
    zarr.open_array(ours.store, path="x")[:] = np.random.default_rng(1).random(1000)
    storage.hooks = {1: other_writer_lands, 2: collector_runs}
    with pytest.raises(icd.ConflictError) as err:
        ours.commit("ours", rebase_with=BasicConflictSolver())
    assert isinstance(err.value, icd.GCConflictError)
    assert any(k.startswith("manifests/") for k in err.value.missing)
    assert [i.message for i in repo.ancestry(branch="main")][:2] == ["other", "arrays"]
    np.testing.assert_array_equal(_read(repo, "x"), np.zeros(1000))
    np.testing.assert_array_equal(_read(repo, "y"), np.full(1000, 2.0))


def test_collector_fence_does_not_fail_a_commit_it_did_not_harm(tmp_path: Path) -> None:
    """A collection running between a commit's check and its ref write moves the branch
    without changing its snapshot: the commit retries by itself (no solver needed) and
    lands, because nothing of it was old enough to delete."""
    storage = HookStorage(icd.local_filesystem_storage(tmp_path))
    repo = icd.Repository.create(storage, RepositoryConfig())
    s = repo.writable_session("main")
    zarr.create_array(s.store, name="x", shape=(1000,), chunks=(100,), dtype="f8",
                      fill_value=0.0)
    s.commit("array")
    storage.ref_puts = 0

    async def collector_runs() -> None:
        from icechunk_dist._maintenance import garbage_collect

        await garbage_collect(storage.inner, datetime.now(UTC) - timedelta(hours=1),
                              dry_run=False)

    ours = repo.writable_session("main")
    values = np.random.default_rng(2).random(1000)
    zarr.open_array(ours.store, path="x")[:] = values
    storage.hooks = {1: collector_runs}
    ours.commit("ours")  # no rebase_with: the no-op move is not a conflict
    np.testing.assert_array_equal(_read(repo, "x"), values)


class WatchStorage(HookStorage):
    """Also sets ``polled`` once a committer asks whether a collection's done record exists."""

    def __init__(self, inner: Storage) -> None:
        super().__init__(inner)
        import threading

        self.polled = threading.Event()

    async def head(self, key: str) -> ObjectMeta:
        if key.startswith("gc/") and key.endswith("/done"):
            self.polled.set()
        return await self.inner.head(key)


def test_commit_waits_for_a_running_collection_then_checks(tmp_path: Path) -> None:
    """A collection that has started (record written) but not finished: the commit waits for
    its done record before checking and writing its ref."""
    import threading

    from icechunk_dist.format import GCRecordData, ObjectType, encode_object
    from icechunk_dist.session._gcguard import done_key, new_run_id, start_key

    storage = WatchStorage(icd.local_filesystem_storage(tmp_path))
    repo = icd.Repository.create(storage)
    s = repo.writable_session("main")
    zarr.create_array(s.store, name="x", shape=(1000,), chunks=(100,), dtype="f8",
                      fill_value=0.0)
    values = np.random.default_rng(4).random(1000)
    zarr.open_array(s.store, path="x")[:] = values
    now = datetime.now(UTC)
    run_id = new_run_id(now, _soon())
    record = GCRecordData(run_id=run_id, started_at=now, older_than=_soon())
    storage.inner.put_sync(start_key(run_id), encode_object(record, ObjectType.GC_RECORD))
    outcome: list[object] = []

    def commit() -> None:
        try:
            outcome.append(s.commit("waits"))
        except Exception as e:  # pragma: no cover - reported below
            outcome.append(e)

    base = repo.lookup_branch("main")
    done = GCRecordData(run_id=run_id, started_at=now, older_than=_soon(),
                        finished_at=datetime.now(UTC))
    t = threading.Thread(target=commit)
    t.start()
    try:
        assert storage.polled.wait(60)  # the commit is waiting for the collection
        assert not outcome and repo.lookup_branch("main") == base
    finally:
        storage.inner.put_sync(done_key(run_id), encode_object(done, ObjectType.GC_RECORD))
        t.join(60)
    assert len(outcome) == 1 and isinstance(outcome[0], str)  # nothing was deleted: it lands
    assert repo.lookup_branch("main") == outcome[0]
    np.testing.assert_array_equal(_read(repo, "x"), values)


def test_on_s3_gc_racing_a_fork_fails_the_commit_and_expiry_then_gc_keep_refs(
    make_s3_storage: Callable[..., Storage],
) -> None:
    """The same guarantee on the real S3 protocol (moto server on 127.0.0.1), plus the
    in-place snapshot rewrite of expire_snapshots on S3."""
    repo = icd.Repository.create(make_s3_storage("repo"))
    s = repo.writable_session("main")
    zarr.create_array(s.store, name="x", shape=(300,), chunks=(100,), dtype="f8",
                      fill_value=0.0)
    zarr.open_array(s.store, path="x")[:] = np.random.default_rng(8).random(300)
    first = s.commit("one")
    s = repo.writable_session("main")
    final = np.random.default_rng(9).random(300)
    zarr.open_array(s.store, path="x")[:] = final
    second = s.commit("two")

    s = repo.writable_session("main")
    fork = s.fork()
    zarr.open_array(fork.store, path="x")[:] = np.random.default_rng(10).random(300)
    assert repo.garbage_collect(_soon()).chunks_deleted == 3
    s.merge(fork)
    with pytest.raises(icd.GCConflictError):
        s.commit("racing")
    assert repo.lookup_branch("main") == second

    cutoff = repo.lookup_snapshot(second).written_at
    assert repo.expire_snapshots(cutoff) == {first}
    summary = repo.garbage_collect(_soon())
    # "one" and the snapshot the failed commit wrote before its check; the chunks of "one"
    assert summary.snapshots_deleted == 2 and summary.chunks_deleted == 3
    np.testing.assert_array_equal(_read(repo, "x"), final)
    assert len(list(repo.ancestry(branch="main"))) == 2
