"""Ingest a directory of NetCDF files into a versioned repository, then append and re-run.

Generates a few hourly NetCDF files (CF times, a packed int16 variable, fill values), ingests
them as one commit, generates more and ingests the directory again (only the new files are
written, as one more commit), runs once more (nothing new), and checks the repository
against ``xarray.open_mfdataset`` of the same files.

Run it with ``python examples/ingest_netcdf.py [--workers N] [--files N]``. With
``--workers`` the files are opened and written on a local Dask cluster; without, on threads in
this process. The same from the shell::

    icechunk-dist ingest ./repo ./netcdf --group weather --workers 2
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import xarray as xr

import icechunk_dist as icd
from icechunk_dist.ingest import METADATA_KEY, ingest


def write_file(path: Path, index: int, steps: int = 6) -> None:
    """One NetCDF4 file of ``steps`` hourly time steps on a small grid."""
    rng = np.random.default_rng(index)
    times = (np.datetime64("2024-06-01T00", "h")
             + (index * steps + np.arange(steps)).astype("timedelta64[h]"))
    shape = (steps, 10, 20)
    ds = xr.Dataset(
        {
            "t2m": (("time", "lat", "lon"), (280 + 5 * rng.standard_normal(shape))
                    .astype("float32"), {"units": "K", "long_name": "2 m temperature"}),
            "tp": (("time", "lat", "lon"), np.round(rng.random(shape) * 20, 2),
                   {"units": "mm", "long_name": "total precipitation"}),
        },
        coords={"time": times, "lat": np.linspace(40, 50, 10, dtype="float32"),
                "lon": np.linspace(0, 19, 20, dtype="float32")},
        attrs={"title": "example weather", "source": "examples/ingest_netcdf.py"},
    )
    ds["t2m"].encoding = {"_FillValue": np.float32(-9999)}
    ds["tp"].encoding = {"dtype": "int16", "scale_factor": 0.01, "_FillValue": np.int16(-1)}
    ds["time"].encoding = {"units": "hours since 2024-01-01", "calendar": "standard"}
    ds.to_netcdf(path, engine="h5netcdf")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workers", type=int, default=0, help="LocalCluster of N processes")
    p.add_argument("--files", type=int, default=4, help="files in the first run")
    args = p.parse_args()
    client = cluster = None
    if args.workers:
        from distributed import Client, LocalCluster

        cluster = LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                               dashboard_address=None)
        client = Client(cluster)
    try:
        with tempfile.TemporaryDirectory(prefix="icechunk-ingest-") as tmp:
            src, repo_path = Path(tmp) / "netcdf", Path(tmp) / "repo"
            src.mkdir()
            for i in range(args.files):
                write_file(src / f"weather_{i:03d}.nc", i)

            first = ingest(str(repo_path), [str(src / "*.nc")], group="weather",
                           client=client, progress=False, message="initial load")
            print(f"run 1: {first.message}")
            for i in range(args.files, args.files + 2):
                write_file(src / f"weather_{i:03d}.nc", i)
            second = ingest(str(repo_path), [str(src)], group="weather", client=client,
                            progress=False, message="two more files")
            print(f"run 2: {second.message}")
            third = ingest(str(repo_path), [str(src)], group="weather", client=client,
                           progress=False)
            print(f"run 3: {third.message}")

            repo = icd.Repository.open(icd.local_filesystem_storage(repo_path))
            for h in repo.ancestry(branch="main"):
                files = h.metadata.get(METADATA_KEY, {}).get("files", [])
                print(f"  {h.id}  {h.message:<24} {len(files)} file(s) recorded")
            files = sorted(src.glob("*.nc"))
            with xr.open_zarr(repo.readonly_session("main").store, group="weather",
                              consolidated=False) as got, \
                    xr.open_mfdataset(files, combine="nested", concat_dim="time",
                                      data_vars="minimal", coords="minimal",
                                      compat="override", join="exact") as want:
                xr.testing.assert_identical(got.load(), want.load())
                print(f"dataset: {dict(got.sizes)}, variables {sorted(got.data_vars)}")
                print(f"time: {got.time.values[0]} .. {got.time.values[-1]}")
            print(f"commits: {len(first.snapshot_ids) + len(second.snapshot_ids)}, "
                  f"skipped on re-run: {len(third.skipped)}")
            print("open_mfdataset check: OK")
    finally:
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
