"""``Session.status()`` and ``Repository.diff`` report exactly what the transaction logs hold.

For every kind of change, the status of a session before it commits equals the diff from the
commit's parent to the commit, and both equal the commit's stored transaction log. Diffs over
several commits fold: create then delete is nothing, chunk coordinates are the exact union.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import zarr

from icechunk_dist import (
    BasicConflictSolver,
    ConflictDetector,
    Diff,
    InvalidInputError,
    Repository,
    Session,
    in_memory_storage,
)
from icechunk_dist._sync import run
from icechunk_dist.conflicts import public_path
from icechunk_dist.session._io import read_transaction_log


@pytest.fixture
def repo() -> Repository:
    repo = Repository.create(in_memory_storage())
    s = repo.writable_session("main")
    root = zarr.open_group(s.store, mode="w")
    root.create_array("x", shape=(8, 4), chunks=(2, 2), dtype="i4", fill_value=0)[:] = 1
    g = root.create_group("g", attributes={"v": 0})
    g.create_array("y", shape=(4,), chunks=(2,), dtype="i4", fill_value=0)[:] = 2
    s.commit("init")
    return repo


def x(s: Session) -> zarr.Array:
    return zarr.open_array(s.store, path="x", mode="r+")


def tx_as_diff(repo: Repository, snapshot_id: str) -> Diff:
    """The stored transaction log of one commit, as a Diff (no folding involved)."""
    tx = run(read_transaction_log(repo.storage, snapshot_id))
    pub = lambda paths: {public_path(p) for p in paths}  # noqa: E731
    chunks = {}
    for c in tx.chunks:
        coords = np.frombuffer(c.coords, "<i8").reshape(c.count, c.ndim)
        chunks[public_path(c.path)] = sorted(tuple(int(v) for v in r) for r in coords)
    return Diff(new_groups=pub(tx.new_groups), new_arrays=pub(tx.new_arrays),
                deleted_groups=pub(tx.deleted_groups), deleted_arrays=pub(tx.deleted_arrays),
                updated_groups=pub(tx.updated_groups), updated_arrays=pub(tx.updated_arrays),
                updated_chunks=chunks, updated_keys=set(tx.loose_keys))


def set_key(s: Session, key: str, data: bytes) -> None:
    # through the session: the store refuses keys that are not zarr keys (as Icechunk's),
    # the session still records them (arrays of other grids keep their chunks so)
    run(s.set_key(key, data))


def new_tree(s: Session) -> None:
    h = zarr.open_group(s.store, mode="r+").create_group("h")
    h.create_array("a", shape=(6,), chunks=(2,), dtype="i4", fill_value=0)[2:6] = 5


def resize_and_write(s: Session) -> None:
    arr = x(s)
    arr.resize((10, 4))
    arr[8:10, 2:4] = 3


def delete_chunk(s: Session) -> None:
    x(s)[0:2, 0:2] = 0  # the fill value: zarr deletes the chunk


# (edit, expected diff)
EDITS: dict[str, tuple[Callable[[Session], object], Diff]] = {
    "write chunks": (
        lambda s: x(s).__setitem__((slice(2, 5), slice(0, 4)), 7),
        Diff(updated_chunks={"/x": [(1, 0), (1, 1), (2, 0), (2, 1)]}),
    ),
    "delete a chunk": (delete_chunk, Diff(updated_chunks={"/x": [(0, 0)]})),
    "attrs of array": (lambda s: x(s).attrs.update({"k": 1}), Diff(updated_arrays={"/x"})),
    "attrs of group": (
        lambda s: zarr.open_group(s.store, path="g", mode="r+").attrs.update({"v": 2}),
        Diff(updated_groups={"/g"}),
    ),
    "append": (resize_and_write,
               Diff(updated_arrays={"/x"}, updated_chunks={"/x": [(4, 1)]})),
    "new group and array": (
        new_tree, Diff(new_groups={"/h"}, new_arrays={"/h/a"},
                       updated_chunks={"/h/a": [(1,), (2,)]}),
    ),
    "delete array": (lambda s: zarr.open_group(s.store, mode="r+").__delitem__("x"),
                     Diff(deleted_arrays={"/x"})),
    "delete group": (lambda s: zarr.open_group(s.store, mode="r+").__delitem__("g"),
                     Diff(deleted_groups={"/g"}, deleted_arrays={"/g/y"})),
    "other key": (lambda s: set_key(s, "notes/readme.txt", b"hello"),
                  Diff(updated_keys={"notes/readme.txt"})),
}


@pytest.mark.parametrize("edit", sorted(EDITS))
def test_status_equals_diff_equals_transaction_log(repo: Repository, edit: str) -> None:
    fn, expected = EDITS[edit]
    s = repo.writable_session("main")
    parent = s.snapshot_id
    fn(s)
    status = s.status()
    assert status == expected
    sid = s.commit(edit)
    assert repo.diff(from_snapshot_id=parent, to_snapshot_id=sid) == expected
    assert tx_as_diff(repo, sid) == expected
    assert repo.diff(from_snapshot_id=sid, to_snapshot_id=sid).is_empty()


def test_status_of_untouched_session_is_empty(repo: Repository) -> None:
    s = repo.writable_session("main")
    assert s.status().is_empty() and str(s.status()) == "no changes"
    x(s)[0, 0] = 5
    s.discard_changes()
    assert s.status().is_empty()


def test_rebased_commit_log_holds_only_its_own_changes(repo: Repository) -> None:
    """After a rebase, status (now against the new base) and the landed log agree, and the
    other writer's changes are not attributed to us."""
    a, f = repo.writable_session("main"), repo.writable_session("main")
    resize_and_write(a)
    x(f)[0:2, :] = 9
    x(a)[0:2, 0:2] = 8  # overlaps f: solved with UseOurs
    before = a.status()
    first = f.commit("fill")
    a.rebase(BasicConflictSolver())
    assert a.status() == before == Diff(updated_arrays={"/x"},
                                        updated_chunks={"/x": [(0, 0), (4, 1)]})
    sid = a.commit("append", rebase_with=ConflictDetector())
    assert repo.diff(from_snapshot_id=first, to_snapshot_id=sid) == before
    assert tx_as_diff(repo, sid) == before


def commit(repo: Repository, fn: Callable[[Session], object]) -> str:
    s = repo.writable_session("main")
    fn(s)
    return s.commit("step")


def test_create_then_delete_is_nothing(repo: Repository) -> None:
    start = repo.lookup_branch("main")
    commit(repo, new_tree)
    commit(repo, lambda s: zarr.open_array(s.store, path="h/a", mode="r+").__setitem__(0, 1))
    end = commit(repo, lambda s: zarr.open_group(s.store, mode="r+").__delitem__("h"))
    d = repo.diff(from_snapshot_id=start, to_snapshot_id=end)
    assert d.is_empty(), d


def test_fold_update_then_delete_and_create_then_update(repo: Repository) -> None:
    start = repo.lookup_branch("main")
    commit(repo, lambda s: x(s).__setitem__((0, 0), 4))
    commit(repo, lambda s: x(s).attrs.update({"k": 1}))
    commit(repo, new_tree)
    commit(repo, lambda s: zarr.open_array(s.store, path="h/a", mode="r+").attrs.update({"q": 1}))
    end = commit(repo, lambda s: zarr.open_group(s.store, mode="r+").__delitem__("x"))
    d = repo.diff(from_snapshot_id=start, to_snapshot_id=end)
    assert d == Diff(new_groups={"/h"}, new_arrays={"/h/a"}, deleted_arrays={"/x"},
                     updated_chunks={"/h/a": [(1,), (2,)]})


def test_fold_unions_exact_chunk_coordinates(repo: Repository) -> None:
    start = repo.lookup_branch("main")
    mid = commit(repo, lambda s: x(s).__setitem__((slice(0, 2), slice(0, 2)), 4))
    commit(repo, lambda s: x(s).__setitem__((slice(0, 4), slice(2, 4)), 5))
    end = commit(repo, lambda s: zarr.open_array(s.store, path="g/y", mode="r+")
                 .__setitem__(slice(2, 4), 6))
    d = repo.diff(from_snapshot_id=start, to_branch="main")
    assert d == Diff(updated_chunks={"/x": [(0, 0), (0, 1), (1, 1)], "/g/y": [(1,)]})
    assert repo.diff(from_snapshot_id=mid, to_snapshot_id=end).updated_chunks == {
        "/x": [[0, 1], [1, 1]], "/g/y": [[1]]}
    assert "chunks changed in /x: 3" in str(d)


def test_diff_by_tag_and_branch(repo: Repository) -> None:
    repo.create_tag("before", repo.lookup_branch("main"))
    commit(repo, lambda s: x(s).attrs.update({"k": 1}))
    assert repo.diff(from_tag="before", to_branch="main") == Diff(updated_arrays={"/x"})


def test_diff_needs_an_ancestor(repo: Repository) -> None:
    start = repo.lookup_branch("main")
    end = commit(repo, lambda s: x(s).__setitem__((0, 0), 4))
    with pytest.raises(InvalidInputError, match="does not descend"):
        repo.diff(from_snapshot_id=end, to_snapshot_id=start)
    with pytest.raises(InvalidInputError):
        repo.diff(from_snapshot_id=start)
