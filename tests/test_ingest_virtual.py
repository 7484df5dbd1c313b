"""Virtual ingestion (``ingest(..., virtual=True)``, ``icechunk-dist ingest --virtual``): real
NetCDF4 (xarray, zlib + shuffle, explicit chunks), HDF5 (h5py: chunked, contiguous, filters
we cannot map, compact storage, unwritten chunks, strings) and NetCDF3 (record dimension)
files made here, referenced in place and compared value by value with
``xr.open_mfdataset`` of the same files, locally and on the moto S3 server."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

xr = pytest.importorskip("xarray")
h5py = pytest.importorskip("h5py")
pytest.importorskip("h5netcdf")
pytest.importorskip("scipy")

from conftest import S3_ACCESS_KEY_ID, S3_REGION, S3_SECRET_ACCESS_KEY  # noqa: E402
from netcdf_data import make_dataset, write_files  # noqa: E402

import icechunk_dist as icd  # noqa: E402
from icechunk_dist.cli import main  # noqa: E402
from icechunk_dist.ingest import ingest, landed_inputs  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:Numcodecs codecs")

_DATA_VARS = ("temperature", "precip", "pressure")


def _mf(files: list[Path] | list[str], **kw: Any) -> xr.Dataset:
    with xr.open_mfdataset(sorted(map(str, files)), combine="nested", concat_dim="time",
                           data_vars="minimal", coords="minimal", compat="override",
                           join="exact", **kw) as ds:
        return ds.load()


def _authorized(storage: icd.Storage, credentials: Any = None) -> icd.Repository:
    """The repository, authorized to read every virtual chunk container of its config."""
    config = icd.Repository.open(storage).config
    prefixes = [c.url_prefix for c in (config.virtual_chunk_containers or {}).values()]
    return icd.Repository.open(storage, authorize_virtual_chunk_access={
        p: credentials for p in prefixes})


def _repo(path: Path) -> icd.Repository:
    return _authorized(icd.local_filesystem_storage(path))


def _ds(repo: icd.Repository, group: str | None = None) -> xr.Dataset:
    with xr.open_zarr(repo.readonly_session("main").store, group=group,
                      consolidated=False) as ds:
        return ds.load()


def _kinds(repo: icd.Repository, path: str, shape: tuple[int, ...]) -> set[str]:
    """The kinds (virtual, native, uninitialized) of every chunk of array ``path``."""
    session = repo.readonly_session("main")
    kinds = set()
    for coord in np.ndindex(*shape):
        kind = str(getattr(session.chunk_type(path, list(coord)), "name", "")).lower()
        kinds.add("native" if kind == "inline" else kind)  # small copies are inlined
    return kinds


def _netcdf4(directory: Path, n: int, *, first: int = 0, steps: int = 4,
             chunks: tuple[int, int, int] = (2, 3, 8), fletcher32: bool = False
             ) -> list[Path]:
    """NetCDF4 files written by xarray (h5netcdf) with zlib + shuffle and explicit chunks."""
    directory.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(first, first + n):
        ds = make_dataset(i, steps=steps)
        enc = {}
        for v in _DATA_VARS:
            enc[v] = {**ds[v].encoding, "zlib": True, "shuffle": True, "complevel": 3,
                      "chunksizes": chunks}
        enc["pressure"]["fletcher32"] = fletcher32
        path = directory / f"nc4_{i:04d}.nc"
        ds.to_netcdf(path, engine="h5netcdf", encoding=enc)
        out.append(path)
    return out


# ------------------------------------------------------------------------------ NetCDF4
def test_netcdf4_zlib_shuffle_chunks_are_referenced_and_read_as_open_mfdataset(
        tmp_path: Path) -> None:
    files = _netcdf4(tmp_path / "src", 3, fletcher32=True)
    result = ingest(tmp_path / "repo", [str(tmp_path / "src")], virtual=True)
    assert result.virtual and len(result.snapshot_ids) == 1
    # 3 files x 3 variables x (4/2 time x 6/3 lat x 8/8 lon) chunks
    assert result.refs == 3 * 3 * 4
    assert set(result.copied) == {"time", "lat", "lon", "elevation"}
    assert "dimension coordinate" in result.copied["time"]
    assert "36 virtual chunk ref(s)" in result.message
    # the ingestion added a container for the sources' directory to the saved config; a
    # repository opened without authorizing it refuses to read the refs, naming the file
    prefix = f"file://{tmp_path / 'src'}/"
    assert f"added virtual chunk container(s) {prefix}" in result.message
    plain = icd.Repository.open(icd.local_filesystem_storage(tmp_path / "repo"))
    assert [c.url_prefix for c in plain.config.containers()] == [prefix]
    with pytest.raises(icd.VirtualChunkAccessError, match=r"nc4_000\d\.nc.*not authorized"):
        _ds(plain)
    assert "added" not in ingest(tmp_path / "repo", [str(tmp_path / "src")],
                                 virtual=True).message  # nothing new, nothing added
    repo = _repo(tmp_path / "repo")
    got = _ds(repo)
    xr.testing.assert_identical(got, _mf(files))
    # the one-line readers take the authorization too
    with xr.open_dataset(tmp_path / "repo", engine="icechunk_dist", chunks=None,
                         authorize_virtual_chunk_access={prefix: None}) as ds:
        xr.testing.assert_identical(ds.load(), got)
    # every chunk of the data variables is a ref into the files; nothing of them was copied
    for v in _DATA_VARS:
        assert _kinds(repo, v, (6, 2, 1)) == {"virtual"}
    locations = set(repo.readonly_session("main").all_virtual_chunk_locations())
    assert locations == {f"file://{p}" for p in files}
    # the array metadata is what xr.open_dataset decodes from the file
    with xr.open_dataset(files[0], engine="h5netcdf") as f, xr.open_zarr(
            repo.readonly_session("main").store, consolidated=False) as z:
        for v in _DATA_VARS:
            assert z[v].encoding["chunks"] == f[v].encoding["chunksizes"] == (2, 3, 8)
            assert z[v].dtype == f[v].dtype
            assert z[v].encoding["dtype"] == f[v].encoding["dtype"]
            assert z[v].attrs == f[v].attrs
            for key in ("_FillValue", "scale_factor", "add_offset"):
                a, b = z[v].encoding.get(key), f[v].encoding.get(key)
                assert (a is None and b is None) or np.array_equal(a, b, equal_nan=True), (
                    v, key, a, b)
    import zarr

    codecs = [c["name"] for c in zarr.open_array(repo.readonly_session("main").store,
                                                 path="pressure").metadata.to_dict()["codecs"]]
    assert codecs == ["bytes", "numcodecs.shuffle", "numcodecs.zlib", "numcodecs.fletcher32"]


# ------------------------------------------------------------------------------ HDF5 (h5py)
def _h5_file(path: Path, index: int, steps: int = 4) -> Path:
    """An HDF5 file written by h5py with dimension scales (so xarray reads it): variables
    in every storage we reference or copy."""
    rng = np.random.default_rng(index)
    with h5py.File(path, "w") as f:
        t = f.create_dataset("time", data=np.arange(index * steps, (index + 1) * steps,
                                                    dtype="f8"))
        t.attrs["units"] = "hours since 2024-01-01"
        y = f.create_dataset("y", data=np.linspace(0, 5, 6, dtype="f4"))
        x = f.create_dataset("x", data=np.linspace(0, 7, 8, dtype="f4"))
        for name, d in (("time", t), ("y", y), ("x", x)):
            d.make_scale(name)
        shape = (steps, 6, 8)
        out = {
            # big-endian, deflate + shuffle + fletcher32
            "chunked": f.create_dataset(
                "chunked", data=rng.integers(-1000, 1000, shape).astype(">i4"),
                chunks=(2, 3, 4), compression="gzip", compression_opts=5, shuffle=True,
                fletcher32=True),
            "contiguous": f.create_dataset("contiguous", data=rng.random(shape).astype("f4")),
            "lzf": f.create_dataset("lzf", data=rng.random(shape), chunks=(2, 6, 8),
                                    compression="lzf"),
            "scaleoffset": f.create_dataset(
                "scaleoffset", data=rng.integers(0, 100, shape).astype("i2"),
                chunks=(2, 6, 8), scaleoffset=0),
            "label": f.create_dataset(
                "label", data=np.array([f"step {index * steps + i}" for i in range(steps)],
                                       dtype=object), dtype=h5py.string_dtype()),
        }
        sparse = f.create_dataset("sparse", shape=shape, chunks=(1, 6, 8), dtype="f4",
                                  fillvalue=-1.0)
        sparse[1] = rng.random((6, 8))  # the other chunks are never written
        out["sparse"] = sparse
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_layout(h5py.h5d.COMPACT)
        h5py.h5d.create(f.id, b"compact", h5py.h5t.NATIVE_INT16,
                        h5py.h5s.create_simple(shape), dcpl=dcpl)
        out["compact"] = f["compact"]
        out["compact"][...] = rng.integers(0, 9, shape).astype("i2")
        for name, d in out.items():
            d.attrs["long_name"] = name
            d.dims[0].attach_scale(t)
            if d.ndim == 3:
                d.dims[1].attach_scale(y)
                d.dims[2].attach_scale(x)
    return path


def test_hdf5_by_h5py_referenced_where_it_can_be_copied_where_not(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    files = [_h5_file(tmp_path / "src" / f"h{i}.h5", i) for i in range(3)]
    result = ingest(tmp_path / "repo", files, virtual=True)
    copied = result.copied
    assert "lzf" in copied["lzf"] and "32000" in copied["lzf"]
    assert "scale-offset" in copied["scaleoffset"]
    assert "compact storage" in copied["compact"]
    assert "only numbers" in copied["label"]
    assert not {"chunked", "contiguous", "sparse"} & set(copied)
    for name in ("lzf", "scaleoffset", "compact", "label"):
        assert name in result.message
    # chunked: 3 x (2 x 2 x 2); contiguous: 3 x 1; sparse: 3 x 1 written chunk
    assert result.refs == 3 * 8 + 3 + 3
    repo = _repo(tmp_path / "repo")
    got = _ds(repo)
    xr.testing.assert_identical(got, _mf(files, engine="h5netcdf"))
    assert (got["sparse"].values[0] == -1.0).all()  # unwritten chunks read as HDF5's fill
    assert _kinds(repo, "chunked", (6, 2, 2)) == {"virtual"}
    assert _kinds(repo, "contiguous", (3, 1, 1)) == {"virtual"}
    assert _kinds(repo, "lzf", (6, 1, 1)) == {"native"}  # the file's chunks, copied
    assert _kinds(repo, "sparse", (12, 1, 1)) == {"virtual", "uninitialized"}


# ------------------------------------------------------------------------------ NetCDF3
def _netcdf3(directory: Path, n: int) -> list[Path]:
    """NetCDF3 classic files (scipy) with a record dimension: record variables of sizes
    that need padding (int8 x 5, int16 x 3), and character data."""
    directory.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        ds = make_dataset(i, steps=3)
        ds["time"].encoding["dtype"] = "int32"
        ds["flag"] = (("time", "five"), np.arange(15, dtype="i1").reshape(3, 5) + i)
        ds["short"] = (("time", "three"), np.arange(9, dtype="i2").reshape(3, 3) * (i + 1))
        ds["station"] = ("time", np.array([b"ab", b"cd", b"ef"]))
        path = directory / f"nc3_{i:04d}.nc"
        ds.to_netcdf(path, engine="scipy", format="NETCDF3_CLASSIC", unlimited_dims=["time"])
        out.append(path)
    return out


def test_netcdf3_records_are_referenced(tmp_path: Path) -> None:
    files = _netcdf3(tmp_path / "src", 3)
    result = ingest(tmp_path / "repo", files, virtual=True)
    # 3 files x 3 records x 5 numeric record variables (temperature, precip, pressure, flag,
    # short); time is copied, station is character data
    assert result.refs == 3 * 3 * 5
    assert "character data" in result.copied["station"]
    repo = _repo(tmp_path / "repo")
    xr.testing.assert_identical(_ds(repo), _mf(files))
    assert _kinds(repo, "short", (9, 1)) == {"virtual"}


def test_xarrays_own_example_1(tmp_path: Path) -> None:
    data = Path(xr.__file__).parent / "tests" / "data" / "example_1.nc"
    src = tmp_path / "example_1.nc"
    if data.exists():
        shutil.copy(data, src)
    else:  # the same layout: NetCDF3 classic, record variables time (int16), temp, rh
        ds = xr.Dataset(
            {"temp": (("time", "level", "lat", "lon"),
                      np.arange(200, dtype="f4").reshape(1, 4, 5, 10)),
             "rh": (("time", "lat", "lon"), np.linspace(0, 1, 50, dtype="f4").reshape(1, 5, 10))},
            coords={"time": ("time", np.array([12], "i2"), {"units": "hours since 1996-1-1"}),
                    "level": ("level", np.array([1000, 850, 700, 500], "i4")),
                    "lat": ("lat", np.arange(20, 70, 10, dtype="i4")),
                    "lon": ("lon", np.arange(-160, 40, 20, dtype="i4"))},
            attrs={"source": "Fictional Model Output"})
        ds.to_netcdf(src, engine="scipy", format="NETCDF3_CLASSIC", unlimited_dims=["time"])
    result = ingest(tmp_path / "repo", src, virtual=True)
    assert result.refs == 2 and set(result.copied) == {"time", "level", "lat", "lon"}
    with xr.open_dataset(src) as want:
        xr.testing.assert_identical(_ds(_repo(tmp_path / "repo")), want.load())


# ------------------------------------------------------------------------------ trust
def test_a_modified_source_is_an_error_on_read_naming_the_file(tmp_path: Path) -> None:
    files = _netcdf4(tmp_path / "src", 2)
    ingest(tmp_path / "repo", files, virtual=True)
    repo = _repo(tmp_path / "repo")
    xr.testing.assert_identical(_ds(repo), _mf(files))
    # rewritten in place, same size: its refs no longer describe it
    data = files[1].read_bytes()
    files[1].write_bytes(data)
    os.utime(files[1], ns=(os.stat(files[1]).st_atime_ns,
                           os.stat(files[1]).st_mtime_ns + 10**9))
    with pytest.raises(icd.StorageError, match=re.escape(str(files[1])) + ".*changed since"):
        _ds(repo)
    # the untouched file still reads
    with xr.open_zarr(repo.readonly_session("main").store, consolidated=False) as ds:
        np.testing.assert_array_equal(ds["pressure"].isel(time=slice(0, 4)).values,
                                      _mf(files[:1])["pressure"].values)
    # a re-run says it changed since it landed (exit 2 from the CLI) ...
    with pytest.raises(icd.InvalidInputError, match=re.escape(files[1].name) + ".*changed"):
        ingest(tmp_path / "repo", files, virtual=True)
    # ... and re-indexes it in place when asked
    again = ingest(tmp_path / "repo", files, virtual=True, reingest_changed=True)
    assert again.reingested == [str(files[1])] and again.refs == 3 * 4
    xr.testing.assert_identical(_ds(repo), _mf(files))


def test_rerun_skips_what_landed_and_batches_append(tmp_path: Path) -> None:
    src = tmp_path / "src"
    files = _netcdf4(src, 2)
    first = ingest(tmp_path / "repo", [str(src / "*.nc")], virtual=True)
    repo = _repo(tmp_path / "repo")
    tip = repo.lookup_branch("main")
    again = ingest(tmp_path / "repo", [str(src / "*.nc")], virtual=True)
    assert again.nothing_new and repo.lookup_branch("main") == tip
    files += _netcdf4(src, 3, first=2)
    more = ingest(tmp_path / "repo", [str(src / "*.nc")], virtual=True, batch_size=2)
    assert more.skipped == first.ingested and more.ingested == [str(p) for p in files[2:]]
    assert len(more.snapshot_ids) == 2 and more.refs == 3 * 3 * 4
    assert [f.url for f in landed_inputs(repo)] == [str(p) for p in files]
    xr.testing.assert_identical(_ds(repo), _mf(files))


def test_schema_mismatch_names_the_file(tmp_path: Path) -> None:
    files = _netcdf4(tmp_path / "src", 2)
    ingest(tmp_path / "repo", files[:1], virtual=True)
    wide = make_dataset(1, nlon=9)
    wide.to_netcdf(files[1], engine="h5netcdf")
    with pytest.raises(icd.InvalidInputError, match=re.escape(files[1].name) + ".*lon=9"):
        ingest(tmp_path / "repo", files, virtual=True)


# ------------------------------------------------------------------------------ mixed
def test_native_append_to_a_virtual_dataset_and_files_that_do_not_match(
        tmp_path: Path) -> None:
    a = _netcdf4(tmp_path / "a", 2)
    ingest(tmp_path / "repo", a, virtual=True)
    # native data appended to the virtual arrays
    b = write_files(tmp_path / "b", 2, first=2)
    plain = ingest(tmp_path / "repo", b)
    assert not plain.virtual and plain.bytes_written > 0
    repo = _repo(tmp_path / "repo")
    assert _kinds(repo, "pressure", (8, 2, 1)) == {"virtual", "native"}
    xr.testing.assert_identical(_ds(repo), _mf([*a, *b]))
    # virtual again, with files chunked otherwise: copied into the arrays, and said so
    c = _netcdf4(tmp_path / "c", 1, first=4, chunks=(4, 6, 8))
    d = _netcdf4(tmp_path / "d", 1, first=5)
    result = ingest(tmp_path / "repo", [*c, *d], virtual=True)
    assert "chunks (4, 6, 8) in the file" in result.copied["pressure"]
    assert result.refs == 3 * 4  # only d is referenced
    # d's directory needed a container of its own: a repository object opened before does
    # not know it (configs belong to repository objects, as Icechunk's); a new one reads all
    with pytest.raises(icd.VirtualChunkAccessError, match="no virtual chunk container"):
        _ds(repo)
    repo = _repo(tmp_path / "repo")
    xr.testing.assert_identical(_ds(repo), _mf([*a, *b, *c, *d]))


def test_unaligned_files_are_copied_at_creation(tmp_path: Path) -> None:
    files = _netcdf4(tmp_path / "src", 3, steps=3, chunks=(2, 6, 8))
    result = ingest(tmp_path / "repo", files, virtual=True)
    assert "do not fill whole chunks of 2 steps" in result.copied["pressure"]
    assert result.refs == 0
    xr.testing.assert_identical(_ds(_repo(tmp_path / "repo")), _mf(files))


def test_files_of_one_step_with_a_scalar_time_are_referenced(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    files = []
    for i in range(3):
        path = tmp_path / "src" / f"step_{i}.nc"
        make_dataset(i, steps=1).isel(time=0).to_netcdf(path, engine="h5netcdf")
        files.append(path)
    result = ingest(tmp_path / "virtual", files, virtual=True)
    # a (lat, lon) chunk holds the bytes of a (1, lat, lon) one: 4 variables x 3 files
    assert result.refs == 4 * 3
    ingest(tmp_path / "copied", files)
    xr.testing.assert_identical(_ds(_repo(tmp_path / "virtual")),
                                _ds(_repo(tmp_path / "copied")))


def test_range_file_reads_the_metadata_not_the_data(tmp_path: Path) -> None:
    from icechunk_dist.ingest._virtual import RangeFile

    path = tmp_path / "big.nc"
    rng = np.random.default_rng(0)
    xr.Dataset({"v": (("time", "y", "x"), rng.random((8, 256, 256)))},
               coords={"time": np.arange(8)}).to_netcdf(
        path, engine="h5netcdf", encoding={"v": {"chunksizes": (1, 256, 256)}})
    data = path.read_bytes()
    fetched: list[tuple[int, int]] = []

    def read(start: int, end: int) -> bytes:
        fetched.append((start, end))
        return data[start:end]

    f = RangeFile(read, len(data), str(path))
    with h5py.File(f, "r") as h5:
        assert h5["v"].id.get_num_chunks() == 8
    with xr.open_dataset(RangeFile(read, len(data), str(path)), engine="h5netcdf") as ds:
        assert ds.sizes["time"] == 8
    assert sum(e - s for s, e in fetched) < len(data) // 10  # 4 MB of data never read
    # reads across block boundaries return the file's bytes
    g = RangeFile(read, len(data), str(path), block=1000, blocks=3)
    for start, n in [(0, 10), (999, 2), (12345, 5000), (len(data) - 7, 100), (500, 3500)]:
        g.seek(start)
        assert g.read(n) == data[start:start + n]


# ------------------------------------------------------------------------------ S3
@pytest.mark.s3
def test_sources_and_repository_on_s3(tmp_path: Path, s3_server: str, s3_bucket: str
                                      ) -> None:
    import boto3

    files = _netcdf4(tmp_path / "src", 2)
    s3 = boto3.client("s3", endpoint_url=s3_server, region_name=S3_REGION,
                      aws_access_key_id=S3_ACCESS_KEY_ID,
                      aws_secret_access_key=S3_SECRET_ACCESS_KEY)
    for p in files:
        s3.upload_file(str(p), s3_bucket, f"raw/{p.name}")
    opts = {"access_key_id": S3_ACCESS_KEY_ID, "secret_access_key": S3_SECRET_ACCESS_KEY}
    kw: dict[str, Any] = dict(endpoint_url=s3_server, allow_http=True, region=S3_REGION,
                              storage_options=opts, virtual=True)
    url = f"s3://{s3_bucket}/repos/virtual"
    result = ingest(url, [f"s3://{s3_bucket}/raw/*.nc"], **kw)
    assert result.refs == 2 * 3 * 4
    storage = icd.s3_storage(bucket=s3_bucket, prefix="repos/virtual", region=S3_REGION,
                             endpoint_url=s3_server, allow_http=True,
                             access_key_id=S3_ACCESS_KEY_ID,
                             secret_access_key=S3_SECRET_ACCESS_KEY)
    assert [c.url_prefix for c in icd.Repository.open(storage).config.containers()] == [
        f"s3://{s3_bucket}/"]  # the ingestion added the container its refs need
    repo = _authorized(storage, icd.s3_static_credentials(
        access_key_id=S3_ACCESS_KEY_ID, secret_access_key=S3_SECRET_ACCESS_KEY))
    assert set(repo.readonly_session("main").all_virtual_chunk_locations()) == {
        f"s3://{s3_bucket}/raw/{p.name}" for p in files}
    xr.testing.assert_identical(_ds(repo), _mf(files))
    assert ingest(url, [f"s3://{s3_bucket}/raw/*.nc"], **kw).nothing_new
    nc3 = _netcdf3(tmp_path / "nc3", 2)
    for p in nc3:
        s3.upload_file(str(p), s3_bucket, f"nc3/{p.name}")
    classic = ingest(url, [f"s3://{s3_bucket}/nc3/"], group="classic", **kw)
    assert classic.refs == 2 * 3 * 5
    xr.testing.assert_identical(_ds(repo, "classic"), _mf(nc3))
    # the object is replaced by other content: reads refuse it, naming it
    s3.put_object(Bucket=s3_bucket, Key=f"raw/{files[0].name}", Body=files[1].read_bytes())
    s3.close()
    with pytest.raises(icd.StorageError, match=re.escape(files[0].name) + ".*changed since"):
        _ds(repo)


# ------------------------------------------------------------------------------ cluster, CLI
@pytest.mark.dask
def test_on_a_local_cluster(tmp_path: Path, dask_client: Any) -> None:
    files = _netcdf4(tmp_path / "src", 4)
    result = ingest(tmp_path / "repo", files, virtual=True, client=dask_client)
    assert result.refs == 4 * 3 * 4
    xr.testing.assert_identical(_ds(_repo(tmp_path / "repo")), _mf(files))


def test_cli_virtual(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    files = _netcdf4(tmp_path / "src", 2)
    repo = str(tmp_path / "repo")
    assert main(["ingest", repo, str(tmp_path / "src"), "--virtual", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "24 virtual chunk ref(s)" in out and "copied instead of referenced" in out
    xr.testing.assert_identical(_ds(_repo(tmp_path / "repo")), _mf(files))
    assert main(["ingest", repo, str(tmp_path / "src"), "--virtual", "--unpack"]) == 2
    assert "cannot be combined with --virtual" in capsys.readouterr().err
    zarr_src = tmp_path / "part.zarr"
    make_dataset(9).to_zarr(zarr_src, zarr_format=3)
    assert main(["ingest", repo, str(zarr_src), "--virtual", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "part.zarr" in err and "--virtual indexes NetCDF3 and NetCDF4/HDF5" in err
