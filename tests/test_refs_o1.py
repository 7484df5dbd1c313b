"""Branch tips are read in O(1) requests in the length of the history (issue 9), and the
create-only protocol stays safe: exactly one winner, a writer that read an old tip loses,
whatever the tip hint says (docs/design/006-o1-branch-tips.md). Requests are counted with
FaultyStorage (no faults), never timed."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import zarr

from icechunk_dist import ConflictError, NotFoundError, Repository, _sync, refs
from icechunk_dist._sync import run
from icechunk_dist._types import new_id
from icechunk_dist.format import ObjectType, RefData, encode_object
from icechunk_dist.storage import Fault, FaultyStorage, local_filesystem_storage

HINT = "refs/branch.main/tip"


def counted(tmp_path: Path) -> FaultyStorage:
    return FaultyStorage(local_filesystem_storage(str(tmp_path / "repo")))


def grow(repo: Repository, versions: int, branch: str = "main") -> None:
    """Add ``versions`` versions to ``branch`` through the real protocol (resets to the tip)."""
    sid = repo.lookup_branch(branch)
    for _ in range(versions):
        repo.reset_branch(branch, sid)


def cost(storage: FaultyStorage, fn: object) -> Counter[str]:
    """The requests of ``fn``, its tip hint writes included (they land behind a move:
    wait for the earlier ones before counting, and for its own after)."""
    _sync.run(_sync.drain_background())
    storage.reset_counters()
    fn()  # type: ignore[operator]
    _sync.run(_sync.drain_background())
    return Counter(storage.requests)


def commit_value(repo: Repository, value: int) -> str:
    s = repo.writable_session("main")
    arr = zarr.create_array(s.store, name="x", shape=(4,), chunks=(2,), dtype="i4",
                            overwrite=True)
    arr[:] = value
    sid = s.commit(f"x={value}")
    # the tip hint lands behind the commit: let it land, so the damage a test does to
    # the hint afterwards is not overwritten by it
    run(_sync.drain_background())
    return sid


def version_key(name: str, version: int) -> str:
    return f"refs/branch.{name}/{10**12 - 1 - version:012d}"


def plant_version(storage: FaultyStorage, name: str, version: int, snapshot_id: str) -> None:
    """Create a version the way a writer that died before its hint write leaves it."""
    ref = RefData(snapshot_id=snapshot_id, write_id=new_id(), written_at=datetime.now(UTC))
    storage.inner.put_sync(version_key(name, version), encode_object(ref, ObjectType.REF),
                           mode="create")


class TestConstantCost:
    def test_lookup_branch_cost_does_not_grow_with_history(self, tmp_path: Path) -> None:
        storage = counted(tmp_path)
        repo = Repository.create(storage)
        commit_value(repo, 1)
        grow(repo, 3)
        short = cost(storage, lambda: repo.lookup_branch("main"))
        grow(repo, 60)
        long = cost(storage, lambda: repo.lookup_branch("main"))
        assert short == long == Counter(get=3)  # hint, its version, the next (absent) one
        assert "list" not in long

    def test_commit_cost_does_not_grow_with_history(self, tmp_path: Path) -> None:
        storage = counted(tmp_path)
        repo = Repository.create(storage)
        commit_value(repo, 1)
        grow(repo, 3)
        short = cost(storage, lambda: commit_value(repo, 2))
        grow(repo, 60)
        long = cost(storage, lambda: commit_value(repo, 3))
        assert short == long
        assert not [k for op, k in storage.log if op == "list" and k.startswith("refs/")]
        np.testing.assert_array_equal(
            zarr.open_array(repo.readonly_session("main").store, path="x")[:], 3)

    def test_new_branch_and_fresh_main_need_no_listing(self, tmp_path: Path) -> None:
        storage = counted(tmp_path)
        repo = Repository.create(storage)
        genesis = repo.lookup_branch("main")
        assert cost(storage, lambda: repo.lookup_branch("main")) == Counter(get=2)
        cost(storage, lambda: repo.create_branch("dev", genesis))
        assert not [k for op, k in storage.log if op == "list"]
        assert repo.lookup_branch("dev") == genesis
        with pytest.raises(NotFoundError):
            repo.lookup_branch("nope")


class TestHintIsOnlyAHint:
    """The versions decide; a lagging, missing, corrupt or wrong hint costs requests only."""

    def test_lagging_hint(self, tmp_path: Path) -> None:
        storage = counted(tmp_path)
        repo = Repository.create(storage)
        first = commit_value(repo, 1)  # version 0
        stale = repo.writable_session("main")  # read the tip at version 0
        second = commit_value(repo, 2)  # version 1, and the hint says 1
        plant_version(storage, "main", 2, second)  # a writer died before its hint write
        assert repo.lookup_branch("main") == second
        assert run(refs._read_tip(storage, "main", None)).version == 2
        zarr.create_array(stale.store, name="y", shape=(2,), dtype="i4")
        with pytest.raises(ConflictError):
            stale.commit("stale")  # the branch moved past its tip: it loses
        third = commit_value(repo, 3)  # the next writer moves on from version 2
        assert run(refs._read_tip(storage, "main", None)).version == 3
        assert [s.id for s in repo.ancestry(branch="main")][:3] == [third, second, first]

    def test_long_lag_falls_back_to_one_listing(self, tmp_path: Path) -> None:
        storage = counted(tmp_path)
        repo = Repository.create(storage)
        sid = commit_value(repo, 1)
        for v in range(1, 12):
            plant_version(storage, "main", v, sid)
        c = cost(storage, lambda: repo.lookup_branch("main"))
        assert c["list"] == 1 and c["get"] <= 10
        commit_value(repo, 2)  # writes version 12 and a fresh hint
        assert cost(storage, lambda: repo.lookup_branch("main")) == Counter(get=3)

    @pytest.mark.parametrize("damage", ["corrupt", "ahead", "missing"])
    def test_damaged_hint(self, tmp_path: Path, damage: str) -> None:
        storage = counted(tmp_path)
        repo = Repository.create(storage)
        commit_value(repo, 1)
        grow(repo, 5)
        tip = commit_value(repo, 2)
        if damage == "corrupt":
            storage.inner.put_sync(HINT, b"\x00garbage")
        elif damage == "missing":
            storage.inner.delete_sync(HINT)
        else:  # a hint naming a version nobody created
            storage.inner.put_sync(HINT, _hint_bytes(tip, 500))
        assert repo.lookup_branch("main") == tip
        s = repo.writable_session("main")
        zarr.create_array(s.store, name="z", shape=(2,), dtype="i4")
        s.commit("after damage")
        assert [i.message for i in repo.ancestry(branch="main")][:2] == ["after damage", "x=2"]

    def test_partial_listings_do_not_change_the_tip(self, tmp_path: Path) -> None:
        storage = counted(tmp_path)
        repo = Repository.create(storage)
        sid = commit_value(repo, 1)
        for v in range(1, 30):  # a history written without hints: the listing decides
            plant_version(storage, "main", v, sid)
        last = commit_value(repo, 2)
        storage.inner.delete_sync(HINT)
        storage.set_faults([Fault.partial_list(prefix="refs/", keep=0.2)])
        for _ in range(5):
            assert repo.lookup_branch("main") == last
        assert storage.fired["partial_list"] > 0


def _hint_bytes(snapshot_id: str, version: int) -> bytes:
    hint = refs._TipHint(snapshot_id=snapshot_id, write_id="x", written_at=datetime.now(UTC),
                         version=version)
    return encode_object(hint, ObjectType.REF)


class TestExactlyOneWinner:
    def test_racing_writers_on_local_disk(self, tmp_path: Path) -> None:
        repo = Repository.create(local_filesystem_storage(str(tmp_path / "repo")))
        commit_value(repo, 0)
        sessions = [repo.writable_session("main") for _ in range(8)]
        for i, s in enumerate(sessions):
            zarr.create_array(s.store, name=f"w{i}", shape=(2,), dtype="i4")
        barrier = threading.Barrier(len(sessions))
        outcome: list[str] = []

        def run(s: object) -> None:
            barrier.wait()
            try:
                s.commit("race")  # type: ignore[attr-defined]
                outcome.append("won")
            except ConflictError:
                outcome.append("lost")

        threads = [threading.Thread(target=run, args=(s,)) for s in sessions]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(outcome) == ["lost"] * 7 + ["won"]
        assert [i.message for i in repo.ancestry(branch="main")].count("race") == 1

    def test_hint_reads_agree_with_a_full_listing(self, tmp_path: Path) -> None:
        storage = counted(tmp_path)
        repo = Repository.create(storage)
        commit_value(repo, 1)
        grow(repo, 7)
        repo.create_branch("dev", repo.lookup_branch("main"))
        repo.delete_branch("dev")
        genesis = list(repo.ancestry(branch="main"))[-1].id
        for name in ("main", "dev"):
            fast = run(refs._read_tip(storage, name, genesis))
            listed = run(refs._list_tip(storage, name, genesis))
            assert fast == listed
        assert run(refs._read_tip(storage, "dev", None)).snapshot_id is None  # deleted
