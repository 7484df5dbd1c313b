"""``icechunk-dist ingest`` from the command line: exit codes, config files, S3, and a run
killed mid-way (SIGKILL) that a re-run completes to exactly what a clean run gives."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

xr = pytest.importorskip("xarray")
pytest.importorskip("h5netcdf")

from conftest import S3_ACCESS_KEY_ID, S3_REGION, S3_SECRET_ACCESS_KEY  # noqa: E402
from netcdf_data import make_dataset, write_files  # noqa: E402

import icechunk_dist as icd  # noqa: E402
from icechunk_dist.cli import main  # noqa: E402
from icechunk_dist.ingest import METADATA_KEY  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def _repo(path: Path) -> icd.Repository:
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


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "icechunk_dist.cli", "ingest", *args],
        cwd=str(ROOT), env={**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def test_directory_of_netcdf_files_then_rerun_then_append(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src, repo = tmp_path / "src", str(tmp_path / "repo")
    files = write_files(src, 3)
    assert main(["ingest", repo, str(src), "--group", "obs", "-m", "day 1",
                 "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "ingested 3 file(s)" in out and "committed" in out
    r = _repo(tmp_path / "repo")
    assert [h.message for h in r.ancestry(branch="main")] == ["day 1", "Repository initialized"]
    xr.testing.assert_identical(_ds(r, "obs"), _mf(files))

    tip = r.lookup_branch("main")
    assert main(["ingest", repo, str(src), "--group", "obs", "--no-progress"]) == 0
    assert "nothing new to ingest" in capsys.readouterr().out
    assert r.lookup_branch("main") == tip

    files += write_files(src, 2, first=3)
    assert main(["ingest", repo, str(src / "*.nc"), "--group", "obs", "--batch-size", "1",
                 "--no-progress"]) == 0
    assert capsys.readouterr().out.count("committed") == 2
    assert len(list(r.ancestry(branch="main"))) == 4
    xr.testing.assert_identical(_ds(r, "obs"), _mf(files))


def test_dry_run_and_other_branch(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src, repo = tmp_path / "src", str(tmp_path / "repo")
    files = write_files(src, 2)
    assert main(["ingest", repo, str(src), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "dry run: would ingest 2 file(s)" in out and str(files[0]) in out
    assert not icd.Repository.exists(icd.local_filesystem_storage(repo))
    assert main(["ingest", repo, str(files[0]), "--no-progress"]) == 0
    assert main(["ingest", repo, str(src), "--branch", "dev", "--no-progress"]) == 0
    capsys.readouterr()
    r = _repo(tmp_path / "repo")
    # dev starts at main and skips what landed on main
    assert _ds(r).sizes["time"] == 4
    with xr.open_zarr(r.readonly_session("dev").store, consolidated=False) as dev:
        xr.testing.assert_identical(dev.load(), _mf(files))


def test_bad_input_exit_2_and_branch_unchanged(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    src, repo = tmp_path / "src", str(tmp_path / "repo")
    write_files(src, 2)
    assert main(["ingest", repo, str(src), "--no-progress"]) == 0
    capsys.readouterr()
    r = _repo(tmp_path / "repo")
    tip = r.lookup_branch("main")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "corrupt.nc").write_bytes(b"CDF\x01" + os.urandom(200))
    other = make_dataset(5)
    other["pressure"] = other["pressure"].astype("int32")
    other.to_netcdf(bad / "other.nc", engine="h5netcdf")
    cases = [
        ([str(bad / "missing.nc")], "missing.nc"),
        ([str(bad / "*.nc4")], "matches no files"),
        ([str(bad / "corrupt.nc")], "corrupt.nc"),
        ([str(bad / "other.nc")], "other.nc: schema mismatch"),
        ([str(bad / "other.nc"), "--concat-dim", "lat"], "other.nc"),
    ]
    for args, needle in cases:
        assert main(["ingest", repo, *args, "--no-progress"]) == 2, args
        err = capsys.readouterr().err
        assert err.startswith("icechunk-dist: error:") and needle in err, (args, err)
        assert err.count("\n") == 1 and "Traceback" not in err
        assert r.lookup_branch("main") == tip


def test_config_file_and_flags_override(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    files = write_files(tmp_path / "src", 4)
    cfg = tmp_path / "ingest.yaml"
    cfg.write_text(f"repo: {tmp_path / 'repo'}\nsources:\n  - {tmp_path / 'src'}/*.nc\n"
                   "group: g\nbatch_size: 2\nmessage: nightly\n")
    assert main(["ingest", "--config", str(cfg), "--batch-size", "4", "--no-progress"]) == 0
    capsys.readouterr()
    r = _repo(tmp_path / "repo")
    history = list(r.ancestry(branch="main"))
    assert [h.message for h in history] == ["nightly", "Repository initialized"]
    assert len(history[0].metadata[METADATA_KEY]["files"]) == 4
    xr.testing.assert_identical(_ds(r, "g"), _mf(files))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"repo": "x", "sources": ["y"], "arrays": []}))
    assert main(["ingest", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "bad.json" in err and "arrays" in err


def test_storage_unreachable_exit_4(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # credentials are given: without them the run is a configuration error (exit 2)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    write_files(tmp_path / "src", 1)
    port = _closed_port()
    rc = main(["ingest", "s3://bucket/repo", str(tmp_path / "src"), "--no-progress",
               "--endpoint-url", f"http://127.0.0.1:{port}", "--allow-http",
               "--region", "us-east-1"])
    assert rc == 4, capsys.readouterr().err
    assert "icechunk-dist: error:" in capsys.readouterr().err


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.s3
@pytest.mark.dask
def test_s3_sources_and_repository_with_workers(tmp_path: Path, s3_server: str,
                                                s3_bucket: str) -> None:
    import boto3

    files = write_files(tmp_path / "src", 3)
    s3 = boto3.client("s3", endpoint_url=s3_server, region_name=S3_REGION,
                      aws_access_key_id=S3_ACCESS_KEY_ID,
                      aws_secret_access_key=S3_SECRET_ACCESS_KEY)
    for p in files:
        s3.upload_file(str(p), s3_bucket, f"raw/{p.name}")
    s3.close()
    env = {"AWS_ACCESS_KEY_ID": S3_ACCESS_KEY_ID, "AWS_SECRET_ACCESS_KEY": S3_SECRET_ACCESS_KEY,
           "AWS_DEFAULT_REGION": S3_REGION}
    proc = _cli(f"s3://{s3_bucket}/repo", f"s3://{s3_bucket}/raw/*.nc", "--workers", "2",
                "--endpoint-url", s3_server, "--allow-http", "--region", S3_REGION, env=env)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    # the summary on stdout, progress (files and bytes, rate) on stderr
    assert "ingested 3 file(s)" in out and "writing 3/3 files" in err
    storage = icd.s3_storage(bucket=s3_bucket, prefix="repo", region=S3_REGION,
                             endpoint_url=s3_server, allow_http=True,
                             access_key_id=S3_ACCESS_KEY_ID,
                             secret_access_key=S3_SECRET_ACCESS_KEY)
    xr.testing.assert_identical(_ds(icd.Repository.open(storage)), _mf(files))


def _ingest_commits(path: Path) -> int:
    storage = icd.local_filesystem_storage(path)
    if not icd.Repository.exists(storage):
        return 0
    try:
        history = list(icd.Repository.open(storage).ancestry(branch="main"))
    except icd.IcechunkDistError:
        return 0
    return sum(1 for h in history if METADATA_KEY in h.metadata)


def test_killed_mid_ingestion_then_rerun_equals_a_clean_run(tmp_path: Path) -> None:
    n = 8
    files = write_files(tmp_path / "src", n, steps=2, nlat=3, nlon=4)
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    proc = _cli(str(killed), str(tmp_path / "src"), "--batch-size", "1", "--no-progress")
    try:
        while _ingest_commits(killed) < 1:
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    landed = _ingest_commits(killed)
    assert 1 <= landed < n  # killed mid-way: some batches landed, not all
    r = _repo(killed)
    partial = _ds(r)
    assert partial.sizes["time"] == 2 * landed

    rerun = _cli(str(killed), str(tmp_path / "src"), "--batch-size", "1", "--no-progress")
    out, err = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, err
    assert f"skipped {landed} already landed" in out
    assert main(["ingest", str(clean), str(tmp_path / "src"), "--no-progress"]) == 0
    got, want = _ds(r), _ds(_repo(clean))
    xr.testing.assert_identical(got, want)
    xr.testing.assert_identical(got, _mf(files))
    urls = [f["url"] for h in r.ancestry(branch="main") if METADATA_KEY in h.metadata
            for f in h.metadata[METADATA_KEY]["files"]]
    assert sorted(urls) == [str(p) for p in files]  # each file landed exactly once



@pytest.mark.dask
def test_running_scheduler_and_wait_for_workers(tmp_path: Path, dask_client: object,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    files = write_files(tmp_path / "src", 3)
    address = dask_client.scheduler.address  # type: ignore[attr-defined]
    assert main(["ingest", str(tmp_path / "repo"), str(tmp_path / "src"),
                 "--scheduler", address, "--wait-for-workers", "2", "--timeout", "60"]) == 0
    out, err = capsys.readouterr()
    assert "writing 3/3 files" in err and "ingested 3 file(s)" in out
    xr.testing.assert_identical(_ds(_repo(tmp_path / "repo")), _mf(files))
