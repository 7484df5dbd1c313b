"""Correctness of the fast write paths: chunk objects written behind on network storage,
small local writes without the runtime hop, merges of disjoint forks without sorting, and
manifest splits taken as row slices."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import zarr
from zarr.core.buffer import default_buffer_prototype

import icechunk_dist as icd
from icechunk_dist.changeset import ArrayChunks, ChangeSet
from icechunk_dist.errors import ConflictError, StorageError
from icechunk_dist.format import KIND_NATIVE, KIND_TOMBSTONE, ChunkTable
from icechunk_dist.storage import Fault, FaultyStorage, Storage


def _buf(data: bytes) -> object:
    return default_buffer_prototype().buffer.from_bytes(data)


def _chunk(i: int) -> bytes:
    return np.full(256, i + 1, dtype="f4").tobytes()  # 1 KiB: a native (not inline) chunk


def _session_with_array(repo: icd.Repository, n: int) -> icd.Session:
    s = repo.writable_session("main")
    zarr.create_array(s.store, name="x", shape=(n * 256,), chunks=(256,), dtype="f4",
                      compressors=None, fill_value=0.0)
    s.commit("array")
    return repo.writable_session("main")


# ---------------------------------------------------------------------- write-behind (S3)
def test_write_behind_chunks_all_land_before_commit(make_s3_storage: Callable[..., Storage]
                                                    ) -> None:
    repo = icd.Repository.create(make_s3_storage("wb"))
    n = 150  # more than the window of writes in flight
    s = _session_with_array(repo, n)
    store = s.store

    async def write() -> bytes | None:
        for i in range(n):
            await store.set(f"x/c/{i}", _buf(_chunk(i)))  # type: ignore[arg-type]
        # read-your-writes while the last writes may still be landing
        got = await store.get("x/c/149", default_buffer_prototype())
        return None if got is None else got.to_bytes()

    assert asyncio.run(write()) == _chunk(149)
    s.commit("chunks")
    arr = zarr.open_array(repo.readonly_session("main").store, path="x")
    np.testing.assert_array_equal(arr[:], np.repeat(np.arange(1, n + 1, dtype="f4"), 256))


def test_a_failed_background_write_fails_the_commit(make_s3_storage: Callable[..., Storage]
                                                    ) -> None:
    storage = FaultyStorage(make_s3_storage("wbfail"))
    repo = icd.Repository.create(storage)
    s = _session_with_array(repo, 4)
    tip = repo.lookup_branch("main")
    storage.set_faults([Fault.transient(op="put", prefix="chunks/")])  # every try fails
    arr = zarr.open_array(s.store, path="x")
    with contextlib.suppress(StorageError):  # reported right away if the window was full
        arr[:] = np.arange(1024, dtype="f4")
    with pytest.raises(StorageError):
        s.commit("must not land")
    storage.set_faults([])
    with pytest.raises(StorageError):  # still: the change-set refers to missing objects
        s.commit("must not land either")
    assert repo.lookup_branch("main") == tip
    s.discard_changes()
    arr[:] = np.arange(1024, dtype="f4")
    s.commit("after discarding")
    np.testing.assert_array_equal(
        zarr.open_array(repo.readonly_session("main").store, path="x")[:],
        np.arange(1024, dtype="f4"))


def test_fork_pickling_and_merge_wait_for_background_writes(
        make_s3_storage: Callable[..., Storage]) -> None:
    storage = FaultyStorage(make_s3_storage("wbfork"))
    repo = icd.Repository.create(storage)
    s = _session_with_array(repo, 8)
    fork = s.fork()
    a = zarr.open_array(fork.store, path="x")
    a[:1024] = 5.0
    copy = pickle.loads(pickle.dumps(fork))  # pickling waited: every object has landed
    landed = {k for k in storage.landed if k.startswith("chunks/")}
    assert len(landed) == 4
    s.merge(copy)
    s.commit("fork")
    np.testing.assert_array_equal(
        zarr.open_array(repo.readonly_session("main").store, path="x")[:1024], 5.0)

    s2 = repo.writable_session("main")
    f2 = s2.fork()
    storage.set_faults([Fault.transient(op="put", prefix="chunks/")])
    b = zarr.open_array(f2.store, path="x")
    with contextlib.suppress(StorageError):
        b[1024:] = 7.0
    with pytest.raises(StorageError):
        pickle.dumps(f2)
    with pytest.raises(StorageError):
        s2.merge(f2)


# ---------------------------------------------------------------------- local puts
def test_small_local_puts_are_atomic_files_and_staging_is_invisible(tmp_path: Path) -> None:
    storage = icd.local_filesystem_storage(str(tmp_path / "st"))
    storage.put_sync("a/b/c", b"one")  # parent directories are created
    assert storage.get_sync("a/b/c") == b"one"
    storage.put_sync("a/b/c", b"two")  # overwrite replaces
    assert storage.get_sync("a/b/c") == b"two"
    big = os.urandom(300 * 1024)  # above the inline size: obstore's own path
    storage.put_sync("a/big", big)
    assert storage.get_sync("a/big") == big
    # a staged file left by a crash between write and rename is not an object
    (tmp_path / "st" / "a" / "b" / "c#123456").write_bytes(b"torn")
    assert sorted(m.key for m in storage.list_sync("a/")) == ["a/b/c", "a/big"]
    assert not [p for p in (tmp_path / "st").rglob("*#*") if p.name != "c#123456"]
    with pytest.raises(icd.AlreadyExistsError):
        storage.put_sync("a/b/c", b"three", mode="create")
    assert storage.get_sync("a/b/c") == b"two"


def test_local_put_failure_is_a_storage_error(tmp_path: Path) -> None:
    root = tmp_path / "st"
    storage = icd.local_filesystem_storage(str(root))
    storage.put_sync("f", b"x")
    with pytest.raises(StorageError):
        storage.put_sync("f/below-a-file", b"y")  # a file where a directory must be


# ---------------------------------------------------------------------- merges
def _table(coords: np.ndarray, seed: int, *, normalized: bool = True) -> ChunkTable:
    rng = np.random.default_rng(seed)
    n = len(coords)
    t = ChunkTable(
        ndim=2, coords=np.ascontiguousarray(coords, np.int64),
        kinds=np.full(n, KIND_NATIVE, np.uint8),
        ids=rng.integers(0, 256, size=(n, 12), dtype=np.uint8),
        offsets=np.zeros(n, np.uint64), lengths=np.full(n, 4096, np.uint64),
        url_idx=np.full(n, -1, np.int32),
    )
    return t.normalized() if normalized else t


def _grid(start: int, n: int, width: int = 7) -> np.ndarray:
    lin = np.arange(start, start + n, dtype=np.int64)
    return np.stack([lin // width, lin % width], axis=1)


def _rows(t: ChunkTable) -> list[tuple[object, ...]]:
    return [(tuple(int(v) for v in t.coords[i]), t.row_payload(i)) for i in range(len(t))]


def _reference(tables: list[ChunkTable]) -> ChunkTable:
    """The merge by concatenation and full sort (what merging did before)."""
    from icechunk_dist.changeset import _merge_tables

    return _merge_tables(tables, "fail", "x")


@pytest.mark.parametrize("normalized", [True, False])
@pytest.mark.parametrize("order", ["in order", "shuffled"])
def test_merge_of_disjoint_forks_equals_the_sorted_merge(normalized: bool, order: str
                                                         ) -> None:
    tables = [_table(_grid(i * 10, 10), i, normalized=normalized) for i in range(30)]
    tables.append(ChunkTable.empty(2))
    if order == "shuffled":
        tables = [tables[i] for i in np.random.default_rng(3).permutation(len(tables))]
    sets = []
    for t in tables:
        cs = ChangeSet()
        cs.chunks["n"] = ArrayChunks(2, t)
        sets.append((cs, None))
    merged = ChangeSet().merge_many(sets).chunks["n"]
    assert len(merged) == 300
    expect = _reference([t for t in tables if len(t)])
    got = merged.table
    assert got.sorted_unique
    assert _rows(got) == _rows(expect)
    # lookups, pickling and further merges of the lazily concatenated result
    assert merged.lookup((3, 4)) == expect.row_payload(expect.find((3, 4)))
    again = pickle.loads(pickle.dumps(merged))
    assert _rows(again.table) == _rows(expect)


def test_merge_of_overlapping_forks_still_conflicts() -> None:
    a = _table(_grid(0, 10), 1)
    b = _table(_grid(5, 10), 2)  # rows 5..9 written by both, differently
    c = _table(_grid(100, 3), 3)
    sets = []
    for t in (a, c, b):
        cs = ChangeSet()
        cs.chunks["n"] = ArrayChunks(2, t)
        sets.append((cs, None))
    with pytest.raises(ConflictError):
        ChangeSet().merge_many(sets)
    # interleaved but disjoint coordinate ranges are merged by the sorting path
    even = _table(_grid(0, 20)[::2], 4)
    odd = _table(_grid(0, 20)[1::2], 5)
    sets = []
    for t in (even, odd):
        cs = ChangeSet()
        cs.chunks["n"] = ArrayChunks(2, t)
        sets.append((cs, None))
    got = ChangeSet().merge_many(sets).chunks["n"].table
    assert _rows(got) == _rows(_reference([even, odd]))


def test_unsorted_table_is_not_taken_as_normalized() -> None:
    coords = _grid(0, 10)[::-1].copy()
    t = _table(coords, 1, normalized=False)
    other = _table(_grid(50, 5), 2)
    sets = []
    for x in (t, other):
        cs = ChangeSet()
        cs.chunks["n"] = ArrayChunks(2, x)
        sets.append((cs, None))
    got = ChangeSet().merge_many(sets).chunks["n"].table
    assert _rows(got) == _rows(_reference([t.normalized(), other]))


# ---------------------------------------------------------------------- manifest splits
@pytest.mark.parametrize("width", [7, 3])
def test_split_slices_match_grouping(width: int) -> None:
    t = _table(_grid(0, 200, width), 9)
    t.kinds[::17] = KIND_TOMBSTONE
    for shape in ((5, 100), (2, 2), (1000, 1000)):
        parts = t.split(shape)
        sidx = t.coords // np.asarray(shape)
        seen = 0
        for split, part in parts.items():
            mask = np.all(sidx == np.asarray(split), axis=1)
            assert _rows(part) == _rows(t.take(np.flatnonzero(mask)))
            seen += len(part)
        assert seen == len(t)
        keys = sorted(parts)
        assert keys == sorted({tuple(int(v) for v in r) for r in sidx})


def test_commit_of_many_splits_reads_back(tmp_path: Path) -> None:
    config = icd.RepositoryConfig(manifest_split_size=16)
    repo = icd.Repository.create(icd.local_filesystem_storage(str(tmp_path / "r")), config)
    s = repo.writable_session("main")
    arr = zarr.create_array(s.store, name="y", shape=(40, 40), chunks=(4, 4), dtype="i4",
                            fill_value=0)
    data = np.arange(1600, dtype="i4").reshape(40, 40)
    arr[:] = data
    arr[8:12, 8:12] = 0  # one chunk equal to the fill value: a deletion
    s.commit("splits")
    expect = data.copy()
    expect[8:12, 8:12] = 0
    np.testing.assert_array_equal(
        zarr.open_array(repo.readonly_session("main").store, path="y")[:], expect)
