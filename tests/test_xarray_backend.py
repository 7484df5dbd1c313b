"""Open in one line, the xarray way (issue 21, point 13).

``xr.open_dataset(url, engine="icechunk_dist", chunks={})`` through the backend this package
registers (``[project.entry-points."xarray.backends"]`` in pyproject.toml), and
``icechunk_dist.xarray.open_dataset(url_or_session, ...)``: the tip of ``main`` by default,
``branch=``, ``tag=``, ``snapshot_id=``, ``group=`` and ``storage_options=`` passed through.
Repositories on local disk and on the moto S3 server.

The entry point is checked by reading pyproject.toml and loading the object it names with
xarray's own entry-point machinery (the installed package metadata is the lead's to refresh).
"""

from __future__ import annotations

import tomllib
from importlib.metadata import EntryPoint, EntryPoints
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import icechunk_dist as icd
from icechunk_dist.errors import InvalidInputError, NotFoundError

xr = pytest.importorskip("xarray")
dask = pytest.importorskip("dask")

from icechunk_dist.xarray import IcechunkBackendEntrypoint, open_dataset, to_icechunk  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
ENGINE = IcechunkBackendEntrypoint


def _data(scale: float) -> Any:
    return xr.Dataset(
        {"t2m": (("time", "lat"), scale * np.arange(12 * 5, dtype="f4").reshape(12, 5),
                 {"units": "K"})},
        coords={"time": np.arange(12), "lat": np.linspace(-60, 60, 5)},
        attrs={"title": f"scaled by {scale}"},
    ).chunk({"time": 4})


def _seed(repo: icd.Repository) -> dict[str, str]:
    """v1 (scale 1) tagged, then main moves on (scale 2); branch dev stays at v1 + 3."""
    s = repo.writable_session("main")
    to_icechunk(_data(1.0), s, group="era5")
    first = s.commit("v1")
    repo.create_tag("v1", first)
    repo.create_branch("dev", first)
    s = repo.writable_session("main")
    to_icechunk(_data(2.0), s, group="era5", mode="w")
    second = s.commit("v2")
    s = repo.writable_session("dev")
    to_icechunk(_data(3.0), s, group="era5", mode="w")
    s.commit("dev")
    return {"first": first, "second": second}


def _scale(ds: Any) -> float:
    return float(ds["t2m"].isel(time=0, lat=1).values)


# ---------------------------------------------------------------- the entry point
def test_pyproject_registers_the_backend_and_xarray_loads_it() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    target = project["entry-points"]["xarray.backends"]["icechunk_dist"]
    assert target == "icechunk_dist.xarray:IcechunkBackendEntrypoint"
    ep = EntryPoint(name="icechunk_dist", value=target, group="xarray.backends")
    assert ep.load() is IcechunkBackendEntrypoint
    from xarray.backends import BackendEntrypoint
    from xarray.backends.plugins import build_engines

    engines = build_engines(EntryPoints([ep]))  # what xarray does with installed entry points
    assert isinstance(engines["icechunk_dist"], BackendEntrypoint)
    params = engines["icechunk_dist"].open_dataset_parameters
    assert {"branch", "tag", "snapshot_id", "group", "storage_options"} <= set(params)


# ---------------------------------------------------------------- local disk
def test_engine_opens_main_lazily_with_zarr_chunks(tmp_path: Path) -> None:
    path = tmp_path / "repo"
    ids = _seed(icd.Repository.create(icd.local_filesystem_storage(path)))
    for where in (str(path), path, path.as_uri()):
        ds = xr.open_dataset(where, engine=ENGINE, chunks={}, group="era5")
        assert ds["t2m"].chunks == ((4, 4, 4), (5,))  # dask, the Zarr chunks
        assert _scale(ds) == 2.0
        assert ds["t2m"].attrs["units"] == "K" and ds.attrs["title"] == "scaled by 2.0"
        xr.testing.assert_identical(ds.load(), _data(2.0).load())
    assert ids["second"]


@pytest.mark.parametrize("kw, scale", [
    ({"tag": "v1"}, 1.0), ({"branch": "dev"}, 3.0), ({"branch": "main"}, 2.0),
    ({"snapshot_id": "first"}, 1.0),
])
def test_engine_versions(tmp_path: Path, kw: dict[str, str], scale: float) -> None:
    path = tmp_path / "repo"
    ids = _seed(icd.Repository.create(icd.local_filesystem_storage(path)))
    kw = {k: ids.get(v, v) for k, v in kw.items()}
    ds = xr.open_dataset(str(path), engine=ENGINE, chunks={}, group="era5", **kw)
    assert _scale(ds) == scale
    eager = xr.open_dataset(str(path), engine=ENGINE, group="era5", **kw)  # no dask
    assert eager["t2m"].chunks is None and _scale(eager) == scale


def test_engine_decoding_options_pass_through(tmp_path: Path) -> None:
    path = tmp_path / "repo"
    _seed(icd.Repository.create(icd.local_filesystem_storage(path)))
    ds = xr.open_dataset(str(path), engine=ENGINE, group="era5", drop_variables=["lat"])
    assert "lat" not in ds.variables and "t2m" in ds


def test_engine_takes_a_repository_or_session_and_guesses_them(tmp_path: Path) -> None:
    repo = icd.Repository.create(icd.local_filesystem_storage(tmp_path / "repo"))
    _seed(repo)
    assert _scale(xr.open_dataset(repo, engine=ENGINE, group="era5", tag="v1")) == 1.0
    session = repo.readonly_session("dev")
    assert _scale(xr.open_dataset(session, engine=ENGINE, group="era5")) == 3.0
    backend = IcechunkBackendEntrypoint()
    assert backend.guess_can_open(repo) and backend.guess_can_open(session)
    assert not backend.guess_can_open(str(tmp_path / "repo"))
    assert not backend.guess_can_open("file.nc")


def test_python_open_dataset_from_a_url_or_session(tmp_path: Path) -> None:
    path = tmp_path / "repo"
    repo = icd.Repository.create(icd.local_filesystem_storage(path))
    ids = _seed(repo)
    ds = open_dataset(str(path), group="era5")
    assert ds["t2m"].chunks == ((4, 4, 4), (5,)) and _scale(ds) == 2.0
    assert _scale(open_dataset(path.as_uri(), tag="v1", group="era5")) == 1.0
    assert _scale(open_dataset(path, snapshot_id=ids["first"], group="era5")) == 1.0
    assert _scale(open_dataset(repo, branch="dev", group="era5")) == 3.0
    assert _scale(open_dataset(repo.readonly_session(tag="v1"), group="era5")) == 1.0
    w = repo.writable_session("main")  # a writable session shows its pending writes
    to_icechunk(_data(5.0), w, group="era5", mode="w")
    assert _scale(open_dataset(w, group="era5")) == 5.0


def test_bad_requests_are_our_errors(tmp_path: Path) -> None:
    path = tmp_path / "repo"
    repo = icd.Repository.create(icd.local_filesystem_storage(path))
    _seed(repo)
    with pytest.raises(InvalidInputError, match="at most one"):
        xr.open_dataset(str(path), engine=ENGINE, branch="main", tag="v1")
    with pytest.raises(InvalidInputError, match="already a session"):
        open_dataset(repo.readonly_session("main"), tag="v1")
    with pytest.raises(InvalidInputError, match="unknown storage option"):
        open_dataset(str(path), storage_options={"no_such_option": 1})
    with pytest.raises(NotFoundError, match="no xarray dataset at group 'nope'"):
        xr.open_dataset(str(path), engine=ENGINE, group="nope")
    with pytest.raises(NotFoundError):
        xr.open_dataset(str(path), engine=ENGINE, tag="no-such-tag")
    with pytest.raises(NotFoundError):
        open_dataset(str(tmp_path / "not-a-repo"))


# ---------------------------------------------------------------- S3 (moto)
@pytest.mark.s3
def test_engine_and_open_dataset_on_s3(make_s3_storage: Any, s3_server: str,
                                       s3_bucket: str) -> None:
    from conftest import S3_ACCESS_KEY_ID, S3_REGION, S3_SECRET_ACCESS_KEY

    ids = _seed(icd.Repository.create(make_s3_storage("repos/era5")))
    opts = {"endpoint_url": s3_server, "allow_http": True, "region": S3_REGION,
            "access_key_id": S3_ACCESS_KEY_ID, "secret_access_key": S3_SECRET_ACCESS_KEY}
    url = f"s3://{s3_bucket}/repos/era5"
    ds = xr.open_dataset(url, engine=ENGINE, chunks={}, group="era5", storage_options=opts)
    assert ds["t2m"].chunks == ((4, 4, 4), (5,))
    xr.testing.assert_identical(ds.load(), _data(2.0).load())
    old = xr.open_dataset(url, engine=ENGINE, chunks={}, group="era5", tag="v1",
                          storage_options=opts)
    assert _scale(old) == 1.0
    assert _scale(open_dataset(url, snapshot_id=ids["first"], group="era5",
                               storage_options=opts)) == 1.0
    assert _scale(open_dataset(url, branch="dev", group="era5", storage_options=opts)) == 3.0
