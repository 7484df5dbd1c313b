"""Optimistic concurrency between two writers of one branch (issue 4,
docs/architecture.md section 3).

Every ``ConflictType`` is produced by a realistic pair of sessions; conflicts name the node
path and the exact chunk coordinates; the solvers (``ConflictDetector``,
``BasicConflictSolver`` and a user subclass of ``ConflictSolver``) give the expected bytes;
a failed rebase leaves the session consistent; ``commit()`` without a solver on a moved
branch changes nothing; an append by one writer never conflicts with another writer's
disjoint chunk writes (in either order, and for a forked, merged session too).
"""

from __future__ import annotations

import asyncio
import pickle
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr

from icechunk_dist import (
    BasicConflictSolver,
    Conflict,
    ConflictDetector,
    ConflictError,
    ConflictSolver,
    ConflictType,
    InvalidInputError,
    RebaseFailedError,
    Repository,
    Session,
    Storage,
    VersionSelection,
    in_memory_storage,
    local_filesystem_storage,
)
from icechunk_dist._sync import run
from icechunk_dist.changeset import ArrayChunks, ChangeSet
from icechunk_dist.conflicts import detect_conflicts, rebase_changes
from icechunk_dist.format import (
    ArrayInfo,
    ChunkTable,
    NodeRecord,
    SnapshotData,
    TransactionLogData,
    TxChunks,
)

# --------------------------------------------------------------------------- helpers
Edit = Callable[[Session], Any]


def init_repo(storage: Storage | None = None) -> Repository:
    """``/x`` (8x4 int32, chunks 2x2, all 1) and group ``/g`` (attrs v=0) with ``/g/y``."""
    repo = Repository.create(storage or in_memory_storage())
    s = repo.writable_session("main")
    root = zarr.open_group(s.store, mode="w")
    root.create_array("x", shape=(8, 4), chunks=(2, 2), dtype="i4", fill_value=0)[:] = 1
    g = root.create_group("g", attributes={"v": 0})
    g.create_array("y", shape=(4,), chunks=(2,), dtype="i4", fill_value=0)[:] = 2
    s.commit("init")
    return repo


@pytest.fixture
def repo() -> Repository:
    return init_repo()


def x(s: Session) -> zarr.Array:
    return zarr.open_array(s.store, path="x", mode="r" if s.read_only else "r+")


def y(s: Session) -> zarr.Array:
    return zarr.open_array(s.store, path="g/y", mode="r" if s.read_only else "r+")


def root(s: Session) -> zarr.Group:
    return zarr.open_group(s.store, mode="r+")


def group_g(s: Session) -> zarr.Group:
    return zarr.open_group(s.store, path="g", mode="r+")


def main_x(repo: Repository) -> np.ndarray:
    return np.asarray(x(repo.readonly_session("main"))[:])


def set_key(s: Session, key: str, data: bytes) -> None:
    # through the session: the store refuses keys that are not zarr keys (as Icechunk's),
    # the session still records them (arrays of other grids keep their chunks so)
    run(s.set_key(key, data))


def write(arr: zarr.Array, sel: Any, value: int) -> None:
    arr[sel] = value


def snapshot_count(repo: Repository) -> int:
    async def go() -> int:
        return len([m async for m in repo.storage.list("snapshots/")])
    return run(go())


def landed_pair(repo: Repository, theirs: Edit, ours: Edit) -> tuple[Session, str]:
    """Open two sessions, edit both, land ``theirs``; return our session and their id."""
    t, o = repo.writable_session("main"), repo.writable_session("main")
    theirs(t)
    ours(o)
    return o, t.commit("theirs")


# --------------------------------------------------------------------------- every type
# (theirs, ours, expected conflicts as (type, path, chunks))
CASES: dict[str, tuple[Edit, Edit, list[tuple[ConflictType, str, list[tuple[int, ...]]]]]] = {
    "new node vs new node": (
        lambda s: root(s).create_array("z", shape=(2,), dtype="i4"),
        lambda s: root(s).create_array("z", shape=(3,), dtype="i4"),
        [(ConflictType.NewNodeConflictsWithExistingNode, "/z", None)],
    ),
    "new node in a deleted group": (
        lambda s: root(s).__delitem__("g"),
        lambda s: group_g(s).create_array("w", shape=(2,), dtype="i4"),
        [(ConflictType.NewNodeInInvalidGroup, "/g/w", None)],
    ),
    "metadata double update": (
        lambda s: x(s).attrs.update({"a": 1}),
        lambda s: x(s).attrs.update({"b": 2}),
        [(ConflictType.ZarrMetadataDoubleUpdate, "/x", None)],
    ),
    "both append": (
        lambda s: x(s).resize((10, 4)),
        lambda s: x(s).resize((12, 4)),
        [(ConflictType.ZarrMetadataDoubleUpdate, "/x", None)],
    ),
    "metadata update of deleted array": (
        lambda s: root(s).__delitem__("x"),
        lambda s: x(s).attrs.update({"b": 2}),
        [(ConflictType.ZarrMetadataUpdateOfDeletedArray, "/x", None)],
    ),
    "metadata update of deleted group": (
        lambda s: root(s).__delitem__("g"),
        lambda s: group_g(s).attrs.update({"v": 1}),
        [(ConflictType.ZarrMetadataUpdateOfDeletedGroup, "/g", None)],
    ),
    "chunk double update": (
        lambda s: write(x(s), (slice(0, 4), slice(0, 4)), 3),
        lambda s: write(x(s), (slice(2, 6), slice(2, 4)), 4),
        [(ConflictType.ChunkDoubleUpdate, "/x", [[1, 1]])],
    ),
    "chunks updated in deleted array": (
        lambda s: root(s).__delitem__("x"),
        lambda s: write(x(s), (slice(0, 4), 0), 9),
        [(ConflictType.ChunksUpdatedInDeletedArray, "/x", [[0, 0], [1, 0]])],
    ),
    "chunks updated in array whose attributes changed": (
        lambda s: x(s).attrs.update({"units": "K"}),
        lambda s: write(x(s), (slice(6, 8), slice(2, 4)), 9),
        [(ConflictType.ChunksUpdatedInUpdatedArray, "/x", [[3, 1]])],
    ),
    "chunks updated in array that shrank (not an append)": (
        lambda s: x(s).resize((6, 4)),
        lambda s: write(x(s), (0, 0), 9),
        [(ConflictType.ChunksUpdatedInUpdatedArray, "/x", [[0, 0]])],
    ),
    "delete of array with updated chunks": (
        lambda s: write(x(s), (0, 0), 9),
        lambda s: root(s).__delitem__("x"),
        [(ConflictType.DeleteOfUpdatedArray, "/x", None)],
    ),
    "delete of array with updated metadata": (
        lambda s: x(s).attrs.update({"a": 1}),
        lambda s: root(s).__delitem__("x"),
        [(ConflictType.DeleteOfUpdatedArray, "/x", None)],
    ),
    "delete of updated group": (
        lambda s: group_g(s).attrs.update({"v": 1}),
        lambda s: root(s).__delitem__("g"),
        [(ConflictType.DeleteOfUpdatedGroup, "/g", None)],
    ),
    "delete of group they added a node in": (
        lambda s: zarr.create_array(s.store, name="g/new", shape=(2,), dtype="i4"),
        lambda s: root(s).__delitem__("g"),
        [(ConflictType.DeleteOfUpdatedGroup, "/g", None)],
    ),
    "replace of group they wrote inside (xarray mode='w')": (
        lambda s: write(zarr.create_array(s.store, name="g/new", shape=(4,), chunks=(2,),
                                          dtype="i4"), slice(0, 4), 7),
        lambda s: (root(s).__delitem__("g"), zarr.create_group(s.store, path="g")),
        [(ConflictType.DeleteOfUpdatedGroup, "/g", None)],
    ),
    "other key double update": (
        lambda s: set_key(s, "notes/readme", b"theirs"),
        lambda s: set_key(s, "notes/readme", b"ours"),
        [(ConflictType.KeyDoubleUpdate, "/notes/readme", None)],
    ),
}


def test_every_conflict_type_is_covered() -> None:
    produced = {t for _, _, exp in CASES.values() for t, _, _ in exp}
    assert produced == set(ConflictType)


@pytest.mark.parametrize("case", sorted(CASES))
def test_conflict_is_named_precisely(repo: Repository, case: str) -> None:
    theirs, ours, expected = CASES[case]
    o, their_id = landed_pair(repo, theirs, ours)
    base = o.snapshot_id
    before = o.status()
    with pytest.raises(RebaseFailedError) as ei:
        o.commit("ours", rebase_with=ConflictDetector())
    err = ei.value
    assert [(c.conflict_type, c.path, c.conflicted_chunks) for c in err.conflicts] == expected
    assert all(c.snapshot_id == their_id for c in err.conflicts)
    assert err.snapshot_id == their_id
    assert isinstance(err, ConflictError)
    # our own field of the error keeps tuples; Conflict.conflicted_chunks has Icechunk's lists
    assert err.path == expected[0][1] and err.chunk_coords == [
        tuple(c) for c in expected[0][2] or []]
    assert expected[0][0].name in str(err)
    # nothing moved, nothing lost
    assert repo.lookup_branch("main") == their_id
    assert o.snapshot_id == base and not o.read_only
    assert o.status() == before


def test_independent_changes_do_not_conflict(repo: Repository) -> None:
    """Disjoint chunks of one array, another array, attrs of a group vs chunks of its child,
    and both deleting the same array: all rebase cleanly with ConflictDetector."""
    for theirs, ours in [
        (lambda s: write(x(s), (slice(0, 2), slice(None)), 5),
         lambda s: write(x(s), (slice(2, 4), slice(None)), 6)),
        (lambda s: write(y(s), slice(None), 7), lambda s: write(x(s), (0, 0), 8)),
        (lambda s: group_g(s).attrs.update({"v": 3}), lambda s: write(y(s), 0, 9)),
        (lambda s: root(s).__delitem__("x"), lambda s: root(s).__delitem__("x")),
    ]:
        o, their_id = landed_pair(repo, theirs, ours)
        sid = o.commit("ours", rebase_with=ConflictDetector())
        assert repo.lookup_snapshot(sid).parent_id == their_id


def test_disjoint_chunks_land_with_both_writes(repo: Repository) -> None:
    o, _ = landed_pair(repo, lambda s: write(x(s), (slice(0, 2), slice(None)), 5),
                       lambda s: write(x(s), (slice(6, 8), slice(None)), 6))
    o.commit("ours", rebase_with=ConflictDetector())
    np.testing.assert_array_equal(main_x(repo)[:, 0], [5, 5, 1, 1, 1, 1, 6, 6])


# --------------------------------------------------------------------------- exact coordinates
def test_conflicts_name_exact_chunks_across_several_landed_commits(repo: Repository) -> None:
    o = repo.writable_session("main")
    write(x(o), (slice(None), slice(None)), 7)  # all 16 chunks of x
    write(y(o), slice(None), 7)
    landed = []
    for sel in [(slice(0, 2), slice(0, 2)), (slice(4, 8), slice(2, 4))]:
        t = repo.writable_session("main")
        write(x(t), sel, 3)
        landed.append(t.commit("theirs"))
    with pytest.raises(RebaseFailedError) as ei:
        o.commit("ours", rebase_with=ConflictDetector())
    got = [(c.conflict_type, c.path, c.conflicted_chunks, c.snapshot_id)
           for c in ei.value.conflicts]
    assert got == [
        (ConflictType.ChunkDoubleUpdate, "/x", [[0, 0]], landed[0]),
        (ConflictType.ChunkDoubleUpdate, "/x", [[2, 1], [3, 1]], landed[1]),
    ]
    assert "ChunkDoubleUpdate at /x (chunks [2, 1], [3, 1])" in str(ei.value)


def test_detect_conflicts_is_pure_and_exact_in_3d() -> None:
    """detect_conflicts on hand-made records: exact 3-D coordinates, append is no conflict."""
    meta = b'{"zarr_format":3,"node_type":"array","shape":[4,4,4]}'
    grown = b'{"zarr_format":3,"node_type":"array","shape":[8,4,4]}'
    info = ArrayInfo(shape=(4, 4, 4), chunk_shape=(1, 1, 1), split_shape=(100, 100, 100))
    node = NodeRecord(path="a/b", node_id="N1", kind="array", metadata=meta, array=info)
    base = SnapshotData(id="S0", parent_id=None, written_at=datetime.now(UTC), message="",
                        nodes=(node,))
    ours = ChangeSet()
    ac = ours.array_chunks("N1", 3)
    for c in [(0, 0, 0), (1, 2, 3), (3, 3, 3)]:
        ac.set_inline(c, b"x")

    def log(sid: str, coords: list[tuple[int, int, int]], **kw: Any) -> TransactionLogData:
        raw = np.asarray(coords, "<i8").tobytes()
        return TransactionLogData(snapshot_id=sid, chunks=(
            TxChunks(path="a/b", node_id="N1", ndim=3, count=len(coords), coords=raw),), **kw)

    theirs = [log("S1", [(1, 2, 3), (2, 2, 2)]),
              log("S2", [(4, 0, 0), (5, 1, 1)], updated_arrays=("a/b",),
                  extended_arrays={"a/b": (4, 4, 4)})]
    conflicts = detect_conflicts(ours, base, theirs)
    assert conflicts == [Conflict(ConflictType.ChunkDoubleUpdate, "/a/b", [(1, 2, 3)], "S1")]
    # the same shape change that is *not* only growth conflicts with our chunks
    theirs[1] = log("S2", [], updated_arrays=("a/b",))
    conflicts = detect_conflicts(ours, base, theirs)
    assert [c.conflict_type for c in conflicts] == [ConflictType.ChunkDoubleUpdate,
                                                   ConflictType.ChunksUpdatedInUpdatedArray]
    assert conflicts[1].conflicted_chunks == [[0, 0, 0], [1, 2, 3], [3, 3, 3]]
    # UseTheirs drops exactly our conflicting chunk
    tip_node = NodeRecord(path="a/b", node_id="N1", kind="array", metadata=grown,
                          array=ArrayInfo(shape=(8, 4, 4), chunk_shape=(1, 1, 1)))
    tip = SnapshotData(id="S2", parent_id="S1", written_at=datetime.now(UTC), message="",
                       nodes=(tip_node,))
    out = rebase_changes(ours, tip, [(conflicts[0], VersionSelection.UseTheirs)])
    assert [tuple(r) for r in out.chunks["N1"].table.coords.tolist()] == [(0, 0, 0), (3, 3, 3)]
    assert ours.chunks["N1"].table.coords.shape == (3, 3)  # input untouched
    assert isinstance(out.chunks["N1"], ArrayChunks)
    assert isinstance(out.chunks["N1"].table, ChunkTable)


# --------------------------------------------------------------------------- solvers
def overlapping(repo: Repository) -> Session:
    """Theirs landed rows 0-3 = 3; ours writes rows 2-5 = 4 (chunk rows 1 overlap)."""
    o, _ = landed_pair(repo, lambda s: write(x(s), (slice(0, 4), slice(None)), 3),
                       lambda s: write(x(s), (slice(2, 6), slice(None)), 4))
    return o


@pytest.mark.parametrize(("choice", "column"), [
    (VersionSelection.UseOurs, [3, 3, 4, 4, 4, 4, 1, 1]),
    (VersionSelection.UseTheirs, [3, 3, 3, 3, 4, 4, 1, 1]),
])
def test_basic_solver_chunk_policy_bytes(repo: Repository, choice: VersionSelection,
                                         column: list[int]) -> None:
    o = overlapping(repo)
    o.commit("ours", rebase_with=BasicConflictSolver(on_chunk_conflict=choice))
    data = main_x(repo)
    for col in range(4):
        np.testing.assert_array_equal(data[:, col], column)


def test_basic_solver_defaults_to_use_ours(repo: Repository) -> None:
    o = overlapping(repo)
    o.commit("ours", rebase_with=BasicConflictSolver())
    np.testing.assert_array_equal(main_x(repo)[:, 0], [3, 3, 4, 4, 4, 4, 1, 1])


def test_basic_solver_fail_policy(repo: Repository) -> None:
    o = overlapping(repo)
    with pytest.raises(RebaseFailedError) as ei:
        o.commit("ours", rebase_with=BasicConflictSolver(on_chunk_conflict=VersionSelection.Fail))
    assert [(c.conflict_type, c.conflicted_chunks) for c in ei.value.conflicts] == [
        (ConflictType.ChunkDoubleUpdate, [[1, 0], [1, 1]])]


def test_basic_solver_does_not_resolve_metadata_conflicts(repo: Repository) -> None:
    o, _ = landed_pair(repo, *CASES["metadata double update"][:2])
    with pytest.raises(RebaseFailedError) as ei:
        o.commit("ours", rebase_with=BasicConflictSolver())
    assert ei.value.conflicts[0].conflict_type is ConflictType.ZarrMetadataDoubleUpdate


def test_delete_of_updated_array_wins_by_default(repo: Repository) -> None:
    o, _ = landed_pair(repo, *CASES["delete of array with updated chunks"][:2])
    o.commit("ours", rebase_with=BasicConflictSolver())
    ro = repo.readonly_session("main")
    assert sorted(zarr.open_group(ro.store, mode="r").array_keys()) == []
    np.testing.assert_array_equal(y(ro)[:], [2, 2, 2, 2])


def test_fail_on_delete_of_updated_array(repo: Repository) -> None:
    o, their_id = landed_pair(repo, *CASES["delete of array with updated chunks"][:2])
    with pytest.raises(RebaseFailedError) as ei:
        o.commit("ours", rebase_with=BasicConflictSolver(fail_on_delete_of_updated_array=True))
    assert [(c.conflict_type, c.path) for c in ei.value.conflicts] == [
        (ConflictType.DeleteOfUpdatedArray, "/x")]
    assert repo.lookup_branch("main") == their_id
    assert main_x(repo)[0, 0] == 9  # their write survives


def test_delete_of_updated_group(repo: Repository) -> None:
    o, _ = landed_pair(repo, *CASES["delete of updated group"][:2])
    with pytest.raises(RebaseFailedError):
        o.commit("ours", rebase_with=BasicConflictSolver(fail_on_delete_of_updated_group=True))
    o.commit("ours", rebase_with=BasicConflictSolver())  # default: our delete wins
    ro = repo.readonly_session("main")
    assert sorted(zarr.open_group(ro.store, mode="r").group_keys()) == []


class PerArraySolver(ConflictSolver):
    """A user solver: theirs wins in /x, ours everywhere else; records what it saw."""

    def __init__(self) -> None:
        self.seen: list[Conflict] = []

    def choose(self, conflict: Conflict) -> VersionSelection:
        self.seen.append(conflict)
        if conflict.conflict_type is not ConflictType.ChunkDoubleUpdate:
            return VersionSelection.Fail
        return VersionSelection.UseTheirs if conflict.path == "/x" else VersionSelection.UseOurs


def test_user_solver_subclass(repo: Repository) -> None:
    def theirs(s: Session) -> None:
        write(x(s), (slice(0, 2), slice(None)), 3)
        write(y(s), slice(None), 3)

    def ours(s: Session) -> None:
        write(x(s), (slice(0, 4), slice(None)), 4)
        write(y(s), slice(0, 2), 4)

    o, _ = landed_pair(repo, theirs, ours)
    solver = PerArraySolver()
    o.commit("ours", rebase_with=solver)
    assert sorted((c.path, tuple(map(tuple, c.conflicted_chunks))) for c in solver.seen) == [
        ("/g/y", ((0,),)), ("/x", ((0, 0), (0, 1)))]
    np.testing.assert_array_equal(main_x(repo)[:, 0], [3, 3, 4, 4, 1, 1, 1, 1])
    np.testing.assert_array_equal(y(repo.readonly_session("main"))[:], [4, 4, 3, 3])


def test_solver_base_class_is_abstract() -> None:
    with pytest.raises(TypeError):
        ConflictSolver()  # type: ignore[abstract]
    assert "UseOurs" in repr(BasicConflictSolver())


def test_use_theirs_on_chunks_in_updated_array_drops_our_chunks(repo: Repository) -> None:
    """Regression: UseTheirs for ChunksUpdatedInUpdatedArray used to keep our chunks."""
    class Theirs(ConflictSolver):
        def choose(self, conflict: Conflict) -> VersionSelection:
            return VersionSelection.UseTheirs

    o, their_id = landed_pair(repo, *CASES["chunks updated in array whose attributes changed"][:2])
    o.rebase(Theirs())
    assert o.status().is_empty()
    assert o.snapshot_id == their_id
    assert x(o)[7, 3] == 1


def test_use_theirs_on_chunks_in_deleted_array_drops_them(repo: Repository) -> None:
    class Theirs(ConflictSolver):
        def choose(self, conflict: Conflict) -> VersionSelection:
            return VersionSelection.UseTheirs

    def ours(s: Session) -> None:
        write(x(s), (slice(0, 4), 0), 9)
        write(y(s), 0, 9)

    o, _ = landed_pair(repo, CASES["chunks updated in deleted array"][0], ours)
    o.rebase(Theirs())
    assert o.status().updated_chunks == {"/g/y": [[0]]}
    o.commit("ours")
    ro = repo.readonly_session("main")
    assert list(zarr.open_group(ro.store, mode="r").array_keys()) == []
    np.testing.assert_array_equal(y(ro)[:], [9, 2, 2, 2])


# --------------------------------------------------------------------------- failure semantics
def test_failed_rebase_leaves_session_consistent(repo: Repository) -> None:
    t, o = repo.writable_session("main"), repo.writable_session("main")
    write(x(t), (slice(0, 4), slice(None)), 3)
    write(y(t), slice(None), 3)  # a non-conflicting change of theirs
    write(x(o), (slice(2, 6), slice(None)), 4)
    their_id = t.commit("theirs")
    base, status = o.snapshot_id, o.status()
    with pytest.raises(RebaseFailedError):
        o.commit("ours", rebase_with=ConflictDetector())
    with pytest.raises(RebaseFailedError):
        o.rebase(ConflictDetector())
    # still on the old base, own writes visible, theirs not, still writable
    assert o.snapshot_id == base and o.status() == status and o.has_uncommitted_changes
    np.testing.assert_array_equal(x(o)[:, 0], [1, 1, 4, 4, 4, 4, 1, 1])
    np.testing.assert_array_equal(y(o)[:], [2, 2, 2, 2])
    write(x(o), (7, 3), 5)
    # commit without a solver still refuses, and changes nothing
    with pytest.raises(ConflictError):
        o.commit("ours")
    assert repo.lookup_branch("main") == their_id
    # resolving the conflict lands everything
    sid = o.commit("ours", rebase_with=BasicConflictSolver())
    data = main_x(repo)
    np.testing.assert_array_equal(data[:, 0], [3, 3, 4, 4, 4, 4, 1, 1])
    assert data[7, 3] == 5
    np.testing.assert_array_equal(y(repo.readonly_session("main"))[:], [3, 3, 3, 3])
    assert repo.lookup_snapshot(sid).parent_id == their_id


def test_after_failed_rebase_discard_and_commit(repo: Repository) -> None:
    o = overlapping(repo)
    with pytest.raises(RebaseFailedError):
        o.commit("ours", rebase_with=ConflictDetector())
    o.discard_changes()
    write(x(o), (slice(6, 8), slice(None)), 6)
    o.commit("other rows", rebase_with=ConflictDetector())
    np.testing.assert_array_equal(main_x(repo)[:, 0], [3, 3, 3, 3, 1, 1, 6, 6])


def test_after_failed_rebase_changes_go_to_a_new_branch(repo: Repository) -> None:
    """A session whose changes conflict on ``main`` can land them on a branch created at its
    base: the branch does not move, so no rebase is needed."""
    o = overlapping(repo)
    base = o.snapshot_id
    with pytest.raises(RebaseFailedError):
        o.commit("ours", rebase_with=ConflictDetector())
    repo.create_branch("rescue", base)
    rescue = repo.writable_session("rescue")
    write(x(rescue), (slice(2, 6), slice(None)), 4)  # replay the writes there
    sid = rescue.commit("ours, on a branch")
    assert repo.lookup_snapshot(sid).parent_id == base
    np.testing.assert_array_equal(x(repo.readonly_session("rescue"))[:, 0],
                                  [1, 1, 4, 4, 4, 4, 1, 1])
    # o is intact and can still land on main with a solver
    o.commit("ours", rebase_with=BasicConflictSolver(on_chunk_conflict=VersionSelection.UseTheirs))
    np.testing.assert_array_equal(main_x(repo)[:, 0], [3, 3, 3, 3, 4, 4, 1, 1])


def test_commit_without_solver_on_moved_branch_changes_nothing(repo: Repository) -> None:
    o, their_id = landed_pair(repo, lambda s: write(x(s), (0, 0), 3),
                              lambda s: write(x(s), (7, 3), 4))
    base, status, n_snapshots = o.snapshot_id, o.status(), snapshot_count(repo)
    with pytest.raises(ConflictError) as ei:
        o.commit("ours")
    assert not isinstance(ei.value, RebaseFailedError)
    assert ei.value.expected_parent == base and ei.value.actual_parent == their_id
    assert repo.lookup_branch("main") == their_id
    assert snapshot_count(repo) == n_snapshots  # not even garbage was written
    assert next(h.id for h in repo.ancestry(branch="main")) == their_id
    assert o.snapshot_id == base and o.status() == status and not o.read_only
    assert main_x(repo)[7, 3] == 1
    o.commit("ours", rebase_with=ConflictDetector())
    assert main_x(repo)[7, 3] == 4 and main_x(repo)[0, 0] == 3


def test_explicit_rebase(repo: Repository) -> None:
    o, their_id = landed_pair(repo, lambda s: write(y(s), slice(None), 3),
                              lambda s: write(x(s), (0, 0), 4))
    o.rebase(ConflictDetector())
    assert o.snapshot_id == their_id
    assert o.status().updated_chunks == {"/x": [[0, 0]]}
    np.testing.assert_array_equal(y(o)[:], [3, 3, 3, 3])  # theirs now visible
    assert x(o)[0, 0] == 4
    o.rebase(ConflictDetector())  # nothing new: a no-op
    sid = o.commit("ours")  # no solver needed any more
    assert repo.lookup_snapshot(sid).parent_id == their_id


def test_rebase_of_read_only_session_refused(repo: Repository) -> None:
    from icechunk_dist import SessionStateError

    with pytest.raises(SessionStateError):
        repo.readonly_session("main").rebase(ConflictDetector())


def test_rebase_tries_must_be_positive(repo: Repository) -> None:
    o = repo.writable_session("main")
    write(x(o), (0, 0), 4)
    with pytest.raises(InvalidInputError):
        o.commit("ours", rebase_with=ConflictDetector(), rebase_tries=0)


def test_gives_up_after_rebase_tries(repo: Repository, monkeypatch: pytest.MonkeyPatch) -> None:
    """A branch that keeps moving: after ``rebase_tries`` rebases commit raises ConflictError,
    the session keeps its changes and lands later."""
    from icechunk_dist.session import _pipeline

    real = _pipeline.rebase_onto
    rebases = []

    async def rebase_then_someone_commits(target: Any, history: Any,
                                          solver: ConflictSolver) -> None:
        await real(target, history, solver)
        rebases.append(target.base_and_changes()[0].id)
        await asyncio.to_thread(interloper, len(rebases))  # the branch moves again at once

    def interloper(n: int) -> None:
        other = repo.writable_session("main")
        write(y(other), n % 4, n)
        other.commit(f"interloper {n}")

    o, _ = landed_pair(repo, lambda s: write(y(s), 0, 9), lambda s: write(x(s), (0, 0), 4))
    monkeypatch.setattr(_pipeline, "rebase_onto", rebase_then_someone_commits)
    with pytest.raises(ConflictError, match="gave up after 3 rebase attempts"):
        o.commit("ours", rebase_with=ConflictDetector(), rebase_tries=3)
    assert len(rebases) == 3 and x(o)[0, 0] == 4 and not o.read_only
    monkeypatch.setattr(_pipeline, "rebase_onto", real)
    o.commit("ours", rebase_with=ConflictDetector())
    assert main_x(repo)[0, 0] == 4
    np.testing.assert_array_equal(y(repo.readonly_session("main"))[:], [9, 1, 2, 3])


# --------------------------------------------------------------------------- append
def appender(s: Session) -> None:
    """Append 4 rows along axis 0 (resize + write the new chunks)."""
    arr = x(s)
    arr.resize((12, 4))
    arr[8:12] = 7


def filler(s: Session) -> None:
    """Fill existing, disjoint chunks."""
    write(x(s), (slice(0, 4), slice(None)), 5)


@pytest.mark.parametrize("first", ["appender", "filler"])
def test_append_while_writing_both_land(repo: Repository, first: str) -> None:
    a, f = repo.writable_session("main"), repo.writable_session("main")
    appender(a)
    filler(f)
    order = [a, f] if first == "appender" else [f, a]
    ids = [order[0].commit("first", rebase_with=ConflictDetector()),
           order[1].commit("second", rebase_with=ConflictDetector())]
    assert repo.lookup_snapshot(ids[1]).parent_id == ids[0]
    data = main_x(repo)
    assert data.shape == (12, 4)
    np.testing.assert_array_equal(data[:, 0], [5] * 4 + [1] * 4 + [7] * 4)
    assert (data == np.repeat([5, 1, 7], 4)[:, None]).all()
    # the second commit's log holds only its own change
    d = repo.diff(from_snapshot_id=ids[0], to_snapshot_id=ids[1])
    if first == "appender":
        assert d.updated_arrays == set() and d.updated_chunks == {
            "/x": [[0, 0], [0, 1], [1, 0], [1, 1]]}
    else:
        assert d.updated_arrays == {"/x"} and d.updated_chunks == {
            "/x": [[4, 0], [4, 1], [5, 0], [5, 1]]}


def test_append_twice_while_a_long_job_writes(repo: Repository) -> None:
    f = repo.writable_session("main")
    filler(f)
    for n in (12, 16):
        a = repo.writable_session("main")
        arr = x(a)
        arr.resize((n, 4))
        arr[n - 4:n] = n
        a.commit(f"append to {n}")
    f.commit("fill", rebase_with=ConflictDetector())
    data = main_x(repo)
    np.testing.assert_array_equal(data[:, 0], [5] * 4 + [1] * 4 + [12] * 4 + [16] * 4)


def test_append_overlapping_our_chunk_is_a_conflict(repo: Repository) -> None:
    """An append that rewrites a chunk we wrote (here the last existing row of chunks) is a
    real double write, named exactly."""
    def append_from_row_6(s: Session) -> None:
        arr = x(s)
        arr.resize((12, 4))
        arr[6:12] = 7

    o, _ = landed_pair(repo, append_from_row_6, lambda s: write(x(s), (slice(6, 8), 0), 5))
    with pytest.raises(RebaseFailedError) as ei:
        o.commit("fill", rebase_with=ConflictDetector())
    assert [(c.conflict_type, c.conflicted_chunks) for c in ei.value.conflicts] == [
        (ConflictType.ChunkDoubleUpdate, [[3, 0]])]


@pytest.mark.parametrize("first", ["appender", "filler"])
def test_forked_write_rebases_over_an_append(tmp_path: Path, first: str) -> None:
    """Cooperative job (forks on "workers", merged on the driver) racing an appender."""
    repo = init_repo(local_filesystem_storage(tmp_path / "repo"))
    driver = repo.writable_session("main")
    forks = [driver.fork() for _ in range(2)]
    # workers: each fork travels by pickle, writes, travels back
    shipped = [pickle.loads(pickle.dumps(fk)) for fk in forks]
    write(zarr.open_array(shipped[0].store, path="x", mode="r+"), (slice(0, 2), slice(None)), 11)
    write(zarr.open_array(shipped[1].store, path="x", mode="r+"), (slice(2, 4), slice(None)), 12)
    back = [pickle.loads(pickle.dumps(fk)) for fk in shipped]
    driver.merge(*back)
    a = repo.writable_session("main")
    appender(a)
    if first == "appender":
        a.commit("append")
        driver.commit("forked job", rebase_with=ConflictDetector())
    else:
        driver.commit("forked job")
        a.commit("append", rebase_with=ConflictDetector())
    data = main_x(repo)
    assert data.shape == (12, 4)
    np.testing.assert_array_equal(data[:, 2], [11, 11, 12, 12, 1, 1, 1, 1, 7, 7, 7, 7])
    assert len(list(repo.ancestry(branch="main"))) == 4


def test_forked_write_conflict_names_chunks(tmp_path: Path) -> None:
    repo = init_repo(local_filesystem_storage(tmp_path / "repo"))
    driver = repo.writable_session("main")
    fk = pickle.loads(pickle.dumps(driver.fork()))
    write(zarr.open_array(fk.store, path="x", mode="r+"), (slice(0, 2), slice(None)), 11)
    driver.merge(pickle.loads(pickle.dumps(fk)))
    other = repo.writable_session("main")
    write(x(other), (0, 3), 5)
    other.commit("other")
    with pytest.raises(RebaseFailedError) as ei:
        driver.commit("forked job", rebase_with=ConflictDetector())
    assert [(c.path, c.conflicted_chunks) for c in ei.value.conflicts] == [("/x", [[0, 1]])]
    driver.commit("forked job", rebase_with=BasicConflictSolver())
    np.testing.assert_array_equal(main_x(repo)[0], [11, 11, 11, 11])


# --------------------------------------------------------------------------- the guide
def test_concurrency_guide_examples_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every python example in docs/concurrency.md runs and its assertions hold."""
    import re
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    guide = Path(__file__).resolve().parent.parent / "docs" / "concurrency.md"
    blocks = re.findall(r"```python\n(.*?)```", guide.read_text(), re.S)
    assert len(blocks) >= 6
    for i, code in enumerate(blocks):
        exec(compile(code, f"docs/concurrency.md[{i}]", "exec"), {"__name__": f"guide_{i}"})
