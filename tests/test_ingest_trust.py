"""Ingestion a nightly job can trust (issue 21, points 4-9 and 11): real NetCDF files, the
real CLI (``icechunk_dist.cli.main`` in process, a subprocess where a cluster is needed)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

xr = pytest.importorskip("xarray")
pytest.importorskip("h5netcdf")

from conftest import S3_ACCESS_KEY_ID, S3_REGION, S3_SECRET_ACCESS_KEY  # noqa: E402
from netcdf_data import make_dataset, write_files  # noqa: E402

import icechunk_dist as icd  # noqa: E402
from icechunk_dist.cli import main  # noqa: E402
from icechunk_dist.ingest import METADATA_KEY, ingest, landed_inputs  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SMALL = {"steps": 2, "nlat": 3, "nlon": 4}


def _repo(path: Path | str) -> icd.Repository:
    return icd.Repository.open(icd.local_filesystem_storage(path))


def _ds(repo: icd.Repository, group: str | None = None) -> xr.Dataset:
    with xr.open_zarr(repo.readonly_session("main").store, group=group,
                      consolidated=False) as ds:
        return ds.load()


def _mf(files: list[Path]) -> xr.Dataset:
    with xr.open_mfdataset(sorted(files), combine="nested", concat_dim="time",
                           data_vars="minimal", coords="minimal", compat="override",
                           join="exact") as ds:
        return ds.load()


def _ingest(*args: str) -> int:
    return main(["ingest", *args])


# ------------------------------------------------------------------ 4. the record of inputs
def test_landed_record_survives_expire_gc_amend_and_rolls_back_with_reset(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src, repo = tmp_path / "src", str(tmp_path / "repo")
    files = write_files(src, 3, **SMALL)  # type: ignore[arg-type]
    assert _ingest(repo, str(files[0]), "--no-progress") == 0
    assert _ingest(repo, str(files[1]), "--no-progress") == 0
    r = _repo(repo)
    now = datetime.now(UTC).isoformat()
    assert main(["expire", repo, "--older-than", now]) == 0
    assert main(["gc", repo, "--older-than", now]) == 0
    history = list(r.ancestry(branch="main"))
    assert len(history) == 2  # the commit that landed files[0] is gone from history
    assert [f["url"] for f in history[0].metadata[METADATA_KEY]["files"]] == [str(files[1])]

    session = r.writable_session("main")  # amend the tip: its metadata lists no inputs
    session.store  # noqa: B018
    import zarr

    zarr.open_group(session.store, mode="r+").attrs["note"] = "amended"
    amended = session.amend("amend: a note")
    assert METADATA_KEY not in r.lookup_snapshot(amended).metadata
    capsys.readouterr()

    # the very same command again: nothing new, nothing appended
    assert _ingest(repo, str(files[0]), str(files[1])) == 0
    assert "nothing new to ingest" in capsys.readouterr().out
    assert r.lookup_branch("main") == amended
    assert [f.url for f in landed_inputs(r)] == [str(files[0]), str(files[1])]

    # the directory: only the new file lands
    assert _ingest(repo, str(src)) == 0
    assert "ingested 1 file(s)" in capsys.readouterr().out
    xr.testing.assert_identical(_ds(r).drop_attrs(), _mf(files).drop_attrs())

    # reset_branch to before it: the record forgets it, and it lands again, once
    r.reset_branch("main", amended)
    assert [f.url for f in landed_inputs(r)] == [str(files[0]), str(files[1])]
    assert _ingest(repo, str(src)) == 0
    out = capsys.readouterr().out
    assert "ingested 1 file(s)" in out and "skipped 2 already landed" in out
    got = _ds(r)
    assert got.attrs["note"] == "amended"
    xr.testing.assert_identical(got.drop_attrs(), _mf(files).drop_attrs())
    assert [(f.url, f.start, f.steps) for f in landed_inputs(r)] == [
        (str(p), 2 * i, 2) for i, p in enumerate(files)]


# ------------------------------------------------------------------ 5. group spellings
def test_group_spellings_are_one_group_and_dotdot_is_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src, repo = tmp_path / "src", str(tmp_path / "repo")
    files = write_files(src, 2, **SMALL)  # type: ignore[arg-type]
    assert _ingest(repo, str(src), "--group", "a/b", "--no-progress") == 0
    tip = _repo(repo).lookup_branch("main")
    for spelling in ("/a/b", "a/b/", "/a/b/"):
        assert _ingest(repo, str(src), "--group", spelling) == 0, capsys.readouterr().err
        assert "nothing new to ingest" in capsys.readouterr().out
    assert _repo(repo).lookup_branch("main") == tip
    xr.testing.assert_identical(_ds(_repo(repo), "a/b"), _mf(files))

    root = str(tmp_path / "root")
    assert _ingest(root, str(src), "--group", "/", "--no-progress") == 0
    assert _ingest(root, str(src)) == 0
    assert "nothing new to ingest" in capsys.readouterr().out
    xr.testing.assert_identical(_ds(_repo(root)), _mf(files))

    for bad in ("../x", "a/../x", "a//b"):
        target = tmp_path / "refused"
        assert _ingest(str(target), str(src), "--group", bad) == 2
        err = capsys.readouterr().err
        assert "not a group path" in err and "Traceback" not in err
        assert not target.exists()


# ------------------------------------------------------------------ 6. flags
def test_no_create_refuses_a_missing_repository_for_every_source_kind(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "src"
    files = write_files(src, 2, **SMALL)  # type: ignore[arg-type]
    store = tmp_path / "part.zarr"
    make_dataset(5, **SMALL).to_zarr(store, zarr_format=3)  # type: ignore[arg-type]
    kinds = {"file": [str(files[0])], "directory": [str(src)], "glob": [str(src / "*.nc")],
             "file URL": [files[0].as_uri()], "zarr store": [str(store)],
             "synthetic": ["--synthetic", "4,4", "--chunks", "2,2"]}
    for kind, sources in kinds.items():
        target = tmp_path / "typo" / "repo"
        assert _ingest(str(target), *sources, "--no-create") == 2, kind
        err = capsys.readouterr().err
        assert "no repository at" in err and "--no-create" in err, (kind, err)
        assert not (tmp_path / "typo").exists(), kind
    # an existing repository is used
    repo = str(tmp_path / "repo")
    assert main(["init", repo]) == 0
    assert _ingest(repo, str(src), "--no-create", "--no-progress") == 0
    xr.testing.assert_identical(_ds(_repo(repo)), _mf(files))


def test_chunks_by_dimension_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src, repo = tmp_path / "src", str(tmp_path / "repo")
    files = write_files(src, 3, steps=4, nlat=6, nlon=8)
    assert _ingest(repo, str(files[0]), str(files[1]), "--chunks", "time=8,lat=-1,lon=4",
                   "--no-progress") == 0
    import zarr

    g = zarr.open_group(_repo(repo).readonly_session("main").store, mode="r")
    assert g["temperature"].chunks == (8, 6, 4)
    assert g["elevation"].chunks == (6, 4) and g["time"].chunks == (8,)
    # the same chunks again are fine; other chunks on an existing group are refused
    assert _ingest(repo, str(src), "--chunks", "time=8,lon=4", "--no-progress") == 0
    xr.testing.assert_identical(_ds(_repo(repo)), _mf(files))
    bad = {"time=4": "differs from the repository", "depth=2": "no dimension 'depth'",
           "time=0": "DIM=N", "time=x": "DIM=N", "10,10": "DIM=N", "lat=-2": "DIM=N",
           "time=-1": "concat dimension"}
    for value, needle in bad.items():
        more = write_files(tmp_path / "more", 1, first=3, steps=4, nlat=6, nlon=8)
        assert _ingest(repo, str(more[0]), "--chunks", value) == 2, value
        assert needle in capsys.readouterr().err, value
    # from Python, on a new repository
    result = ingest(tmp_path / "py", [str(p) for p in files], chunks={"time": 6, "lat": 3})
    g = zarr.open_group(_repo(tmp_path / "py").readonly_session("main").store, mode="r")
    assert g["precip"].chunks == (6, 3, 8) and len(result.snapshot_ids) == 1
    xr.testing.assert_identical(_ds(_repo(tmp_path / "py")), _mf(files))


def test_abbreviated_options_are_refused_with_a_suggestion(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src, repo = tmp_path / "src", tmp_path / "repo"
    write_files(src, 1, **SMALL)  # type: ignore[arg-type]
    for args, suggestion in ((["--worker", "2"], "--workers"), (["--dry"], "--dry-run"),
                             (["--batch", "2"], "--batch-size"), (["--grop", "x"], "--group")):
        with pytest.raises(SystemExit) as info:
            _ingest(str(repo), str(src), *args)
        assert info.value.code == 2, args
        err = capsys.readouterr().err
        assert err.startswith("usage: icechunk-dist ingest"), err
        assert f"did you mean {suggestion}" in err, err
        assert not repo.exists()
    with pytest.raises(SystemExit):
        main(["log", str(repo), "--bran", "main"])
    assert "usage: icechunk-dist log" in capsys.readouterr().err


# ------------------------------------------------------------------ 7. per-file packing
def _packed_files(directory: Path) -> list[Path]:
    directory.mkdir()
    out = []
    for i, packing in enumerate([(0.01, 0.0), (0.02, 5.0), (0.005, -1.0)]):
        ds = make_dataset(i, **SMALL, packing=packing)  # type: ignore[arg-type]
        # a packing only float64 can resolve: steps of 0.001 at 1e5
        ds["level"] = 1.0e5 + (ds["pressure"] - 1.0e5) * 0.03
        ds["level"].encoding = {"dtype": "int16", "scale_factor": 0.001,
                                "add_offset": 1.0e5 + i, "_FillValue": np.int16(-32768)}
        p = directory / f"day{i}.nc"
        ds.to_netcdf(p, engine="h5netcdf")
        out.append(p)
    return out


def test_unpack_lands_files_packed_differently_as_floats(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    files = _packed_files(tmp_path / "src")
    repo = str(tmp_path / "repo")
    assert _ingest(repo, str(tmp_path / "src")) == 2
    err = capsys.readouterr().err
    assert "scale_factor" in err and "--unpack" in err
    assert _ingest(repo, str(tmp_path / "src"), "--unpack", "--no-progress") == 0
    got, want = _ds(_repo(repo)), _mf(files)
    assert got["precip"].dtype == np.float32 and got["level"].dtype == np.float64
    np.testing.assert_array_equal(got["precip"].values, want["precip"].values.astype("f4"))
    np.testing.assert_array_equal(got["level"].values, want["level"].values)
    assert got["precip"].attrs == {"units": "mm"}  # CF attributes kept, packing gone
    with xr.open_zarr(_repo(repo).readonly_session("main").store, consolidated=False) as lazy:
        assert "scale_factor" not in lazy["precip"].encoding
        assert lazy["temperature"].encoding["_FillValue"] == -9999.0  # others unchanged
    xr.testing.assert_identical(got.drop_vars(["precip", "level"]),
                                want.drop_vars(["precip", "level"]))
    # a later file, packed differently again, appends (and, without --unpack, names it)
    more = make_dataset(3, **SMALL, packing=(0.03, 2.0))  # type: ignore[arg-type]
    more["level"] = 1.0e5 + (more["pressure"] - 1.0e5) * 0.03
    more["level"].encoding = {"dtype": "int16", "scale_factor": 0.001, "add_offset": 1e5,
                              "_FillValue": np.int16(-32768)}
    more.to_netcdf(tmp_path / "src" / "day3.nc", engine="h5netcdf")
    assert _ingest(repo, str(tmp_path / "src")) == 2
    assert "day3.nc" in capsys.readouterr().err
    assert _ingest(repo, str(tmp_path / "src"), "--unpack", "--no-progress") == 0
    assert _ds(_repo(repo)).sizes["time"] == 8


# ------------------------------------------------------------------ 8. changed files
def _replace_same_size(path: Path, index: int, *, keep_mtime: bool = False) -> None:
    st = path.stat()
    ds = make_dataset(index, **SMALL)  # type: ignore[arg-type]
    ds["temperature"] = ds["temperature"] + 1  # other values, same layout and size
    ds["temperature"].encoding = {"dtype": "float32", "_FillValue": np.float32(-9999.0)}
    ds.to_netcdf(path, engine="h5netcdf")
    assert path.stat().st_size == st.st_size
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns if keep_mtime
                       else st.st_mtime_ns + 10**9))


def test_a_same_size_replacement_is_reported_and_can_be_reingested(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src, repo = tmp_path / "src", str(tmp_path / "repo")
    files = write_files(src, 3, **SMALL)  # type: ignore[arg-type]
    assert _ingest(repo, str(src), "--no-progress") == 0
    r = _repo(repo)
    tip = r.lookup_branch("main")
    _replace_same_size(files[1], 1)
    _replace_same_size(files[2], 2)
    assert _ingest(repo, str(src)) == 2
    err = capsys.readouterr().err
    assert "2 landed source files changed" in err
    assert f"{files[1]}: changed since it landed" in err and str(files[2]) in err
    assert "--reingest-changed" in err
    assert r.lookup_branch("main") == tip
    assert _ingest(repo, str(src), "--reingest-changed") == 0
    out = capsys.readouterr().out
    assert "ingested 0 file(s)" in out and "re-ingested 2 changed" in out
    xr.testing.assert_identical(_ds(r), _mf(files))  # the new versions, in place
    assert _ingest(repo, str(src)) == 0
    assert "nothing new to ingest" in capsys.readouterr().out


def test_checksum_tells_a_replacement_that_kept_its_mtime(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src, repo = tmp_path / "src", str(tmp_path / "repo")
    files = write_files(src, 2, **SMALL)  # type: ignore[arg-type]
    assert _ingest(repo, str(src), "--checksum", "--no-progress") == 0
    assert all(f.sha256 for f in landed_inputs(_repo(repo)))
    os.utime(files[0], ns=(files[0].stat().st_atime_ns, files[0].stat().st_mtime_ns + 10**9))
    assert _ingest(repo, str(src), "--checksum") == 0  # touched, same content: landed
    assert "nothing new to ingest" in capsys.readouterr().out
    _replace_same_size(files[1], 1, keep_mtime=True)  # e.g. rsync -t, cp -p
    assert _ingest(repo, str(src), "--checksum") == 2
    err = capsys.readouterr().err
    assert f"{files[1]}: changed since it landed" in err and "sha256" in err


@pytest.mark.s3
def test_on_s3_no_create_and_a_replaced_object_by_its_etag(
        tmp_path: Path, s3_server: str, s3_bucket: str, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    import boto3

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", S3_SECRET_ACCESS_KEY)
    files = write_files(tmp_path / "src", 2, **SMALL)  # type: ignore[arg-type]
    s3 = boto3.client("s3", endpoint_url=s3_server, region_name=S3_REGION,
                      aws_access_key_id=S3_ACCESS_KEY_ID,
                      aws_secret_access_key=S3_SECRET_ACCESS_KEY)
    for p in files:
        s3.upload_file(str(p), s3_bucket, f"raw/{p.name}")
    flags = ["--endpoint-url", s3_server, "--allow-http", "--region", S3_REGION,
             "--no-progress"]
    repo = f"s3://{s3_bucket}/repos/typo"
    assert _ingest(repo, f"s3://{s3_bucket}/raw/*.nc", "--no-create", *flags) == 2
    assert "no repository at" in capsys.readouterr().err
    listed = s3.list_objects_v2(Bucket=s3_bucket, Prefix="repos/")
    assert listed.get("KeyCount", 0) == 0  # nothing created
    repo = f"s3://{s3_bucket}/repos/era"
    assert _ingest(repo, f"s3://{s3_bucket}/raw/*.nc", *flags) == 0
    # the same object uploaded again with other bytes of the same size: a new etag
    _replace_same_size(files[1], 1)
    s3.upload_file(str(files[1]), s3_bucket, f"raw/{files[1].name}")
    s3.close()
    capsys.readouterr()
    assert _ingest(repo, f"s3://{s3_bucket}/raw/*.nc", *flags) == 2
    err = capsys.readouterr().err
    assert f"s3://{s3_bucket}/raw/{files[1].name}: changed since it landed" in err
    assert "etag" in err
    assert _ingest(repo, f"s3://{s3_bucket}/raw/*.nc", "--reingest-changed", *flags) == 0
    storage = icd.s3_storage(bucket=s3_bucket, prefix="repos/era", region=S3_REGION,
                             endpoint_url=s3_server, allow_http=True,
                             access_key_id=S3_ACCESS_KEY_ID,
                             secret_access_key=S3_SECRET_ACCESS_KEY)
    xr.testing.assert_identical(_ds(icd.Repository.open(storage)), _mf(files))


# ------------------------------------------------------------------ 9. errors
def test_every_bad_file_of_a_run_is_listed(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "src"
    write_files(src, 2, **SMALL)  # type: ignore[arg-type]
    (src / "corrupt.nc").write_bytes(b"\x89HDF\r\n\x1a\n" + os.urandom(300))
    (src / "garbage.nc").write_bytes(b"not a netcdf file\n")
    wide = make_dataset(7, steps=2, nlat=3, nlon=5)
    wide.to_netcdf(src / "wide.nc", engine="h5netcdf")
    other = make_dataset(8, **SMALL)  # type: ignore[arg-type]
    other["pressure"] = other["pressure"].astype("float32")
    other.to_netcdf(src / "other.nc", engine="h5netcdf")
    target = tmp_path / "repo"
    assert _ingest(str(target), str(src)) == 2  # unreadable files
    err = capsys.readouterr().err
    assert "2 bad source file(s)" in err and "corrupt.nc" in err and "garbage.nc" in err
    assert "more" not in err
    (src / "corrupt.nc").unlink()
    (src / "garbage.nc").unlink()
    assert _ingest(str(target), str(src)) == 2  # files that do not match
    err = capsys.readouterr().err
    assert "2 bad source file(s)" in err and "wide.nc" in err and "other.nc" in err
    assert not target.exists()


def test_no_empty_directory_after_a_dry_run_or_a_failed_first_ingest(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "src"
    write_files(src, 2, **SMALL)  # type: ignore[arg-type]
    target = tmp_path / "new" / "deeper" / "repo"
    assert _ingest(str(target), str(src), "--dry-run") == 0
    assert "dry run: would ingest 2 file(s)" in capsys.readouterr().out
    assert not (tmp_path / "new").exists()
    assert _ingest(str(target), str(src / "missing.nc")) == 2
    assert not (tmp_path / "new").exists()
    # a failure while writing, after the repository was created: taken back
    late = make_dataset(2, **SMALL)  # type: ignore[arg-type]
    late = late.assign_coords(time=late["time"].values + np.timedelta64(30, "m"))
    late["time"].encoding = {"units": "minutes since 2000-01-01", "dtype": "int64"}
    late.to_netcdf(src / "late.nc", engine="h5netcdf")
    assert _ingest(str(target), str(src)) == 2
    err = capsys.readouterr().err
    assert "late.nc" in err and "cannot be stored exactly" in err
    assert not (tmp_path / "new").exists()
    # an existing empty directory is left as it was, empty
    target.mkdir(parents=True)
    assert _ingest(str(target), str(src)) == 2
    capsys.readouterr()
    assert target.is_dir() and not any(target.iterdir())


def test_s3_configuration_errors_say_what_to_set(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "src"
    write_files(src, 1, **SMALL)  # type: ignore[arg-type]
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL",
                "AWS_ENDPOINT_URL_S3", "AWS_ALLOW_HTTP", "AWS_WEB_IDENTITY_TOKEN_FILE",
                "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI"):
        monkeypatch.delenv(var, raising=False)
    endpoint = "http://127.0.0.1:9"
    assert _ingest("s3://bucket/repo", str(src), "--endpoint-url", endpoint,
                   "--allow-http") == 2
    err = capsys.readouterr().err
    assert "no S3 credentials" in err and "AWS_ACCESS_KEY_ID" in err
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    assert _ingest("s3://bucket/repo", str(src), "--endpoint-url", endpoint) == 2
    err = capsys.readouterr().err
    assert "plain HTTP" in err and "--allow-http" in err
    # sources on S3 are checked too, before anything is created
    target = tmp_path / "repo"
    assert _ingest(str(target), "s3://raw/x.nc", "--endpoint-url", endpoint) == 2
    assert "--allow-http" in capsys.readouterr().err
    assert not target.exists()


def test_in_memory_storage_with_a_cluster_fails_before_any_work(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "src"
    write_files(src, 1, **SMALL)  # type: ignore[arg-type]
    # refused before the cluster is started (a cluster of 0 workers would never finish)
    assert _ingest("memory://", str(src), "--scheduler", "tcp://127.0.0.1:9") == 2
    err = capsys.readouterr().err
    assert "in-memory storage" in err and "workers cannot reach it" in err
    assert "Traceback" not in err


@pytest.mark.dask
def test_no_worker_traceback_when_a_cluster_run_ends_in_a_clean_error(
        tmp_path: Path) -> None:
    src = tmp_path / "src"
    write_files(src, 2, **SMALL)  # type: ignore[arg-type]
    late = make_dataset(2, **SMALL)  # type: ignore[arg-type]
    late = late.assign_coords(time=late["time"].values + np.timedelta64(30, "m"))
    late["time"].encoding = {"units": "minutes since 2000-01-01", "dtype": "int64"}
    late.to_netcdf(src / "late.nc", engine="h5netcdf")
    proc = subprocess.run(
        [sys.executable, "-m", "icechunk_dist.cli", "ingest", str(tmp_path / "repo"),
         str(src), "--workers", "2"], cwd=str(ROOT), capture_output=True, text=True,
        timeout=120, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("icechunk-dist: error:") and "late.nc" in last
    assert not (tmp_path / "repo").exists()


# ------------------------------------------------------------------ 11. quiet library, CLI
def test_the_library_is_quiet_unless_asked(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str],
                                           caplog: pytest.LogCaptureFixture) -> None:
    files = write_files(tmp_path / "src", 3, **SMALL)  # type: ignore[arg-type]
    with caplog.at_level(logging.INFO, logger="icechunk_dist"):
        result = ingest(tmp_path / "repo", [str(p) for p in files[:2]])
    assert capsys.readouterr() == ("", "")
    assert any("2 file(s) to ingest" in r.getMessage() and r.name.startswith("icechunk_dist")
               for r in caplog.records)
    assert result.bytes_written > 0 and result.bytes_read == sum(
        p.stat().st_size for p in files[:2])
    ingest(tmp_path / "repo", [str(p) for p in files], progress=True)
    out, err = capsys.readouterr()
    assert out == ""
    assert "icechunk-dist ingest: writing 1/1 files" in err and "B/s" in err


def test_cli_progress_on_stderr_verbosity_and_summary(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "src"
    files = write_files(src, 3, **SMALL)  # type: ignore[arg-type]
    assert _ingest(str(tmp_path / "a"), str(src)) == 0
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if "writing" in line]
    assert lines[-1].startswith("icechunk-dist ingest: writing 3/3 files, ")
    assert "ETA" in lines[0] and "B/s" in lines[0]
    summary = out.splitlines()[0]
    assert summary.startswith("ingested 3 file(s)") and " written in " in summary
    assert summary.count("/s") == 1
    assert _ingest(str(tmp_path / "b"), str(src), "-q") == 0
    assert capsys.readouterr() == ("", "")
    assert _ingest(str(tmp_path / "c"), str(src), "-v", "--no-progress") == 0
    out, err = capsys.readouterr()
    assert "icechunk-dist: 3 file(s) to ingest" in err and "writing" not in err
    assert "committed" in err and out.startswith("ingested 3 file(s)")
    with pytest.raises(SystemExit):
        _ingest(str(tmp_path / "d"), str(src), "-q", "-v")
    capsys.readouterr()
    xr.testing.assert_identical(_ds(_repo(tmp_path / "c")), _mf(files))
