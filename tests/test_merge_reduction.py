"""``icechunk_dist.dask.session_merge_reduction``: plain ``dask.array.store`` /
``dask.array.to_zarr`` with ``return_stored=True`` on a fork's store, reduced to one merged
fork and one commit (issue 11), under the threaded and distributed schedulers (the latter
on a real LocalCluster with 2 worker processes)."""

from __future__ import annotations

import contextlib
import sys
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
from icechunk_dist import ConflictError, ForkSession, Repository, SessionStateError
from icechunk_dist.dask import session_merge_reduction
from icechunk_dist.errors import InvalidInputError

cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture
def repo(tmp_path: Path) -> Repository:
    return Repository.create(icd.local_filesystem_storage(str(tmp_path / "repo")))


@contextlib.contextmanager
def _scheduler(name: str, client: Any) -> Iterator[None]:
    if name == "distributed":
        with client.as_current():
            yield
        return
    with dask.config.set(scheduler=name):
        yield


@pytest.mark.dask
@pytest.mark.parametrize("scheduler", ["threads", "distributed"])
def test_store_and_to_zarr_with_return_stored_make_one_commit(
        scheduler: str, dask_client, repo: Repository):
    rng = np.random.default_rng(5)
    a_np, b_np = rng.random((60, 40)), rng.integers(0, 100, (30,)).astype("i4")
    s = repo.writable_session("main")
    zarr.create_array(s.store, name="g/a", shape=a_np.shape, chunks=(10, 20), dtype="f8")
    zarr.create_array(s.store, name="b", shape=b_np.shape, chunks=(5,), dtype="i4")
    fork = s.fork()
    ta = zarr.open_array(fork.store, path="g/a", mode="r+")
    tb = zarr.open_array(fork.store, path="b", mode="r+")
    history = [i.id for i in repo.ancestry(branch="main")]
    with _scheduler(scheduler, dask_client):
        stored = da.store([da.from_array(a_np, chunks=(10, 20))], [ta], compute=False,
                          lock=False, return_stored=True, load_stored=False)
        stored_b = da.to_zarr(da.from_array(b_np, chunks=5), tb, return_stored=True)
        merged = session_merge_reduction([stored, stored_b], split_every=3)
    assert isinstance(merged, ForkSession)
    assert merged._changes.chunk_count() == 12 + 6
    s.merge(merged)
    with pytest.raises(SessionStateError, match="already merged"):
        s.merge(merged)
    sid = s.commit("plain dask, one commit")
    assert [i.id for i in repo.ancestry(branch="main")] == [sid, *history]
    r = repo.readonly_session("main")
    np.testing.assert_array_equal(zarr.open_array(r.store, path="g/a")[:], a_np)
    np.testing.assert_array_equal(zarr.open_array(r.store, path="b")[:], b_np)


def test_one_array_and_overlapping_writes(repo: Repository):
    s = repo.writable_session("main")
    zarr.create_array(s.store, name="x", shape=(20,), chunks=(10,), dtype="i4")
    fork = s.fork()
    t = zarr.open_array(fork.store, path="x", mode="r+")
    with dask.config.set(scheduler="threads"):
        one = da.to_zarr(da.arange(20, chunks=10, dtype="i4"), t, return_stored=True)
        merged = session_merge_reduction(one, split_every=None)  # a single array
    s.merge(merged)
    s.commit("x")
    np.testing.assert_array_equal(
        zarr.open_array(repo.readonly_session("main").store, path="x")[:], np.arange(20))

    # two stores of one chunk with different data, through two forks of one session
    s = repo.writable_session("main")
    f1, f2 = s.fork(), s.fork()
    x1 = da.store(da.full(10, 1, chunks=10, dtype="i4"),
                  zarr.open_array(f1.store, path="x", mode="r+"), regions=(slice(0, 10),),
                  compute=False, lock=False, return_stored=True, load_stored=False)
    x2 = da.store(da.full(10, 2, chunks=10, dtype="i4"),
                  zarr.open_array(f2.store, path="x", mode="r+"), regions=(slice(0, 10),),
                  compute=False, lock=False, return_stored=True, load_stored=False)
    with dask.config.set(scheduler="threads"), pytest.raises(ConflictError) as ei:
        session_merge_reduction([x1, x2], split_every=2)
    assert ei.value.path == "x" and ei.value.chunk_coords == [(0,)]


def test_bad_inputs_are_refused(repo: Repository):
    s = repo.writable_session("main")
    zarr.create_array(s.store, name="x", shape=(20,), chunks=(10,), dtype="i4")
    with pytest.raises(InvalidInputError, match="dask array"):
        session_merge_reduction([np.arange(3)], split_every=2)  # type: ignore[list-item]
    on_session = da.store(da.arange(20, chunks=10, dtype="i4"),
                          zarr.open_array(s.store, path="x", mode="r+"), lock=False,
                          compute=False, return_stored=True, load_stored=False)
    with dask.config.set(scheduler="threads"), pytest.raises(SessionStateError, match="fork"):
        session_merge_reduction(on_session, split_every=2)
    fork = s.fork()
    loaded = da.store(da.arange(20, chunks=10, dtype="i4"),
                      zarr.open_array(fork.store, path="x", mode="r+"), lock=False,
                      compute=False, return_stored=True)  # load_stored: blocks are data
    with dask.config.set(scheduler="threads"), pytest.raises(InvalidInputError,
                                                             match="load_stored=False"):
        session_merge_reduction(loaded, split_every=2)
