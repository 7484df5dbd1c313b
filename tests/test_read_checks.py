"""Reads check what they get: a chunk object whose size disagrees with its ref is an error.

Real repositories on local disk; the chunk files are truncated or extended on disk, as a
partial copy, a bad restore or a foreign writer would leave them (docs/spec.md section 5.2).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import zarr
from zarr.abc.store import RangeByteRequest
from zarr.core.buffer import default_buffer_prototype

import icechunk_dist as icd
from icechunk_dist._sync import run
from icechunk_dist.storage import Storage

N = 1000  # int32 values: 4000 bytes per chunk, far above the inline threshold


def _values() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 2**31, N, dtype="i4")


def _repo_with(tmp_path: Path, *, sharded: bool) -> tuple[icd.Repository, Path, str]:
    """A repository with one array ``a`` stored in one native chunk object.

    Returns the repository, the chunk file and the zarr key of the chunk.
    """
    repo = icd.Repository.create(icd.local_filesystem_storage(tmp_path / "repo"))
    s = repo.writable_session("main")
    if sharded:
        a = zarr.create_array(s.store, name="a", shape=(N,), chunks=(100,), shards=(N,),
                              dtype="i4", fill_value=-1, compressors=None)
    else:
        a = zarr.create_array(s.store, name="a", shape=(N,), chunks=(N,), dtype="i4",
                              fill_value=-1, compressors=None)
    a[:] = _values()
    s.commit("one chunk object")
    files = list((tmp_path / "repo" / "chunks").iterdir())
    assert len(files) == 1
    # before any damage the array reads back exactly
    np.testing.assert_array_equal(_read(repo)[:], _values())
    return repo, files[0], "a/c/0"


def _read(repo: icd.Repository) -> zarr.Array:
    return zarr.open_array(repo.readonly_session("main").store, path="a", mode="r")


def _check_error(exc: icd.FormatError, chunk: Path, key: str, what: str) -> None:
    assert exc.object_name == f"chunks/{chunk.name}"
    assert f"chunks/{chunk.name}" in str(exc)
    assert repr(key) in str(exc)
    assert what in str(exc)


@pytest.mark.parametrize("cut", [5, 3000, 3990])
def test_truncated_chunk_of_a_plain_array(tmp_path: Path, cut: int) -> None:
    repo, chunk, key = _repo_with(tmp_path, sharded=False)
    chunk.write_bytes(chunk.read_bytes()[:-cut])
    for sel in (slice(None), 5):
        with pytest.raises(icd.FormatError) as info:
            _read(repo)[sel]
        _check_error(info.value, chunk, key, "shorter")


@pytest.mark.parametrize("keep", [None, 4000, 100, 0])
def test_truncated_chunk_of_a_sharded_array(tmp_path: Path, keep: int | None) -> None:
    # keep=100 leaves less than the shard index; keep=0 (an empty file) made the old reader
    # return the fill value for the whole shard
    repo, chunk, key = _repo_with(tmp_path, sharded=True)
    raw = chunk.read_bytes()
    chunk.write_bytes(raw[:-5] if keep is None else raw[:keep])
    for sel in (slice(None), 5, slice(950, 1000)):
        with pytest.raises(icd.FormatError) as info:
            _read(repo)[sel]
        _check_error(info.value, chunk, key, "shorter")


@pytest.mark.parametrize("sharded", [False, True])
def test_chunk_longer_than_recorded(tmp_path: Path, sharded: bool) -> None:
    repo, chunk, key = _repo_with(tmp_path, sharded=sharded)
    chunk.write_bytes(chunk.read_bytes() + b"\x00" * 16)
    with pytest.raises(icd.FormatError) as info:
        _read(repo)[:]
    _check_error(info.value, chunk, key, "longer")


def test_ranged_read_inside_a_chunk_sees_only_what_it_gets(tmp_path: Path) -> None:
    # a byte range that ends before the truncation point reads correct bytes; one that
    # reaches past it is short: the signal a ranged read has
    repo, chunk, key = _repo_with(tmp_path, sharded=False)
    raw = chunk.read_bytes()
    chunk.write_bytes(raw[:2000])
    session = repo.readonly_session("main")
    proto = default_buffer_prototype()
    got = run(session.store.get(key, proto, RangeByteRequest(100, 200)))
    assert got is not None and got.to_bytes() == raw[100:200]
    with pytest.raises(icd.FormatError) as info:
        run(session.store.get(key, proto, RangeByteRequest(1900, 2100)))
    _check_error(info.value, chunk, key, "shorter")


def test_virtual_chunk_shorter_than_its_ref(tmp_path: Path) -> None:
    raw = tmp_path / "legacy.bin"
    raw.write_bytes(np.arange(100, dtype="<i4").tobytes()[:300])  # 100 bytes short
    config = icd.RepositoryConfig()  # virtual reads need an authorized container
    config.set_virtual_chunk_container(icd.VirtualChunkContainer(
        f"file://{tmp_path}/", icd.local_filesystem_store(str(tmp_path))))
    repo = icd.Repository.create(icd.local_filesystem_storage(tmp_path / "repo"), config,
                                 authorize_virtual_chunk_access={
                                     f"file://{tmp_path}/": icd.LocalFileSystemAccess})
    s = repo.writable_session("main")
    zarr.create_array(s.store, name="v", shape=(100,), chunks=(50,), dtype="<i4",
                      compressors=None, fill_value=0)
    s.store.set_virtual_ref("v/c/0", f"file://{raw}", offset=0, length=200)
    s.store.set_virtual_ref("v/c/1", f"file://{raw}", offset=200, length=200)
    s.commit("the second ref reaches past the end of the file")
    arr = zarr.open_array(repo.readonly_session("main").store, path="v", mode="r")
    np.testing.assert_array_equal(arr[:50], np.arange(50))
    with pytest.raises(icd.StorageError, match=r"'v/c/1' is shorter than its ref"):
        arr[:]


@pytest.mark.parametrize("sharded", [False, True])
def test_chunk_size_checked_on_s3(make_s3_storage: Callable[..., Storage],
                                  sharded: bool) -> None:
    # the same checks over a ranged GET of a network backend (moto), which clamps a range
    # past the end of the object
    storage = make_s3_storage()
    repo = icd.Repository.create(storage)
    s = repo.writable_session("main")
    kw = {"chunks": (100,), "shards": (N,)} if sharded else {"chunks": (N,)}
    a = zarr.create_array(s.store, name="a", shape=(N,), dtype="i4", fill_value=-1,
                          compressors=None, **kw)  # type: ignore[arg-type]
    a[:] = _values()
    s.commit("one chunk object")
    keys = run(_list(storage, "chunks/"))
    assert len(keys) == 1
    raw = run(storage.get(keys[0]))
    for damaged, what in ((raw[:-5], "shorter"), (raw + b"\x00", "longer")):
        run(storage.put(keys[0], damaged))  # overwrite in place
        with pytest.raises(icd.FormatError, match=what) as info:
            _read(repo)[:]
        assert info.value.object_name == keys[0]
        assert "'a/c/0'" in str(info.value)
    run(storage.put(keys[0], raw))
    np.testing.assert_array_equal(_read(repo)[:], _values())


async def _list(storage: Storage, prefix: str) -> list[str]:
    return [m.key async for m in storage.list(prefix)]
