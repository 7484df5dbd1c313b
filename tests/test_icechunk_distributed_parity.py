"""The two distributed gaps of issue 23: ``to_icechunk`` into a ``ForkSession`` (Icechunk's
nested pickling inside tasks) and ``session_merge_reduction`` given numpy arrays mixed in."""

from __future__ import annotations

import pickle
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import pytest
import xarray as xr
import zarr

import icechunk_dist as icechunk
from icechunk_dist.dask import session_merge_reduction
from icechunk_dist.xarray import to_icechunk


def _ds() -> xr.Dataset:
    return xr.Dataset({"v": (("t", "x"), np.arange(40, dtype="f8").reshape(4, 10))},
                      coords={"t": np.arange(4)})


def _task(fork_bytes: bytes, i: int) -> icechunk.ForkSession:
    fork = pickle.loads(fork_bytes)  # as a task receives it
    to_icechunk(_ds().isel(t=slice(i, i + 1)).chunk({"t": 1}), fork, region="auto")
    return fork


def test_to_icechunk_writes_into_a_fork_inside_a_task(tmp_path: Path) -> None:
    repo = icechunk.Repository.create(icechunk.local_filesystem_storage(str(tmp_path)))
    session = repo.writable_session("main")
    _ds().to_zarr(session.store, compute=False, mode="w", consolidated=False,
                  encoding={"v": {"chunks": (1, 10)}})
    session.commit("metadata")
    session = repo.writable_session("main")
    blob = pickle.dumps(session.fork())
    with dask.config.set(scheduler="threads"):
        forks = dask.compute(*[dask.delayed(_task)(blob, i) for i in range(4)])
    session.merge(*forks)
    session.commit("four tasks")
    got = xr.open_zarr(repo.readonly_session("main").store, consolidated=False)
    np.testing.assert_array_equal(got.v.values, _ds().v.values)


def test_to_icechunk_refuses_other_objects(tmp_path: Path) -> None:
    with pytest.raises(icechunk.InvalidInputError, match="Session or ForkSession"):
        to_icechunk(_ds(), object())  # type: ignore[arg-type]


def test_session_merge_reduction_skips_numpy_arrays(tmp_path: Path) -> None:
    repo = icechunk.Repository.create(icechunk.local_filesystem_storage(str(tmp_path)))
    session = repo.writable_session("main")
    zarr.create_array(session.store, name="x", shape=(8,), chunks=(2,), dtype="i4",
                      fill_value=0)
    fork = session.fork()
    target = zarr.open_array(fork.store, path="x", mode="r+")
    stored = da.store(da.arange(8, chunks=2, dtype="i4"), target, compute=False, lock=False,
                      return_stored=True, load_stored=False)
    with dask.config.set(scheduler="threads"):
        merged = session_merge_reduction([stored, np.arange(3)], split_every=2)
    session.merge(merged)
    session.commit("stored")
    np.testing.assert_array_equal(
        zarr.open_array(repo.readonly_session("main").store, path="x")[:], np.arange(8))
    with pytest.raises(icechunk.InvalidInputError, match="at least one dask array"):
        session_merge_reduction([np.arange(3)], split_every=2)
