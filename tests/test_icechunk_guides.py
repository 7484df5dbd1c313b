"""Icechunk's guides run with only the import changed (issue 21, "Done when").

The parallel-writes page (threads writing into one session; processes writing through one
fork, then ``session.merge``), the dask guide (``store_dask`` through a fork, merged back) and
the xarray guide (``to_icechunk``, then a commit), each written as the guide writes it, with
``import icechunk_dist as icechunk`` and data built here (no network for ``xr.tutorial``).
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import dask.array
import numpy as np
import pandas as pd
import pytest
import xarray as xr
import zarr

import icechunk_dist as icechunk


def _rasm_like() -> xr.Dataset:
    """The shape of xr.tutorial's "rasm" (time, y, x with 2-D xc/yc), built locally."""
    rng = np.random.default_rng(3)
    return xr.Dataset(
        {"Tair": (("time", "y", "x"), rng.random((24, 20, 28)).astype("f8"),
                  {"units": "C"})},
        coords={"time": pd.date_range("1980-09-16", periods=24, freq="MS"),
                "xc": (("y", "x"), rng.random((20, 28)) * 360),
                "yc": (("y", "x"), rng.random((20, 28)) * 90)},
    )


def _write_timestamp(*, itime: int, session: icechunk.Session | icechunk.ForkSession,
                     ds: xr.Dataset) -> icechunk.Session | icechunk.ForkSession:
    # the guide's task: write one time step into the session's store, region="auto"
    ds.isel(time=slice(itime, itime + 1)).to_zarr(session.store, region="auto",
                                                   consolidated=False)
    return session


def _initialize(repo: icechunk.Repository, ds: xr.Dataset) -> None:
    chunks = {1 if dim == "time" else ds.sizes[dim] for dim in ds.Tair.dims}
    session = repo.writable_session("main")
    ds.to_zarr(session.store, compute=False, encoding={"Tair": {"chunks": chunks}}, mode="w",
               consolidated=False)
    session.commit("initialize dataset")


def test_parallel_page_with_threads(tmp_path: Path) -> None:
    ds = _rasm_like()
    repo = icechunk.Repository.create(icechunk.local_filesystem_storage(str(tmp_path)))
    _initialize(repo, ds)
    session = repo.writable_session("main")
    with ThreadPoolExecutor() as executor:
        futures = [executor.submit(_write_timestamp, itime=i, session=session, ds=ds)
                   for i in range(ds.sizes["time"])]
        for f in futures:
            f.result()
    session.commit("finished writes")
    ondisk = xr.open_zarr(repo.readonly_session("main").store, consolidated=False)
    xr.testing.assert_identical(ds, ondisk.load())


def test_parallel_page_with_processes(tmp_path: Path) -> None:
    ds = _rasm_like()
    repo = icechunk.Repository.create(icechunk.local_filesystem_storage(str(tmp_path)))
    _initialize(repo, ds)
    session = repo.writable_session("main")
    fork = session.fork()
    with ProcessPoolExecutor(max_workers=2,
                             mp_context=multiprocessing.get_context("spawn")) as executor:
        futures = [executor.submit(_write_timestamp, itime=i, session=fork, ds=ds)
                   for i in range(ds.sizes["time"])]
        remote_sessions = [f.result() for f in futures]
    session.merge(*remote_sessions)
    session.commit("finished writes")
    ondisk = xr.open_zarr(repo.readonly_session("main").store, consolidated=False)
    xr.testing.assert_identical(ds, ondisk.load())


@pytest.mark.dask
def test_dask_guide(tmp_path: Path) -> None:
    from distributed import Client, LocalCluster

    import icechunk_dist as icechunk  # the guide's `import icechunk.dask`: one import

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster):
        storage = icechunk.local_filesystem_storage(str(tmp_path / "icechunk-xarray"))
        repo = icechunk.Repository.create(storage)
        session = repo.writable_session("main")
        shape = (100, 100)
        dask_chunks = (20, 20)
        dask_array = dask.array.random.random(shape, chunks=dask_chunks)
        zarr_chunks = (10, 10)
        group = zarr.group(store=session.store, overwrite=True)
        group.create_array("array", shape=shape, chunks=zarr_chunks, dtype="f8",
                           fill_value=float("nan"))
        session.commit("initialize array")
        session = repo.writable_session("main")
        fork = session.fork()
        zarray = zarr.open_array(fork.store, path="array", mode="a")
        remote_session = icechunk.dask.store_dask(sources=[dask_array], targets=[zarray])
        session.merge(remote_session)
        session.commit("wrote a dask array!")
        got = zarr.open_array(repo.readonly_session("main").store, path="array")[:]
        np.testing.assert_array_equal(got, dask_array.compute())


def test_xarray_guide(tmp_path: Path) -> None:
    ds = _rasm_like().chunk({"time": 1})
    repo = icechunk.Repository.create(icechunk.local_filesystem_storage(str(tmp_path)))
    session = repo.writable_session("main")
    icechunk.xarray.to_icechunk(ds, session)
    session.commit("add RASM data to store")
    session = repo.writable_session("main")
    icechunk.xarray.to_icechunk(ds.isel(time=slice(0, 1)), session, append_dim="time")
    session.commit("append one more time step")
    roundtripped = xr.open_zarr(repo.readonly_session("main").store, consolidated=False)
    expected = xr.concat([ds, ds.isel(time=slice(0, 1))], dim="time", data_vars="minimal")
    np.testing.assert_array_equal(roundtripped.Tair.values, expected.Tair.values)
    assert roundtripped.sizes["time"] == 25
