"""Generate real NetCDF files for ingestion tests, examples and benchmarks.

Each file holds ``steps`` time steps of a small lat/lon grid with several variables: CF times
(``hours since``, standard calendar), attributes, a float32 variable with a _FillValue and
missing values, an int16 packed variable (scale_factor/add_offset), a float64 variable and
a static (time-less) variable. NetCDF4 files go through h5netcdf, NetCDF3 through scipy.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr

__all__ = ["make_dataset", "write_files"]


def make_dataset(index: int, *, steps: int = 4, nlat: int = 6, nlon: int = 8,
                 start: str = "2024-01-01") -> xr.Dataset:
    """File number ``index``: time steps ``index*steps ... index*steps+steps-1`` (hourly)."""
    rng = np.random.default_rng(1000 + index)
    t0 = np.datetime64(start, "h") + np.timedelta64(index * steps, "h")
    times = t0 + np.arange(steps).astype("timedelta64[h]")
    lat = np.linspace(-60, 60, nlat, dtype="float32")
    lon = np.linspace(0, 350, nlon, dtype="float32")
    temp = (rng.standard_normal((steps, nlat, nlon)) * 10 + 280).astype("float32")
    temp[0, 0, 0] = np.nan  # a missing value, stored as the fill value
    precip = np.round(rng.random((steps, nlat, nlon)) * 50, 2)  # stored packed as int16
    pressure = rng.random((steps, nlat, nlon)) * 1000 + 100000  # float64
    ds = xr.Dataset(
        {
            "temperature": (("time", "lat", "lon"), temp,
                            {"units": "K", "long_name": "air temperature"}),
            "precip": (("time", "lat", "lon"), precip, {"units": "mm"}),
            "pressure": (("time", "lat", "lon"), pressure, {"units": "Pa"}),
            "elevation": (("lat", "lon"),
                          np.arange(nlat * nlon, dtype="float32").reshape(nlat, nlon),
                          {"units": "m"}),
        },
        coords={"time": times, "lat": ("lat", lat, {"units": "degrees_north"}),
                "lon": ("lon", lon, {"units": "degrees_east"})},
        attrs={"title": "icechunk_dist test data", "institution": "tests",
               "Conventions": "CF-1.8"},
    )
    ds["temperature"].encoding = {"dtype": "float32", "_FillValue": np.float32(-9999.0)}
    ds["precip"].encoding = {"dtype": "int16", "scale_factor": 0.01, "add_offset": 0.0,
                             "_FillValue": np.int16(-32768)}
    ds["time"].encoding = {"units": "hours since 2000-01-01 00:00:00",
                           "calendar": "standard", "dtype": "int64"}
    return ds


def write_files(directory: Path | str, n: int, *, steps: int = 4, fmt: str = "NETCDF4",
                prefix: str = "data", first: int = 0, **kwargs: object) -> list[Path]:
    """Write files ``first .. first+n-1`` into ``directory``; return their paths (in time
    order).

    ``fmt`` is ``"NETCDF4"`` (h5netcdf) or ``"NETCDF3_64BIT"`` (scipy).
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(first, first + n):
        ds = make_dataset(i, steps=steps, **kwargs)  # type: ignore[arg-type]
        path = out / f"{prefix}_{i:04d}.nc"
        if fmt == "NETCDF4":
            ds.to_netcdf(path, engine="h5netcdf", format="NETCDF4")
        else:
            ds["time"].encoding["dtype"] = "int32"  # NetCDF3 has no int64
            ds.to_netcdf(path, engine="scipy", format=fmt)
        paths.append(path)
    return paths
