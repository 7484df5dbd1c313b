"""The fused write graph of ``store_dask`` (issue 9): one task per block, records merged.

What this file proves (threaded scheduler; the distributed cases are in test_dask.py):

- Every block is written by exactly one task that also computes the source block: the graph
  holds no separate task for the source's blocks, and the merge tree is wide (fan-in 32 by
  default), so a 64-block write is 64 write tasks plus 3 merges.
- The records of two regions written into one target merge into one fork whose commit
  holds every chunk; two regions that overlap conflict, naming the array by path.
- A record carries chunk writes only: a fork's pending metadata is not duplicated per task.
"""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import pytest
import zarr

import icechunk_dist as icd
from icechunk_dist import ConflictError
from icechunk_dist.dask import _write_record, _WriteSpec, store_dask
from icechunk_dist.session import internals

pytestmark = pytest.mark.dask


def _target(repo: icd.Repository, shape: tuple[int, ...], chunks: tuple[int, ...]
            ) -> tuple[icd.Session, zarr.Array]:
    s = repo.writable_session("main")
    zarr.create_array(s.store, name="a", shape=shape, chunks=chunks, dtype="f8",
                      fill_value=-1.0)
    fork = s.fork()
    return s, zarr.open_array(fork.store, path="a", mode="r+")


def test_one_task_per_block_and_a_wide_merge_tree(local_repo: icd.Repository) -> None:
    s, t = _target(local_repo, (80, 80), (10, 10))
    src = (da.arange(80 * 80, chunks=100, dtype="f8").reshape(80, 80).rechunk((10, 10))
           + 1).map_blocks(np.sqrt)
    lazy = store_dask(sources=[src], targets=[t], compute=False)
    graph = dict(lazy.__dask_graph__())
    writes = [k for k in graph if isinstance(k, str) and k.startswith("icechunk-write-")]
    merges = [k for k in graph if isinstance(k, str) and k.startswith("icechunk-merge-")]
    assert len(writes) == 64
    assert len(merges) == 3  # 64 records, fan-in 32: two merges, then the final one
    assert not [k for k in graph if isinstance(k, tuple) and k[0] == src.name]
    with dask.config.set(scheduler="threads"):
        (merged,) = dask.compute(lazy)
    s.merge(merged)
    s.commit("fused")
    got = zarr.open_array(local_repo.readonly_session("main").store, path="a")[:]
    np.testing.assert_array_equal(got, np.sqrt(np.arange(80 * 80, dtype="f8") + 1)
                                  .reshape(80, 80))


def test_overlapping_regions_conflict_naming_the_array(local_repo: icd.Repository) -> None:
    _s, t = _target(local_repo, (40,), (10,))
    before = list(local_repo.ancestry(branch="main"))
    with dask.config.set(scheduler="threads"), pytest.raises(ConflictError, match="'a'"):
        store_dask(sources=[da.zeros(20, chunks=10), da.ones(20, chunks=10)],
                   targets=[t, t], regions=[(slice(0, 20),), (slice(10, 30),)],
                   progress=False)
    assert list(local_repo.ancestry(branch="main")) == before


def test_a_record_holds_chunk_writes_only(local_repo: icd.Repository) -> None:
    _s, t = _target(local_repo, (20,), (10,))
    fork = t.store.session
    assert isinstance(fork, icd.ForkSession)
    spec = _WriteSpec(fork, "a", t.metadata, internals.node_names(fork), "test-token")
    rec = _write_record(np.arange(10, dtype="f8"), spec, (slice(0, 10),))
    assert rec.nodes == {} and rec.loose == {} and rec.chunk_count() == 1
    out = internals.fork_with_changes(fork, rec)
    assert internals.contributors(out) and internals.lineage(out) == internals.lineage(fork)
