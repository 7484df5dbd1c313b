"""Reprocessing: ``icechunk-dist map`` and ``icechunk_dist.xarray.reprocess`` (issue 7 part 3).

The dataset at a ref is opened lazily, transformed and/or re-chunked, and written to a branch
as exactly one commit; the ref and every other branch stay as they were. Real NetCDF data
(tests/netcdf_xr.py), a real LocalCluster, the CLI in-process and as a subprocess, and one
run against the moto S3 server.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import icechunk_dist as icd
from icechunk_dist.cli import main
from icechunk_dist.errors import InvalidInputError, NotFoundError

xr = pytest.importorskip("xarray")
dask = pytest.importorskip("dask")
zarr = pytest.importorskip("zarr")
pytest.importorskip("h5netcdf")

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))
import map_funcs  # noqa: E402
from netcdf_xr import write_netcdf  # noqa: E402

from icechunk_dist.xarray import reprocess, to_icechunk  # noqa: E402


def _seed(repo: icd.Repository, nc: Path) -> str:
    """The file's dataset on main (chunks of 4 along time), tagged v1; a side branch."""
    s = repo.writable_session("main")
    with dask.config.set(scheduler="threads"):
        to_icechunk(xr.open_dataset(nc, chunks={"time": 4}), s, progress=False)
    sid = s.commit("source data")
    repo.create_tag("v1", sid)
    repo.create_branch("other", sid)
    return sid


def _refs(repo: icd.Repository) -> dict[str, str]:
    out = {f"branch:{b}": repo.lookup_branch(b) for b in repo.list_branches()}
    out.update({f"tag:{t}": repo.lookup_tag(t) for t in repo.list_tags()})
    return out


def _history(repo: icd.Repository, branch: str) -> list[str]:
    return [i.id for i in repo.ancestry(branch=branch)]


def _open(repo: icd.Repository, branch: str, **kw: Any) -> Any:
    return xr.open_zarr(repo.readonly_session(branch).store, consolidated=False, **kw)


@pytest.fixture
def seeded(tmp_path: Path) -> tuple[icd.Repository, Path, str]:
    nc = write_netcdf(tmp_path / "src.nc", ntime=8)
    repo = icd.Repository.create(icd.local_filesystem_storage(str(tmp_path / "repo")))
    _PATHS[id(repo)] = str(tmp_path / "repo")
    return repo, nc, _seed(repo, nc)


@pytest.mark.dask
def test_reprocess_function_on_a_cluster_is_one_commit(seeded: Any, dask_client: Any) -> None:
    repo, nc, sid = seeded
    before = _refs(repo)
    result = reprocess(repo, source="main", branch="celsius", func=map_funcs.to_celsius,
                       client=dask_client, progress=False)
    assert result.created_branch and result.source_snapshot == sid
    assert _history(repo, "celsius") == [result.snapshot_id, *_history(repo, "main")]
    after = _refs(repo)
    assert after.pop("branch:celsius") == result.snapshot_id
    assert after == before  # main, other, v1 unchanged
    want = map_funcs.to_celsius(xr.open_dataset(nc))
    back = _open(repo, "celsius").load()
    xr.testing.assert_allclose(back, want, atol=0.006, rtol=0)
    assert back["temp"].attrs["units"] == "degC"
    assert back.attrs["history"] == "converted to Celsius by icechunk-dist map"
    meta = repo.lookup_snapshot(result.snapshot_id).metadata
    assert meta["icechunk_dist.map"]["source_snapshot"] == sid
    # the source still reads as before
    xr.testing.assert_identical(_open(repo, "main").load(), xr.open_dataset(nc).load())


def test_rechunk_from_a_tag_keeps_values_and_encodings(seeded: Any) -> None:
    repo, nc, _ = seeded
    with dask.config.set(scheduler="threads"):
        result = reprocess(repo, source="v1", branch="by-time",
                           rechunk={"time": 1, "lat": -1}, progress=False)
    arr = zarr.open_array(repo.readonly_session("by-time").store, path="temp", mode="r")
    assert arr.chunks == (1, 6, 8)
    assert zarr.open_array(repo.readonly_session("main").store, path="temp",
                           mode="r").chunks == (4, 6, 8)
    xr.testing.assert_identical(_open(repo, "by-time").load(), xr.open_dataset(nc).load())
    raw = _open(repo, "by-time", decode_cf=False)
    np.testing.assert_array_equal(raw["temp"].values,
                                  xr.open_dataset(nc, decode_cf=False)["temp"].values)
    assert "rechunk time=1,lat=-1" in repo.lookup_snapshot(result.snapshot_id).message
    # again onto the existing branch: one more commit, on top of it
    first = result.snapshot_id
    with dask.config.set(scheduler="threads"):
        again = reprocess(repo, source="main", branch="by-time", rechunk="time=2",
                          progress=False)
    assert not again.created_branch
    assert _history(repo, "by-time")[:2] == [again.snapshot_id, first]


def test_cli_func_and_rechunk(seeded: Any, capsys: Any) -> None:
    repo, _nc, sid = seeded
    root = _repo_path(repo)
    rc = main(["map", root, "--from", "main", "--to-branch", "celsius-daily",
               "--func", "map_funcs:to_celsius", "--rechunk", "time=2,lon=-1",
               "-m", "Celsius, chunks of 2", "--no-progress"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "committed" in out and "celsius-daily" in out
    snap = repo.lookup_branch("celsius-daily")
    assert repo.lookup_snapshot(snap).message == "Celsius, chunks of 2"
    assert _history(repo, "celsius-daily")[1:] == [sid, *_history(repo, "main")[1:]]
    assert repo.lookup_branch("main") == sid
    arr = zarr.open_array(repo.readonly_session("celsius-daily").store, path="temp", mode="r")
    assert arr.chunks == (2, 6, 8)
    back = _open(repo, "celsius-daily").load()
    assert back["temp"].attrs["units"] == "degC"


@pytest.mark.parametrize("argv, match", [
    (["--func", "no_such_module_xyz:f"], "cannot import module"),
    (["--func", "map_funcs:missing"], "has no attribute"),
    (["--func", "map_funcs:not_a_function"], "not a callable"),
    (["--func", "map_funcs:returns_list"], "must return an xarray Dataset"),
    (["--func", "map_funcs:raises"], "RuntimeError: this job is broken"),
    (["--func", "no-colon"], "module:function"),
    (["--rechunk", "time=zero"], "integer"),
    (["--rechunk", "nodim=1"], "no dimension"),
    ([], "needs --func"),
])
def test_cli_bad_input_exits_2_and_changes_nothing(seeded: Any, capsys: Any,
                                                  argv: list[str], match: str) -> None:
    repo, _, _ = seeded
    before = _refs(repo)
    rc = main(["map", _repo_path(repo), "--from", "main", "--to-branch", "new", *argv,
               "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.startswith("icechunk-dist: error:") and match in err, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert _refs(repo) == before  # no branch created, nothing committed


def test_bad_refs_and_failures_on_workers(seeded: Any, capsys: Any) -> None:
    repo, _, _ = seeded
    before = _refs(repo)
    with pytest.raises(NotFoundError):
        reprocess(repo, source="nope", branch="x", rechunk="time=1", progress=False)
    with pytest.raises(InvalidInputError, match="--from"):
        reprocess(repo, source="main", branch="main", rechunk="time=1", progress=False)
    with pytest.raises(NotFoundError):
        reprocess(repo, source="main", branch="x", rechunk="time=1", group="nogroup",
                  progress=False)
    # the function is lazy and fails while the result is computed: nothing is committed and
    # the branch the call created is gone again
    with dask.config.set(scheduler="threads"), pytest.raises(RuntimeError, match="worker"):
        reprocess(repo, source="main", branch="x", func=map_funcs.fails_on_workers,
                  progress=False)
    assert _refs(repo) == before
    # the CLI: one line and exit 1 for a job that fails on the workers
    rc = main(["map", _repo_path(repo), "--from", "main", "--to-branch", "x",
               "--func", "map_funcs:fails_on_workers", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 1, err
    assert err.startswith("icechunk-dist: error:") and "failed on a worker" in err, err
    assert "Traceback" not in err
    assert _refs(repo) == before


@pytest.mark.dask
def test_cli_on_a_running_scheduler(seeded: Any, dask_client: Any, capsys: Any) -> None:
    """``--scheduler ADDR --wait-for-workers 2``: the 2-process LocalCluster of conftest."""
    repo, nc, sid = seeded
    address = dask_client.scheduler.address
    rc = main(["map", _repo_path(repo), "--from", "v1", "--to-branch", "celsius",
               "--func", "map_funcs:to_celsius", "--scheduler", address,
               "--wait-for-workers", "2", "--timeout", "60", "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    assert _history(repo, "celsius")[1] == sid
    assert repo.lookup_branch("main") == sid
    want = map_funcs.to_celsius(xr.open_dataset(nc))
    xr.testing.assert_allclose(_open(repo, "celsius").load(), want, atol=0.006, rtol=0)


@pytest.mark.s3
def test_cli_map_on_s3(tmp_path: Path, make_s3_storage: Any, s3_server: str, s3_bucket: str,
                       monkeypatch: Any) -> None:
    from conftest import S3_ACCESS_KEY_ID, S3_REGION, S3_SECRET_ACCESS_KEY

    nc = write_netcdf(tmp_path / "src.nc", ntime=8)
    repo = icd.Repository.create(make_s3_storage("repo"))
    sid = _seed(repo, nc)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", S3_SECRET_ACCESS_KEY)
    rc = main(["map", f"s3://{s3_bucket}/repo", "--endpoint-url", s3_server, "--allow-http",
               "--region", S3_REGION, "--from", "main", "--to-branch", "by-time",
               "--rechunk", "time=1", "--no-progress"])
    assert rc == 0
    assert repo.lookup_branch("main") == sid
    assert _history(repo, "by-time")[1] == sid
    xr.testing.assert_identical(_open(repo, "by-time").load(), xr.open_dataset(nc).load())


def _repo_path(repo: icd.Repository) -> str:
    return _PATHS[id(repo)]


_PATHS: dict[int, str] = {}


def test_cli_group(tmp_path: Path, capsys: Any) -> None:
    nc = write_netcdf(tmp_path / "src.nc", ntime=4)
    repo = icd.Repository.create(icd.local_filesystem_storage(str(tmp_path / "repo")))
    s = repo.writable_session("main")
    to_icechunk(xr.open_dataset(nc).load(), s, group="obs/station")
    sid = s.commit("in a group")
    rc = main(["map", str(tmp_path / "repo"), "--from", sid, "--to-branch", "g",
               "--group", "obs/station", "--rechunk", "time=1", "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    back = xr.open_zarr(repo.readonly_session("g").store, group="obs/station",
                        consolidated=False)
    assert back["temp"].encoding["chunks"] == (1, 6, 8)
    xr.testing.assert_identical(back.load(), xr.open_dataset(nc).load())
    assert repo.lookup_branch("main") == sid
