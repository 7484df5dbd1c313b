"""Every kind of commit runs the one commit pipeline (issue 20, scenarios 1, 2 and 6).

docs/design/011-one-commit-pipeline.md: commit, amend and the rearrange commit differ only in
how they build their snapshot; the flush, tip check, GC check, ref write with unknown-outcome
handling and the retries are the pipeline's. So the invariants hold for every kind:

1. a garbage collection that deleted what the commit references fails it with
   GCConflictError before its ref write, and the branch stays readable (amend lost this);
2. the expiry mark of a snapshot survives an amend of it, so rebase and diff keep refusing
   to cross expired history (amend dropped it, and a rebase overwrote an array);
6. a collection's fence (the branch moved to the same snapshot) is retried, never reported
   as a moved branch (amend and rearrange commits failed on it).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr

import icechunk_dist as icd
from icechunk_dist._maintenance import garbage_collect
from icechunk_dist.storage import Storage, WrapperStorage

KINDS = ["commit", "amend", "rearrange"]


class HookStorage(WrapperStorage):
    """Local storage that awaits ``hook`` right before the next write of a version of branch
    ``main``: after the committer's GC check, just before its ref write."""

    def __init__(self, inner: Storage) -> None:
        super().__init__(inner)
        self.hook: Callable[[], Awaitable[None]] | None = None

    @property
    def supports_pickle(self) -> bool:
        return False

    async def put(self, key: str, data: bytes, *, mode: Any = "overwrite") -> None:
        if key.startswith("refs/branch.main/") and not key.endswith("/tip"):
            hook, self.hook = self.hook, None
            if hook is not None:
                await hook()
        await self.inner.put(key, data, mode=mode)


def _repo(root: Path, hooked: bool = False) -> icd.Repository:
    inner = icd.local_filesystem_storage(str(root))
    repo = icd.Repository.create(HookStorage(inner) if hooked else inner)
    s = repo.writable_session("main")
    zarr.create_array(s.store, name="x", shape=(4000,), chunks=(1000,), dtype="i4", fill_value=0)
    zarr.create_group(s.store, path="g")
    s.commit("x and g")
    s = repo.writable_session("main")
    zarr.open_array(s.store, path="x", mode="r+")[:1000] = 1
    s.commit("first chunk")
    return repo


def _x(repo: icd.Repository, path: str = "x") -> Any:
    return zarr.open_array(repo.readonly_session("main").store, path=path, mode="r")[:]


def _open(repo: icd.Repository, kind: str) -> icd.Session:
    """A session of ``kind`` with one change: data written, or a node moved."""
    if kind == "rearrange":
        s = repo.rearrange_session("main")
        s.move("/g", "/h")
        return s
    s = repo.writable_session("main")
    zarr.open_array(s.store, path="x", mode="r+")[1000:] = np.arange(3000)  # 3 chunk objects
    return s


def _land(s: icd.Session, kind: str) -> str:
    return s.amend("amended") if kind == "amend" else s.commit(kind)


# ---------------------------------------------------------------------- scenario 1
@pytest.mark.parametrize("kind", ["commit", "amend"])
def test_a_collection_that_deleted_the_sessions_chunks_fails_every_kind(
        tmp_path: Path, kind: str) -> None:
    repo = _repo(tmp_path)
    tip = repo.lookup_branch("main")
    s = _open(repo, kind)
    # a collection whose cut-off is later than the session's writes deletes its chunks
    summary = repo.garbage_collect(datetime.now(UTC) + timedelta(seconds=5))
    assert summary.chunks_deleted == 3
    with pytest.raises(icd.GCConflictError) as err:
        _land(s, kind)
    assert len(err.value.missing) == 3 and all(k.startswith("chunks/")
                                               for k in err.value.missing)
    assert repo.lookup_branch("main") == tip  # nothing landed
    np.testing.assert_array_equal(_x(repo), [1] * 1000 + [0] * 3000)  # and the tip reads


# ---------------------------------------------------------------------- scenario 6
@pytest.mark.parametrize("kind", KINDS)
def test_a_collections_fence_during_the_ref_write_is_retried_for_every_kind(
        tmp_path: Path, kind: str) -> None:
    repo = _repo(tmp_path, hooked=True)
    storage = repo.storage
    assert isinstance(storage, HookStorage)
    s = _open(repo, kind)
    runs: list[icd.GCSummary] = []

    async def collect() -> None:
        # a real collection (cut-off before the session began: it deletes nothing of ours)
        # that fences the branch between our GC check and our ref write
        runs.append(await garbage_collect(storage.inner, datetime.now(UTC) - timedelta(hours=1),
                                          dry_run=False))

    storage.hook = collect
    sid = _land(s, kind)
    assert runs, "the collection did not run inside the commit"
    assert repo.lookup_branch("main") == sid
    if kind == "rearrange":
        assert repo.readonly_session("main").get_node_id("/h")
        with pytest.raises(icd.NotFoundError):
            repo.readonly_session("main").get_node_id("/g")
    else:
        np.testing.assert_array_equal(_x(repo), [1] * 1000 + list(range(3000)))


@pytest.mark.parametrize("kind", KINDS)
def test_a_collection_deleting_during_the_ref_write_fails_or_lands_whole(
        tmp_path: Path, kind: str) -> None:
    """The most aggressive collection (cut-off in the future) runs right before the ref
    write: data commits must fail with GCConflictError (their chunks are gone); a rearrange
    commit, which writes no chunks, lands on its retry. Either way the tip reads whole."""
    repo = _repo(tmp_path, hooked=True)
    storage = repo.storage
    assert isinstance(storage, HookStorage)
    tip = repo.lookup_branch("main")
    s = _open(repo, kind)

    async def collect() -> None:
        await garbage_collect(storage.inner, datetime.now(UTC) + timedelta(seconds=5),
                              dry_run=False)

    storage.hook = collect
    if kind == "rearrange":
        sid = _land(s, kind)
        assert repo.lookup_branch("main") == sid
        assert repo.readonly_session("main").get_node_id("/h")
    else:
        with pytest.raises(icd.GCConflictError):
            _land(s, kind)
        assert repo.lookup_branch("main") == tip
    np.testing.assert_array_equal(_x(repo), [1] * 1000 + [0] * 3000)


# ---------------------------------------------------------------------- scenario 2
def _expired_repo(root: Path) -> tuple[icd.Repository, icd.Session, str, str]:
    """genesis -> c1 (creates /a) -> c2 (writes /b); expiry re-parents c2 onto genesis.
    Returns the repo, a session opened at genesis before c1, c1 and c2."""
    repo = icd.Repository.create(icd.local_filesystem_storage(str(root)))
    old = repo.writable_session("main")  # based on the initial snapshot
    s = repo.writable_session("main")
    a = zarr.create_array(s.store, name="a", shape=(4,), chunks=(2,), dtype="i4", fill_value=0)
    a[:] = [1, 2, 3, 4]
    c1 = s.commit("c1 creates /a")
    cut = datetime.now(UTC)
    s = repo.writable_session("main")
    zarr.create_array(s.store, name="b", shape=(2,), chunks=(2,), dtype="i4", fill_value=0)
    c2 = s.commit("c2 creates /b")
    repo.expire_snapshots(cut)
    return repo, old, c1, c2


def test_amend_keeps_the_expiry_mark_so_rebase_refuses_to_cross(tmp_path: Path) -> None:
    repo, old, _c1, c2 = _expired_repo(tmp_path)
    genesis = list(repo.ancestry(branch="main"))[-1].id
    s = repo.writable_session("main")
    assert s.snapshot_id == c2
    zarr.open_array(s.store, path="b", mode="r+")[:] = 9
    amended = s.amend("amend c2")
    assert [i.id for i in repo.ancestry(branch="main")] == [amended, genesis]
    # the older session (based on genesis) creates /a too; the expired commit c1 created
    # /a, which no transaction log since genesis describes: rebase must refuse, not
    # overwrite c1's /a
    zarr.create_array(old.store, name="a", shape=(4,), chunks=(2,), dtype="i4",
                      fill_value=0)[:] = [-1, -1, -1, -1]
    with pytest.raises(icd.HistoryRewrittenError, match="expired"):
        old.commit("old writer", rebase_with=icd.ConflictDetector())
    with pytest.raises(icd.ConflictError):  # the tree of errors Icechunk users catch
        old.rebase(icd.BasicConflictSolver())
    assert repo.lookup_branch("main") == amended
    np.testing.assert_array_equal(_x(repo, "a"), [1, 2, 3, 4])
    np.testing.assert_array_equal(_x(repo, "b"), [9, 9])
    # diff across the amended (still expired) history is refused as well
    with pytest.raises(icd.InvalidInputError, match="expired"):
        repo.diff(from_snapshot_id=genesis, to_branch="main")


def test_amend_after_expiry_rewrote_the_tip_under_the_session(tmp_path: Path) -> None:
    """The session read the tip before expiry re-parented (and marked) it in place: the
    amend must take the mark from the snapshot as it is now, not as the session read it."""
    repo = icd.Repository.create(icd.local_filesystem_storage(str(tmp_path)))
    old = repo.writable_session("main")
    s = repo.writable_session("main")
    zarr.create_array(s.store, name="a", shape=(2,), chunks=(2,), dtype="i4", fill_value=0)
    s.commit("c1")
    cut = datetime.now(UTC)
    s = repo.writable_session("main")
    zarr.create_array(s.store, name="b", shape=(2,), chunks=(2,), dtype="i4", fill_value=0)
    s.commit("c2")
    amender = repo.writable_session("main")  # reads c2 before it is re-parented
    zarr.open_array(amender.store, path="b", mode="r+")[:] = 5
    repo.expire_snapshots(cut)
    amender.amend("amend c2")
    zarr.create_array(old.store, name="a", shape=(2,), chunks=(2,), dtype="i4", fill_value=0)
    with pytest.raises(icd.HistoryRewrittenError):
        old.commit("old", rebase_with=icd.ConflictDetector())


def test_rebase_onto_an_amended_base_is_refused(tmp_path: Path) -> None:
    """A session based on the tip that another session then amended: its base is no longer
    on the branch; rebase names that instead of replaying over foreign history."""
    repo = _repo(tmp_path)
    s = repo.writable_session("main")
    zarr.open_array(s.store, path="x", mode="r+")[3000:] = 3
    other = repo.writable_session("main")
    zarr.open_array(other.store, path="x", mode="r+")[2000:3000] = 2
    other.amend("amend the tip")
    with pytest.raises(icd.HistoryRewrittenError, match="no longer descends"):
        s.commit("late", rebase_with=icd.ConflictDetector())


# --------------------------------------------------- the requests of a small commit (issue 24)
def _counted(root: Path) -> tuple[icd.Repository, Any]:
    from icechunk_dist.storage import FaultyStorage

    counter = FaultyStorage(icd.local_filesystem_storage(str(root)))  # no faults: it counts
    repo = icd.Repository.create(counter)
    s = repo.writable_session("main")
    zarr.create_array(s.store, name="x", shape=(64 * 256,), chunks=(256,), dtype="f8",
                      fill_value=0.0)[:] = np.arange(64 * 256, dtype="f8")
    s.commit("array")
    return repo, counter


def _one_chunk_commit(repo: icd.Repository, counter: Any, value: float) -> list[tuple[str, str]]:
    from icechunk_dist import _sync

    s = repo.writable_session("main")
    zarr.open_array(s.store, path="x", mode="r+")[:256] = np.full(256, value)
    _sync.run(_sync.drain_background())  # the previous commit's tip hint, written behind it
    counter.reset_counters()
    s.commit(f"one chunk {value}")
    return [entry for entry in counter.log]


def test_a_commit_on_an_unmoved_branch_checks_its_tip_in_one_get(tmp_path: Path) -> None:
    """The session knows the branch version its base was read at: the commit's tip check is
    one GET of the next version (absent: nothing moved), not a read of the branch's tip hint
    and versions (docs/design/015-one-get-tip-check.md). And the base manifest this process
    wrote in the previous commit is not read back."""
    repo, counter = _counted(tmp_path / "repo")
    _one_chunk_commit(repo, counter, 1.0)
    log = _one_chunk_commit(repo, counter, 2.0)
    ref_gets = [k for op, k in log if op == "get" and k.startswith("refs/")]
    assert len(ref_gets) == 1 and ref_gets[0].startswith("refs/branch.main/")
    assert not any(op == "get" and k.startswith("manifests/") for op, k in log)
    # the tip hint is written behind the commit (it only says where readers start)
    puts = sorted(k.split("/")[0] for op, k in log if op == "put" and not k.endswith("/tip"))
    assert puts == ["manifests", "refs", "snapshots", "transactions"]
    np.testing.assert_array_equal(
        zarr.open_array(repo.readonly_session("main").store, path="x")[:256], np.full(256, 2.0))


def test_a_branch_moved_after_the_session_opened_is_still_seen(tmp_path: Path) -> None:
    """The one-GET check finds the version another writer created: the commit reads the tip
    in full, and fails (no solver) or rebases (a solver) as before."""
    repo, _ = _counted(tmp_path / "repo")
    mine = repo.writable_session("main")
    zarr.open_array(mine.store, path="x", mode="r+")[:256] = np.full(256, 5.0)
    other = repo.writable_session("main")
    zarr.open_array(other.store, path="x", mode="r+")[-256:] = np.full(256, 7.0)
    landed = other.commit("other")
    with pytest.raises(icd.BranchMovedError) as info:
        mine.commit("mine")
    assert info.value.actual_parent == landed
    assert repo.lookup_branch("main") == landed
    sid = mine.commit("mine", rebase_with=icd.BasicConflictSolver())
    assert repo.lookup_snapshot(sid).parent_id == landed
    arr = zarr.open_array(repo.readonly_session("main").store, path="x")
    np.testing.assert_array_equal(arr[:256], np.full(256, 5.0))
    np.testing.assert_array_equal(arr[-256:], np.full(256, 7.0))


def test_a_branch_reset_to_the_same_snapshot_is_a_move(tmp_path: Path) -> None:
    """Moved away and back to the session's base snapshot: its version is newer, the
    one-GET check sees it, the full read finds the tip at the base, and the commit lands on
    the newest version (never on a version someone else created)."""
    repo, _ = _counted(tmp_path / "repo")
    base = repo.lookup_branch("main")
    s = repo.writable_session("main")
    zarr.open_array(s.store, path="x", mode="r+")[:256] = np.full(256, 3.0)
    other = repo.writable_session("main")
    zarr.open_array(other.store, path="x", mode="r+")[:256] = np.full(256, 9.0)
    other.commit("other")
    repo.reset_branch("main", base)
    sid = s.commit("after a reset")
    assert repo.lookup_snapshot(sid).parent_id == base
    assert [m.message for m in repo.ancestry(branch="main")][:2] == ["after a reset", "array"]
