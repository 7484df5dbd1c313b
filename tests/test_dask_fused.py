"""The fused write graph of ``store_dask`` (issue 9): blocks grouped into tasks, records merged.

What this file proves (threaded scheduler; the distributed cases are in test_dask.py):

- Every block is written by exactly one task that also computes the source block: the graph
  holds no separate task for the source's blocks, and the merge tree is wide (fan-in 32 by
  default), so a 64-block write with ``blocks_per_task=1`` is 64 write tasks plus 3 merges.
- By default a task takes a run of consecutive blocks: never more bytes than dask's
  ``array.chunk-size``, never fewer than four tasks per thread (or one per block), and the
  data lands the same whatever the grouping.
- Blocks of two sources never share a task (overlapping regions still conflict).
- ``blocks_per_task`` that is not a positive integer is refused with InvalidInputError.
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
from icechunk_dist import ConflictError, InvalidInputError
from icechunk_dist.dask import _total_threads, _write_record, _WriteSpec, store_dask
from icechunk_dist.session import forks as internals

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
    lazy = store_dask(sources=[src], targets=[t], compute=False, blocks_per_task=1)
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


def _write_tasks(lazy: object) -> dict[str, object]:
    graph = dict(lazy.__dask_graph__())  # type: ignore[attr-defined]
    return {k: v for k, v in graph.items()
            if isinstance(k, str) and k.startswith("icechunk-write-")}


def _source(n: int) -> da.Array:
    return (da.arange(n * n, chunks=(n * n) // 4, dtype="f8").reshape(n, n)
            .rechunk((10, 10)) * 2).map_blocks(np.negative)


def test_default_groups_blocks_within_the_byte_limit(local_repo: icd.Repository) -> None:
    s, t = _target(local_repo, (80, 80), (10, 10))
    # a block is 10 x 10 float64 = 800 bytes: a 1,600-byte limit allows two per task
    with dask.config.set({"array.chunk-size": "1600B"}):
        lazy = store_dask(sources=[_source(80)], targets=[t], compute=False)
    tasks = _write_tasks(lazy)
    by_threads = -(-64 // (4 * _total_threads()))
    assert len(tasks) == 64 // min(2, by_threads)
    for task in tasks.values():
        assert len(task.args) - 2 <= 2  # type: ignore[attr-defined]  # spec, regions, blocks
    with dask.config.set(scheduler="threads"):
        (merged,) = dask.compute(lazy)
    s.merge(merged)
    s.commit("grouped by bytes")
    got = zarr.open_array(local_repo.readonly_session("main").store, path="a")[:]
    np.testing.assert_array_equal(got, -2 * np.arange(80 * 80, dtype="f8").reshape(80, 80))


def test_default_keeps_four_tasks_per_thread(local_repo: icd.Repository) -> None:
    _s, t = _target(local_repo, (80, 80), (10, 10))
    tasks = _write_tasks(store_dask(sources=[_source(80)], targets=[t], compute=False))
    assert len(tasks) >= min(64, 4 * _total_threads())
    assert len(tasks) < 64 or 4 * _total_threads() >= 64


@pytest.mark.parametrize("per", [3, 64, 1000])
def test_any_grouping_writes_the_same_data(local_repo: icd.Repository, per: int) -> None:
    s, t = _target(local_repo, (80, 80), (10, 10))
    with dask.config.set(scheduler="threads"):
        merged = store_dask(sources=[_source(80)], targets=[t], blocks_per_task=per,
                            progress=False)
    assert len(_write_tasks(store_dask(sources=[_source(80)], targets=[t],
                                       blocks_per_task=per, compute=False))) == -(-64 // per)
    s.merge(merged)
    s.commit(f"{per} per task")
    got = zarr.open_array(local_repo.readonly_session("main").store, path="a")[:]
    np.testing.assert_array_equal(got, -2 * np.arange(80 * 80, dtype="f8").reshape(80, 80))


def test_two_sources_never_share_a_task(local_repo: icd.Repository) -> None:
    _s, t = _target(local_repo, (40,), (10,))
    lazy = store_dask(sources=[da.zeros(20, chunks=10), da.ones(20, chunks=10)],
                      targets=[t, t], regions=[(slice(0, 20),), (slice(20, 40),)],
                      blocks_per_task=100, compute=False)
    assert len(_write_tasks(lazy)) == 2
    before = list(local_repo.ancestry(branch="main"))
    with dask.config.set(scheduler="threads"), pytest.raises(ConflictError, match="'a'"):
        store_dask(sources=[da.zeros(20, chunks=10), da.ones(20, chunks=10)],
                   targets=[t, t], regions=[(slice(0, 20),), (slice(10, 30),)],
                   blocks_per_task=100, progress=False)
    assert list(local_repo.ancestry(branch="main")) == before


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_bad_blocks_per_task_is_refused(local_repo: icd.Repository, bad: object) -> None:
    _s, t = _target(local_repo, (20,), (10,))
    with pytest.raises(InvalidInputError, match="blocks_per_task"):
        store_dask(sources=[da.zeros(20, chunks=10)], targets=[t],
                   blocks_per_task=bad, progress=False)  # type: ignore[arg-type]
