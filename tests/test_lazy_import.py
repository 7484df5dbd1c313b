"""Port by one import (issue 21, point 14).

``import icechunk_dist as icechunk`` is the only import line Icechunk code needs:
``icechunk.dask.store_dask(...)`` and ``icechunk.xarray.to_icechunk(...)`` load their
submodules on first use, and importing the package alone imports neither dask nor xarray.
Each check runs in a fresh interpreter, so nothing imported by other tests hides the result.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _run(code: str, tmp_path: Path) -> str:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout


def test_importing_the_package_imports_neither_dask_nor_xarray(tmp_path: Path) -> None:
    out = _run("""
        import sys
        import icechunk_dist as icechunk
        heavy = sorted(m for m in sys.modules
                       if m.split(".")[0] in ("dask", "distributed", "xarray"))
        print("heavy:", heavy)
        print("loaded:", sorted(m for m in ("icechunk_dist.dask", "icechunk_dist.xarray",
                                            "icechunk_dist.ingest") if m in sys.modules))
        print("dir:", all(n in dir(icechunk) for n in ("dask", "xarray")))
    """, tmp_path)
    assert "heavy: []" in out
    assert "loaded: []" in out
    assert "dir: True" in out


def test_icechunk_dask_store_dask_with_one_import(tmp_path: Path) -> None:
    pytest.importorskip("dask")
    out = _run(f"""
        import dask.array as da
        import numpy as np
        import zarr

        import icechunk_dist as icechunk

        storage = icechunk.local_filesystem_storage({str(tmp_path / "r")!r})
        repo = icechunk.Repository.create(storage)
        session = repo.writable_session("main")
        zarr.create_array(session.store, name="x", shape=(8, 8), chunks=(4, 4), dtype="f4")
        fork = session.fork()
        target = zarr.open_array(fork.store, path="x", mode="r+")
        with __import__("dask").config.set(scheduler="threads"):
            merged = icechunk.dask.store_dask(sources=[da.ones((8, 8), chunks=4, dtype="f4")],
                                              targets=[target])
        session.merge(merged)
        session.commit("one import")
        back = zarr.open_array(repo.readonly_session("main").store, path="x", mode="r")
        print("sum:", int(back[:].sum()))
    """, tmp_path)
    assert "sum: 64" in out


def test_icechunk_xarray_to_icechunk_with_one_import(tmp_path: Path) -> None:
    pytest.importorskip("xarray")
    out = _run(f"""
        import numpy as np
        import xarray as xr

        import icechunk_dist as icechunk

        storage = icechunk.local_filesystem_storage({str(tmp_path / "r")!r})
        repo = icechunk.Repository.create(storage)
        session = repo.writable_session("main")
        icechunk.xarray.to_icechunk(xr.Dataset({{"v": ("t", np.arange(5.0))}}), session)
        session.commit("one import")
        ds = icechunk.xarray.open_dataset(repo.readonly_session("main"))
        print("v:", ds["v"].values.tolist())
    """, tmp_path)
    assert "v: [0.0, 1.0, 2.0, 3.0, 4.0]" in out


def test_unknown_attributes_still_raise(tmp_path: Path) -> None:
    out = _run("""
        import icechunk_dist as icechunk
        try:
            icechunk.no_such_thing
        except AttributeError as e:
            print("error:", e)
        print("ingest:", callable(icechunk.ingest.ingest))
    """, tmp_path)
    assert "error: module 'icechunk_dist' has no attribute 'no_such_thing'" in out
    assert "ingest: True" in out
