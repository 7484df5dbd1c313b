"""Raw copy (``icechunk_dist/ingest/_raw_copy.py``): a NetCDF4 file whose variables are
stored like the repository's arrays lands as stored, without the CF decode/encode round
trip; files stored otherwise still go through xarray. Real files, ingested in process."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

xr = pytest.importorskip("xarray")
pytest.importorskip("h5netcdf")
zarr = pytest.importorskip("zarr")

import icechunk_dist as icd  # noqa: E402
from icechunk_dist.ingest import ingest  # noqa: E402


def _packed_files(directory: Path, n: int, steps: int = 4,
                  units: tuple[str, ...] = ("hours since 2000-01-01",)) -> list[Path]:
    """int16 values packed with float32 attributes and an offset so large that float32
    cannot hold one packed step: decoding and encoding again changes the stored values."""
    directory.mkdir(parents=True, exist_ok=True)
    out = []
    for day in range(n):
        rng = np.random.default_rng(day)
        k = rng.integers(-32000, 32000, (steps, 3, 5)).astype("int16")
        k[0, 0, 0] = -32767  # a missing value
        times = (np.datetime64("2000-01-01T00", "h")
                 + np.arange(day * steps, (day + 1) * steps).astype("timedelta64[h]"))
        ds = xr.Dataset({"v": (("time", "y", "x"), k)}, coords={"time": times})
        ds["v"].attrs = {"scale_factor": np.float32(0.001), "add_offset": np.float32(1e5),
                         "_FillValue": np.int16(-32767), "units": "m"}
        ds["time"].encoding = {"units": units[day % len(units)], "dtype": "int64"}
        path = directory / f"f{day:02d}.nc"
        ds.to_netcdf(path, engine="h5netcdf")
        out.append(path)
    return out


def _stored(path: Path, name: str) -> np.ndarray:
    repo = icd.Repository.open(icd.local_filesystem_storage(path))
    return np.asarray(zarr.open_array(repo.readonly_session("main").store, path=name,
                                      mode="r")[...])


def _raw(files: list[Path], name: str) -> np.ndarray:
    parts = []
    for p in files:
        with xr.open_dataset(p, engine="h5netcdf", decode_cf=False) as ds:
            parts.append(ds[name].values)
    return np.concatenate(parts)


def _decoded(path: Path) -> xr.Dataset:
    repo = icd.Repository.open(icd.local_filesystem_storage(path))
    with xr.open_zarr(repo.readonly_session("main").store, consolidated=False) as ds:
        return ds.load()


def test_packed_values_land_exactly_as_stored(tmp_path: Path) -> None:
    files = _packed_files(tmp_path / "src", 3)
    ingest(str(tmp_path / "repo"), [str(p) for p in files])
    # the round trip through float32 changed most of these values before
    np.testing.assert_array_equal(_stored(tmp_path / "repo", "v"), _raw(files, "v"))
    ds = _decoded(tmp_path / "repo")
    assert np.isnan(ds["v"].values[0, 0, 0]) and np.isnan(ds["v"].values[4, 0, 0])
    raw = _raw(files, "v").astype("float64")
    expected = np.where(raw == -32767, np.nan, raw * np.float32(0.001) + np.float32(1e5))
    np.testing.assert_allclose(ds["v"].values, expected, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(
        ds["time"].values,
        np.datetime64("2000-01-01T00", "ns") + np.arange(12).astype("timedelta64[h]"))


def test_files_sharing_a_chunk_are_copied_at_their_offsets(tmp_path: Path) -> None:
    files = _packed_files(tmp_path / "src", 4, steps=3)
    ingest(str(tmp_path / "repo"), [str(p) for p in files[:2]], chunks={"time": 4})
    ingest(str(tmp_path / "repo"), [str(p) for p in files])  # appends 3 and 4
    np.testing.assert_array_equal(_stored(tmp_path / "repo", "v"), _raw(files, "v"))
    assert len(_decoded(tmp_path / "repo")["time"]) == 12


def test_files_stored_differently_go_through_xarray(tmp_path: Path) -> None:
    # every other file counts time in minutes: its stored times differ from the
    # repository's (hours), so they are decoded and encoded again, and land right
    files = _packed_files(tmp_path / "src", 4, units=("hours since 2000-01-01",
                                                      "minutes since 2000-01-01"))
    ingest(str(tmp_path / "repo"), [str(p) for p in files])
    ds = _decoded(tmp_path / "repo")
    np.testing.assert_array_equal(
        ds["time"].values,
        np.datetime64("2000-01-01T00", "ns") + np.arange(16).astype("timedelta64[h]"))
    np.testing.assert_array_equal(_stored(tmp_path / "repo", "time"), np.arange(16))
    with xr.open_mfdataset(files, combine="nested", concat_dim="time",
                           engine="h5netcdf") as mf:
        np.testing.assert_allclose(ds["v"].values, mf["v"].values, rtol=0, atol=0.01)
    # unpacked: float64 arrays (float32 cannot hold this packing), not the files' int16,
    # so every file goes through xarray
    ingest(str(tmp_path / "unpacked"), [str(p) for p in files], unpack=True)
    assert _stored(tmp_path / "unpacked", "v").dtype == np.float64
    un = _decoded(tmp_path / "unpacked")
    np.testing.assert_allclose(un["v"].values, ds["v"].values, rtol=0, atol=0.01)
