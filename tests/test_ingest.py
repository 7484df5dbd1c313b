"""``icechunk_dist.ingest``: real NetCDF files (generated here) ingested on a real LocalCluster
and in process, locally and on the moto S3 server, compared with ``xr.open_mfdataset``."""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

xr = pytest.importorskip("xarray")
pytest.importorskip("h5netcdf")
pytest.importorskip("scipy")

from conftest import S3_ACCESS_KEY_ID, S3_REGION, S3_SECRET_ACCESS_KEY  # noqa: E402
from netcdf_data import make_dataset, write_files  # noqa: E402

import icechunk_dist as icd  # noqa: E402
from icechunk_dist.ingest import (  # noqa: E402
    METADATA_KEY,
    IngestConfig,
    expand_sources,
    ingest,
    load_config,
)


def _mf(files: list[Path] | list[str], **kw: Any) -> xr.Dataset:
    with xr.open_mfdataset(sorted(files), combine="nested", concat_dim="time",
                           data_vars="minimal", coords="minimal", compat="override",
                           join="exact", **kw) as ds:
        return ds.load()


def _repo(path: Path) -> icd.Repository:
    return icd.Repository.open(icd.local_filesystem_storage(path))


def _ds(repo: icd.Repository, group: str | None = None, branch: str = "main") -> xr.Dataset:
    store = repo.readonly_session(branch).store
    with xr.open_zarr(store, group=group, consolidated=False) as ds:
        return ds.load()


def _history(repo: icd.Repository, branch: str = "main") -> list[icd.SnapshotInfo]:
    return list(repo.ancestry(branch=branch))


@pytest.mark.dask
def test_ingest_on_a_local_cluster_equals_open_mfdataset(tmp_path: Path,
                                                         dask_client: Any) -> None:
    files = write_files(tmp_path / "src", 6)
    n3 = write_files(tmp_path / "src", 2, first=6, fmt="NETCDF3_64BIT", prefix="nc3")
    shuffled = [str(p) for p in files + n3]
    random.Random(3).shuffle(shuffled)  # the order given does not matter: sorted by time
    result = ingest(str(tmp_path / "repo"), shuffled, group="met/surface",
                    client=dask_client, progress=False, message="first ingest")
    assert len(result.snapshot_ids) == 1 and not result.skipped
    assert result.ingested == [str(p) for p in files + n3]
    assert result.concat_dim == "time"
    repo = _repo(tmp_path / "repo")
    got = _ds(repo, "met/surface")
    xr.testing.assert_identical(got, _mf(files + n3))
    # encodings were kept: packed int16, fill values, CF time units
    store = repo.readonly_session("main").store
    with xr.open_zarr(store, group="met/surface", consolidated=False) as lazy:
        assert lazy["precip"].encoding["dtype"] == np.dtype("int16")
        assert lazy["precip"].encoding["scale_factor"] == 0.01
        assert lazy["temperature"].encoding["_FillValue"] == -9999.0
        assert lazy["time"].encoding["units"] == "hours since 2000-01-01"
        assert lazy.attrs["title"] == "icechunk_dist test data"
    assert np.isnan(got["temperature"].values[0, 0, 0])
    head = _history(repo)[0]
    assert head.message == "first ingest" and head.id == result.snapshot_ids[0]
    rec = head.metadata[METADATA_KEY]
    assert rec["group"] == "met/surface" and rec["concat_dim"] == "time"
    assert [f["url"] for f in rec["files"]] == result.ingested
    assert all(f["size"] == os.path.getsize(f["url"]) and "mtime" in f for f in rec["files"])


@pytest.mark.dask
def test_rerun_skips_and_a_larger_list_appends_only_new(tmp_path: Path,
                                                        dask_client: Any) -> None:
    src, repo_path = tmp_path / "src", str(tmp_path / "repo")
    files = write_files(src, 4)
    ingest(repo_path, [str(src / "*.nc")], client=dask_client, progress=False)
    repo = _repo(tmp_path / "repo")
    tip = repo.lookup_branch("main")

    again = ingest(repo_path, [str(src / "*.nc")], client=dask_client, progress=False)
    assert again.nothing_new and again.snapshot_ids == [] and len(again.skipped) == 4
    assert "nothing new" in again.message
    assert repo.lookup_branch("main") == tip

    more = files + write_files(src, 3, first=4)
    result = ingest(repo_path, [str(src)], client=dask_client, progress=False)
    assert result.ingested == [str(p) for p in more[4:]] and len(result.skipped) == 4
    assert len(_history(repo)) == 3  # init, first run, the append
    xr.testing.assert_identical(_ds(repo), _mf(more))


def test_batches_in_process_each_their_own_commit(tmp_path: Path) -> None:
    files = write_files(tmp_path / "src", 5, steps=3)
    result = ingest(str(tmp_path / "repo"), [str(tmp_path / "src")], batch_size=2,
                    progress=False)  # no client: threads in this process
    assert len(result.snapshot_ids) == 3
    repo = _repo(tmp_path / "repo")
    history = _history(repo)
    assert [h.id for h in history[:3]] == result.snapshot_ids[::-1]
    batches = [[f["url"] for f in h.metadata[METADATA_KEY]["files"]] for h in history[2::-1]]
    assert batches == [[str(p) for p in files[i:i + 2]] for i in (0, 2, 4)]
    xr.testing.assert_identical(_ds(repo), _mf(files))
    # every batch commit holds a consistent prefix of the dataset
    first = repo.readonly_session(snapshot_id=result.snapshot_ids[0]).store
    with xr.open_zarr(first, consolidated=False) as ds:
        xr.testing.assert_identical(ds.load(), _mf(files[:2]))


def test_unaligned_append_shares_no_chunk(tmp_path: Path) -> None:
    # the first run chunks time by 4; files of 3 steps then start mid-chunk
    a = write_files(tmp_path / "a", 2, steps=4)
    b = [tmp_path / "b" / f"x{i}.nc" for i in range(3)]
    b[0].parent.mkdir()
    for i, p in enumerate(b):
        ds = make_dataset(0, steps=3, start=f"2024-01-01T{8 + 3 * i:02d}")
        ds.to_netcdf(p, engine="h5netcdf")
    repo_path = str(tmp_path / "repo")
    ingest(repo_path, [str(p) for p in a], progress=False)
    ingest(repo_path, [str(p) for p in b], progress=False)
    xr.testing.assert_identical(_ds(_repo(tmp_path / "repo")), _mf([*a, *b]))


@pytest.mark.s3
@pytest.mark.dask
def test_sources_and_repository_on_s3(tmp_path: Path, s3_server: str, s3_bucket: str,
                                      dask_client: Any) -> None:
    import boto3

    files = write_files(tmp_path / "src", 5)
    s3 = boto3.client("s3", endpoint_url=s3_server, region_name=S3_REGION,
                      aws_access_key_id=S3_ACCESS_KEY_ID,
                      aws_secret_access_key=S3_SECRET_ACCESS_KEY)
    for p in files:
        s3.upload_file(str(p), s3_bucket, f"raw/2024/{p.name}")
    s3.put_object(Bucket=s3_bucket, Key="raw/2024/README.txt", Body=b"not data")
    s3.close()
    opts = {"access_key_id": S3_ACCESS_KEY_ID, "secret_access_key": S3_SECRET_ACCESS_KEY}
    kw: dict[str, Any] = dict(endpoint_url=s3_server, allow_http=True, region=S3_REGION,
                              storage_options=opts, client=dask_client, progress=False)
    url = f"s3://{s3_bucket}/repos/era"
    first = ingest(url, [f"s3://{s3_bucket}/raw/2024/data_000[0-2].nc"], **kw)
    assert first.ingested == [f"s3://{s3_bucket}/raw/2024/{p.name}" for p in files[:3]]
    result = ingest(url, [f"s3://{s3_bucket}/raw/2024/*.nc"], **kw)
    assert len(result.skipped) == 3 and len(result.ingested) == 2
    storage = icd.s3_storage(bucket=s3_bucket, prefix="repos/era", region=S3_REGION,
                             endpoint_url=s3_server, allow_http=True,
                             access_key_id=S3_ACCESS_KEY_ID,
                             secret_access_key=S3_SECRET_ACCESS_KEY)
    repo = icd.Repository.open(storage)
    xr.testing.assert_identical(_ds(repo), _mf(files))
    rec = _history(repo)[0].metadata[METADATA_KEY]
    assert all(f.get("etag") and f["size"] > 0 for f in rec["files"])
    # an S3 "directory" stands for the objects in it: the .nc files landed, README.txt is
    # not data
    with pytest.raises(icd.InvalidInputError, match=r"README\.txt: not a NetCDF"):
        ingest(url, [f"s3://{s3_bucket}/raw/2024/"], **kw)


def test_xarrays_own_example_file(tmp_path: Path) -> None:
    data = Path(xr.__file__).parent / "tests" / "data" / "example_1.nc"
    if not data.exists():
        pytest.skip("this xarray wheel does not ship xarray/tests/data/example_1.nc")
    src = tmp_path / "example_1.nc"
    shutil.copy(data, src)
    result = ingest(tmp_path / "repo", src, progress=False)  # os.PathLike works too
    assert result.concat_dim == "time" and len(result.snapshot_ids) == 1
    with xr.open_dataset(src) as want:
        xr.testing.assert_identical(_ds(_repo(tmp_path / "repo")), want.load())


def test_zarr_stores_v2_and_v3_as_sources(tmp_path: Path) -> None:
    parts = [make_dataset(i) for i in range(3)]
    paths = []
    for i, (ds, fmt) in enumerate(zip(parts, (2, 3, 3), strict=True)):
        p = tmp_path / f"part{i}.zarr"
        ds.to_zarr(p, zarr_format=fmt, consolidated=fmt == 2)
        paths.append(p)
    result = ingest(str(tmp_path / "repo"), [str(p) for p in paths], progress=False)
    assert len(result.ingested) == 3
    opened = [xr.open_zarr(p, consolidated=fmt == 2).load()
              for p, fmt in zip(paths, (2, 3, 3), strict=True)]
    want = xr.concat(opened, dim="time", data_vars="minimal", coords="minimal",
                     compat="override", join="exact", combine_attrs="override")
    xr.testing.assert_identical(_ds(_repo(tmp_path / "repo")), want)


def test_dry_run_writes_nothing(tmp_path: Path) -> None:
    write_files(tmp_path / "src", 3)
    result = ingest(str(tmp_path / "repo"), [str(tmp_path / "src")], dry_run=True,
                    progress=False)
    assert result.dry_run and len(result.ingested) == 3 and not result.snapshot_ids
    assert not icd.Repository.exists(icd.local_filesystem_storage(tmp_path / "repo"))


# ------------------------------------------------------------------------------ bad input
def _bad_cases(tmp_path: Path) -> dict[str, tuple[list[str], str]]:
    src = tmp_path / "more"
    src.mkdir()
    corrupt = src / "corrupt.nc"
    corrupt.write_bytes(b"\x89HDF\r\n\x1a\n" + os.urandom(500))
    garbage = src / "garbage.nc"
    garbage.write_bytes(b"hello, not a netcdf file\n")
    extra = make_dataset(10)
    extra["humidity"] = extra["temperature"] * 0
    extra.to_netcdf(src / "extra.nc", engine="h5netcdf")
    wide = make_dataset(11, nlon=9)
    wide.to_netcdf(src / "wide.nc", engine="h5netcdf")
    dtype = make_dataset(12)
    dtype["pressure"] = dtype["pressure"].astype("float32")
    dtype.to_netcdf(src / "dtype.nc", engine="h5netcdf")
    overlap = make_dataset(1)
    overlap.to_netcdf(src / "overlap.nc", engine="h5netcdf")
    return {
        "missing": ([str(src / "nope.nc")], "nope.nc"),
        "empty glob": ([str(src / "*.grib")], "matches no files"),
        "corrupt": ([str(corrupt)], "corrupt.nc"),
        "garbage": ([str(garbage)], "garbage.nc"),
        "extra variable": ([str(src / "extra.nc")], "humidity"),
        "other shape": ([str(src / "wide.nc")], "lon=9"),
        "other dtype": ([str(src / "dtype.nc")], "float32"),
        "overlap": ([str(src / "overlap.nc")], "overlap.nc"),
    }


def test_bad_input_names_the_file_and_leaves_the_branch_unchanged(tmp_path: Path) -> None:
    files = write_files(tmp_path / "src", 2)
    repo_path = str(tmp_path / "repo")
    ingest(repo_path, [str(p) for p in files], progress=False)
    repo = _repo(tmp_path / "repo")
    tip = repo.lookup_branch("main")
    for name, (sources, needle) in _bad_cases(tmp_path).items():
        # good files next to the bad one: nothing of them lands either
        more = [str(p) for p in write_files(tmp_path / "next", 1, first=2)]
        with pytest.raises(icd.InvalidInputError) as info:
            ingest(repo_path, [*more, *sources], progress=False)
        msg = str(info.value)
        assert needle in msg, (name, msg)
        assert "\n" not in msg, (name, msg)
        assert repo.lookup_branch("main") == tip, name
    xr.testing.assert_identical(_ds(repo), _mf(files))


def test_mismatch_between_new_files_before_anything_is_written(tmp_path: Path) -> None:
    good = write_files(tmp_path / "src", 2)
    wide = tmp_path / "src" / "data_0009.nc"
    make_dataset(9, nlat=7).to_netcdf(wide, engine="h5netcdf")
    with pytest.raises(icd.InvalidInputError, match=r"data_0009\.nc.*lat=7"):
        ingest(str(tmp_path / "repo"), [str(tmp_path / "src")], progress=False)
    assert not icd.Repository.exists(icd.local_filesystem_storage(tmp_path / "repo"))
    assert good


def test_grib_needs_cfgrib(tmp_path: Path) -> None:
    grib = Path(xr.__file__).parent / "tests" / "data" / "example.grib"
    if not grib.exists():
        pytest.skip("this xarray wheel ships no example.grib")
    try:
        import cfgrib  # noqa: F401
    except ImportError:
        with pytest.raises(icd.InvalidInputError, match="cfgrib"):
            ingest(str(tmp_path / "repo"), [str(grib)], progress=False)
    else:
        result = ingest(str(tmp_path / "repo"), [str(grib)], progress=False)
        assert result.snapshot_ids


# ------------------------------------------------------------------------------ config
def test_config_json_yaml_and_unknown_keys(tmp_path: Path) -> None:
    doc = {"repo": "s3://b/p", "sources": ["s3://raw/*.nc"], "concat_dim": "time",
           "group": "g", "batch_size": 10, "endpoint_url": "http://127.0.0.1:9000",
           "allow_http": True}
    p = tmp_path / "c.json"
    p.write_text(json.dumps(doc))
    cfg = load_config(p)
    assert cfg == IngestConfig(**doc)  # type: ignore[arg-type]
    assert cfg.branch == "main" and cfg.message is None
    y = tmp_path / "c.yml"
    y.write_text("repo: /data/repo\nsources:\n  - /data/in/*.nc\nbatch_size: 3\n")
    assert load_config(y).sources == ["/data/in/*.nc"]
    p.write_text(json.dumps({**doc, "sourcez": []}))
    with pytest.raises(icd.InvalidInputError, match=r"c\.json.*sourcez"):
        load_config(p)
    p.write_text(json.dumps({"repo": "x"}))
    with pytest.raises(icd.InvalidInputError, match="sources"):
        load_config(p)
    p.write_text(json.dumps({**doc, "batch_size": 0}))
    with pytest.raises(icd.InvalidInputError, match="batch_size"):
        load_config(p)
    with pytest.raises(icd.InvalidInputError, match=r"nothing\.json"):
        load_config(tmp_path / "nothing.json")


def test_expand_sources(tmp_path: Path) -> None:
    files = write_files(tmp_path / "d", 3)
    (tmp_path / "d" / ".hidden").write_text("x")
    by_dir = expand_sources([str(tmp_path / "d")])
    by_glob = expand_sources([str(tmp_path / "d" / "*.nc"), files[0].as_uri()])
    assert [s.url for s in by_dir] == [s.url for s in by_glob] == [str(p) for p in files]
    assert by_dir[0].size == files[0].stat().st_size
    for bad in ([], [str(tmp_path / "none" / "*.nc")], ["ftp://x/y"]):
        with pytest.raises(icd.InvalidInputError):
            expand_sources(bad)



def test_a_landed_file_that_changed_is_an_error(tmp_path: Path) -> None:
    files = write_files(tmp_path / "src", 2)
    repo_path = str(tmp_path / "repo")
    ingest(repo_path, [str(tmp_path / "src")], progress=False)
    tip = _repo(tmp_path / "repo").lookup_branch("main")
    before = files[1].stat().st_size
    make_dataset(1, steps=40).to_netcdf(files[1], engine="h5netcdf")  # rewritten in place
    assert files[1].stat().st_size != before
    with pytest.raises(icd.InvalidInputError, match=r"data_0001\.nc: changed since"):
        ingest(repo_path, [str(tmp_path / "src")], progress=False)
    assert _repo(tmp_path / "repo").lookup_branch("main") == tip


def test_files_of_one_step_with_a_scalar_time(tmp_path: Path) -> None:
    paths = []
    for i in range(3):
        ds = make_dataset(i, steps=1).isel(time=0)  # time is a scalar coordinate
        ds = ds.drop_vars("elevation")
        p = tmp_path / f"step{i}.nc"
        ds.to_netcdf(p, engine="h5netcdf")
        paths.append(p)
    result = ingest(str(tmp_path / "repo"), [str(p) for p in paths], progress=False)
    assert result.concat_dim == "time"
    got = _ds(_repo(tmp_path / "repo"))
    assert got.sizes["time"] == 3 and got["precip"].dims == ("time", "lat", "lon")
    xr.testing.assert_identical(got, _mf(paths))


def test_a_racing_ingestion_is_replanned_not_duplicated(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import icechunk_dist.ingest._runner as mod

    files = write_files(tmp_path / "src", 4)
    repo_path = str(tmp_path / "repo")
    ingest(repo_path, [str(files[0])], progress=False)
    original = mod.Runner.write_and_merge
    raced: list[bool] = []

    def racing(self: Any, *args: Any, **kwargs: Any) -> Any:
        out = original(self, *args, **kwargs)
        if not raced:  # another job lands file 1 while this one writes files 1-3
            raced.append(True)
            monkeypatch.setattr(mod.Runner, "write_and_merge", original)
            ingest(repo_path, [str(files[1])], progress=False)
            monkeypatch.setattr(mod.Runner, "write_and_merge", racing)
        return out

    monkeypatch.setattr(mod.Runner, "write_and_merge", racing)
    result = ingest(repo_path, [str(p) for p in files], progress=False)
    assert raced and len(result.snapshot_ids) == 1
    assert result.ingested == [str(p) for p in files[2:]]
    assert set(result.skipped) == {str(files[0]), str(files[1])}
    repo = _repo(tmp_path / "repo")
    xr.testing.assert_identical(_ds(repo), _mf(files))
    urls = [f["url"] for h in repo.ancestry(branch="main") if METADATA_KEY in h.metadata
            for f in h.metadata[METADATA_KEY]["files"]]
    assert sorted(urls) == [str(p) for p in files]


def test_a_group_ingested_before_the_record_existed_reads_its_commits(tmp_path: Path) -> None:
    # repositories ingested by earlier versions list their inputs only in commit metadata:
    # drop the record in the tree to get one, then re-run and append
    from icechunk_dist import _sync
    from icechunk_dist.ingest import landed_inputs

    files = write_files(tmp_path / "src", 3)
    repo_path = str(tmp_path / "repo")
    ingest(repo_path, [str(p) for p in files[:2]])
    repo = _repo(tmp_path / "repo")
    session = repo.writable_session("main")
    _sync.run(session.store.delete(".icechunk_dist/ingest.json"))
    session.commit("drop the record")
    again = ingest(repo_path, [str(tmp_path / "src")])
    assert again.skipped == [str(p) for p in files[:2]]
    assert again.ingested == [str(files[2])]
    assert [f.url for f in landed_inputs(repo)] == [str(p) for p in files]
    xr.testing.assert_identical(_ds(repo), _mf(files))
