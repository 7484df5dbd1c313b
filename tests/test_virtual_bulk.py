"""Many virtual refs at once (issue 22): ``set_virtual_refs`` with Icechunk's
``VirtualChunkSpec``, ``set_virtual_refs_arr``, our columnar ``set_virtual_refs_columns``, refs
set on forks and merged, the manifest encoding that keeps each URL once, manifests of the
older encoding (one URL per ref) still read, and ``all_virtual_chunk_locations``.
"""

from __future__ import annotations

import pickle
from datetime import datetime
from pathlib import Path

import msgspec
import numpy as np
import pytest
import zarr

import icechunk_dist as icd
from icechunk_dist.format import (
    KIND_VIRTUAL,
    ChunkTable,
    ManifestData,
    ObjectType,
    TableBuilder,
    decode_object,
)


def is_no_ids(ids: np.ndarray) -> bool:
    """Whether every row shares one zero id (no 12 bytes per virtual ref)."""
    return bool(ids.ndim == 2 and len(ids) > 1 and ids.strides[0] == 0 and not ids.any())

CHUNK = 16  # bytes: 4 int32 values per chunk
FILES = 8


@pytest.fixture
def sources(tmp_path: Path) -> tuple[Path, str]:
    """FILES files of 64 chunks each: chunk ``i`` of file ``f`` holds ``f*1000 + 4i..``."""
    src = tmp_path / "src"
    src.mkdir()
    for f in range(FILES):
        (src / f"f{f}.bin").write_bytes(
            (f * 1000 + np.arange(64 * 4, dtype="<i4")).tobytes())
    return src, f"file://{src}/"


def _repo(tmp_path: Path, src: Path, prefix: str) -> icd.Repository:
    config = icd.RepositoryConfig()
    config.set_virtual_chunk_container(
        icd.VirtualChunkContainer(prefix, icd.local_filesystem_store(str(src))))
    return icd.Repository.create(icd.local_filesystem_storage(tmp_path / "repo"), config,
                                 authorize_virtual_chunk_access={
                                     prefix: icd.LocalFileSystemAccess})


def _array(session: icd.Session, n: int = FILES * 64) -> zarr.Array:
    """A 2-D array of (files x 64) chunks of 1 x 4 int32."""
    return zarr.create_array(session.store, name="a", shape=(n // 64, 64 * 4),
                             chunks=(1, 4), dtype="<i4", compressors=None, fill_value=-1)


def _expected() -> np.ndarray:
    return np.stack([f * 1000 + np.arange(64 * 4, dtype="<i4") for f in range(FILES)])


def _columns(prefix: str) -> dict[str, object]:
    lin = np.arange(FILES * 64)
    return {"coords": np.stack([lin // 64, lin % 64], axis=1), "location_ids": lin // 64,
            "offsets": (lin % 64) * CHUNK, "lengths": np.full(len(lin), CHUNK),
            "locations": [f"{prefix}f{f}.bin" for f in range(FILES)]}


def _manifests(tmp_path: Path) -> list[ManifestData]:
    out = []
    for p in sorted((tmp_path / "repo" / "manifests").iterdir()):
        out.append(decode_object(p.read_bytes(), ManifestData, ObjectType.MANIFEST,
                                 name=p.name))
    return out


def test_set_virtual_refs_with_specs(tmp_path: Path, sources: tuple[Path, str]) -> None:
    src, prefix = sources
    repo = _repo(tmp_path, src, prefix)
    s = repo.writable_session("main")
    _array(s)
    etags = [icd.virtual.source_stat(f"{prefix}f{f}.bin").etag for f in range(FILES)]
    specs = [icd.VirtualChunkSpec([f, i], f"{prefix}f{f}.bin", i * CHUNK, CHUNK,
                                  etag_checksum=etags[f])
             for f in range(FILES) for i in range(64)]
    specs.append(icd.VirtualChunkSpec([0, 0], "s3://uncovered/x.nc", 0, CHUNK))
    # validated: the ref no container covers is left out and its index returned
    assert s.store.set_virtual_refs("a", specs) == [(0, 0)]
    assert s.store.set_virtual_refs("/a", specs[:1]) is None  # leading slash: same array
    s.commit("refs")
    got = zarr.open_array(repo.readonly_session("main").store, path="a", mode="r")[:]
    np.testing.assert_array_equal(got, _expected())
    # without validation it is stored (and refused when read)
    s = repo.writable_session("main")
    assert s.store.set_virtual_refs("a", specs[-1:], validate_containers=False) is None
    assert s.all_virtual_chunk_locations() == sorted(
        [f"{prefix}f{f}.bin" for f in range(FILES)] + ["s3://uncovered/x.nc"])
    with pytest.raises(icd.VirtualChunkAccessError):
        zarr.open_array(s.store, path="a", mode="r")[0, :4]


def test_bulk_input_is_checked(tmp_path: Path, sources: tuple[Path, str]) -> None:
    src, prefix = sources
    repo = _repo(tmp_path, src, prefix)
    s = repo.writable_session("main")
    _array(s)
    s.commit("array")
    s = repo.writable_session("main")
    url = f"{prefix}f0.bin"
    with pytest.raises(icd.InvalidInputError, match="outside array"):
        s.store.set_virtual_refs("a", [icd.VirtualChunkSpec([FILES, 0], url, 0, CHUNK)])
    with pytest.raises(icd.InvalidInputError, match="2-dimensional"):
        s.store.set_virtual_refs("a", [icd.VirtualChunkSpec([0], url, 0, CHUNK)])
    with pytest.raises(icd.InvalidInputError, match=">= 0"):
        s.store.set_virtual_refs("a", [icd.VirtualChunkSpec([0, 0], url, -1, CHUNK)])
    with pytest.raises(icd.InvalidInputError, match="URL"):
        s.store.set_virtual_refs("a", [icd.VirtualChunkSpec([0, 0], "f0.bin", 0, CHUNK)])
    with pytest.raises(icd.NotFoundError):
        s.store.set_virtual_refs("missing", [icd.VirtualChunkSpec([0, 0], url, 0, CHUNK)])
    cols = _columns(prefix)
    with pytest.raises(icd.InvalidInputError, match="location ids"):
        s.store.set_virtual_refs_columns("a", **{**cols, "locations": cols["locations"][:2]})
    with pytest.raises(icd.InvalidInputError, match="timezone-aware"):
        s.store.set_virtual_refs_columns("a", **cols, last_modified=[  # type: ignore[arg-type]
            datetime(2024, 1, 1)] * FILES)
    assert not s.has_uncommitted_changes  # nothing of a refused call was recorded
    ro = s.store.with_read_only(True)
    with pytest.raises(icd.ReadOnlyError):
        ro.set_virtual_refs("a", [])


def test_columns_and_arr_forms(tmp_path: Path, sources: tuple[Path, str]) -> None:
    src, prefix = sources
    repo = _repo(tmp_path, src, prefix)
    s = repo.writable_session("main")
    _array(s)
    assert s.store.set_virtual_refs_columns("a", **_columns(prefix)) is None  # type: ignore[arg-type]
    s.commit("columns")
    got = zarr.open_array(repo.readonly_session("main").store, path="a", mode="r")[:]
    np.testing.assert_array_equal(got, _expected())
    # Icechunk's flat form: one location per chunk of a grid (C order), "" for none,
    # placed at an offset; here the last two files' grid again, second half skipped
    s = repo.writable_session("main")
    locs = [f"{prefix}f{f}.bin" if i < 32 else "" for f in (0, 1) for i in range(64)]
    lin = np.arange(128)
    assert s.store.set_virtual_refs_arr(
        "a", (2, 64), locs, (lin % 64) * CHUNK, np.full(128, CHUNK, np.uint64),
        arr_offset=(FILES - 2, 0)) is None
    s.commit("arr form")
    got = zarr.open_array(repo.readonly_session("main").store, path="a", mode="r")[:]
    want = _expected()
    want[FILES - 2:, :32 * 4] = want[:2, :32 * 4]
    np.testing.assert_array_equal(got, want)


def test_a_url_is_stored_once_per_manifest(tmp_path: Path, sources: tuple[Path, str]) -> None:
    src, prefix = sources
    repo = _repo(tmp_path, src, prefix)
    s = repo.writable_session("main")
    _array(s)
    for f in range(FILES):  # one ref at a time, as before bulk refs existed
        for i in range(64):
            s.store.set_virtual_ref(f"a/c/{f}/{i}", f"{prefix}f{f}.bin", offset=i * CHUNK,
                                    length=CHUNK)
    s.commit("512 refs into 8 files")
    (m,) = _manifests(tmp_path)
    assert m.count == FILES * 64
    assert sorted(m.urls) == [f"{prefix}f{f}.bin" for f in range(FILES)]  # not 512 entries
    got = zarr.open_array(repo.readonly_session("main").store, path="a", mode="r")[:]
    np.testing.assert_array_equal(got, _expected())


def test_manifests_with_one_url_per_ref_still_read() -> None:
    # the encoding before issue 22: every virtual row had its own url entry
    n = 6
    coords = np.array([[0, i] for i in range(n)], "<i8")
    m = ManifestData(
        node_id="N", ndim=2, count=n, coords=coords.tobytes(),
        kinds=bytes([KIND_VIRTUAL]) * n, ids=bytes(12 * n),
        offsets=(np.arange(n, dtype="<u8") * 10).tobytes(),
        lengths=np.full(n, 10, "<u8").tobytes(), url_idx=np.arange(n, dtype="<i4").tobytes(),
        urls=tuple(f"s3://b/f{i % 2}.nc" for i in range(n)), etags=(None,) * n)
    raw = msgspec.msgpack.encode(m)
    t = ChunkTable.from_manifest(msgspec.msgpack.decode(raw, type=ManifestData), name="old")
    assert [t.row_payload(i)[1] for i in range(n)] == [
        (f"s3://b/f{i % 2}.nc", None, 0, 10 * i, 10) for i in range(n)]
    again = t.to_manifest("N")  # rewritten (e.g. by a commit touching the split): deduped
    assert again.urls == ("s3://b/f0.nc", "s3://b/f1.nc")
    back = ChunkTable.from_manifest(again, name="new")
    assert [back.row_payload(i) for i in range(n)] == [t.row_payload(i) for i in range(n)]


def test_builder_concat_and_compact_keep_locations_once() -> None:
    a, b = TableBuilder(1), TableBuilder(1)
    for i in range(100):
        a.add_virtual((i,), "s3://b/x.nc", i, 1, "e1")
        b.add_virtual((100 + i,), "s3://b/x.nc" if i % 2 else "s3://b/y.nc", i, 1, "e1")
    b.add_virtual((300,), "s3://b/x.nc", 0, 1, None)  # same url, another checksum
    ta, tb = a.build(), b.build()
    assert ta.urls == ["s3://b/x.nc"] and len(tb.urls) == 3
    cat = ChunkTable.concat([ta, tb])
    assert len(cat.urls) == 3
    part = cat.take(np.arange(10))  # rows of the first url only
    assert part.compact().urls == ["s3://b/x.nc"]
    assert is_no_ids(cat.ids) and is_no_ids(part.ids)  # no 12 bytes per virtual ref
    back = pickle.loads(pickle.dumps(cat))
    assert is_no_ids(back.ids) and back.fingerprint() == cat.fingerprint()


def test_refs_set_on_forks_merge_and_commit(tmp_path: Path, sources: tuple[Path, str]) -> None:
    src, prefix = sources
    repo = _repo(tmp_path, src, prefix)
    s = repo.writable_session("main")
    _array(s)
    s.commit("array")
    s = repo.writable_session("main")
    cols = _columns(prefix)
    forks = []
    for f in range(FILES):  # one fork per file, sent to a "worker" and back
        fork = pickle.loads(pickle.dumps(s.fork()))
        rows = slice(f * 64, (f + 1) * 64)
        assert fork.store.set_virtual_refs_columns(
            "a", coords=cols["coords"][rows], location_ids=np.zeros(64, np.int64),  # type: ignore[index]
            offsets=cols["offsets"][rows], lengths=cols["lengths"][rows],  # type: ignore[index]
            locations=[f"{prefix}f{f}.bin"]) is None
        back = pickle.loads(pickle.dumps(fork))
        assert all(is_no_ids(ac.table.ids) for ac in back._changes.chunks.values())
        forks.append(back)
    merged = forks[0].child().merge(*forks[:4])  # a level of a merge tree
    s.merge(merged, *forks[4:])
    s.commit("refs from 8 forks")
    got = zarr.open_array(repo.readonly_session("main").store, path="a", mode="r")[:]
    np.testing.assert_array_equal(got, _expected())


def test_two_forks_pointing_one_chunk_elsewhere_conflict(tmp_path: Path,
                                                         sources: tuple[Path, str]) -> None:
    src, prefix = sources
    repo = _repo(tmp_path, src, prefix)
    s = repo.writable_session("main")
    _array(s)
    s.commit("array")
    s = repo.writable_session("main")
    a, b = s.fork(), s.fork()
    a.store.set_virtual_ref("a/c/0/0", f"{prefix}f0.bin", offset=0, length=CHUNK)
    b.store.set_virtual_ref("a/c/0/0", f"{prefix}f1.bin", offset=0, length=CHUNK)
    with pytest.raises(icd.MergeConflictError, match=r"\(0, 0\)"):
        s.merge(a, b)
    # the same ref from two forks is one write
    c, d = s.fork(), s.fork()
    for f in (c, d):
        f.store.set_virtual_ref("a/c/0/1", f"{prefix}f0.bin", offset=CHUNK, length=CHUNK)
    s.merge(c, d)


def test_all_virtual_chunk_locations_sees_overwrites(tmp_path: Path,
                                                     sources: tuple[Path, str]) -> None:
    src, prefix = sources
    repo = _repo(tmp_path, src, prefix)
    s = repo.writable_session("main")
    _array(s)
    s.store.set_virtual_refs_columns("a", **_columns(prefix))  # type: ignore[arg-type]
    s.commit("refs")
    every = [f"{prefix}f{f}.bin" for f in range(FILES)]
    assert repo.readonly_session("main").all_virtual_chunk_locations() == every
    s = repo.writable_session("main")
    arr = zarr.open_array(s.store, path="a", mode="r+")
    arr[0, :] = 5  # every chunk of file 0 rewritten as native chunks
    assert s.all_virtual_chunk_locations() == every[1:]
    s.commit("file 0 replaced")
    assert repo.readonly_session("main").all_virtual_chunk_locations() == every[1:]
