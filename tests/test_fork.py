"""Forks without a cluster: no I/O, small and client-free pickles, merge rules (issue 3).

What this file proves (docs/architecture.md section 4, steps 2, 4 and 5):

- ``Session.fork()`` on a session with uncommitted changes (including arrays created in the
  same transaction) writes nothing to storage, and its pickle is small (< 4 KB plus the
  parent's pending metadata) with both ``pickle`` and ``cloudpickle``.
- A fork holds no open client: it is unpickled and written through in a fresh Python process,
  sent back, and merged on the parent.
- A fork cannot commit; ``ForkSession.merge(session)`` is refused.
- Merge is associative and deterministic; overlapping writes raise ``ConflictError`` naming the
  array and the exact chunk unless ``policy="last_wins"``.
- Forks merged twice, of another session, another base, another repository, or merged after
  the parent committed give a clear error of ours and leave the repository unchanged.
- A writable session refuses to pickle, pointing to ``fork()``.
"""

from __future__ import annotations

import copy
import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import cloudpickle
import numpy as np
import pytest
import zarr
from repo_contents import assert_same_contents, contents

import icechunk_dist as icd
from icechunk_dist import (
    ConflictError,
    ForkSession,
    ReadOnlyError,
    Repository,
    SessionStateError,
)

PICKLERS = {"pickle": pickle, "cloudpickle": cloudpickle}


# ------------------------------------------------------------------------------ helpers
def _repo(path: Path) -> Repository:
    return Repository.create(icd.local_filesystem_storage(str(path)))


def _objects(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``root`` with its size and mtime (nanoseconds)."""
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            p = os.path.join(dirpath, name)
            st = os.stat(p)
            out[os.path.relpath(p, root)] = (st.st_size, st.st_mtime_ns)
    return out


def _canon(fork: ForkSession) -> dict[str, list[tuple[tuple[int, ...], Any]]]:
    """A fork's chunk writes, row by row (coords and exact refs, chunk ids included)."""
    out = {}
    for nid, ac in sorted(fork._changes.chunks.items()):
        t = ac.table
        out[nid] = [(tuple(int(v) for v in t.coords[i]), t.row_payload(i)) for i in range(len(t))]
    return out


def _tip(repo: Repository, branch: str = "main") -> str:
    return repo.lookup_branch(branch)


@pytest.fixture
def repo_with_base(tmp_path: Path) -> Repository:
    """A repository whose main branch has a group ``g`` and an array ``g/old``."""
    repo = _repo(tmp_path / "repo")
    s = repo.writable_session("main")
    root = zarr.group(store=s.store)
    g = root.create_group("g")
    old = g.create_array("old", shape=(20, 20), chunks=(5, 5), dtype="i4", fill_value=0)
    old[:] = np.arange(400, dtype="i4").reshape(20, 20)
    s.commit("base")
    return repo


# ------------------------------------------------------------------------------ no I/O
def test_fork_of_session_with_pending_changes_writes_nothing(
    tmp_path: Path, repo_with_base: Repository
):
    s = repo_with_base.writable_session("main")
    g = zarr.open_group(s.store, path="g", mode="r+")
    new = g.create_array("new", shape=(10, 10), chunks=(5, 5), dtype="f8", fill_value=0.0)
    new[:5] = 1.5  # chunk objects of the parent are written now, before we look
    zarr.open_array(s.store, path="g/old", mode="r+")[0:5, 0:5] = -1
    zarr.create_group(s.store, path="h", attributes={"k": 1})
    assert s.has_uncommitted_changes

    before = _objects(tmp_path / "repo")
    fork = s.fork()
    blobs = [pickle.dumps(fork), cloudpickle.dumps(fork), pickle.dumps(fork.child())]
    second = s.fork()
    after = _objects(tmp_path / "repo")
    assert after == before, "fork() or pickling a fork wrote to storage"
    assert all(blobs) and second.fork_id != fork.fork_id

    # the fork sees the parent's pending metadata (reads only: still nothing written)
    a = zarr.open_array(fork.store, path="g/new", mode="r")
    assert a.shape == (10, 10) and a.dtype == np.float64
    assert dict(zarr.open_group(fork.store, path="h", mode="r").attrs) == {"k": 1}
    # but not the parent's pending chunk writes: a fork starts with an empty change-set
    np.testing.assert_array_equal(a[:], np.zeros((10, 10)))
    assert not fork.has_uncommitted_changes
    assert _objects(tmp_path / "repo") == before


# ------------------------------------------------------------------------------ size
@pytest.mark.parametrize("name", sorted(PICKLERS))
def test_fork_pickle_is_small(name: str, repo_with_base: Repository, capsys):
    dumps = PICKLERS[name].dumps
    s = repo_with_base.writable_session("main")
    empty_size = len(dumps(s.fork()))
    assert empty_size < 4096

    # pending metadata: a group and two arrays created in this transaction, plus 4 MB of
    # chunk data written by the parent (which must not travel with the fork)
    g = zarr.create_group(s.store, path="big", attributes={"title": "x" * 100})
    a = g.create_array("a", shape=(1024, 1024), chunks=(256, 256), dtype="f4")
    g.create_array(
        "b",
        shape=(1000,),
        chunks=(100,),
        dtype="i8",
        attributes={"units": "m", "long_name": "distance"},
    )
    a[:] = np.random.default_rng(0).random((1024, 1024), dtype="f4")
    pending = sum(len(rec.metadata) for rec in s._changes.nodes.values())
    fork = s.fork()
    size = len(dumps(fork))
    with capsys.disabled():
        print(
            f"\n[fork pickle size, {name}] empty parent: {empty_size} B; "
            f"with {pending} B of pending metadata: {size} B "
            f"(overhead {size - pending} B)"
        )
    assert size < 4096 + pending
    assert size < 8192  # and the 4 MB of chunk data does not travel
    # the copy is complete: it unpickles to a working fork that sees the new arrays
    loaded = PICKLERS[name].loads(dumps(fork.child()))
    assert zarr.open_array(loaded.store, path="big/a", mode="r").shape == (1024, 1024)


# ------------------------------------------------------------------------------ processes
_CHILD = r"""
import pickle, sys, threading
import numpy as np, zarr
raw = sys.stdin.buffer.read()
assert not [t for t in threading.enumerate() if t.name == "icechunk_dist-io"]
fork = pickle.loads(raw)
zarr.open_array(fork.store, path="g/new", mode="r+")[:] = np.arange(100.0).reshape(10, 10)
zarr.open_array(fork.store, path="g/old", mode="r+")[15:20, 15:20] = 7
sys.stdout.buffer.write(pickle.dumps(fork))
"""


@pytest.mark.parametrize("name", sorted(PICKLERS))
def test_fork_works_in_a_fresh_process_and_merges_back(name: str, repo_with_base: Repository):
    repo = repo_with_base
    s = repo.writable_session("main")
    zarr.create_array(s.store, name="g/new", shape=(10, 10), chunks=(5, 5), dtype="f8")
    fork = s.fork()
    out = subprocess.run(
        [sys.executable, "-c", _CHILD],
        input=PICKLERS[name].dumps(fork),
        capture_output=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr.decode()
    back = pickle.loads(out.stdout)
    # a copy sent back is its own object carrying the writes made in the other process;
    # the local fork is untouched (docs/design/004-fork-copies.md)
    assert back is not fork
    assert back._changes.chunk_count() == 4 + 1
    assert fork._changes.chunk_count() == 0
    s.merge(back)
    s.commit("written in another process")
    r = repo.readonly_session("main")
    np.testing.assert_array_equal(
        zarr.open_array(r.store, path="g/new")[:], np.arange(100.0).reshape(10, 10)
    )
    want = np.arange(400, dtype="i4").reshape(20, 20)
    want[15:20, 15:20] = 7
    np.testing.assert_array_equal(zarr.open_array(r.store, path="g/old")[:], want)


def test_fork_copy_returned_after_release_is_a_new_object(repo_with_base: Repository):
    """A copy that arrives where the fork is not held (already merged) is a plain value."""
    s = repo_with_base.writable_session("main")
    fork = s.fork()
    zarr.open_array(fork.store, path="g/old", mode="r+")[0:5, 0:5] = 3
    blob = pickle.dumps(fork)
    s.merge(fork)
    again = pickle.loads(blob)
    assert again is not fork
    with pytest.raises(SessionStateError, match="already merged"):
        s.merge(again)


# ------------------------------------------------------------------------------ refusals
def test_fork_cannot_commit(repo_with_base: Repository):
    s = repo_with_base.writable_session("main")
    fork = s.fork()
    zarr.open_array(fork.store, path="g/old", mode="r+")[0, 0] = 5
    tip = _tip(repo_with_base)
    with pytest.raises(SessionStateError, match="cannot commit"):
        fork.commit("nope")
    assert _tip(repo_with_base) == tip


def test_fork_merge_refuses_a_session(repo_with_base: Repository):
    s = repo_with_base.writable_session("main")
    fork = s.fork()
    with pytest.raises(SessionStateError, match="only forks"):
        fork.merge(s)  # type: ignore[arg-type]
    with pytest.raises(SessionStateError, match="into itself"):
        fork.merge(fork)


def test_writable_session_refuses_to_pickle(repo_with_base: Repository):
    s = repo_with_base.writable_session("main")
    for mod in (pickle, cloudpickle):
        with pytest.raises(SessionStateError, match=r"fork\(\)"):
            mod.dumps(s)
        with pytest.raises(SessionStateError, match=r"fork\(\)"):
            mod.dumps(s.store)
    # read-only sessions pickle fine
    r = repo_with_base.readonly_session("main")
    r2 = pickle.loads(pickle.dumps(r))
    assert r2.snapshot_id == r.snapshot_id


# ------------------------------------------------------------------------------ merge rules
def _three_forks(s: icd.Session) -> tuple[ForkSession, ForkSession, ForkSession]:
    root = s.fork()
    a, b, c = root.child(), root.child(), root.child()
    zarr.open_array(a.store, path="x", mode="r+")[0:5] = 1
    zarr.open_array(b.store, path="x", mode="r+")[5:10, 0:10] = 2
    zarr.open_array(b.store, path="g/old", mode="r+")[0:10, 0:10] = 9
    zarr.open_array(c.store, path="x", mode="r+")[10:20] = 3
    zarr.open_array(c.store, path="g/old", mode="r+")[10:15, 10:15] = 0  # tombstone
    return a, b, c


def test_merge_is_associative_and_deterministic(repo_with_base: Repository):
    repo = repo_with_base
    repo.create_branch("other", _tip(repo))
    sessions = {b: repo.writable_session(b) for b in ("main", "other")}
    for s in sessions.values():
        zarr.create_array(s.store, name="x", shape=(20, 20), chunks=(5, 5), dtype="i2")

    # exact change-sets: every grouping and order of the same forks gives the same refs
    a, b, c = _three_forks(sessions["main"])
    groupings = []
    for build in (
        lambda a, b, c: a.merge(b).merge(c),  # ((a, b), c)
        lambda a, b, c: a.merge(b.merge(c)),  # (a, (b, c))
        lambda a, b, c: c.merge(b, a),  # another order
        lambda a, b, c: b.child().merge(c, a, b),  # into a fresh fork
    ):
        ca, cb, cc = copy.deepcopy(a), copy.deepcopy(b), copy.deepcopy(c)
        groupings.append(_canon(build(ca, cb, cc)))
    assert all(g == groupings[0] for g in groupings[1:])
    assert sum(len(rows) for rows in groupings[0].values()) == (4 + 2 + 8) + (4 + 1)

    # committed contents: ((a, b), c) on main and (a, (b, c)) on other
    sessions["main"].merge(a.merge(b), c)
    a2, b2, c2 = _three_forks(sessions["other"])
    sessions["other"].merge(a2, b2.merge(c2))
    for s in sessions.values():
        s.commit("three forks")
    main = contents(repo.readonly_session("main"))
    other = contents(repo.readonly_session("other"))
    assert_same_contents(main, other)
    want = np.zeros((20, 20), "i2")
    want[0:5], want[5:10, 0:10], want[10:20] = 1, 2, 3
    np.testing.assert_array_equal(main["x"][2], want)
    old = np.arange(400, dtype="i4").reshape(20, 20)
    old[0:10, 0:10], old[10:15, 10:15] = 9, 0
    np.testing.assert_array_equal(main["g/old"][2], old)


@pytest.mark.parametrize("where", ["base array", "new array"])
@pytest.mark.parametrize("level", ["session", "fork", "pickled forks"])
def test_overlapping_writes_conflict_naming_array_and_chunk(
    where: str, level: str, repo_with_base: Repository
):
    s = repo_with_base.writable_session("main")
    path = "g/old" if where == "base array" else "g/new"
    if where == "new array":
        zarr.create_array(s.store, name=path, shape=(20, 20), chunks=(5, 5), dtype="i4")
    root = s.fork()
    a, b, ok = root.child(), root.child(), root.child()
    zarr.open_array(a.store, path=path, mode="r+")[5:10, 10:15] = 1
    zarr.open_array(b.store, path=path, mode="r+")[5:10, 10:15] = 2
    zarr.open_array(b.store, path=path, mode="r+")[0:5, 0:5] = 2
    zarr.open_array(ok.store, path=path, mode="r+")[0:5, 5:10] = 3
    if level == "pickled forks":  # as on a worker that did not write: base not loaded
        a, b = pickle.loads(pickle.dumps(a)), pickle.loads(pickle.dumps(b))
    with pytest.raises(ConflictError) as ei:
        if level == "session":
            s.merge(ok, a, b)
        else:
            a.merge(b)
    e = ei.value
    assert e.path == path
    assert e.chunk_coords == [(1, 2)]
    assert path in str(e) and "(1, 2)" in str(e)
    assert e.expected_parent is None and e.actual_parent is None
    # a failed merge changes nothing: none of the forks counts as merged
    assert s._changes.chunk_count() == 0
    s.merge(ok)
    assert s._changes.chunk_count() == 1
    s.commit("the fork that did not conflict")
    got = zarr.open_array(repo_with_base.readonly_session("main").store, path=path)[:]
    want = (
        np.arange(400, dtype="i4").reshape(20, 20)
        if where == "base array"
        else np.zeros((20, 20), "i4")
    )
    want[0:5, 5:10] = 3
    np.testing.assert_array_equal(got, want)


def test_last_wins_policy_allows_overlap(repo_with_base: Repository):
    repo = repo_with_base
    s = repo.writable_session("main")
    root = s.fork()
    a, b, c, d = (root.child() for _ in range(4))
    zarr.open_array(a.store, path="g/old", mode="r+")[0:5, 0:5] = 1
    zarr.open_array(b.store, path="g/old", mode="r+")[0:5, 0:5] = 2
    zarr.open_array(c.store, path="g/old", mode="r+")[5:10, 0:5] = 3
    zarr.open_array(d.store, path="g/old", mode="r+")[5:10, 0:5] = 4
    s.merge(a, b, policy="last_wins")  # b is later: b wins
    s.merge(d.merge(c, policy="last_wins"), policy="last_wins")  # c merged into d: c wins
    s.commit("last wins")
    got = zarr.open_array(repo.readonly_session("main").store, path="g/old")[:]
    want = np.arange(400, dtype="i4").reshape(20, 20)
    want[0:5, 0:5], want[5:10, 0:5] = 2, 3
    np.testing.assert_array_equal(got, want)


def test_fork_merged_twice_is_refused(repo_with_base: Repository):
    s = repo_with_base.writable_session("main")
    root = s.fork()
    a, b = root.child(), root.child()
    zarr.open_array(a.store, path="g/old", mode="r+")[0:5, 0:5] = 1
    zarr.open_array(b.store, path="g/old", mode="r+")[5:10, 0:5] = 1
    s.merge(a)
    with pytest.raises(SessionStateError, match="already merged"):
        s.merge(a)
    with pytest.raises(SessionStateError, match="already merged"):
        s.merge(b, a)  # all or nothing: b is not merged either
    merged_b = root.child().merge(b)
    with pytest.raises(SessionStateError, match="already merged"):
        merged_b.merge(b)  # b is in merged_b already
    s.merge(merged_b)
    with pytest.raises(SessionStateError, match="already merged"):
        s.merge(b)  # b came in through merged_b
    s.commit("once each")
    got = zarr.open_array(repo_with_base.readonly_session("main").store, path="g/old")[:]
    want = np.arange(400, dtype="i4").reshape(20, 20)
    want[0:10, 0:5] = 1
    np.testing.assert_array_equal(got, want)


def test_fork_of_another_session_base_or_repository_is_refused(
    tmp_path: Path, repo_with_base: Repository
):
    repo = repo_with_base
    s = repo.writable_session("main")
    sibling = repo.writable_session("main")  # same base, another lineage
    f_sibling = sibling.fork()
    zarr.open_array(f_sibling.store, path="g/old", mode="r+")[0:5, 0:5] = 1
    with pytest.raises(SessionStateError, match="another session"):
        s.merge(f_sibling)
    with pytest.raises(SessionStateError, match="another session"):
        s.fork().merge(f_sibling)

    # another base: a session that began before a commit landed
    stale = repo.writable_session("main")
    f_stale = stale.fork()
    zarr.open_array(f_stale.store, path="g/old", mode="r+")[0:5, 0:5] = 1
    mover = repo.writable_session("main")
    zarr.open_array(mover.store, path="g/old", mode="r+")[19, 19] = 0
    mover.commit("move main")
    fresh = repo.writable_session("main")
    with pytest.raises(SessionStateError, match="made from snapshot"):
        fresh.merge(f_stale)
    with pytest.raises(SessionStateError, match="made from snapshot"):
        fresh.fork().merge(f_stale)

    # another repository (same layout, same paths)
    other = _repo(tmp_path / "other")
    so = other.writable_session("main")
    zarr.create_array(so.store, name="g/old", shape=(20, 20), chunks=(5, 5), dtype="i4")
    so.commit("base")
    f_other = other.writable_session("main").fork()
    zarr.open_array(f_other.store, path="g/old", mode="r+")[0:5, 0:5] = 1
    with pytest.raises(SessionStateError, match="another repository"):
        fresh.merge(f_other)

    tip = _tip(repo)
    assert not fresh.has_uncommitted_changes and not s.has_uncommitted_changes
    with pytest.raises(SessionStateError, match="nothing to commit"):
        fresh.commit("nothing")
    assert _tip(repo) == tip


def test_fork_merged_after_parent_committed_is_refused(repo_with_base: Repository):
    repo = repo_with_base
    s = repo.writable_session("main")
    zarr.open_array(s.store, path="g/old", mode="r+")[0, 0] = 100
    fork = s.fork()
    zarr.open_array(fork.store, path="g/old", mode="r+")[10:15, 10:15] = 5
    sid = s.commit("parent commits first")
    ancestry = [i.id for i in repo.ancestry(branch="main")]
    with pytest.raises((ReadOnlyError, SessionStateError), match="committed"):
        s.merge(fork)
    with pytest.raises((ReadOnlyError, SessionStateError)):
        s.commit("again")
    assert [i.id for i in repo.ancestry(branch="main")] == ancestry
    assert _tip(repo) == sid
    got = zarr.open_array(repo.readonly_session("main").store, path="g/old")[:]
    want = np.arange(400, dtype="i4").reshape(20, 20)
    want[0, 0] = 100
    np.testing.assert_array_equal(got, want)
    # the fork's data cannot reach the repository through a new session either
    s2 = repo.writable_session("main")
    with pytest.raises(SessionStateError):
        s2.merge(fork)


def test_fork_metadata_change_of_pending_array_merges(repo_with_base: Repository):
    """A fork may resize an array created in the parent's transaction (3-way check)."""
    repo = repo_with_base
    s = repo.writable_session("main")
    zarr.create_array(s.store, name="n", shape=(10,), chunks=(5,), dtype="i4")
    root = s.fork()
    a, b, c = root.child(), root.child(), root.child()
    arr = zarr.open_array(a.store, path="n", mode="r+")
    arr.resize((15,))
    arr[10:15] = 7
    zarr.open_array(b.store, path="n", mode="r+").resize((15,))  # the same change
    zarr.open_array(c.store, path="n", mode="r+").resize((25,))  # a different one
    s.merge(a, b)
    with pytest.raises(ConflictError, match="metadata of 'n'") as ei:
        s.merge(c)
    assert ei.value.path == "n"
    s.commit("resized in a fork")
    got = zarr.open_array(repo.readonly_session("main").store, path="n")
    assert got.shape == (15,)
    np.testing.assert_array_equal(got[:], [0] * 10 + [7] * 5)


def test_two_copies_of_one_fork_writing_one_chunk_differently_conflict(
        repo_with_base: Repository):
    """Copies of one fork coming back to the driver are separate values; if two processes
    wrote one chunk differently through the same fork, merging both reports it."""
    from icechunk_dist.session import forks as _session

    s = repo_with_base.writable_session("main")
    fork = s.fork()
    blob = pickle.dumps(fork)
    returned = []
    for value in (1, 2):
        saved = list(_session._REGISTRY.items())
        _session._REGISTRY.clear()  # as in another process
        try:
            remote = pickle.loads(blob)
            assert remote is not fork
            zarr.open_array(remote.store, path="g/old", mode="r+")[0:5, 5:10] = value
            returned.append(pickle.dumps(remote))
        finally:
            _session._REGISTRY.clear()
            _session._REGISTRY.update(saved)
    first, second = pickle.loads(returned[0]), pickle.loads(returned[1])
    assert first is not fork and second is not first
    with pytest.raises(SessionStateError, match="already merged"):
        s.merge(first, pickle.loads(returned[0]))  # the same change-set twice
    with pytest.raises(ConflictError) as ei:
        s.merge(first, second)
    assert ei.value.path == "g/old" and ei.value.chunk_coords == [(0, 1)]
    assert not s.has_uncommitted_changes  # all or nothing
    s.merge(first)
    s.commit("first copy")
    got = zarr.open_array(repo_with_base.readonly_session("main").store, path="g/old")[:]
    np.testing.assert_array_equal(got[0:5, 5:10], np.ones((5, 5)))
