"""The library prints nothing by default (issue 21, point 11).

``store_dask``, ``to_zarr``, ``to_icechunk`` and ``reprocess`` write nothing to stdout or
stderr unless asked: ``progress=True`` draws a progress bar on stderr (never stdout), and
what they do is logged through ``logging.getLogger("icechunk_dist")``. Real writes on dask's
threaded scheduler and on a real LocalCluster; the CLI's ``map`` keeps its progress, on
stderr.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr

import icechunk_dist as icd
from icechunk_dist.cli import main

dask = pytest.importorskip("dask")
da = pytest.importorskip("dask.array")
xr = pytest.importorskip("xarray")

from icechunk_dist.dask import store_dask, to_zarr  # noqa: E402
from icechunk_dist.xarray import reprocess, to_icechunk  # noqa: E402


def _source() -> Any:
    return da.arange(64 * 8, dtype="f4", chunks=8 * 8).reshape(64, 8).rechunk((8, 8))


def _dataset() -> Any:
    return xr.Dataset(
        {"t": (("time", "x"), np.arange(64 * 8, dtype="f4").reshape(64, 8))},
        coords={"time": np.arange(64), "x": np.arange(8)},
    ).chunk({"time": 8})


def _every_write(repo: icd.Repository, progress: bool | None) -> None:
    """store_dask, to_zarr, to_icechunk and reprocess, each once (``progress`` passed only
    when not None, so the default is what runs otherwise)."""
    kw: dict[str, Any] = {} if progress is None else {"progress": progress}
    s = repo.writable_session("main")
    zarr.create_array(s.store, name="a", shape=(64, 8), chunks=(8, 8), dtype="f4")
    fork = s.fork()
    s.merge(store_dask(sources=[_source()],
                       targets=[zarr.open_array(fork.store, path="a", mode="r+")], **kw))
    to_zarr(_source(), s, "b", chunks=(8, 8), **kw)
    to_icechunk(_dataset(), s, group="ds", **kw)
    s.commit("arrays and a dataset")
    reprocess(repo, source="main", branch="rechunked", rechunk={"time": 16}, group="ds", **kw)
    back = xr.open_zarr(repo.readonly_session("rechunked").store, group="ds",
                        consolidated=False)
    assert back["t"].encoding["chunks"] == (16, 8)


def test_threaded_scheduler_prints_nothing_by_default(
        local_repo: icd.Repository, capsys: pytest.CaptureFixture[str]) -> None:
    with dask.config.set(scheduler="threads"):
        _every_write(local_repo, progress=None)
    out, err = capsys.readouterr()
    assert out == ""
    assert err == ""


def test_local_cluster_prints_nothing_by_default(
        local_repo: icd.Repository, dask_client: Any,
        capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    with dask_client.as_current():
        _every_write(local_repo, progress=None)
    out, err = capsys.readouterr()
    assert out == ""
    assert err == ""


def test_progress_is_opt_in_and_on_stderr_threaded(
        local_repo: icd.Repository, capsys: pytest.CaptureFixture[str]) -> None:
    with dask.config.set(scheduler="threads"):
        _every_write(local_repo, progress=True)
    out, err = capsys.readouterr()
    assert out == ""
    # one bar per dask write: store_dask, to_zarr, to_icechunk, reprocess
    assert err.count("100% Completed") == 4, err
    assert "icechunk_dist: writing 8 blocks" in err


def test_progress_is_opt_in_and_on_stderr_on_a_cluster(
        local_repo: icd.Repository, dask_client: Any,
        capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    with dask_client.as_current():
        _every_write(local_repo, progress=True)
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("100% Completed") == 4, err


def test_messages_go_through_the_icechunk_dist_logger(
        local_repo: icd.Repository, caplog: pytest.LogCaptureFixture,
        capsys: pytest.CaptureFixture[str]) -> None:
    with caplog.at_level(logging.INFO, logger="icechunk_dist"), \
            dask.config.set(scheduler="threads"):
        _every_write(local_repo, progress=None)
    names = {r.name for r in caplog.records}
    assert names and all(n == "icechunk_dist" or n.startswith("icechunk_dist.")
                         for n in names), names
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "writing 8 blocks" in text
    assert "to_icechunk: " in text
    assert capsys.readouterr() == ("", "")


def test_the_package_logger_has_a_null_handler() -> None:
    # nothing reaches logging's last-resort handler (stderr) unless the app configures it
    handlers = logging.getLogger("icechunk_dist").handlers
    assert any(isinstance(h, logging.NullHandler) for h in handlers)


def test_cli_map_shows_progress_on_stderr(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    repo = icd.Repository.create(icd.local_filesystem_storage(tmp_path / "repo"))
    s = repo.writable_session("main")
    to_icechunk(_dataset(), s)
    s.commit("data")
    capsys.readouterr()
    assert main(["map", str(tmp_path / "repo"), "--from", "main", "--to-branch", "by16",
                 "--rechunk", "time=16"]) == 0
    out, err = capsys.readouterr()
    assert "100% Completed" in err and "100% Completed" not in out
    assert out.startswith("committed ") and len(out.splitlines()) == 1, out

    assert main(["map", str(tmp_path / "repo"), "--from", "main", "--to-branch", "by32",
                 "--rechunk", "time=32", "--no-progress"]) == 0
    out, err = capsys.readouterr()
    assert err == "" and out.startswith("committed ")

