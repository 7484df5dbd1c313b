"""Reprocess a versioned dataset onto a branch, one commit per job (docs/reprocessing.md).

    python examples/reprocess.py [--path /tmp/reprocess-demo] [--workers 2]

1. writes a small CF dataset (6-hourly temperature in K, packed as int16; precipitation)
   to ``main`` with ``to_icechunk`` and tags it ``v1``;
2. job 1: a function ``Dataset -> Dataset`` (daily means in degrees Celsius) from ``v1``
   onto the new branch ``daily``, one commit;
3. job 2: a rechunk (one time step per chunk, whole latitude) from ``main`` onto
   ``by-time``, one commit;
4. checks that ``main`` and ``v1`` did not move and that both branches read back right.

Runs on dask's threaded scheduler, or on a local cluster with ``--workers N``.
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
import zarr

import icechunk_dist as icd
from icechunk_dist.xarray import reprocess, to_icechunk


def make_dataset(days: int = 8) -> xr.Dataset:
    rng = np.random.default_rng(7)
    time = pd.date_range("2024-01-01", periods=days * 4, freq="6h")
    lat, lon = np.linspace(-60, 60, 12), np.linspace(0, 345, 24)
    ds = xr.Dataset(
        {
            "temp": (("time", "lat", "lon"), 270 + 30 * rng.random((time.size, 12, 24)),
                     {"units": "K", "long_name": "air temperature"}),
            "precip": (("time", "lat", "lon"),
                       rng.random((time.size, 12, 24)).astype("f4"), {"units": "mm/6h"}),
        },
        coords={"time": time, "lat": ("lat", lat, {"units": "degrees_north"}),
                "lon": ("lon", lon, {"units": "degrees_east"})},
        attrs={"title": "reprocessing demo"},
    )
    ds["temp"].encoding = {"dtype": "int16", "scale_factor": 0.01, "add_offset": 273.15,
                           "_FillValue": np.int16(-32767)}
    return ds.chunk({"time": 8})


def daily_celsius(ds: xr.Dataset) -> xr.Dataset:
    """The reprocessing job: daily means, temperature in degrees Celsius (stays lazy)."""
    out = ds.resample(time="1D").mean()
    out["temp"] = (out["temp"] - 273.15).assign_attrs(units="degC",
                                                      long_name="daily mean temperature")
    out["precip"] = (ds["precip"].resample(time="1D").sum()
                     .assign_attrs(units="mm/day"))
    out.attrs = {**ds.attrs, "history": "daily_celsius"}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--path", default=None, help="repository directory (default: a temp dir)")
    p.add_argument("--workers", type=int, default=0,
                   help="run on a LocalCluster of N worker processes (default: threads)")
    args = p.parse_args()
    tmp = tempfile.TemporaryDirectory() if args.path is None else None
    root = args.path or f"{tmp.name}/repo"  # type: ignore[union-attr]

    with contextlib.ExitStack() as stack:
        client: Any = None
        if args.workers:
            from distributed import Client, LocalCluster

            cluster = stack.enter_context(LocalCluster(n_workers=args.workers,
                                                       threads_per_worker=1,
                                                       dashboard_address=None))
            client = stack.enter_context(Client(cluster))
        repo = icd.Repository.open_or_create(icd.local_filesystem_storage(root))

        ds = make_dataset()
        session = repo.writable_session("main")
        to_icechunk(ds, session, mode="w", progress=False)
        source = session.commit("6-hourly source data")
        repo.create_tag("v1", source)
        print(f"source on main   : {source} ({ds.sizes['time']} time steps)")

        daily = reprocess(repo, source="v1", branch="daily", func=daily_celsius,
                          client=client, progress=False)
        print(f"job 1 (function) : {daily.snapshot_id} on {daily.branch}"
              f"{' (new branch)' if daily.created_branch else ''}")
        rechunked = reprocess(repo, source="main", branch="by-time",
                              rechunk={"time": 1, "lat": -1}, client=client, progress=False)
        print(f"job 2 (rechunk)  : {rechunked.snapshot_id} on {rechunked.branch}")

        # checks: the sources did not move, each job is one commit on top of the source
        assert repo.lookup_branch("main") == source and repo.lookup_tag("v1") == source
        for result in (daily, rechunked):
            history = [i.id for i in repo.ancestry(branch=result.branch)]
            assert history[:2] == [result.snapshot_id, source], history
        got = xr.open_zarr(repo.readonly_session("daily").store, consolidated=False).load()
        want = daily_celsius(ds).load()
        xr.testing.assert_allclose(got, want, atol=0.006, rtol=0)
        assert got["temp"].attrs["units"] == "degC" and got.sizes["time"] == 8
        by_time = repo.readonly_session("by-time").store
        chunks = zarr.open_array(by_time, path="temp", mode="r").chunks
        assert chunks[:2] == (1, 12), chunks
        xr.testing.assert_identical(xr.open_zarr(by_time, consolidated=False).load(),
                                    xr.open_zarr(repo.readonly_session("main").store,
                                                 consolidated=False).load())
        print(f"by-time chunks   : temp {chunks}")
        print(f"branches         : {sorted(repo.list_branches())}")
        print("reprocess check: OK")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
