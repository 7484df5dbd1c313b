"""The ``icechunk-dist`` command line on a repository on local disk."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr

import icechunk_dist as icd
from icechunk_dist.cli import load_ingest_config, main
from icechunk_dist.storage import from_url


def _repo(path: Path) -> icd.Repository:
    return icd.Repository.open(icd.local_filesystem_storage(path))


def test_init_log_branches_tags(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "repo"
    assert main(["init", str(path)]) == 0
    assert "created repository" in capsys.readouterr().out
    repo = _repo(path)
    main_id = repo.lookup_branch("main")
    repo.create_branch("dev", main_id)
    repo.create_tag("v1", main_id)

    assert main(["branches", path.as_uri()]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [f"dev  {main_id}", f"main  {main_id}"]

    assert main(["tags", str(path)]) == 0
    assert capsys.readouterr().out.splitlines() == [f"v1  {main_id}"]

    assert main(["log", str(path)]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert line.startswith(main_id) and "Repository initialized" in line

    assert main(["log", str(path), "--tag", "v1", "-n", "1"]) == 0
    assert capsys.readouterr().out.startswith(main_id)


def test_init_twice_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["init", str(tmp_path / "r")]) == 0
    assert main(["init", str(tmp_path / "r")]) == 1
    assert "error" in capsys.readouterr().err


def test_missing_repository_is_an_error(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["log", str(tmp_path / "nothing")]) == 2  # bad input: exit 2
    assert "icechunk-dist: error:" in capsys.readouterr().err


def test_ingest_synthetic_is_one_commit(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "repo"
    rc = main(["ingest", str(path), "--synthetic", "40,30", "--chunks", "16,16",
               "--array", "grp/temp", "--seed", "7", "--no-progress", "-m", "synthetic"])
    assert rc == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "committed" in out
    repo = _repo(path)
    history = list(repo.ancestry(branch="main"))
    assert [h.message for h in history] == ["synthetic", "Repository initialized"]
    arr = zarr.open_array(repo.readonly_session("main").store, path="grp/temp", mode="r")
    assert arr.shape == (40, 30) and arr.chunks == (16, 16) and arr.dtype == np.float32
    data = arr[:]
    assert np.all((data >= 0) & (data < 100)) and np.unique(data).size > 100


def test_ingest_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = str(tmp_path / "repo")
    assert main(["ingest", path, "--synthetic", "10,10", "--no-progress"]) == 2
    assert "--chunks" in capsys.readouterr().err
    assert main(["ingest", path, "--synthetic", "10,x,y", "--chunks", "2",
                 "--no-progress"]) == 2
    assert main(["ingest", path, "--no-progress"]) == 2
    assert "nothing to ingest" in capsys.readouterr().err
    assert main(["ingest", path, str(tmp_path / "missing.nc"), "--no-progress"]) == 2
    assert "missing.nc" in capsys.readouterr().err
    assert main(["ingest", path, "--no-create", "--synthetic", "4", "--chunks", "2"]) == 2
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert main(["ingest", path, "--config", str(bad)]) == 2
    assert "cannot parse" in capsys.readouterr().err
    # nothing was committed by any of these
    assert not icd.Repository.exists(icd.local_filesystem_storage(path)) or [
        h.message for h in _repo(Path(path)).ancestry(branch="main")
    ] == ["Repository initialized"]


def test_yaml_config(tmp_path: Path) -> None:
    pytest.importorskip("yaml")
    p = tmp_path / "c.yaml"
    p.write_text("repo: s3://bucket/prefix\nsources: ['s3://raw/*.nc']\nbatch_size: 5\n")
    cfg = load_ingest_config(p)
    assert (cfg.repo, cfg.sources, cfg.batch_size) == ("s3://bucket/prefix", ["s3://raw/*.nc"], 5)


def test_storage_urls(tmp_path: Path) -> None:
    # the CLI's parser is icechunk_dist.storage.from_url (tests/storage/test_from_url.py)
    assert from_url(str(tmp_path)) == from_url(tmp_path.as_uri())
    s3 = from_url("s3://bucket/some/prefix", endpoint_url="http://127.0.0.1:9000",
                  allow_http=True)
    assert s3 is not None
    for bad in ("gopher://x", "s3:///nobucket", "file://otherhost/x", ""):
        with pytest.raises(icd.InvalidInputError):
            from_url(bad)


def test_diff_and_gc(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "repo"
    assert main(["init", str(path)]) == 0
    repo = _repo(path)
    first = repo.lookup_branch("main")
    repo.create_tag("start", first)
    with repo.transaction("main", message="add group") as store:
        zarr.create_group(store, path="g")
    capsys.readouterr()
    rc = main(["diff", str(path), "start", "main"])
    captured = capsys.readouterr()
    assert rc == 0 and captured.out.strip()
    rc = main(["gc", str(path), "--dry-run", "--older-than-days", "0"])
    captured = capsys.readouterr()
    assert rc == 0 and "dry run" in captured.out
    assert main(["gc", str(path)]) == 0


def test_entry_point_runs_as_a_program(tmp_path: Path) -> None:
    path = tmp_path / "repo"
    done = subprocess.run([sys.executable, "-m", "icechunk_dist.cli", "init", str(path)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    done = subprocess.run([sys.executable, "-m", "icechunk_dist.cli", "--version"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0 and done.stdout.startswith("icechunk-dist ")
    done = subprocess.run([sys.executable, "-m", "icechunk_dist.cli", "frobnicate"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2
