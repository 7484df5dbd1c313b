"""Issue 10 bug 5: store equality agrees with its hash; the shared-fork registry never drops
a fork that holds writes."""

from __future__ import annotations

import gc
import pickle
from pathlib import Path

import numpy as np
import pytest
import zarr

import icechunk_dist as icd
from icechunk_dist.session import forks as _session


def _repo(root: Path) -> icd.Repository:
    repo = icd.Repository.create(icd.local_filesystem_storage(root))
    s = repo.writable_session("main")
    zarr.create_array(s.store, name="x", shape=(40,), chunks=(10,), dtype="i8", fill_value=0)
    s.commit("x")
    return repo


def test_equal_stores_hash_equal(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    store = repo.readonly_session("main").store
    copy = pickle.loads(pickle.dumps(store))
    assert copy == store and copy._session is not store._session
    assert hash(copy) == hash(store)
    assert len({store, copy}) == 1
    other = repo.readonly_session("main").store
    assert other == store and hash(other) == hash(store)
    writable = repo.writable_session("main").store
    assert writable != store
    assert writable == writable and hash(writable) == hash(writable)
    # a store keeps its hash when its session commits (it becomes read-only)
    s = repo.writable_session("main")
    h = hash(s.store)
    zarr.open_array(s.store, path="x")[:10] = 1
    s.commit("c")
    assert hash(s.store) == h


def test_registry_never_evicts_a_fork_that_holds_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = _repo(tmp_path)
    s = repo.writable_session("main")
    fork = s.fork()
    blob = pickle.dumps(fork)
    saved = list(_session._REGISTRY.items())
    _session._REGISTRY.clear()  # as on a worker process that has not seen the fork yet
    try:
        from icechunk_dist.session import forks as _registry

        monkeypatch.setattr(_registry, "_REGISTRY_MAX", 8)
        worker_copy = pickle.loads(blob)
        zarr.open_array(worker_copy.store, path="x")[:] = np.arange(40)
        # many other forks pass through this worker process afterwards
        others = [pickle.loads(pickle.dumps(s.fork())) for _ in range(50)]
        del others
        gc.collect()
        # gather_forks pulls the worker's copies from the registry: the one with writes is there
        copies = _registry._copies_of(_registry._REGISTRY[fork.fork_id])
        assert any(c is worker_copy for c in copies)
        assert worker_copy._changes.chunk_count() == 4
    finally:
        _session._REGISTRY.clear()
        _session._REGISTRY.update(saved)
