"""The writes people make every day (issue 21, points 1-3).

1. a loop of appends in one session, with a dask-backed variable that lacks the append
   dimension (a 2-D area or mask), lands as one commit;
2. two region writes of the same chunk in one session, one after the other: the later wins,
   as in any Zarr store (a fork merged back overrides what its session wrote before it);
3. Icechunk's process-pool recipe: one fork shipped to every task, each task
   ``to_zarr(region="auto")``, then ``session.merge(*forks)``: the coordinate chunks every
   task writes byte for byte are one write; different bytes for one chunk from two concurrent
   forks still conflict, naming the array, the chunks and ``policy="last_wins"``.

docs/design/013-ordered-writes-and-identical-chunks.md records how.
"""

from __future__ import annotations

import multiprocessing
import pickle
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import dask
import numpy as np
import pandas as pd
import pytest
import xarray as xr
import zarr

import icechunk_dist as icd
from icechunk_dist.xarray import to_icechunk


def _day(i: int) -> xr.Dataset:
    """One day of an ERA5-like dataset: t2m(time, y, x) and a 2-D cell_area(y, x), both
    dask-backed as open_mfdataset(..., chunks=...) gives them."""
    rng = np.random.default_rng(i)
    t2m = rng.random((4, 60, 80)).astype("f4")
    area = np.arange(4800, dtype="f8").reshape(60, 80)  # the same every day
    ds = xr.Dataset(
        {"t2m": (("time", "y", "x"), t2m), "cell_area": (("y", "x"), area)},
        coords={"time": pd.date_range("2020-01-01", periods=4, freq="6h")
                + pd.Timedelta(days=i),
                "y": np.arange(60.0), "x": np.arange(80.0)},
    )
    # chunks of a few KiB: stored as chunk objects, not inline in the manifest
    return ds.chunk({"time": 2, "y": 30, "x": 40})


def test_a_loop_of_appends_in_one_session_is_one_commit(tmp_path: Path) -> None:
    repo = icd.Repository.create(icd.local_filesystem_storage(str(tmp_path)))
    s = repo.writable_session("main")
    with dask.config.set(scheduler="threads"):
        to_icechunk(_day(0), s, group="era5", mode="w")
        for i in range(1, 4):
            to_icechunk(_day(i), s, group="era5", append_dim="time")
    sid = s.commit("four days")
    assert [i.message for i in repo.ancestry(branch="main")][:1] == ["four days"]
    got = xr.open_zarr(repo.readonly_session(snapshot_id=sid).store, group="era5",
                       consolidated=False)
    want = xr.concat([_day(i) for i in range(4)], dim="time", data_vars="minimal")
    np.testing.assert_array_equal(got.t2m.values, want.t2m.values)
    np.testing.assert_array_equal(got.cell_area.values, _day(0).cell_area.values)
    assert got.sizes["time"] == 16


def test_two_region_writes_of_one_chunk_in_one_session_the_later_wins(tmp_path: Path
                                                                      ) -> None:
    repo = icd.Repository.create(icd.local_filesystem_storage(str(tmp_path)))
    s = repo.writable_session("main")
    base = xr.Dataset({"v": (("t", "x"), np.zeros((4, 8), "i4"))}).chunk({"t": 2, "x": 4})
    with dask.config.set(scheduler="threads"):
        to_icechunk(base, s, mode="w")
        first = xr.Dataset({"v": (("t", "x"), np.full((2, 8), 1, "i4"))}).chunk({"t": 2})
        to_icechunk(first, s, region={"t": slice(0, 2)})
        second = xr.Dataset({"v": (("t", "x"), np.full((2, 8), 2, "i4"))}).chunk({"t": 2})
        to_icechunk(second, s, region={"t": slice(0, 2)})  # the very same chunks again
    # and a plain fork written after the session's own write of the chunk overrides it too
    zarr.open_array(s.store, path="v", mode="r+")[2:4, 0:4] = 5
    f = s.fork()
    zarr.open_array(f.store, path="v", mode="r+")[2:4, 0:4] = 6
    s.merge(f)
    s.commit("ordered writes")
    v = zarr.open_array(repo.readonly_session("main").store, path="v", mode="r")[:]
    np.testing.assert_array_equal(v[:2], 2)
    np.testing.assert_array_equal(v[2:, :4], 6)
    np.testing.assert_array_equal(v[2:, 4:], 0)


def test_a_sessions_own_write_after_the_fork_is_concurrent_with_it(tmp_path: Path) -> None:
    """Ordered means 'before the fork': a write the session makes after forking and a
    different write of the same chunk by the fork are concurrent, so they conflict."""
    repo = icd.Repository.create(icd.local_filesystem_storage(str(tmp_path)))
    s = repo.writable_session("main")
    zarr.create_array(s.store, name="a", shape=(8,), chunks=(4,), dtype="i4", fill_value=0)
    f = s.fork()
    zarr.open_array(s.store, path="a", mode="r+")[:4] = np.arange(4) + 100
    zarr.open_array(f.store, path="a", mode="r+")[:4] = np.arange(4) + 200
    with pytest.raises(icd.MergeConflictError, match="last_wins"):
        s.merge(f)


def _write_time_step(fork: icd.ForkSession, itime: int, ds_bytes: bytes) -> icd.ForkSession:
    """A task of Icechunk's parallel-writes recipe (understanding/parallel.md)."""
    ds = pickle.loads(ds_bytes)
    ds.isel(time=slice(itime, itime + 1)).to_zarr(fork.store, region="auto",
                                                   consolidated=False)
    return fork


def _recipe_dataset() -> xr.Dataset:
    rng = np.random.default_rng(7)
    return xr.Dataset(
        {"Tair": (("time", "y", "x"), rng.random((6, 50, 70)).astype("f4"))},
        coords={"time": np.arange(6), "xc": (("y", "x"), rng.random((50, 70))),
                "yc": (("y", "x"), rng.random((50, 70)))},
    )


def test_icechunks_process_pool_recipe_merges(tmp_path: Path) -> None:
    repo = icd.Repository.create(icd.local_filesystem_storage(str(tmp_path)))
    ds = _recipe_dataset()
    session = repo.writable_session("main")
    chunks = {"time": 1, "y": 50, "x": 70}
    ds.to_zarr(session.store, compute=False, mode="w", consolidated=False,
               encoding={"Tair": {"chunks": (1, 50, 70)}})
    session.commit("initialize")
    session = repo.writable_session("main")
    fork = session.fork()
    blob = pickle.dumps(ds.chunk(chunks))
    # spawned processes, as on macOS and Windows (a forked child would inherit the event
    # loop threads of zarr and of this library half-alive)
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=2, mp_context=ctx) as pool:
        futures = [pool.submit(_write_time_step, fork, i, blob) for i in range(6)]
        remote = [f.result() for f in futures]
    session.merge(*remote)  # every task wrote xc and yc, byte for byte the same
    session.commit("parallel writes")
    got = xr.open_zarr(repo.readonly_session("main").store, consolidated=False)
    np.testing.assert_array_equal(got.Tair.values, ds.Tair.values)
    np.testing.assert_array_equal(got.xc.values, ds.xc.values)


def test_different_bytes_from_two_concurrent_forks_still_conflict(tmp_path: Path) -> None:
    repo = icd.Repository.create(icd.local_filesystem_storage(str(tmp_path)))
    s = repo.writable_session("main")
    zarr.create_array(s.store, name="xc", shape=(1000,), chunks=(500,), dtype="f8",
                      fill_value=0.0)
    s.commit("xc")
    s = repo.writable_session("main")
    f, g, h = s.fork(), s.fork(), s.fork()
    data = np.random.default_rng(1).random(500)
    zarr.open_array(f.store, path="xc", mode="r+")[:500] = data
    zarr.open_array(g.store, path="xc", mode="r+")[:500] = data  # same bytes
    zarr.open_array(h.store, path="xc", mode="r+")[:500] = data + 1  # different bytes
    s.merge(f, g)  # identical writes of a chunk by concurrent forks are one write
    with pytest.raises(icd.MergeConflictError) as err:
        s.merge(h)
    msg = str(err.value)
    assert "'xc'" in msg and "(0,)" in msg and 'policy="last_wins"' in msg
    assert err.value.path == "xc" and err.value.chunk_coords == [(0,)]
    s.merge(h, policy="last_wins")  # the explicit way out
    s.commit("h wins")
    np.testing.assert_array_equal(
        zarr.open_array(repo.readonly_session("main").store, path="xc")[:500], data + 1)


def test_a_fork_deletes_what_its_session_made_before_the_fork(tmp_path: Path) -> None:
    """Deletes are ordered like writes: a fork that deletes an array or a group its session
    created (and wrote) before the fork takes them out on merge, and the session's status
    shows neither a creation nor a deletion of them (found by tests/test_model.py)."""
    repo = icd.Repository.create(icd.local_filesystem_storage(tmp_path / "repo"))
    s = repo.writable_session("main")
    root = zarr.open_group(s.store, mode="a")
    root.create_group("g").create_array("a", shape=(4,), chunks=(2,), dtype="i4",
                                        fill_value=0)[:] = 5
    root.create_array("z", shape=(4,), chunks=(2,), dtype="i4", fill_value=0)
    root.create_array("keep", shape=(2,), chunks=(2,), dtype="i4", fill_value=0)[:] = 1
    fork = s.fork()
    fork_root = zarr.open_group(fork.store, mode="r+")
    del fork_root["g"]
    del fork_root["z"]
    assert sorted(fork_root.keys()) == ["keep"]  # the fork sees its own deletes
    s.merge(fork)
    status = s.status()
    assert status.new_arrays == {"/keep"} and status.new_groups == {"/"}
    assert not status.deleted_arrays and not status.deleted_groups
    s.commit("made and taken out again")
    got = zarr.open_group(repo.readonly_session("main").store, mode="r")
    assert sorted(got.keys()) == ["keep"]
    np.testing.assert_array_equal(got["keep"][:], [1, 1])
