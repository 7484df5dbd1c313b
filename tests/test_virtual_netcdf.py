"""A virtual dataset over real NetCDF4 files (issue 22): files written by xarray with zlib +
shuffle and explicit chunking, refs built from h5py's chunk index, read back through zarr
and xarray and compared value by value with ``xr.open_mfdataset`` of the same files; on local
disk, and with the files and the repository on the moto S3 server (requests counted by a
proxy: coalesced reads, refused reads never sent, a changed object refused).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import boto3
import numpy as np
import pytest
import xarray as xr
import zarr
from lossy_proxy import LossyProxy, lossy_proxy
from virtual_netcdf import chunk_specs, create_virtual_array, sample_data, write_netcdf

import icechunk_dist as icd
from icechunk_dist.storage import Storage

S3_KEY = S3_SECRET = "testing"  # as in conftest.py
REGION = "us-east-1"
NFILES, STEPS, NY, NX, CHUNKS = 2, 4, 10, 12, (1, 5, 6)
VARS = {"t2m": "<f4", "counts": "<i2"}


def _files(tmp_path: Path) -> list[Path]:
    src = tmp_path / "nc"
    src.mkdir()
    return [write_netcdf(src / f"day{i}.nc", sample_data(i, STEPS, NY, NX), CHUNKS)
            for i in range(NFILES)]


def _expected(files: list[Path]) -> xr.Dataset:
    with xr.open_mfdataset(files, engine="h5netcdf", combine="nested",
                           concat_dim="time") as ds:
        return ds.load()


def _build(repo: icd.Repository, files: list[Path], url_of: Callable[[Path], str],
           etag_of: Callable[[Path], str | None]) -> None:
    s = repo.writable_session("main")
    for var, dtype in VARS.items():
        create_virtual_array(s.store, var, (NFILES * STEPS, NY, NX), CHUNKS, dtype)
        specs = [spec for i, f in enumerate(files)
                 for spec in chunk_specs(f, var, url_of(f), etag=etag_of(f),
                                         time_offset=i * STEPS)]
        assert len(specs) == NFILES * STEPS * 4  # every chunk of every file
        assert s.store.set_virtual_refs(var, specs) is None
    s.commit("virtual dataset of NetCDF4 files")


def _check(repo: icd.Repository, files: list[Path]) -> None:
    want = _expected(files)
    store = repo.readonly_session("main").store
    for var in VARS:
        got = zarr.open_array(store, path=var, mode="r")[:]
        np.testing.assert_array_equal(got, want[var].values)
        assert got.dtype == want[var].dtype
    ds = xr.open_zarr(store, consolidated=False)
    for var in VARS:
        np.testing.assert_array_equal(ds[var].values, want[var].values)


def test_netcdf4_files_on_local_disk(tmp_path: Path) -> None:
    files = _files(tmp_path)
    prefix = f"file://{files[0].parent}/"
    config = icd.RepositoryConfig()
    config.set_virtual_chunk_container(
        icd.VirtualChunkContainer(prefix, icd.local_filesystem_store(str(files[0].parent))))
    repo = icd.Repository.create(icd.local_filesystem_storage(tmp_path / "repo"), config,
                                 authorize_virtual_chunk_access={
                                     prefix: icd.LocalFileSystemAccess})
    _build(repo, files, lambda f: f"{prefix}{f.name}",
           lambda f: icd.virtual.source_stat(f"{prefix}{f.name}").etag)
    _check(repo, files)
    assert repo.readonly_session("main").all_virtual_chunk_locations() == [
        f"{prefix}{f.name}" for f in files]
    # one file rewritten by its producer (same variables, other values): refused by name
    write_netcdf(files[1], sample_data(7, STEPS, NY, NX), CHUNKS)
    arr = zarr.open_array(repo.readonly_session("main").store, path="t2m", mode="r")
    np.testing.assert_array_equal(arr[:STEPS], _expected(files[:1])["t2m"].values)
    with pytest.raises(icd.SourceChangedError, match=rf"{prefix}day1\.nc"):
        arr[STEPS:]


@pytest.fixture
def proxy(s3_server: str) -> Iterator[LossyProxy]:
    with lossy_proxy(s3_server) as p:
        yield p


def _source_gets(proxy: LossyProxy, bucket: str) -> int:
    return sum(1 for s in proxy.seen if s.method == "GET" and s.path.startswith(
        f"/{bucket}/nc/"))


@pytest.mark.s3
def test_netcdf4_files_and_repository_on_s3(
    tmp_path: Path, s3_server: str, s3_bucket: str, make_s3_storage: Callable[..., Storage],
    proxy: LossyProxy,
) -> None:
    files = _files(tmp_path)
    client = boto3.client("s3", endpoint_url=s3_server, region_name=REGION,
                          aws_access_key_id=S3_KEY, aws_secret_access_key=S3_SECRET)
    etags = {f.name: client.put_object(Bucket=s3_bucket, Key=f"nc/{f.name}",
                                       Body=f.read_bytes())["ETag"] for f in files}
    prefix = f"s3://{s3_bucket}/nc/"
    config = icd.RepositoryConfig()
    # the container reaches the sources through the counting proxy
    config.set_virtual_chunk_container(icd.VirtualChunkContainer(prefix, icd.s3_store(
        region=REGION, endpoint_url=proxy.url, allow_http=True, force_path_style=True)))
    creds = icd.containers_credentials({prefix: icd.s3_credentials(
        access_key_id=S3_KEY, secret_access_key=S3_SECRET)})
    storage = make_s3_storage("repo")
    repo = icd.Repository.create(storage, config, authorize_virtual_chunk_access=creds)
    _build(repo, files, lambda f: f"{prefix}{f.name}", lambda f: etags[f.name])
    assert icd.virtual.source_stat(f"{prefix}{files[0].name}", config.containers()[0].store,
                                   creds[prefix]).etag == etags[files[0].name]

    _check(repo, files)
    # zarr fetches a selection's chunks ten at a time; adjacent chunks of one file that
    # are asked for together come in one ranged GET
    proxy.clear()
    arr = zarr.open_array(repo.readonly_session("main").store, path="t2m", mode="r")
    np.testing.assert_array_equal(arr[:], _expected(files)["t2m"].values)
    gets = _source_gets(proxy, s3_bucket)
    chunks = NFILES * STEPS * 4
    assert NFILES <= gets <= chunks // 4, (gets, chunks)

    # not authorized: refused before any request to the source bucket
    proxy.clear()
    unauthorized = icd.Repository.open(storage)
    with pytest.raises(icd.VirtualChunkAccessError, match="not authorized"):
        zarr.open_array(unauthorized.readonly_session("main").store, path="t2m", mode="r")[:]
    assert _source_gets(proxy, s3_bucket) == 0

    # an object rewritten under the same key: refused in the same request (If-Match)
    client.put_object(Bucket=s3_bucket, Key=f"nc/{files[0].name}",
                      Body=write_netcdf(tmp_path / "other.nc",
                                        sample_data(9, STEPS, NY, NX), CHUNKS).read_bytes())
    fresh = icd.Repository.open(storage, authorize_virtual_chunk_access=creds)
    arr = zarr.open_array(fresh.readonly_session("main").store, path="counts", mode="r")
    with pytest.raises(icd.SourceChangedError, match=rf"{prefix}day0\.nc"):
        arr[:STEPS]
    np.testing.assert_array_equal(arr[STEPS:], _expected(files[1:])["counts"].values)
