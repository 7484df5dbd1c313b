"""WrapperStorage: forwards every operation to its inner storage; FaultyStorage and the test
suite's counting and hooking storages are built on it."""

from __future__ import annotations

import copy
import pickle
from collections.abc import Callable
from pathlib import Path

import pytest
import zarr
from test_storage import StorageTests

import icechunk_dist as icd
from icechunk_dist import InvalidInputError
from icechunk_dist.storage import (
    Fault,
    FaultyStorage,
    ObjectMeta,
    Storage,
    WrapperStorage,
    local_filesystem_storage,
)


class TestWrappedLocalStorage(StorageTests):
    """The whole storage contract, through a plain wrapper."""

    @pytest.fixture
    def storage(self, tmp_path: Path) -> Storage:
        return WrapperStorage(local_filesystem_storage(tmp_path / "repo"))

    def test_identity(self, storage: Storage) -> None:
        assert storage == storage and hash(storage) == hash(storage)
        assert copy.copy(storage) == storage and copy.deepcopy(storage) == storage
        assert storage.backend == "local"
        assert storage.describe() in repr(storage)


class TestWrappedS3Storage(StorageTests):
    @pytest.fixture
    def storage(self, make_s3_storage: Callable[..., Storage]) -> Storage:
        return WrapperStorage(make_s3_storage("wrapped"))

    def test_identity(self, storage: Storage) -> None:
        assert storage == storage and hash(storage) == hash(storage)
        assert storage.backend == "s3"


class HeadCounter(WrapperStorage):
    def __init__(self, inner: Storage) -> None:
        super().__init__(inner)
        self.heads: list[str] = []

    async def head(self, key: str) -> ObjectMeta:
        self.heads.append(key)
        return await self.inner.head(key)


def test_identity_follows_the_inner_storage(tmp_path: Path) -> None:
    inner = local_filesystem_storage(tmp_path)
    w = WrapperStorage(inner)
    assert w.describe() == inner.describe() and w.backend == "local" and w.supports_pickle
    assert w == WrapperStorage(local_filesystem_storage(str(tmp_path)))
    assert hash(w) == hash(WrapperStorage(local_filesystem_storage(str(tmp_path))))
    assert w != WrapperStorage(local_filesystem_storage(tmp_path / "other"))
    assert w != inner and w != HeadCounter(inner)  # another class is another storage
    clone = pickle.loads(pickle.dumps(w))
    assert type(clone) is WrapperStorage and clone == w and clone.inner == inner
    counting = pickle.loads(pickle.dumps(HeadCounter(inner)))
    assert type(counting) is HeadCounter and counting.heads == []
    with pytest.raises(InvalidInputError, match="wraps a Storage"):
        WrapperStorage("not a storage")  # type: ignore[arg-type]


def test_in_memory_inner_refuses_to_pickle() -> None:
    w = WrapperStorage(icd.in_memory_storage())
    assert not w.supports_pickle
    with pytest.raises(InvalidInputError, match="cannot be pickled"):
        pickle.dumps(w)


def test_derived_operations_run_on_the_overrides(tmp_path: Path) -> None:
    """``exists`` and the sync twins go through the wrapper's own ``head``: an override sees
    every request (the gc guard asks ``exists`` of done records)."""
    storage = HeadCounter(local_filesystem_storage(tmp_path))
    storage.put_sync("a", b"1")
    assert storage.exists_sync("a") and not storage.exists_sync("b")
    assert storage.heads == ["a", "b"]


def test_faulty_storage_is_a_wrapper(tmp_path: Path) -> None:
    inner = local_filesystem_storage(tmp_path)
    faulty = FaultyStorage(inner, [Fault.transient(op="get", times=1)], seed=3)
    assert isinstance(faulty, WrapperStorage) and faulty.inner is inner
    assert faulty.describe() == f"{inner.describe()} (with 1 fault rules)"
    clone = pickle.loads(pickle.dumps(faulty))
    assert clone == faulty and hash(clone) == hash(faulty) and clone.faults == faulty.faults
    assert faulty != FaultyStorage(inner, [Fault.transient(op="get", times=1)], seed=4)
    assert faulty != WrapperStorage(inner)


def test_a_repository_through_a_wrapper(tmp_path: Path) -> None:
    """Sessions compare storages: a repository opened through an equal wrapper (a pickled
    copy) merges the forks of the other."""
    storage = WrapperStorage(local_filesystem_storage(tmp_path))
    repo = icd.Repository.create(storage)
    s = repo.writable_session("main")
    zarr.create_array(s.store, name="x", shape=(4,), chunks=(2,), dtype="i4", fill_value=0)
    fork = pickle.loads(pickle.dumps(s.fork()))
    zarr.open_array(fork.store, path="x")[:] = 7
    s.merge(fork)
    s.commit("through a wrapper")
    again = icd.Repository.open(pickle.loads(pickle.dumps(storage)))
    got = zarr.open_array(again.readonly_session("main").store, path="x", mode="r")[:]
    assert got.tolist() == [7, 7, 7, 7]
