"""Independent jobs that each create the same array ("create if missing") and write disjoint
chunks all land; overlapping chunks are named conflicts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr

import icechunk_dist as icd
from icechunk_dist import BasicConflictSolver, ConflictDetector, ConflictType, VersionSelection


def _require(session: icd.Session, name: str) -> zarr.Array:
    group = zarr.open_group(session.store, mode="a")
    return group.require_array(name, shape=(30,), chunks=(10,), dtype="i4", fill_value=0)


def test_same_new_array_disjoint_chunks_all_land(tmp_path: Path) -> None:
    repo = icd.Repository.create(icd.local_filesystem_storage(tmp_path))
    sessions = [repo.writable_session("main") for _ in range(3)]
    for i, s in enumerate(sessions):
        _require(s, "x")[i * 10 : (i + 1) * 10] = i + 1
    for s in sessions:
        s.commit("job", rebase_with=ConflictDetector())
    got = zarr.open_array(repo.readonly_session("main").store, path="x", mode="r")[:]
    np.testing.assert_array_equal(got, np.repeat([1, 2, 3], 10))
    assert len(list(repo.ancestry(branch="main"))) == 4
    # one node: every chunk lives under the array the first job created
    diff = repo.diff(from_snapshot_id=list(repo.ancestry(branch="main"))[-1].id,
                     to_branch="main")
    assert diff.new_arrays == {"/x"} and diff.updated_chunks["/x"] == [[0], [1], [2]]


def test_same_new_array_overlapping_chunk_is_a_named_conflict(tmp_path: Path) -> None:
    repo = icd.Repository.create(icd.local_filesystem_storage(tmp_path))
    s1, s2 = repo.writable_session("main"), repo.writable_session("main")
    _require(s1, "y")[:10] = 7
    _require(s2, "y")[5:20] = 8
    s1.commit("first")
    with pytest.raises(icd.RebaseFailedError) as info:
        s2.commit("second", rebase_with=ConflictDetector())
    (conflict,) = info.value.conflicts
    assert conflict.conflict_type is ConflictType.ChunkDoubleUpdate
    assert conflict.path == "/y" and conflict.conflicted_chunks == [[0]]
    s2.commit("second", rebase_with=BasicConflictSolver(
        on_chunk_conflict=VersionSelection.UseTheirs))
    got = zarr.open_array(repo.readonly_session("main").store, path="y", mode="r")[:]
    np.testing.assert_array_equal(got, np.r_[np.full(10, 7), np.full(10, 8), np.zeros(10)])


def test_different_metadata_is_still_a_conflict(tmp_path: Path) -> None:
    repo = icd.Repository.create(icd.local_filesystem_storage(tmp_path))
    s1, s2 = repo.writable_session("main"), repo.writable_session("main")
    zarr.create_array(s1.store, name="z", shape=(10,), chunks=(5,), dtype="i4")
    zarr.create_array(s2.store, name="z", shape=(10,), chunks=(5,), dtype="f8")
    s1.commit("int array")
    with pytest.raises(icd.RebaseFailedError) as info:
        s2.commit("float array", rebase_with=ConflictDetector())
    types = {c.conflict_type for c in info.value.conflicts}
    assert ConflictType.NewNodeConflictsWithExistingNode in types
