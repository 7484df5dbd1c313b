"""Distributed writes through forks on a real LocalCluster with worker processes (issue 3).

What this file proves (docs/architecture.md section 4):

- One commit: a group and two arrays created in a session, written with ``store_dask`` on the
  workers, merged and committed, make exactly one new snapshot with all the data; a reader
  opened before the commit sees none of it.
- The ``to_zarr`` helper and the plain ``dask.array.to_zarr(arr, fork.store)`` +
  ``gather_forks`` recipe end in the same single commit.
- Failure: a job that raises leaves the branch untouched and the session usable; a worker
  process killed mid-job (Dask reruns its tasks) still yields one correct commit whose
  snapshot references exactly one object per chunk; objects of lost attempts are orphans.
- Bad input: a writable session's store as a target, a writable session handed to a task, a
  fork from another base, a fork merged twice: each is an error of ours, repository unchanged.
- The threaded, processes and distributed schedulers all work.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cloudpickle
import dask
import dask.array as da
import numpy as np
import pytest
import zarr

import icechunk_dist as icd
from icechunk_dist import (
    ConflictError,
    ForkSession,
    LostWritesError,
    Repository,
    SessionStateError,
)
from icechunk_dist._sync import run as sync_run
from icechunk_dist.dask import gather_forks, store_dask, to_zarr
from icechunk_dist.format.chunktable import KIND_NATIVE
from icechunk_dist.session._io import read_manifest, read_snapshot

pytestmark = pytest.mark.dask

# worker processes may not import this test module: ship its functions by value
cloudpickle.register_pickle_by_value(sys.modules[__name__])


# ------------------------------------------------------------------------------ helpers
def _chunk_objects(repo_dir: Path) -> set[str]:
    d = repo_dir / "chunks"
    return set(os.listdir(d)) if d.exists() else set()


def _committed_refs(repo: Repository, snapshot_id: str) -> dict[str, list[tuple[Any, ...]]]:
    """path -> [(coord, kind, chunk id)] of every chunk ref in the snapshot's manifests."""
    from icechunk_dist._types import encode_id

    snap = sync_run(read_snapshot(repo.storage, snapshot_id))
    out: dict[str, list[tuple[Any, ...]]] = {}
    for node in snap.nodes:
        rows = []
        for mref in node.manifests:
            t = sync_run(read_manifest(repo.storage, mref.id))
            for i in range(len(t)):
                kind = int(t.kinds[i])
                cid = encode_id(bytes(t.ids[i])) if kind == KIND_NATIVE else None
                rows.append((tuple(int(v) for v in t.coords[i]), kind, cid))
        if node.array is not None:
            out[node.path] = rows
    return out


def _keys(session: icd.Session) -> list[str]:
    async def go() -> list[str]:
        return [k async for k in session.store.list()]

    return sync_run(go())


@contextlib.contextmanager
def _scheduler(name: str, client: Any) -> Iterator[None]:
    """Run the body under one scheduler; only "distributed" sees the cluster's client."""
    from distributed import default_client

    if name == "distributed":
        with client.as_current():
            yield
        return
    with pytest.raises(ValueError):
        default_client()  # no default client may leak into local-scheduler tests
    with dask.config.set(scheduler=name):
        yield


def _history(repo: Repository) -> list[str]:
    return [i.id for i in repo.ancestry(branch="main")]


# tasks ---------------------------------------------------------------------------------
def _raise_on(block: np.ndarray, bad: tuple[int, ...], block_info: Any = None) -> np.ndarray:
    if block_info[0]["chunk-location"] == bad:
        raise RuntimeError(f"boom in block {bad}")
    return block


def _kill_when_holding_writes(block: np.ndarray, armed: str, killed: str) -> np.ndarray:
    """Arm (once per test, in the first worker process that gets here) a watcher thread that
    SIGKILLs this worker process as soon as it holds a finished write task's result: that
    result, and the chunk objects it refers to, are lost with the process, so Dask must run
    the write again (the lost attempt's objects become orphans)."""
    from distributed import get_worker

    try:
        worker = get_worker()
    except ValueError:  # not in a worker (dask probing the function on the driver)
        return block
    try:
        fd = os.open(armed, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return block
    os.close(fd)

    def watch() -> None:
        while True:
            try:
                keys = [str(k) for k in list(worker.data.keys())]
            except RuntimeError:  # changed size during iteration
                keys = []
            if any(k.startswith("icechunk-write-") for k in keys):
                with open(killed, "w") as f:
                    f.write(str(os.getpid()))
                os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(0.002)

    threading.Thread(target=watch, daemon=True).start()
    return block


def _touch_session(session: Any) -> int:
    return len(_keys(session))


# ------------------------------------------------------------------------------ fixtures
@pytest.fixture
def repo_dir(tmp_path: Path) -> Path:
    return tmp_path / "repo"


@pytest.fixture
def repo(repo_dir: Path) -> Repository:
    return Repository.create(icd.local_filesystem_storage(str(repo_dir)))


# ------------------------------------------------------------------------------ (1)
def test_one_commit_for_group_arrays_and_data(dask_client, repo: Repository):
    rng = np.random.default_rng(42)
    t_np = rng.random((300, 200))
    q_np = rng.integers(-(2**30), 2**30, size=1000, dtype="i4")

    history = _history(repo)
    early_reader = repo.readonly_session("main")
    early_keys = _keys(early_reader)

    s = repo.writable_session("main")
    root = zarr.group(store=s.store)
    g = root.create_group("data", attributes={"title": "one commit"})
    g.create_array("t", shape=(300, 200), chunks=(50, 40), dtype="f8")
    g.create_array("q", shape=(1000,), chunks=(64,), dtype="i4", fill_value=0)
    fork = s.fork()
    targets = [zarr.open_array(fork.store, path="data/t", mode="r+"),
               zarr.open_array(fork.store, path="data/q", mode="r+")]
    # t: blocks aligned with the chunks; q: blocks of 300 are rechunked to whole chunks
    sources = [da.from_array(t_np, chunks=(100, 80)), da.from_array(q_np, chunks=300)]
    with dask_client.as_current():
        merged = store_dask(sources=sources, targets=targets, split_every=3)
    assert isinstance(merged, ForkSession)
    assert merged._changes.chunk_count() == 6 * 5 + 16
    # the workers did the writing: the driver's fork recorded nothing
    assert fork._changes.chunk_count() == 0

    s.merge(merged)
    assert _history(repo) == history  # nothing visible before the commit
    assert _keys(repo.readonly_session("main")) == early_keys
    sid = s.commit("group, two arrays and their data")

    after = _history(repo)
    assert after == [sid, *history]  # exactly one new snapshot
    assert _keys(early_reader) == early_keys  # the early reader sees none of it
    r = repo.readonly_session("main")
    grp = zarr.open_group(r.store, path="data", mode="r")
    assert dict(grp.attrs) == {"title": "one commit"}
    np.testing.assert_array_equal(zarr.open_array(r.store, path="data/t")[:], t_np)
    np.testing.assert_array_equal(zarr.open_array(r.store, path="data/q")[:], q_np)
    refs = _committed_refs(repo, sid)
    assert len(refs["data/t"]) == 30 and len(refs["data/q"]) == 16


# ------------------------------------------------------------------------------ (2)
def test_to_zarr_helper(dask_client, repo: Repository):
    s = repo.writable_session("main")
    zarr.group(store=s.store)
    x = da.arange(60 * 70, chunks=1000, dtype="i8").reshape(60, 70).rechunk((25, 30))
    with dask_client.as_current():
        arr = to_zarr(x, s, "g/ramp", chunks=(20, 35), attributes={"units": "K"})
    assert arr.shape == (60, 70) and arr.chunks == (20, 35)
    history = _history(repo)
    sid = s.commit("to_zarr")
    assert _history(repo) == [sid, *history]
    got = zarr.open_array(repo.readonly_session("main").store, path="g/ramp")
    np.testing.assert_array_equal(got[:], np.arange(60 * 70).reshape(60, 70))
    assert dict(got.attrs) == {"units": "K"}
    assert len(_committed_refs(repo, sid)["g/ramp"]) == 3 * 2


# ------------------------------------------------------------------------------ (3)
def test_plain_dask_to_zarr_recipe_with_gather_forks(dask_client, repo: Repository):
    s = repo.writable_session("main")
    zarr.group(store=s.store)
    x_np = np.random.default_rng(3).random((120, 90)).astype("f4")
    fork = s.fork()
    with dask_client.as_current():
        da.to_zarr(da.from_array(x_np, chunks=(30, 45)), fork.store, component="plain")
        got = gather_forks(fork, expect=[("plain", None)], client=dask_client)
    assert got._changes.chunk_count() == 4 * 2
    history = _history(repo)
    s.merge(got)
    sid = s.commit("plain dask.array.to_zarr")
    assert _history(repo) == [sid, *history]
    r = repo.readonly_session("main")
    np.testing.assert_array_equal(zarr.open_array(r.store, path="plain")[:], x_np)


def test_gather_forks_detects_missing_chunks(dask_client, repo: Repository):
    s = repo.writable_session("main")
    zarr.create_array(s.store, name="a", shape=(100,), chunks=(10,), dtype="i4")
    fork = s.fork()
    with dask_client.as_current():
        # only the first half is written, but the whole array is expected
        target = zarr.open_array(fork.store, path="a", mode="r+")
        da.to_zarr(da.ones(50, chunks=10, dtype="i4"), target, region=(slice(0, 50),))
        # a lost worker is not a conflict: its own error, with the array and the chunks
        with pytest.raises(LostWritesError) as ei:
            gather_forks(fork, expect=[("a", None)], client=dask_client)
    assert ei.value.path == "a"
    assert ei.value.chunk_coords == [(i,) for i in range(5, 10)]


# ------------------------------------------------------------------------------ (4)
def test_job_that_raises_leaves_branch_untouched(dask_client, repo: Repository,
                                                 repo_dir: Path):
    s = repo.writable_session("main")
    zarr.create_array(s.store, name="a", shape=(40, 40), chunks=(10, 10), dtype="f8")
    s.commit("array")
    history = _history(repo)

    s = repo.writable_session("main")
    fork = s.fork()
    target = zarr.open_array(fork.store, path="a", mode="r+")
    bad = da.ones((40, 40), chunks=(10, 10)).map_blocks(_raise_on, bad=(2, 3), dtype="f8")
    with dask_client.as_current(), pytest.raises(RuntimeError, match=r"boom in block \(2, 3\)"):
        store_dask(sources=[bad], targets=[target])
    assert _history(repo) == history
    assert not s.has_uncommitted_changes
    np.testing.assert_array_equal(
        zarr.open_array(repo.readonly_session("main").store, path="a")[:], np.zeros((40, 40)))

    # the session is still usable: discard, then a good job through a new fork commits
    s.discard_changes()
    fork2 = s.fork()
    with dask_client.as_current():
        merged = store_dask(sources=[da.full((40, 40), 2.5, chunks=(20, 20))],
                            targets=[zarr.open_array(fork2.store, path="a", mode="r+")])
    s.merge(merged)
    sid = s.commit("after the failure")
    assert _history(repo) == [sid, *history]
    np.testing.assert_array_equal(
        zarr.open_array(repo.readonly_session("main").store, path="a")[:],
        np.full((40, 40), 2.5))


def test_killed_worker_still_yields_one_correct_commit(dask_client, repo: Repository,
                                                       repo_dir: Path, tmp_path: Path):
    data = np.random.default_rng(7).random((160, 160))
    s = repo.writable_session("main")
    zarr.create_array(s.store, name="k", shape=(160, 160), chunks=(20, 20), dtype="f8")
    history = _history(repo)
    fork = s.fork()
    target = zarr.open_array(fork.store, path="k", mode="r+")
    marker = tmp_path / "killed"
    src = da.from_array(data, chunks=(40, 40)).map_blocks(
        _kill_when_holding_writes, armed=str(tmp_path / "armed"), killed=str(marker),
        meta=np.empty((0, 0), "f8"))
    with dask_client.as_current():
        # fan-in 16 = all blocks: no merge runs before every write is done, so the killed
        # worker's finished writes are lost and run again
        merged = store_dask(sources=[src], targets=[target], split_every=16)
    assert marker.exists(), "no worker was killed"
    killed_pid = int(marker.read_text())
    assert killed_pid != os.getpid()
    s.merge(merged)
    sid = s.commit("survived a killed worker")
    assert _history(repo) == [sid, *history]

    np.testing.assert_array_equal(
        zarr.open_array(repo.readonly_session("main").store, path="k")[:], data)
    refs = _committed_refs(repo, sid)["k"]
    coords = [c for c, _, _ in refs]
    assert sorted(coords) == [(i, j) for i in range(8) for j in range(8)]
    ids = [cid for _, kind, cid in refs]
    assert all(kind == KIND_NATIVE for _, kind, _ in refs)
    assert len(set(ids)) == 64  # exactly one object per chunk
    on_disk = _chunk_objects(repo_dir)
    assert set(ids) <= on_disk
    orphans = on_disk - set(ids)
    assert orphans, "the killed worker's lost writes left no orphan objects"
    print(f"\n[killed worker {killed_pid}] 64 chunks committed, "
          f"{len(orphans)} orphan chunk object(s) from lost attempts")
    # orphans are referenced by no snapshot of the branch
    for snap in _history(repo):
        for rows in _committed_refs(repo, snap).values():
            assert not orphans & {cid for _, _, cid in rows}
    dask_client.wait_for_workers(2, timeout=60)


# ------------------------------------------------------------------------------ (5)
def test_writable_session_store_as_target_is_refused(dask_client, repo: Repository):
    s = repo.writable_session("main")
    zarr.create_array(s.store, name="a", shape=(10,), chunks=(5,), dtype="i4")
    with dask_client.as_current(), pytest.raises(SessionStateError, match=r"fork"):
        store_dask(sources=[da.ones(10, chunks=5, dtype="i4")],
                   targets=[zarr.open_array(s.store, path="a", mode="r+")])


def _causes(e: BaseException) -> list[BaseException]:
    out = []
    cur: BaseException | None = e
    while cur is not None and len(out) < 20:
        out.append(cur)
        cur = cur.__cause__ or cur.__context__
    return out


def test_writable_session_handed_to_a_task_fails_with_our_error(dask_client,
                                                                repo: Repository):
    s = repo.writable_session("main")
    zarr.create_array(s.store, name="a", shape=(10,), chunks=(5,), dtype="i4")
    history = _history(repo)
    attempts = [
        lambda: dask_client.submit(_touch_session, s).result(),
        lambda: dask.delayed(_touch_session)(s).compute(),
        lambda: da.to_zarr(da.ones(10, chunks=5, dtype="i4"), s.store, component="b"),
    ]
    for attempt in attempts:
        with dask_client.as_current(), pytest.raises(Exception) as ei:
            attempt()
        ours = [c for c in _causes(ei.value) if isinstance(c, SessionStateError)]
        assert ours, f"our error is not in the chain of {ei.value!r}"
        assert "fork()" in str(ours[0])
    assert _history(repo) == history
    s.discard_changes()


def test_fork_from_another_base_or_merged_twice(dask_client, repo: Repository):
    s0 = repo.writable_session("main")
    zarr.create_array(s0.store, name="a", shape=(20,), chunks=(5,), dtype="i4")
    s0.commit("array")

    stale = repo.writable_session("main")
    fork = stale.fork()
    with dask_client.as_current():
        merged = store_dask(sources=[da.arange(20, chunks=5, dtype="i4")],
                            targets=[zarr.open_array(fork.store, path="a", mode="r+")])
    mover = repo.writable_session("main")
    zarr.open_array(mover.store, path="a", mode="r+")[0:5] = -1
    mover.commit("the branch moves on")
    history = _history(repo)

    fresh = repo.writable_session("main")
    with pytest.raises(SessionStateError, match="made from snapshot"):
        fresh.merge(merged)
    with pytest.raises(SessionStateError):
        fresh.commit("nothing to commit")
    # into its own parent it merges, once; the commit then meets the moved branch
    stale.merge(merged)
    with pytest.raises(SessionStateError, match="already merged"):
        stale.merge(merged)
    with pytest.raises(ConflictError) as ei:
        stale.commit("stale")
    assert ei.value.actual_parent == history[0]
    assert _history(repo) == history
    np.testing.assert_array_equal(
        zarr.open_array(repo.readonly_session("main").store, path="a")[:],
        [-1] * 5 + [0] * 15)


# ------------------------------------------------------------------------------ (6)
@pytest.mark.parametrize("scheduler", ["threads", "processes", "distributed"])
def test_schedulers(scheduler: str, dask_client, repo: Repository):
    rng = np.random.default_rng(11)
    a_np = rng.random((64, 48))
    b_np = rng.integers(0, 100, size=(100,), dtype="i2")
    s = repo.writable_session("main")
    root = zarr.group(store=s.store)
    root.create_array("a", shape=(64, 48), chunks=(16, 16), dtype="f8")
    root.create_array("b", shape=(120,), chunks=(10,), dtype="i2", fill_value=-1)
    fork = s.fork()
    ta = zarr.open_array(fork.store, path="a", mode="r+")
    tb = zarr.open_array(fork.store, path="b", mode="r+")
    history = _history(repo)
    with _scheduler(scheduler, dask_client):
        merged = store_dask(
            sources=[da.from_array(a_np, chunks=(32, 24)), da.from_array(b_np, chunks=25)],
            targets=[ta, tb], regions=[None, (slice(10, 110),)], split_every=2)
    s.merge(merged)
    sid = s.commit(f"with the {scheduler} scheduler")
    assert _history(repo) == [sid, *history]
    r = repo.readonly_session("main")
    np.testing.assert_array_equal(zarr.open_array(r.store, path="a")[:], a_np)
    want_b = np.full(120, -1, "i2")
    want_b[10:110] = b_np
    np.testing.assert_array_equal(zarr.open_array(r.store, path="b")[:], want_b)


@pytest.mark.parametrize("scheduler", ["threads", "distributed"])
def test_same_target_twice_and_lazy_jobs_together(scheduler: str, dask_client,
                                                  repo: Repository):
    """Two regions of one target in one call, and two compute=False calls computed
    together: every block is written once (task keys must not collide)."""
    s = repo.writable_session("main")
    zarr.create_array(s.store, name="a", shape=(40,), chunks=(5,), dtype="i4")
    fork = s.fork()
    t = zarr.open_array(fork.store, path="a", mode="r+")
    with _scheduler(scheduler, dask_client):
        m = store_dask(sources=[da.arange(0, 10, chunks=5, dtype="i4"),
                                da.arange(10, 20, chunks=5, dtype="i4")],
                       targets=[t, t], regions=[(slice(0, 10),), (slice(10, 20),)])
        lazy = [store_dask(sources=[da.arange(lo, lo + 10, chunks=5, dtype="i4")],
                           targets=[t], regions=[(slice(lo, lo + 10),)], compute=False)
                for lo in (20, 30)]
        m1, m2 = dask.compute(*lazy)
    s.merge(m, m1, m2)
    s.commit("four regions")
    np.testing.assert_array_equal(
        zarr.open_array(repo.readonly_session("main").store, path="a")[:], np.arange(40))
