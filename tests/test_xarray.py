"""xarray reads and writes through a session's store, with versioning."""

from __future__ import annotations

import numpy as np
import pytest

import icechunk_dist as icd

xr = pytest.importorskip("xarray")


def _dataset(n: int, start: int = 0) -> xr.Dataset:
    rng = np.random.default_rng(start)
    return xr.Dataset(
        {"temperature": (("time", "x"), rng.random((n, 6)))},
        coords={"time": np.arange(start, start + n), "x": np.arange(6)},
        attrs={"title": "test"},
    )


def test_xarray_roundtrip_append_and_time_travel() -> None:
    repo = icd.Repository.create(icd.in_memory_storage())
    s = repo.writable_session("main")
    ds = _dataset(10)
    ds.to_zarr(s.store, mode="w", consolidated=False)
    first = s.commit("initial dataset")

    s = repo.writable_session("main")
    _dataset(5, start=10).to_zarr(s.store, append_dim="time", consolidated=False)
    s.commit("append 5 steps")

    now = xr.open_zarr(repo.readonly_session("main").store, consolidated=False).load()
    assert now.sizes["time"] == 15
    np.testing.assert_array_equal(now["time"].values, np.arange(15))
    xr.testing.assert_identical(now.isel(time=slice(0, 10)), ds)

    then = xr.open_zarr(repo.readonly_session(snapshot_id=first).store,
                        consolidated=False).load()
    xr.testing.assert_identical(then, ds)


def test_xarray_write_is_invisible_until_commit() -> None:
    repo = icd.Repository.create(icd.in_memory_storage())
    s = repo.writable_session("main")
    _dataset(4).to_zarr(s.store, mode="w", consolidated=False)
    reader = repo.readonly_session("main")
    with pytest.raises((FileNotFoundError, KeyError, ValueError)):
        xr.open_zarr(reader.store, consolidated=False)
    s.commit("now visible")
    assert xr.open_zarr(repo.readonly_session("main").store,
                        consolidated=False).sizes["time"] == 4
