"""The repository handle: lifecycle, branches, tags, history, sessions, transactions, pickling."""

from __future__ import annotations

import asyncio
import pickle
from pathlib import Path

import numpy as np
import pytest
import zarr

from icechunk_dist import (
    AlreadyExistsError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
    ReadOnlyError,
    Repository,
    RepositoryConfig,
    RepositoryNotFoundError,
    SessionStateError,
    SnapshotInfo,
    in_memory_storage,
    local_filesystem_storage,
)


@pytest.fixture
def repo() -> Repository:
    return Repository.create(in_memory_storage())


def commit_array(repo: Repository, value: int, *, branch: str = "main", message: str = "",
                 metadata: dict[str, object] | None = None) -> str:
    """Write array ``x`` (8 int32, 4 chunks) filled with ``value`` and commit it."""
    s = repo.writable_session(branch)
    arr = zarr.create_array(s.store, name="x", shape=(8,), chunks=(2,), dtype="i4",
                            fill_value=-1, overwrite=True)
    arr[:] = value
    return s.commit(message or f"x={value}", metadata)


async def _keys(store: object) -> list[str]:
    return [k async for k in store.list()]  # type: ignore[attr-defined]


def read_x(repo: Repository, **where: str) -> np.ndarray:
    s = repo.readonly_session(**where)
    return zarr.open_array(s.store, path="x", mode="r")[:]


# --------------------------------------------------------------------------- lifecycle
class TestLifecycle:
    def test_create_open_exists(self, tmp_path: Path) -> None:
        storage = local_filesystem_storage(tmp_path / "r")
        assert not Repository.exists(storage)
        repo = Repository.create(storage)
        assert Repository.exists(storage)
        assert repo.list_branches() == {"main"}
        init = repo.lookup_branch("main")
        [info] = list(repo.ancestry(branch="main"))
        assert info.id == init and info.parent_id is None
        assert info.message == "Repository initialized"
        again = Repository.open(local_filesystem_storage(tmp_path / "r"))
        assert again.lookup_branch("main") == init

    def test_create_twice(self, tmp_path: Path) -> None:
        storage = local_filesystem_storage(tmp_path / "r")
        Repository.create(storage)
        with pytest.raises(AlreadyExistsError, match="already exists"):
            Repository.create(storage)

    def test_open_missing(self, tmp_path: Path) -> None:
        with pytest.raises(RepositoryNotFoundError) as info:
            Repository.open(local_filesystem_storage(tmp_path / "nothing"))
        assert isinstance(info.value, NotFoundError)
        assert isinstance(info.value, KeyError)
        assert "no repository" in str(info.value)

    def test_open_or_create(self, tmp_path: Path) -> None:
        storage = local_filesystem_storage(tmp_path / "r")
        first = Repository.open_or_create(storage)
        sid = commit_array(first, 3)
        second = Repository.open_or_create(storage)
        assert second.lookup_branch("main") == sid
        np.testing.assert_array_equal(read_x(second), np.full(8, 3, "i4"))

    def test_config_is_persisted(self, tmp_path: Path) -> None:
        storage = local_filesystem_storage(tmp_path / "r")
        cfg = RepositoryConfig(inline_chunk_threshold_bytes=0, manifest_split_size=7)
        Repository.create(storage, cfg)
        assert Repository.open(storage).config == cfg

    def test_bad_config(self) -> None:
        with pytest.raises(InvalidInputError):
            Repository.create(in_memory_storage(), {"x": 1})  # type: ignore[arg-type]
        with pytest.raises(InvalidInputError):
            RepositoryConfig(manifest_split_size=0)


# --------------------------------------------------------------------------- branches
class TestBranches:
    def test_create_list_lookup(self, repo: Repository) -> None:
        init = repo.lookup_branch("main")
        s1 = commit_array(repo, 1)
        repo.create_branch("dev", init)
        repo.create_branch("feature-2", s1)
        assert repo.list_branches() == {"main", "dev", "feature-2"}
        assert repo.lookup_branch("dev") == init
        assert repo.lookup_branch("feature-2") == s1
        with pytest.raises(AlreadyExistsError):
            repo.create_branch("dev", s1)
        with pytest.raises(AlreadyExistsError):
            repo.create_branch("main", s1)

    def test_branches_diverge(self, repo: Repository) -> None:
        s1 = commit_array(repo, 1)
        repo.create_branch("dev", s1)
        s2 = commit_array(repo, 2, branch="dev")
        assert repo.lookup_branch("main") == s1
        assert repo.lookup_branch("dev") == s2
        np.testing.assert_array_equal(read_x(repo, branch="main"), np.full(8, 1, "i4"))
        np.testing.assert_array_equal(read_x(repo, branch="dev"), np.full(8, 2, "i4"))

    def test_lookup_missing(self, repo: Repository) -> None:
        with pytest.raises(NotFoundError, match="'nope' does not exist"):
            repo.lookup_branch("nope")
        with pytest.raises(NotFoundError):
            repo.writable_session("nope")

    def test_create_at_missing_snapshot(self, repo: Repository) -> None:
        with pytest.raises(NotFoundError):
            repo.create_branch("dev", "0" * 20)
        with pytest.raises(InvalidInputError):
            repo.create_branch("dev", "not-a-snapshot-id")
        assert repo.list_branches() == {"main"}

    def test_reset(self, repo: Repository) -> None:
        init = repo.lookup_branch("main")
        s1 = commit_array(repo, 1)
        s2 = commit_array(repo, 2)
        repo.reset_branch("main", s1)
        assert repo.lookup_branch("main") == s1
        np.testing.assert_array_equal(read_x(repo), np.full(8, 1, "i4"))
        # history is not rewritten: s2 is still readable by id
        np.testing.assert_array_equal(read_x(repo, snapshot_id=s2), np.full(8, 2, "i4"))
        repo.reset_branch("main", init)
        assert [i.id for i in repo.ancestry(branch="main")] == [init]
        with pytest.raises(NotFoundError):
            repo.reset_branch("ghost", s1)

    def test_reset_makes_open_session_conflict(self, repo: Repository) -> None:
        s1 = commit_array(repo, 1)
        session = repo.writable_session("main")
        zarr.open_array(session.store, path="x", mode="r+")[:] = 5
        init = repo.lookup_snapshot(s1).parent_id
        assert init is not None
        repo.reset_branch("main", init)
        with pytest.raises(ConflictError) as info:
            session.commit("late")
        assert info.value.expected_parent == s1
        assert info.value.actual_parent == init

    def test_delete_and_recreate(self, repo: Repository) -> None:
        s1 = commit_array(repo, 1)
        repo.create_branch("dev", s1)
        repo.delete_branch("dev")
        assert repo.list_branches() == {"main"}
        with pytest.raises(NotFoundError):
            repo.lookup_branch("dev")
        with pytest.raises(NotFoundError):
            repo.delete_branch("dev")
        init = repo.lookup_snapshot(s1).parent_id
        assert init is not None
        repo.create_branch("dev", init)  # a deleted branch name may be used again
        assert repo.lookup_branch("dev") == init
        assert repo.list_branches() == {"main", "dev"}

    def test_main_cannot_be_deleted(self, repo: Repository) -> None:
        with pytest.raises(InvalidInputError, match="main"):
            repo.delete_branch("main")
        assert "main" in repo.list_branches()


# --------------------------------------------------------------------------- tags
class TestTags:
    def test_create_lookup_list(self, repo: Repository) -> None:
        s1 = commit_array(repo, 1)
        repo.create_tag("v1", s1)
        s2 = commit_array(repo, 2)
        repo.create_tag("v2", s2)
        assert repo.list_tags() == {"v1", "v2"}
        assert repo.lookup_tag("v1") == s1
        np.testing.assert_array_equal(read_x(repo, tag="v1"), np.full(8, 1, "i4"))
        np.testing.assert_array_equal(read_x(repo, tag="v2"), np.full(8, 2, "i4"))

    def test_immutable(self, repo: Repository) -> None:
        s1 = commit_array(repo, 1)
        s2 = commit_array(repo, 2)
        repo.create_tag("v1", s1)
        with pytest.raises(AlreadyExistsError, match="already exists"):
            repo.create_tag("v1", s2)
        assert repo.lookup_tag("v1") == s1

    def test_deleted_name_never_reused(self, repo: Repository) -> None:
        s1 = commit_array(repo, 1)
        repo.create_tag("v1", s1)
        repo.delete_tag("v1")
        assert repo.list_tags() == set()
        with pytest.raises(NotFoundError):
            repo.lookup_tag("v1")
        with pytest.raises(NotFoundError):
            repo.readonly_session(tag="v1")
        with pytest.raises(NotFoundError):
            repo.delete_tag("v1")
        with pytest.raises(AlreadyExistsError, match="never reused"):
            repo.create_tag("v1", s1)
        # the snapshot itself is untouched
        np.testing.assert_array_equal(read_x(repo, snapshot_id=s1), np.full(8, 1, "i4"))

    def test_missing(self, repo: Repository) -> None:
        with pytest.raises(NotFoundError):
            repo.lookup_tag("nope")
        with pytest.raises(NotFoundError):
            repo.delete_tag("nope")
        with pytest.raises(NotFoundError):
            repo.create_tag("t", "0" * 20)
        assert repo.list_tags() == set()

    def test_tags_and_branches_are_separate_namespaces(self, repo: Repository) -> None:
        s1 = commit_array(repo, 1)
        repo.create_tag("same", s1)
        repo.create_branch("same", s1)
        assert "same" in repo.list_tags() and "same" in repo.list_branches()


@pytest.mark.parametrize("name", ["a/b", "..", "", "x\n", "a\\b", "x..y", "\x00", "t\x7f",
                                  "x" * 256])
def test_invalid_ref_names(repo: Repository, name: str) -> None:
    sid = repo.lookup_branch("main")
    calls = [
        lambda: repo.create_branch(name, sid),
        lambda: repo.lookup_branch(name),
        lambda: repo.reset_branch(name, sid),
        lambda: repo.delete_branch(name),
        lambda: repo.writable_session(name),
        lambda: repo.create_tag(name, sid),
        lambda: repo.lookup_tag(name),
        lambda: repo.delete_tag(name),
    ]
    for call in calls:
        with pytest.raises(InvalidInputError):
            call()
    assert repo.list_branches() == {"main"}
    assert repo.list_tags() == set()


@pytest.mark.parametrize("name", ["dev", "feature.x", "v1.0.0", "über", "a-b_c", "x" * 248])
def test_valid_ref_names(repo: Repository, name: str) -> None:
    sid = repo.lookup_branch("main")
    repo.create_branch(name, sid)
    repo.create_tag(name, sid)
    assert repo.lookup_branch(name) == sid
    assert repo.lookup_tag(name) == sid


# --------------------------------------------------------------------------- history
class TestHistory:
    def test_ancestry_newest_first(self, repo: Repository) -> None:
        init = repo.lookup_branch("main")
        ids = [commit_array(repo, i, message=f"commit {i}", metadata={"i": i, "who": "me"})
               for i in range(3)]
        hist = list(repo.ancestry(branch="main"))
        assert [h.id for h in hist] == [*reversed(ids), init]
        assert [h.message for h in hist] == ["commit 2", "commit 1", "commit 0",
                                             "Repository initialized"]
        assert [h.parent_id for h in hist] == [ids[1], ids[0], init, None]
        assert [dict(h.metadata) for h in hist] == [{"i": 2, "who": "me"}, {"i": 1, "who": "me"},
                                                    {"i": 0, "who": "me"}, {}]
        times = [h.written_at for h in hist]
        assert times == sorted(times, reverse=True)
        assert all(t.tzinfo is not None for t in times)
        assert all(isinstance(h, SnapshotInfo) for h in hist)

    def test_ancestry_from_tag_and_snapshot(self, repo: Repository) -> None:
        init = repo.lookup_branch("main")
        s1 = commit_array(repo, 1)
        s2 = commit_array(repo, 2)
        repo.create_tag("first", s1)
        assert [h.id for h in repo.ancestry(tag="first")] == [s1, init]
        assert [h.id for h in repo.ancestry(snapshot_id=s2)] == [s2, s1, init]

    def test_ancestry_needs_exactly_one_start(self, repo: Repository) -> None:
        with pytest.raises(InvalidInputError):
            list(repo.ancestry())
        with pytest.raises(InvalidInputError):
            list(repo.ancestry(branch="main", tag="t"))

    def test_lookup_snapshot(self, repo: Repository) -> None:
        s1 = commit_array(repo, 1, message="hello", metadata={"a": [1, 2]})
        info = repo.lookup_snapshot(s1)
        assert info.id == s1
        assert info.message == "hello"
        assert dict(info.metadata) == {"a": [1, 2]}
        assert info == next(iter(repo.ancestry(branch="main")))
        with pytest.raises(NotFoundError):
            repo.lookup_snapshot("0" * 20)
        with pytest.raises(InvalidInputError):
            repo.lookup_snapshot("short")


# --------------------------------------------------------------------------- sessions
class TestSessions:
    def test_readonly_by_branch_tag_snapshot(self, repo: Repository) -> None:
        s1 = commit_array(repo, 1)
        repo.create_tag("one", s1)
        s2 = commit_array(repo, 2)
        default = repo.readonly_session()
        assert default.branch == "main" and default.snapshot_id == s2 and default.read_only
        assert repo.readonly_session("main").snapshot_id == s2
        by_tag = repo.readonly_session(tag="one")
        assert by_tag.snapshot_id == s1 and by_tag.branch is None
        assert repo.readonly_session(snapshot_id=s1).snapshot_id == s1
        np.testing.assert_array_equal(read_x(repo, tag="one"), np.full(8, 1, "i4"))
        with pytest.raises(InvalidInputError):
            repo.readonly_session("main", tag="one")
        with pytest.raises(NotFoundError):
            repo.readonly_session(snapshot_id="0" * 20)

    def test_readonly_session_refuses_writes(self, repo: Repository) -> None:
        commit_array(repo, 1)
        s = repo.readonly_session("main")
        arr = zarr.open_array(s.store, path="x", mode="r")
        with pytest.raises(ReadOnlyError):
            arr[:] = 0
        with pytest.raises(ValueError, match="read-only"):
            zarr.create_array(s.store, name="y", shape=(2,), dtype="i4")
        with pytest.raises(SessionStateError):
            s.commit("no")
        with pytest.raises(ReadOnlyError):
            s.discard_changes()

    def test_status_and_discard(self, repo: Repository) -> None:
        s = repo.writable_session("main")
        assert not s.has_uncommitted_changes and s.status().is_empty()
        arr = zarr.create_array(s.store, name="x", shape=(8,), chunks=(2,), dtype="i4")
        arr[:4] = 7
        st = s.status()
        assert st.new_arrays == {"/x"}
        assert st.new_groups == {"/"}
        assert st.updated_chunks == {"/x": [[0], [1]]}
        assert s.has_uncommitted_changes
        s.discard_changes()
        assert not s.has_uncommitted_changes
        assert asyncio.run(_keys(s.store)) == []

    def test_commit_nothing(self, repo: Repository) -> None:
        s = repo.writable_session("main")
        with pytest.raises(SessionStateError, match="nothing to commit"):
            s.commit("empty")
        assert len(list(repo.ancestry(branch="main"))) == 1
        sid = s.commit("empty", allow_empty=True)
        assert repo.lookup_branch("main") == sid
        assert next(repo.ancestry(branch="main")).message == "empty"

    def test_after_commit_session_is_read_only(self, repo: Repository) -> None:
        s = repo.writable_session("main")
        arr = zarr.create_array(s.store, name="x", shape=(4,), chunks=(2,), dtype="i4")
        arr[:] = 1
        sid = s.commit("first")
        assert s.read_only and s.snapshot_id == sid and not s.has_uncommitted_changes
        assert s.store.read_only
        with pytest.raises(ReadOnlyError, match="committed"):
            arr[:] = 2
        with pytest.raises(ValueError, match="read-only"):
            zarr.create_array(s.store, name="y", shape=(2,), dtype="i4")
        with pytest.raises(SessionStateError):
            s.commit("again", allow_empty=True)
        # the session still reads its own commit
        np.testing.assert_array_equal(arr[:], np.full(4, 1, "i4"))
        assert repo.lookup_branch("main") == sid

    def test_writable_session_sees_own_writes(self, repo: Repository) -> None:
        commit_array(repo, 1)
        s = repo.writable_session("main")
        arr = zarr.open_array(s.store, path="x", mode="r+")
        arr[2:6] = 9
        np.testing.assert_array_equal(arr[:], np.array([1, 1, 9, 9, 9, 9, 1, 1], "i4"))
        np.testing.assert_array_equal(read_x(repo), np.full(8, 1, "i4"))


# --------------------------------------------------------------------------- transaction()
class TestTransaction:
    def test_commits_on_success(self, repo: Repository) -> None:
        before = repo.lookup_branch("main")
        with repo.transaction("main", message="tx", metadata={"k": "v"}) as store:
            zarr.create_array(store, name="x", shape=(4,), chunks=(2,), dtype="i4")[:] = 4
        after = repo.lookup_branch("main")
        assert after != before
        info = repo.lookup_snapshot(after)
        assert info.parent_id == before and info.message == "tx"
        assert dict(info.metadata) == {"k": "v"}
        np.testing.assert_array_equal(read_x(repo), np.full(4, 4, "i4"))

    def test_discards_on_exception(self, repo: Repository) -> None:
        before = commit_array(repo, 1)

        class Boom(Exception):
            pass

        with pytest.raises(Boom), repo.transaction("main", message="never") as store:
            zarr.open_array(store, path="x", mode="r+")[:4] = 99
            raise Boom
        assert repo.lookup_branch("main") == before
        assert len(list(repo.ancestry(branch="main"))) == 2
        np.testing.assert_array_equal(read_x(repo), np.full(8, 1, "i4"))

    def test_empty_transaction_raises(self, repo: Repository) -> None:
        before = repo.lookup_branch("main")
        with pytest.raises(SessionStateError), repo.transaction("main", message="m"):
            pass
        assert repo.lookup_branch("main") == before


# --------------------------------------------------------------------------- pickling
def test_repository_pickles_local(tmp_path: Path) -> None:
    repo = Repository.create(local_filesystem_storage(tmp_path / "r"))
    sid = commit_array(repo, 6)
    clone = pickle.loads(pickle.dumps(repo))
    assert clone.lookup_branch("main") == sid
    np.testing.assert_array_equal(read_x(clone), np.full(8, 6, "i4"))
    assert clone.storage == repo.storage
    assert clone.config == repo.config


def test_in_memory_repository_refuses_pickle(repo: Repository) -> None:
    with pytest.raises(InvalidInputError, match=r"in-memory storage .* cannot be pickled"):
        pickle.dumps(repo)


def test_sessions_pickle_only_read_only(tmp_path: Path) -> None:
    repo = Repository.create(local_filesystem_storage(tmp_path / "r"))
    sid = commit_array(repo, 2)
    ro = pickle.loads(pickle.dumps(repo.readonly_session("main")))
    assert ro.read_only and ro.snapshot_id == sid
    np.testing.assert_array_equal(zarr.open_array(ro.store, path="x", mode="r")[:],
                                  np.full(8, 2, "i4"))
    with pytest.raises(SessionStateError, match=r"fork\(\)"):
        pickle.dumps(repo.writable_session("main"))
