"""Icechunk's parallel-write recipe: copies of ONE fork, written by many tasks, merge (issue 11).

    fork = session.fork()
    results = list(executor.map(write_one_region, regions, [fork] * len(regions)))
    session.merge(*results)
    session.commit("all regions")

Every task receives its own copy of the same fork and returns it carrying only its own
writes. The merge takes them all; merging one change-set twice, a fork into itself, or a fork
of another session is still refused. Run with a real spawn ``ProcessPoolExecutor``, with
``dask.delayed`` (processes and threads schedulers) and with ``client.map`` on a real
LocalCluster, including a task whose first attempt fails (raises, or its worker process is
killed) and is retried: the retry merges and the failed attempt's chunks appear nowhere.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import pickle
import signal
import sys
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import cloudpickle
import dask
import numpy as np
import pytest
import zarr

import icechunk_dist as icd
from icechunk_dist import ConflictError, ForkSession, Repository, SessionStateError

# distributed workers may not import this test module: ship its functions by value
cloudpickle.register_pickle_by_value(sys.modules[__name__])

SHAPE, CHUNKS = (80, 20), (10, 10)  # 8 x 2 chunks of 800 bytes (native, not inline)
REGIONS = [(slice(10 * i, 10 * (i + 1)), slice(0, 20)) for i in range(8)]


def _expected() -> np.ndarray:
    return np.arange(SHAPE[0] * SHAPE[1], dtype="f8").reshape(SHAPE)


# ------------------------------------------------------------------------------ tasks
def write_one_region(region: tuple[slice, ...], fork: ForkSession) -> ForkSession:
    """The user's task of Icechunk's recipe: write one region through the fork, return it."""
    arr = zarr.open_array(fork.store, path="x", mode="r+")
    arr[region] = _expected()[region]
    return fork


def write_nothing(region: tuple[slice, ...], fork: ForkSession) -> ForkSession:
    return fork


def _native_ids(fork: ForkSession) -> list[str]:
    from icechunk_dist._types import encode_id
    from icechunk_dist.format.chunktable import KIND_NATIVE

    out = []
    for ac in fork._changes.chunks.values():
        t = ac.table
        out += [encode_id(bytes(t.ids[i])) for i in range(len(t)) if t.kinds[i] == KIND_NATIVE]
    return out


def write_failing_first(region: tuple[slice, ...], fork: ForkSession, marker: str,
                        how: str) -> ForkSession:
    """Region 3's first attempt writes wrong data, records its chunk objects and fails (it
    raises, or its worker process is killed); every other attempt writes correctly."""
    if region == REGIONS[3]:
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            pass
        else:
            zarr.open_array(fork.store, path="x", mode="r+")[region] = -1.0
            os.write(fd, json.dumps({"pid": os.getpid(), "ids": _native_ids(fork)}).encode())
            os.close(fd)
            if how == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            raise RuntimeError("first attempt fails")
    return write_one_region(region, fork)


# ------------------------------------------------------------------------------ helpers
@pytest.fixture
def repo(tmp_path: Path) -> Repository:
    r = Repository.create(icd.local_filesystem_storage(str(tmp_path / "repo")))
    s = r.writable_session("main")
    zarr.create_array(s.store, name="x", shape=SHAPE, chunks=CHUNKS, dtype="f8",
                      fill_value=0.0, compressors=None)
    s.commit("empty array")
    return r


def _committed_ids(repo: Repository) -> set[str]:
    from icechunk_dist._sync import run
    from icechunk_dist._types import encode_id
    from icechunk_dist.session._io import read_manifest, read_snapshot

    snap = run(read_snapshot(repo.storage, repo.lookup_branch("main")))
    ids = set()
    for node in snap.nodes:
        for mref in node.manifests:
            t = run(read_manifest(repo.storage, mref.id))
            ids |= {encode_id(bytes(t.ids[i])) for i in range(len(t)) if t.kinds[i] == 0}
    return ids


def _merge_commit_check(repo: Repository, session: icd.Session,
                        results: list[ForkSession]) -> None:
    assert len(results) == len(REGIONS)
    session.merge(*results)
    with pytest.raises(SessionStateError, match="already merged"):
        session.merge(results[0])  # the very same change-set again
    history = [i.id for i in repo.ancestry(branch="main")]
    sid = session.commit("all regions")
    assert [i.id for i in repo.ancestry(branch="main")] == [sid, *history]
    got = zarr.open_array(repo.readonly_session("main").store, path="x", mode="r")[:]
    np.testing.assert_array_equal(got, _expected())


# ------------------------------------------------------------------------------ executors
def test_recipe_with_a_spawn_process_pool(repo: Repository):
    session = repo.writable_session("main")
    fork = session.fork()
    with ProcessPoolExecutor(2, mp_context=mp.get_context("spawn")) as ex:
        results = list(ex.map(write_one_region, REGIONS, [fork] * len(REGIONS)))
    assert all(isinstance(r, ForkSession) and r is not fork for r in results)
    # each copy carries only its own task's writes (2 chunks), not its process's others
    assert [r._changes.chunk_count() for r in results] == [2] * len(REGIONS)
    assert fork._changes.chunk_count() == 0
    _merge_commit_check(repo, session, results)


def test_recipe_with_a_thread_pool_shares_the_fork_object(repo: Repository):
    session = repo.writable_session("main")
    fork = session.fork()
    with ThreadPoolExecutor(4) as ex:
        results = list(ex.map(write_one_region, REGIONS, [fork] * len(REGIONS)))
    assert all(r is fork for r in results)  # threads: one object, merged once
    _merge_commit_check(repo, session, results)


@pytest.mark.parametrize("scheduler", ["processes", "threads"])
def test_recipe_with_dask_delayed(scheduler: str, repo: Repository):
    session = repo.writable_session("main")
    fork = session.fork()
    tasks = [dask.delayed(write_one_region)(r, fork) for r in REGIONS]
    results = list(dask.compute(*tasks, scheduler=scheduler))
    _merge_commit_check(repo, session, results)


@pytest.mark.dask
def test_recipe_with_client_map_and_delayed_on_a_cluster(dask_client, repo: Repository):
    session = repo.writable_session("main")
    fork = session.fork()
    results = dask_client.gather(dask_client.map(write_one_region, REGIONS,
                                                 [fork] * len(REGIONS), pure=False))
    _merge_commit_check(repo, session, results)

    session = repo.writable_session("main")
    fork = session.fork()
    with dask_client.as_current():
        tasks = [dask.delayed(write_nothing)(r, fork) for r in REGIONS]  # empty copies
        results = list(dask.compute(*tasks))
    session.merge(*results)  # copies that wrote nothing merge (as nothing)
    assert not session.has_uncommitted_changes


@pytest.mark.dask
@pytest.mark.parametrize("how", ["raise", "kill"])
def test_retried_task_merges_and_the_failed_attempt_leaves_no_trace(
        how: str, dask_client, repo: Repository, tmp_path: Path):
    """``raise``: the first attempt raises (``retries=1``). ``kill``: its worker process is
    SIGKILLed mid-task, so the task is retried on another worker process."""
    marker = tmp_path / "failed-attempt.json"
    session = repo.writable_session("main")
    fork = session.fork()
    n = len(REGIONS)
    futures = dask_client.map(write_failing_first, REGIONS, [fork] * n, [str(marker)] * n,
                              [how] * n, retries=1, pure=False)
    results = dask_client.gather(futures)
    failed = json.loads(marker.read_text())
    assert len(failed["ids"]) == 2 and failed["pid"] != os.getpid()
    _merge_commit_check(repo, session, results)
    committed = _committed_ids(repo)
    assert len(committed) == 16
    assert not committed & set(failed["ids"]), "the failed attempt's chunks were committed"
    if how == "kill":
        dask_client.wait_for_workers(2, timeout=60)


# ------------------------------------------------------------------------------ rules
def _in_other_process(blob: bytes, region: tuple[slice, ...] | None) -> bytes:
    """Unpickle a fork as a fresh process would (empty registry), write, pickle it back."""
    from icechunk_dist.session import forks as _session

    saved = list(_session._REGISTRY.items())
    _session._REGISTRY.clear()
    try:
        copy = pickle.loads(blob)
        if region is not None:
            write_one_region(region, copy)
        return pickle.dumps(copy)
    finally:
        _session._REGISTRY.clear()
        _session._REGISTRY.update(saved)


def test_double_merges_self_merges_and_foreign_forks_stay_refused(repo: Repository):
    session = repo.writable_session("main")
    fork = session.fork()
    blob = pickle.dumps(fork)
    back = [_in_other_process(blob, r) for r in REGIONS[:3]]
    a, b, c = (pickle.loads(x) for x in back)
    a_again = pickle.loads(back[0])  # the same change-set, arrived twice
    with pytest.raises(SessionStateError, match="already merged"):
        session.merge(a, a_again)
    with pytest.raises(SessionStateError, match="already merged"):
        session.merge(a, a)
    with pytest.raises(SessionStateError, match="into itself"):
        a.merge(a)
    assert not session.has_uncommitted_changes  # refused merges change nothing
    other = repo.writable_session("main").fork()  # same base, another session
    foreign = pickle.loads(_in_other_process(pickle.dumps(other), REGIONS[4]))
    with pytest.raises(SessionStateError, match="another session"):
        session.merge(foreign)
    with pytest.raises(SessionStateError, match="another session"):
        a.merge(foreign)
    merged = a.merge(b)  # copies merge among themselves too (the tree of a reduction)
    with pytest.raises(SessionStateError, match="already merged"):
        merged.merge(pickle.loads(back[1]))
    session.merge(merged, c)
    with pytest.raises(SessionStateError, match="already merged"):
        session.merge(a_again)
    session.commit("three regions")
    got = zarr.open_array(repo.readonly_session("main").store, path="x", mode="r")[:]
    want = np.zeros(SHAPE)
    want[0:30] = _expected()[0:30]
    np.testing.assert_array_equal(got, want)


def test_one_copy_written_by_several_tasks_in_turn(repo: Repository):
    """A copy shared by several tasks of one process (one pickle for many tasks) is sent
    back after each task: each sent version merges, the earlier writes counting once."""
    session = repo.writable_session("main")
    copy = pickle.loads(_in_other_process(pickle.dumps(session.fork()), None))
    write_one_region(REGIONS[0], copy)
    first = pickle.loads(pickle.dumps(copy))
    write_one_region(REGIONS[1], copy)
    second = pickle.loads(pickle.dumps(copy))
    assert first._changes.chunk_count() == 2 and second._changes.chunk_count() == 4
    session.merge(first, second)
    session.commit("two tasks, one copy")
    got = zarr.open_array(repo.readonly_session("main").store, path="x", mode="r")[:]
    np.testing.assert_array_equal(got[0:20], _expected()[0:20])


def test_copies_writing_one_chunk_differently_conflict(repo: Repository):
    session = repo.writable_session("main")
    blob = pickle.dumps(session.fork())

    def job(value: float) -> ForkSession:
        from icechunk_dist.session import forks as _session

        saved = list(_session._REGISTRY.items())
        _session._REGISTRY.clear()
        try:
            copy = pickle.loads(blob)
            zarr.open_array(copy.store, path="x", mode="r+")[0:10, 0:10] = value
            return pickle.loads(pickle.dumps(copy))
        finally:
            _session._REGISTRY.clear()
            _session._REGISTRY.update(saved)

    one, two = job(1.0), job(2.0)
    with pytest.raises(ConflictError) as ei:
        session.merge(one, two)
    assert ei.value.path == "x" and ei.value.chunk_coords == [(0, 0)]
    session.merge(one, two, policy="last_wins")
    session.commit("last wins")
    got = zarr.open_array(repo.readonly_session("main").store, path="x", mode="r")
    np.testing.assert_array_equal(got[0:10, 0:10], np.full((10, 10), 2.0))


def test_fork_of_a_fork(repo: Repository):
    """``ForkSession.fork()`` (Icechunk's name): an empty fork of the same parent."""
    session = repo.writable_session("main")
    parent = session.fork()
    kids = [parent.fork() for _ in range(2)]
    assert all(isinstance(k, ForkSession) and not k.has_uncommitted_changes for k in kids)
    write_one_region(REGIONS[0], kids[0])
    write_one_region(REGIONS[1], kids[1])
    session.merge(*kids)
    session.commit("forks of a fork")
    got = zarr.open_array(repo.readonly_session("main").store, path="x", mode="r")[:]
    np.testing.assert_array_equal(got[0:20], _expected()[0:20])

