"""``icechunk_dist.xarray.to_icechunk``: xarray through forks, one commit (issue 7 part 1).

Real NetCDF files written by the tests (tests/netcdf_xr.py), a real 2-process LocalCluster
(conftest ``dask_client``), the threaded scheduler, and a Python without dask at all.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import icechunk_dist as icd
from icechunk_dist.errors import InvalidInputError, ReadOnlyError

zarr = pytest.importorskip("zarr")

xr = pytest.importorskip("xarray")
dask = pytest.importorskip("dask")
pytest.importorskip("h5netcdf")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from netcdf_xr import make_dataset, write_netcdf  # noqa: E402

from icechunk_dist.xarray import open_dataset, to_icechunk  # noqa: E402

CF_KEYS = ("units", "calendar", "scale_factor", "add_offset", "_FillValue", "dtype")


def _repo(tmp_path: Path) -> icd.Repository:
    return icd.Repository.create(icd.local_filesystem_storage(str(tmp_path / "repo")))


def _read(repo: icd.Repository, branch: str = "main", **kw: Any) -> Any:
    return xr.open_zarr(repo.readonly_session(branch).store, consolidated=False, **kw)


def _ncommits(repo: icd.Repository, branch: str = "main") -> int:
    return len(list(repo.ancestry(branch=branch)))


def _assert_cf_roundtrip(back: Any, path: Path) -> None:
    """What xr.open_dataset gave for the file: values, attrs, CF encodings, raw packing."""
    src = xr.open_dataset(path)
    xr.testing.assert_identical(back.load(), src.load())
    for name in src.variables:
        for key in CF_KEYS:
            if key in src[name].encoding:
                assert _same(back[name].encoding.get(key), src[name].encoding[key]), \
                    (name, key, back[name].encoding.get(key), src[name].encoding[key])


def _assert_same_as_packed(back: Any, want: Any) -> None:
    """Equal up to the int16 packing of ``temp`` (0.01 K), attributes identical."""
    xr.testing.assert_allclose(back, want, atol=0.006, rtol=0)
    assert back.attrs == want.attrs
    for name in want.variables:
        assert back[name].attrs == want[name].attrs, name


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, str) or isinstance(b, str) or a is None or b is None:
        return bool(a == b)
    if isinstance(a, np.dtype) or isinstance(b, np.dtype):
        return bool(np.dtype(a) == np.dtype(b))
    return bool(np.array_equal(np.asarray(a), np.asarray(b), equal_nan=True))


@pytest.mark.dask
def test_cf_roundtrip_on_a_distributed_cluster_one_commit(tmp_path: Path,
                                                          dask_client: Any) -> None:
    nc = write_netcdf(tmp_path / "a.nc", ntime=12)
    repo = _repo(tmp_path)
    before = _ncommits(repo)
    src = xr.open_dataset(nc, chunks={"time": 4})
    assert src["temp"].chunks is not None  # dask-backed: written on the workers
    from distributed import get_task_stream

    session = repo.writable_session("main")
    with dask_client.as_current(), get_task_stream(client=dask_client) as ts:
        to_icechunk(src, session, progress=False)
    # the chunks were written by tasks on the cluster's worker processes, through forks
    workers = set(dask_client.scheduler_info()["workers"])
    writes = [t for t in ts.data if str(t["key"]).startswith("icechunk-write")]
    # temp, precip, count: 3 blocks each (12 steps / 4); a task may write several
    # consecutive blocks of one variable, never blocks of two variables
    assert len(writes) >= 3
    assert {t["worker"] for t in writes} <= workers
    with pytest.raises((FileNotFoundError, KeyError, ValueError)):
        _read(repo)  # invisible before the commit
    session.commit("from NetCDF")
    assert _ncommits(repo) == before + 1
    back = _read(repo)
    _assert_cf_roundtrip(back, nc)
    # the packing itself survived: the stored integers are the file's integers
    raw = xr.open_zarr(repo.readonly_session("main").store, consolidated=False,
                       decode_cf=False)
    raw_nc = xr.open_dataset(nc, decode_cf=False)
    assert raw["temp"].dtype == np.int16
    np.testing.assert_array_equal(raw["temp"].values, raw_nc["temp"].values)
    np.testing.assert_array_equal(raw["time"].values, raw_nc["time"].values)
    assert raw["temp"].attrs["scale_factor"] == 0.01
    assert raw["precip"].attrs["_FillValue"] == np.float32(-9999.0)


def test_threaded_scheduler_netcdf3_and_append_dim(tmp_path: Path) -> None:
    a = write_netcdf(tmp_path / "a.nc", 0, 6, engine="scipy")
    b = write_netcdf(tmp_path / "b.nc", 6, 5, engine="scipy")
    repo = _repo(tmp_path)
    with dask.config.set(scheduler="threads"):
        s = repo.writable_session("main")
        # zarr chunks of 4 along time: the append starts inside a chunk (6 % 4 != 0)
        to_icechunk(xr.open_dataset(a, chunks={"time": 4}), s, progress=False)
        s.commit("first file")
        s = repo.writable_session("main")
        # dask blocks of 2 straddle the Zarr chunks of 4: xarray's safe_chunks check would
        # refuse it, but store_dask cuts the blocks at chunk boundaries, so it is safe here
        to_icechunk(xr.open_dataset(b, chunks={"time": 2}), s, append_dim="time",
                    safe_chunks=False, progress=False)
        s.commit("second file")
    assert _ncommits(repo) == 3
    want = xr.open_mfdataset([a, b], combine="nested", concat_dim="time",
                             data_vars="minimal", coords="minimal", compat="override")
    back = _read(repo)
    assert back.sizes["time"] == 11
    xr.testing.assert_identical(back.load(), want.load())
    assert back["temp"].encoding["scale_factor"] == 0.01


def test_numpy_dataset_without_dask_installed(tmp_path: Path) -> None:
    """A numpy-only dataset is written with no dask at all (dask made unimportable)."""
    nc = write_netcdf(tmp_path / "a.nc")
    code = textwrap.dedent(f"""
        import sys
        sys.modules["dask"] = None  # import dask -> ImportError
        import xarray as xr
        import icechunk_dist as icd
        from icechunk_dist.xarray import to_icechunk
        repo = icd.Repository.create(icd.local_filesystem_storage({str(tmp_path / 'r')!r}))
        s = repo.writable_session("main")
        ds = xr.open_dataset({str(nc)!r}).load()
        to_icechunk(ds, s)
        s.commit("numpy only")
        back = xr.open_zarr(repo.readonly_session("main").store, consolidated=False,
                            chunks=None)
        xr.testing.assert_identical(back.load(), ds)
        assert "dask.array" not in sys.modules
        print("NO-DASK OK")
    """)
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "NO-DASK OK" in proc.stdout


def test_modes_w_and_w_minus_and_r_plus(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    ds = make_dataset(0, 4)
    s = repo.writable_session("main")
    to_icechunk(ds, s, group="g")  # default mode "w-": create
    s.commit("create")
    s = repo.writable_session("main")
    with pytest.raises(InvalidInputError):
        to_icechunk(ds, s, group="g")  # "w-" on an existing group
    assert not s.has_uncommitted_changes
    other = make_dataset(0, 4, seed=99)
    to_icechunk(other, s, group="g", mode="w")
    s.commit("overwrite")
    _assert_same_as_packed(_read(repo, group="g").load(), other)
    # r+: values only; a new variable is refused
    s = repo.writable_session("main")
    with pytest.raises(InvalidInputError):
        to_icechunk(other.assign(extra=other["temp"] * 2), s, group="g", mode="r+")
    assert not s.has_uncommitted_changes
    to_icechunk(ds, s, group="g", mode="r+")
    s.commit("values")
    _assert_same_as_packed(_read(repo, group="g").load(), ds)


def test_region_auto_and_slices_through_forks(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    full = make_dataset(0, 8)
    s = repo.writable_session("main")
    template = full.chunk({"time": 2})
    template = template.map(lambda v: v * 0 if v.dtype.kind == "f" else v)
    to_icechunk(template, s, encoding={"temp": {"chunks": (2, 6, 8)}}, progress=False)
    s.commit("template")
    with dask.config.set(scheduler="threads"):
        s = repo.writable_session("main")
        part = full.isel(time=slice(2, 6)).chunk({"time": 2})
        to_icechunk(part.drop_vars(["elevation", "lat", "lon"]), s, region="auto",
                    progress=False)
        part2 = full.isel(time=slice(6, 8)).chunk({"time": 2})
        to_icechunk(part2.drop_vars(["elevation", "lat", "lon", "time"]), s,
                    region={"time": slice(6, 8)}, progress=False)
        s.commit("two regions, one commit")
    back = _read(repo).load()
    xr.testing.assert_identical(back.isel(time=slice(2, 8)).drop_vars("elevation"),
                                full.isel(time=slice(2, 8)).drop_vars("elevation"))
    assert float(back["precip"].isel(time=0).sum()) == 0.0
    # a region that does not fit the data is bad input, and changes nothing
    s = repo.writable_session("main")
    with pytest.raises(InvalidInputError):
        to_icechunk(part2.drop_vars(["elevation", "lat", "lon", "time"]), s,
                    region={"time": slice(0, 5)}, progress=False)
    with pytest.raises(InvalidInputError):
        to_icechunk(part2, s, region={"nodim": slice(0, 2)}, progress=False)
    assert not s.has_uncommitted_changes


def test_bad_arguments_are_clear_errors(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    ds = make_dataset(0, 2)
    s = repo.writable_session("main")
    with pytest.raises(InvalidInputError, match="mode"):
        to_icechunk(ds, s, mode="x")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="append_dim"):
        to_icechunk(ds, s, mode="w", append_dim="time")
    with pytest.raises(InvalidInputError, match="region"):
        to_icechunk(ds, s, mode="w", region="auto")
    with pytest.raises(InvalidInputError, match="keyword"):
        to_icechunk(ds, s, not_a_kwarg=1)
    with pytest.raises(InvalidInputError, match="compute"):
        to_icechunk(ds, s, compute=False)
    with pytest.raises(InvalidInputError):
        to_icechunk({"not": "a dataset"}, s)  # type: ignore[arg-type]
    to_icechunk(ds, s)
    s.commit("ok")
    with pytest.raises(ReadOnlyError):
        to_icechunk(ds, s, mode="w")  # committed: read-only now
    with pytest.raises(ReadOnlyError):
        to_icechunk(ds, repo.readonly_session("main"), mode="w")


def _boom(block: np.ndarray) -> np.ndarray:
    if np.nanmin(block) < -0.5:  # only the block holding the marker
        raise RuntimeError("worker failed on purpose")
    return block


def test_failure_midway_rolls_back_the_session(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    s = repo.writable_session("main")
    to_icechunk(make_dataset(0, 4), s)
    first = s.commit("first")
    s = repo.writable_session("main")
    to_icechunk(make_dataset(0, 4).rename({"temp": "kept"})[["kept"]], s, mode="a")
    before = s.status()
    bad = make_dataset(4, 8).chunk({"time": 2})
    marked = bad["precip"].values.copy()
    marked[5] = -1.0
    bad["precip"] = bad["precip"].copy(data=dask.array.from_array(marked, chunks=(2, 6, 8))
                                       .map_blocks(_boom, dtype="f4"))
    with dask.config.set(scheduler="threads"), pytest.raises(RuntimeError, match="purpose"):
        to_icechunk(bad, s, append_dim="time", safe_chunks=False, progress=False)
    after = s.status()
    assert after.new_arrays == before.new_arrays
    assert after.updated_arrays == before.updated_arrays
    assert after.updated_chunks == before.updated_chunks  # nothing of the failed write
    s.commit("only what came before the failed write")
    back = _read(repo).load()
    assert back.sizes["time"] == 4  # no half-appended arrays
    assert "kept" in back
    assert repo.lookup_snapshot(first).id == first
    assert list(repo.ancestry(branch="main"))[1].id == first


def test_dataarray_and_open_dataset(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    da = make_dataset(0, 3)["precip"].chunk({"time": 1})
    s = repo.writable_session("main")
    with dask.config.set(scheduler="threads"):
        to_icechunk(da, s, progress=False)
    s.commit("a DataArray")
    back = open_dataset(repo.readonly_session("main"))
    assert back["precip"].chunks is not None
    xr.testing.assert_identical(back["precip"].load(), da.load())


def test_several_appends_in_one_session_one_commit(tmp_path: Path, dask_client: Any) -> None:
    """Appends that start inside a chunk this same session wrote (not yet committed): the
    partial boundary chunk is written on the driver, the rest through forks."""
    files = [write_netcdf(tmp_path / f"{i}.nc", start, n)
             for i, (start, n) in enumerate([(0, 6), (6, 5), (11, 3)])]
    repo = _repo(tmp_path)
    s = repo.writable_session("main")
    with dask_client.as_current():
        to_icechunk(xr.open_dataset(files[0], chunks={"time": 4}), s, progress=False)
        for f in files[1:]:
            to_icechunk(xr.open_dataset(f, chunks={"time": 4}), s, append_dim="time",
                        safe_chunks=False, progress=False)
    s.commit("three files, one commit")
    assert _ncommits(repo) == 2
    want = xr.open_mfdataset(files, combine="nested", concat_dim="time",
                             data_vars="minimal", coords="minimal", compat="override")
    xr.testing.assert_identical(_read(repo).load(), want.load())


def test_session_savepoint_and_rollback() -> None:
    repo = icd.Repository.create(icd.in_memory_storage())
    s = repo.writable_session("main")
    zarr.create_array(s.store, name="a", shape=(4,), chunks=(2,), dtype="i4")[:] = 1
    sp = s.savepoint()
    zarr.open_array(s.store, path="a", mode="r+")[:2] = 7
    zarr.create_array(s.store, name="b", shape=(2,), chunks=(2,), dtype="i4")
    s.rollback_to(sp)
    assert s.status().new_arrays == {"/a"}
    np.testing.assert_array_equal(zarr.open_array(s.store, path="a", mode="r")[:], [1] * 4)
    other = repo.writable_session("main")
    with pytest.raises(InvalidInputError):
        other.rollback_to(sp)  # a savepoint of another session
    s.commit("a")
    with pytest.raises(ReadOnlyError):
        s.rollback_to(sp)  # committed: read-only
