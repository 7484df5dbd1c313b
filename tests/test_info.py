"""Look inside a repository (issue 21, point 12).

``icechunk-dist info REPO [--branch B | --tag T | --snapshot ID] [--group G] [--json]``: the
tree of groups and arrays with shape, chunks, dtype, chunks written (native, inline,
virtual) and bytes stored, from ``Session.chunk_stats`` over the manifests. ``log --inputs``
lists what a commit's metadata records as its inputs; ``tags`` says when there are none;
``diff`` of a group written again with mode "w" reads as a replacement. Repositories on
local disk with native, inline, virtual and sharded chunks.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
from zarr.core.sync import sync

import icechunk_dist as icd
from icechunk_dist.cli import main
from icechunk_dist.ingest import METADATA_KEY

CHUNK = 10 * 30 * 4  # bytes of one uncompressed float32 chunk of era5/t2m (native: > 512)


def _build(tmp_path: Path) -> tuple[str, icd.Repository, dict[str, str]]:
    """v1: era5/t2m with 3 of 4 chunks (native), era5/time (inline), legacy/v with one
    virtual chunk, sharded/s (2 shards); then main writes the 4th chunk of t2m."""
    raw = tmp_path / "legacy.bin"
    raw.write_bytes(b"HEADER" + np.arange(100, dtype="<i4").tobytes())
    path = tmp_path / "repo"
    repo = icd.Repository.create(icd.local_filesystem_storage(path))
    s = repo.writable_session("main")
    zarr.create_group(s.store, path="era5", attributes={"title": "ERA5-like"})
    t2m = zarr.create_array(s.store, name="era5/t2m", shape=(40, 30), chunks=(10, 30),
                            dtype="f4", compressors=None, dimension_names=["time", "lat"])
    t2m[:30] = np.random.default_rng(0).random((30, 30), dtype="f4")
    zarr.create_array(s.store, name="era5/time", shape=(40,), chunks=(40,), dtype="i4",
                      compressors=None)[:] = np.arange(40, dtype="i4")
    zarr.create_array(s.store, name="legacy/v", shape=(100,), chunks=(50,), dtype="<i4",
                      compressors=None, fill_value=0)
    s.store.set_virtual_ref("legacy/v/c/0", f"file://{raw}", offset=6, length=200,
                            validate_container=False)  # never read here: no container
    zarr.create_array(s.store, name="sharded/s", shape=(1024,), chunks=(64,), shards=(512,),
                      dtype="i8", compressors=None)[:] = np.arange(1024)
    first = s.commit("first")
    repo.create_tag("v1", first)
    s = repo.writable_session("main")
    zarr.open_array(s.store, path="era5/t2m", mode="r+")[30:] = 1.0
    second = s.commit("second")
    return str(path), repo, {"first": first, "second": second}


def _json(capsys: pytest.CaptureFixture[str], argv: list[str]) -> dict[str, Any]:
    capsys.readouterr()
    assert main(argv) == 0
    doc: dict[str, Any] = json.loads(capsys.readouterr().out)
    return doc


def _node(doc: dict[str, Any], path: str) -> dict[str, Any]:
    (node,) = [n for n in doc["nodes"] if n["path"] == path]
    return node


# ---------------------------------------------------------------- Session.chunk_stats
def test_chunk_stats_counts_kinds_and_bytes(tmp_path: Path) -> None:
    _, repo, _ids = _build(tmp_path)
    s = repo.readonly_session("main")
    t2m = s.chunk_stats("/era5/t2m")
    assert (t2m.native, t2m.inline, t2m.virtual, t2m.written) == (4, 0, 0, 4)
    assert t2m.stored_bytes == 4 * CHUNK and t2m.virtual_bytes == 0
    time = s.chunk_stats("era5/time")
    assert (time.native, time.inline, time.stored_bytes) == (0, 1, 160)
    v = s.chunk_stats("legacy/v")
    assert (v.virtual, v.written, v.stored_bytes, v.virtual_bytes) == (1, 1, 0, 200)
    sharded = s.chunk_stats("sharded/s")
    assert sharded.written == 2  # one object per shard
    keys = [k for k in sync(_keys(s.store, "sharded/s/c/"))]
    assert sharded.stored_bytes == sum(sync(s.store.getsize(k)) for k in keys)
    assert repo.readonly_session(tag="v1").chunk_stats("era5/t2m").written == 3
    with pytest.raises(icd.InvalidInputError):
        s.chunk_stats("era5")
    with pytest.raises(icd.NotFoundError):
        s.chunk_stats("era5/nope")


async def _keys(store: Any, prefix: str) -> list[str]:
    return [k async for k in store.list_prefix(prefix)]


def test_chunk_stats_sees_pending_writes_and_deletes(tmp_path: Path) -> None:
    _, repo, _ids = _build(tmp_path)
    s = repo.writable_session("main")
    sync(s.store.delete("era5/t2m/c/0/0"))
    sync(s.store.delete("era5/t2m/c/1/0"))
    zarr.create_array(s.store, name="new", shape=(4,), chunks=(2,), dtype="i1",
                      compressors=None)[:2] = 1
    assert s.chunk_stats("era5/t2m").written == 2
    assert s.chunk_stats("era5/t2m").stored_bytes == 2 * CHUNK
    assert s.chunk_stats("new") == (0, 1, 0, 2, 0)


# ---------------------------------------------------------------- icechunk-dist info
def test_info_prints_the_tree(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, _repo, ids = _build(tmp_path)
    capsys.readouterr()
    assert main(["info", path]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].startswith(f"branch main: snapshot {ids['second']}") and "second" in lines[0]
    assert lines[1] == "/"
    assert "  era5/" in lines and "  legacy/" in lines and "  sharded/" in lines
    (t2m,) = [x for x in lines if x.strip().startswith("t2m ")]
    assert t2m.startswith("    t2m")  # under era5/
    for part in ("float32", "shape (40, 30)", "chunks (10, 30)",
                 "4/4 chunks written (native 4)", "4.7 KiB stored"):
        assert part in t2m, (part, t2m)
    (time,) = [x for x in lines if x.strip().startswith("time ")]
    assert "int32" in time and "shape (40,)" in time and "1/1 chunks written (inline 1)" in time
    assert "160 B stored" in time
    (v,) = [x for x in lines if x.strip().startswith("v ")]
    assert "1/2 chunks written (virtual 1)" in v and "0 B stored (+200 B virtual)" in v
    (s,) = [x for x in lines if x.strip().startswith("s ")]
    assert "chunks (64,)  shards (512,)" in s and "2/2 chunks written (native 2)" in s
    assert lines[-1].startswith("4 group(s), 4 array(s), 8 chunk(s) written")


@pytest.mark.parametrize("ref", [["--tag", "v1"], ["--snapshot", "first"],
                                 ["--branch", "main"], []])
def test_info_json_at_a_ref(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                            ref: list[str]) -> None:
    path, _repo, ids = _build(tmp_path)
    ref = [ids.get(x, x) for x in ref]
    doc = _json(capsys, ["info", path, *ref, "--json"])
    old = bool(ref) and ref[0] in ("--tag", "--snapshot")
    assert doc["snapshot_id"] == ids["first" if old else "second"]
    assert doc["branch"] == (None if old else "main")
    assert doc["tag"] == ("v1" if ref[:1] == ["--tag"] else None)
    t2m = _node(doc, "/era5/t2m")
    assert t2m == {
        "path": "/era5/t2m", "kind": "array", "shape": [40, 30], "chunks": [10, 30],
        "shards": None, "dtype": "float32", "dimension_names": ["time", "lat"],
        "chunks_total": 4, "chunks_written": 3 if old else 4, "native": 3 if old else 4,
        "inline": 0, "virtual": 0, "stored_bytes": (3 if old else 4) * CHUNK,
        "virtual_bytes": 0,
    }
    assert _node(doc, "/legacy/v")["virtual_bytes"] == 200
    assert _node(doc, "/")["kind"] == "group"
    assert doc["totals"]["groups"] == 4 and doc["totals"]["arrays"] == 4
    assert doc["totals"]["stored_bytes"] == sum(
        n["stored_bytes"] for n in doc["nodes"] if n["kind"] == "array")


def test_info_of_one_group(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, _repo, _ids = _build(tmp_path)
    doc = _json(capsys, ["info", path, "--group", "/era5/", "--json"])
    assert doc["group"] == "/era5"
    assert [n["path"] for n in doc["nodes"]] == ["/era5", "/era5/t2m", "/era5/time"]
    assert main(["info", path, "--group", "era5"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1] == "/era5" and out[2].startswith("  t2m ")


def test_info_bad_input_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, _repo, _ids = _build(tmp_path)
    assert main(["info", path, "--group", "nope"]) == 2
    assert "no group at '/nope'" in capsys.readouterr().err
    assert main(["info", path, "--group", "era5/t2m"]) == 2
    assert "is an array, not a group" in capsys.readouterr().err
    assert main(["info", path, "--tag", "no-such-tag"]) == 2
    assert main(["info", str(tmp_path / "nothing")]) == 2
    with pytest.raises(SystemExit):
        main(["info", path, "--tag", "v1", "--branch", "main"])


def test_info_of_an_empty_repository(tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "repo"
    icd.Repository.create(icd.local_filesystem_storage(path))
    capsys.readouterr()
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1:] == ["/ (empty: no groups or arrays)"]
    doc = _json(capsys, ["info", str(path), "--json"])
    assert doc["nodes"] == [] and doc["group"] == "/" and doc["totals"]["arrays"] == 0


# ---------------------------------------------------------------- log, tags, diff
def test_log_inputs_shows_what_commits_record(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "repo"
    repo = icd.Repository.create(icd.local_filesystem_storage(path))
    s = repo.writable_session("main")
    zarr.create_array(s.store, name="x", shape=(2,), chunks=(2,), dtype="i1")
    files = [{"url": "file:///data/2024-01-01.nc", "size": 6_000_000},
             {"url": "s3://raw/2024-01-02.nc", "size": 5_999_872, "etag": "abc"}]
    sid = s.commit("ingest 2 file(s) along 'time'",
                   metadata={METADATA_KEY: {"version": 1, "group": None,
                                            "concat_dim": "time", "files": files}})
    capsys.readouterr()
    assert main(["log", str(path), "--inputs"]) == 0
    out = capsys.readouterr().out.splitlines()
    i = next(n for n, line in enumerate(out) if line.startswith(sid))
    assert out[i + 1:i + 4] == ["    inputs (2):",
                                "      file:///data/2024-01-01.nc (6,000,000 bytes)",
                                "      s3://raw/2024-01-02.nc (5,999,872 bytes)"]
    assert "Repository initialized" in out[i + 4] and len(out) == i + 5  # no inputs: no lines
    assert main(["log", str(path)]) == 0  # without --inputs: one line per commit
    assert len(capsys.readouterr().out.splitlines()) == 2


def test_log_inputs_of_a_map_commit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    xr = pytest.importorskip("xarray")
    dask = pytest.importorskip("dask")
    from icechunk_dist.xarray import reprocess, to_icechunk

    path = tmp_path / "repo"
    repo = icd.Repository.create(icd.local_filesystem_storage(path))
    s = repo.writable_session("main")
    to_icechunk(xr.Dataset({"v": ("time", np.arange(8.0))}).chunk({"time": 4}), s)
    sid = s.commit("data")
    with dask.config.set(scheduler="threads"):
        reprocess(repo, source="main", branch="by2", rechunk={"time": 2})
    capsys.readouterr()
    assert main(["log", str(path), "--branch", "by2", "--inputs", "-n", "1"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1:] == ["    inputs (1):", f"      main = {sid}, rechunk {{'time': 2}}"]


def test_tags_say_when_there_are_none(tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "repo"
    repo = icd.Repository.create(icd.local_filesystem_storage(path))
    capsys.readouterr()
    assert main(["tags", str(path)]) == 0
    assert capsys.readouterr().out == "no tags\n"
    repo.create_tag("v1", repo.lookup_branch("main"))
    assert main(["tags", str(path)]) == 0
    assert capsys.readouterr().out == f"v1  {repo.lookup_branch('main')}\n"


def test_diff_of_a_replaced_group_reads_as_a_replacement(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    xr = pytest.importorskip("xarray")
    from icechunk_dist.xarray import to_icechunk

    path = tmp_path / "repo"
    repo = icd.Repository.create(icd.local_filesystem_storage(path))
    ds = xr.Dataset({"t": (("time", "x"), np.zeros((4, 3)))}, coords={"time": np.arange(4)})
    s = repo.writable_session("main")
    to_icechunk(ds, s, group="g")
    a = s.commit("a")
    s = repo.writable_session("main")
    to_icechunk(ds * 2, s, group="g", mode="w")  # the group, written again
    zarr.create_array(s.store, name="other", shape=(2,), chunks=(2,), dtype="i1")
    b = s.commit("b")
    capsys.readouterr()
    assert main(["diff", str(path), a, b]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[:3] == ["replaced groups: /g", "replaced arrays: /g/t, /g/time",
                       "new arrays: /other"]
    assert not any(line.startswith(("deleted", "new groups")) for line in out), out
    assert "chunks changed in /g/t: 1" in out
    assert main(["diff", str(path), a, a]) == 0
    assert capsys.readouterr().out == "no changes\n"
