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

__all__ = ["era5_like_files", "make_dataset", "write_files"]


def make_dataset(index: int, *, steps: int = 4, nlat: int = 6, nlon: int = 8,
                 start: str = "2024-01-01",
                 packing: tuple[float, float] = (0.01, 0.0)) -> xr.Dataset:
    """File number ``index``: time steps ``index*steps ... index*steps+steps-1`` (hourly);
    ``packing`` is the (scale_factor, add_offset) of ``precip``."""
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
    ds["precip"].encoding = {"dtype": "int16", "scale_factor": packing[0],
                             "add_offset": packing[1], "_FillValue": np.int16(-32768)}
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


def era5_like_files(directory: Path | str, n: int, *, steps: int = 24, nlat: int = 181,
                    nlon: int = 360, first: int = 0) -> list[Path]:
    """Daily files like ERA5 downloads (NetCDF4, uncompressed): ``steps`` hourly steps of a
    ``nlat`` x ``nlon`` grid (``latitude`` 90..-90, ``longitude`` 0..359), two int16-packed
    variables (2 m temperature and total precipitation, one packing for all files); with
    the defaults ~6 MB each. Returns the paths in time order."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    lat = np.linspace(90, -90, nlat, dtype="float32")
    lon = np.linspace(0, 360, nlon, endpoint=False, dtype="float32")
    paths = []
    for day in range(first, first + n):
        rng = np.random.default_rng(day)
        times = (np.datetime64("2024-01-01T00", "h") + np.timedelta64(day * steps, "h")
                 + np.arange(steps).astype("timedelta64[h]"))
        t2m = 250 + 40 * rng.random((steps, nlat, nlon))
        tp = 0.05 * rng.random((steps, nlat, nlon))
        ds = xr.Dataset(
            {"t2m": (("time", "latitude", "longitude"), t2m,
                     {"units": "K", "long_name": "2 metre temperature"}),
             "tp": (("time", "latitude", "longitude"), tp,
                    {"units": "m", "long_name": "Total precipitation"})},
            coords={"time": times,
                    "latitude": ("latitude", lat, {"units": "degrees_north"}),
                    "longitude": ("longitude", lon, {"units": "degrees_east"})},
            attrs={"Conventions": "CF-1.6", "history": "ERA5-like test data"},
        )
        ds["t2m"].encoding = {"dtype": "int16", "scale_factor": 0.0015, "add_offset": 270.0,
                              "_FillValue": np.int16(-32767)}
        ds["tp"].encoding = {"dtype": "int16", "scale_factor": 2e-6, "add_offset": 0.05,
                             "_FillValue": np.int16(-32767)}
        ds["time"].encoding = {"units": "hours since 1900-01-01 00:00:00",
                               "calendar": "gregorian", "dtype": "int32"}
        path = out / f"era5_{day:04d}.nc"
        ds.to_netcdf(path, engine="h5netcdf", format="NETCDF4")
        paths.append(path)
    return paths
