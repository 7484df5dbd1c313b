"""garbage_collect deletes only unreachable objects older than the grace period."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import zarr

import icechunk_dist as icd


def _objects(root: Path, prefix: str) -> set[str]:
    d = root / prefix
    return {p.name for p in d.iterdir()} if d.exists() else set()


def test_gc_removes_abandoned_chunks_and_keeps_history(tmp_path: Path) -> None:
    repo = icd.Repository.create(icd.local_filesystem_storage(tmp_path))
    s = repo.writable_session("main")
    arr = zarr.create_array(s.store, name="x", shape=(4000,), chunks=(1000,), dtype="f8")
    v1 = np.random.default_rng(1).random(4000)
    arr[:] = v1
    first = s.commit("one")
    live_after_first = _objects(tmp_path, "chunks")
    assert len(live_after_first) == 4

    abandoned = repo.writable_session("main")
    zarr.open_array(abandoned.store, path="x")[:] = np.random.default_rng(2).random(4000)
    abandoned.discard_changes()
    garbage = _objects(tmp_path, "chunks") - live_after_first
    assert len(garbage) == 4

    s = repo.writable_session("main")
    v2 = v1.copy()
    v2[:1000] = 7.0
    zarr.open_array(s.store, path="x")[:1000] = 7.0
    s.commit("two")

    # inside the grace period nothing goes
    kept = repo.garbage_collect(datetime.now(UTC) - timedelta(hours=1))
    assert kept.chunks_deleted == 0

    dry = repo.garbage_collect(datetime.now(UTC) + timedelta(seconds=5), dry_run=True)
    assert dry.chunks_deleted == 4 and dry.dry_run
    assert garbage <= _objects(tmp_path, "chunks")

    done = repo.garbage_collect(datetime.now(UTC) + timedelta(seconds=5))
    assert done.chunks_deleted == 4
    assert not (garbage & _objects(tmp_path, "chunks"))
    np.testing.assert_array_equal(
        zarr.open_array(repo.readonly_session("main").store, path="x", mode="r")[:], v2
    )
    np.testing.assert_array_equal(
        zarr.open_array(repo.readonly_session(snapshot_id=first).store, path="x", mode="r")[:],
        v1,
    )


def test_gc_needs_aware_datetime(tmp_path: Path) -> None:
    repo = icd.Repository.create(icd.local_filesystem_storage(tmp_path))
    with pytest.raises(icd.InvalidInputError):
        repo.garbage_collect(datetime.now())


def test_gc_keeps_branch_tip_named_by_a_deleted_tag(tmp_path: Path) -> None:
    """Issue 10 bug 1: a deleted tag's snapshot stays when a branch still points at it."""
    repo = icd.Repository.create(icd.local_filesystem_storage(tmp_path))
    s = repo.writable_session("main")
    zarr.create_array(s.store, name="x", shape=(4,), chunks=(2,), dtype="i8")[:] = [1, 2, 3, 4]
    tip = s.commit("one")
    repo.create_tag("v1", tip)
    repo.delete_tag("v1")
    repo.garbage_collect(datetime.now(UTC) + timedelta(seconds=5))
    assert repo.lookup_branch("main") == tip
    got = zarr.open_array(repo.readonly_session("main").store, path="x", mode="r")[:]
    np.testing.assert_array_equal(got, [1, 2, 3, 4])


def test_gc_roots_are_live_branch_tips_and_live_tags(tmp_path: Path) -> None:
    """Every snapshot reachable from a branch or a live tag survives, whatever the refs did."""
    repo = icd.Repository.create(icd.local_filesystem_storage(tmp_path))
    snaps = []
    for i in range(4):
        s = repo.writable_session("main")
        zarr.create_array(s.store, name=f"a{i}", shape=(2,), dtype="i8", fill_value=i)
        snaps.append(s.commit(f"c{i}"))
    repo.create_branch("dev", snaps[1])
    repo.create_tag("t2", snaps[2])
    repo.create_tag("gone", snaps[3])
    repo.delete_tag("gone")
    repo.create_branch("tmp", snaps[3])
    repo.delete_branch("tmp")
    repo.reset_branch("main", snaps[0])  # snaps[3] now only on old versions of refs
    summary = repo.garbage_collect(datetime.now(UTC) + timedelta(seconds=5))
    assert summary.snapshots_deleted == 1
    for sid in (snaps[0], snaps[1], snaps[2]):
        repo.readonly_session(snapshot_id=sid)
    with pytest.raises(icd.NotFoundError):
        repo.readonly_session(snapshot_id=snaps[3])
