"""Icechunk API parity (issue 11): each call named in the issue, with Icechunk's signature and
semantics, on a real repository on local disk."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import zarr

import icechunk_dist as icd
from icechunk_dist import (
    AlreadyExistsError,
    CachingConfig,
    ChunkType,
    CompressionConfig,
    ConflictError,
    FormatError,
    InvalidInputError,
    ManifestConfig,
    ManifestSplittingConfig,
    NotFoundError,
    RebaseFailedError,
    Repository,
    RepositoryConfig,
    SessionMode,
    SessionStateError,
    UpdateType,
)
from icechunk_dist._sync import run


@pytest.fixture
def storage(tmp_path: Path) -> icd.Storage:
    return icd.local_filesystem_storage(str(tmp_path / "repo"))


@pytest.fixture
def repo(storage: icd.Storage) -> Repository:
    return Repository.create(storage)


def _with_array(repo: Repository, name: str = "g/a") -> str:
    s = repo.writable_session("main")
    zarr.group(store=s.store).create_group("g")
    a = zarr.create_array(s.store, name=name, shape=(20,), chunks=(5,), dtype="i4",
                          compressors=None)
    a[:] = np.arange(20)
    return s.commit("array")


# ------------------------------------------------------------------------------ config
def test_config_objects_are_mutable_composable_and_validated():
    cfg = RepositoryConfig.default()
    cfg.inline_chunk_threshold_bytes = 0
    cfg.compression = CompressionConfig(level=5)
    cfg.caching = CachingConfig(num_chunk_refs=1000)
    cfg.manifest = ManifestConfig(splitting=ManifestSplittingConfig(split_sizes=7))
    assert (cfg.inline_chunk_threshold_bytes, cfg.compression_level,
            cfg.manifest_split_size, cfg.caching.num_chunk_refs) == (0, 5, 7, 1000)
    cfg.compression.level = 9  # nested objects are mutable too
    assert cfg.compression_level == 9
    assert RepositoryConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(InvalidInputError):
        cfg.inline_chunk_threshold_bytes = -1
    with pytest.raises(InvalidInputError):
        CompressionConfig(level=30)
    with pytest.raises(InvalidInputError, match="condition"):
        ManifestSplittingConfig(split_sizes=((object(), ()),))  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="unknown"):
        RepositoryConfig.from_dict({"no_such_setting": 1})
    merged = RepositoryConfig(max_concurrent_requests=3).merge(
        RepositoryConfig(compression=CompressionConfig(level=2)))
    assert (merged.max_concurrent_requests, merged.compression_level) == (3, 2)


def test_config_is_persisted_and_open_takes_a_config(storage: icd.Storage):
    cfg = RepositoryConfig(inline_chunk_threshold_bytes=0)
    repo = Repository.create(storage, cfg)
    assert Repository.open(storage).config.inline_chunk_threshold_bytes == 0
    got = repo.config
    got.inline_chunk_threshold_bytes = 999  # a copy: the repository is unchanged
    assert repo.config.inline_chunk_threshold_bytes == 0

    reopened = Repository.open(storage, config=RepositoryConfig(
        manifest=ManifestConfig(splitting=ManifestSplittingConfig(split_sizes=4))))
    assert reopened.config.manifest_split_size == 4
    assert reopened.config.inline_chunk_threshold_bytes == 0  # saved value kept
    assert Repository.open(storage).config.manifest_split_size == 100_000  # not saved
    reopened.save_config()
    assert Repository.open(storage).config.manifest_split_size == 4
    assert Repository.fetch_config(storage) == reopened.config
    r2 = repo.reopen(RepositoryConfig(inline_chunk_threshold_bytes=10_000))
    assert r2.config.inline_chunk_threshold_bytes == 10_000

    # the config is used: inline threshold 0 means every chunk is its own object
    s = Repository.open(storage).writable_session("main")
    a = zarr.create_array(s.store, name="a", shape=(4,), chunks=(2,), dtype="i1")
    a[:] = 1
    assert s.chunk_type("/a", [0]) is ChunkType.native
    with pytest.raises(InvalidInputError):
        Repository.open(storage, config={"inline_chunk_threshold_bytes": 0})  # type: ignore[arg-type]


def test_corrupt_saved_config_is_a_format_error(storage: icd.Storage, tmp_path: Path):
    repo = Repository.create(storage)
    repo.save_config()
    (key,) = [p for p in (tmp_path / "repo" / "config").iterdir()]
    key.write_bytes(b"{not json")
    with pytest.raises(FormatError):
        Repository.open(storage)


# ------------------------------------------------------------------------------ errors
def test_errors_have_message_and_conflict_error_is_positional():
    e = ConflictError("S1", "S2")
    assert (e.expected_parent, e.actual_parent) == ("S1", "S2")
    assert "S1" in e.message and e.message == str(e)
    e2 = ConflictError("S1", "S2", "custom")
    assert e2.message == "custom"
    e3 = ConflictError("two change-sets wrote the same chunk", path="x", chunk_coords=[(0,)])
    assert e3.expected_parent is None and e3.path == "x" and e3.chunk_coords == [(0,)]
    assert NotFoundError("no such branch").message == "no such branch"
    assert RebaseFailedError("S9", []).snapshot == "S9"


def test_conflicted_chunks_is_none_for_non_chunk_conflicts(repo: Repository):
    _with_array(repo)
    ours = repo.writable_session("main")
    theirs = repo.writable_session("main")
    zarr.open_array(theirs.store, path="g/a", mode="r+").attrs["v"] = 1
    theirs.commit("attrs")
    zarr.open_array(ours.store, path="g/a", mode="r+").attrs["v"] = 2
    with pytest.raises(RebaseFailedError) as ei:
        ours.commit("ours", rebase_with=icd.ConflictDetector())
    (c,) = ei.value.conflicts
    assert c.conflict_type is icd.ConflictType.ZarrMetadataDoubleUpdate
    assert c.conflicted_chunks is None


# ------------------------------------------------------------------------------ store
def test_store_behaviour_matches_icechunk(repo: Repository):
    _with_array(repo)
    store = repo.readonly_session("main").store

    async def listing(prefix: str) -> list[str]:
        return [k async for k in store.list_prefix(prefix)]

    everything = run(listing("/"))
    assert everything == run(listing("")) and "g/a/zarr.json" in everything
    assert "g/a/c/3" in everything
    assert store.supports_consolidated_metadata is False
    from zarr.abc.store import RangeByteRequest
    from zarr.core.buffer import default_buffer_prototype

    cfg_store = Repository.open(repo.storage, config=RepositoryConfig(
        get_partial_values_concurrency=2)).readonly_session("main").store
    keys = [(f"g/a/c/{i}", RangeByteRequest(0, 4)) for i in range(4)] + [("g/a/c/9", None)]
    got = run(cfg_store.get_partial_values(default_buffer_prototype(), keys))
    assert [None if b is None else np.frombuffer(b.to_bytes(), "<i4")[0] for b in got] == [
        0, 5, 10, 15, None]  # in order, concurrently (at most 2 at once)
    with pytest.raises(NotFoundError) as ei:
        run(store.getsize("g/a/c/99"))
    assert isinstance(ei.value, FileNotFoundError)  # zarr's store contract


# ------------------------------------------------------------------------------ sessions
def test_session_mode_chunk_coordinates_types_and_node_ids(repo: Repository, tmp_path: Path):
    _with_array(repo)
    assert repo.readonly_session("main").mode is SessionMode.readonly
    s = repo.writable_session("main")
    assert s.mode is SessionMode.writable
    arr = zarr.open_array(s.store, path="g/a", mode="r+")
    del arr  # chunk 3 deleted below, chunk 0 inline
    run(s.store.delete("g/a/c/3"))
    zarr.create_array(s.store, name="tiny", shape=(4,), chunks=(2,), dtype="i1")[:] = 1

    async def coords(path: str) -> list[tuple[int, ...]]:
        return [c async for c in s.chunk_coordinates(path)]

    assert run(coords("/g/a")) == [(0,), (1,), (2,)]
    assert s.chunk_type("/g/a", [0]) is ChunkType.inline  # 20 bytes
    big = zarr.create_array(s.store, name="big", shape=(400,), chunks=(200,), dtype="i4",
                            compressors=None)
    big[0:200] = 1
    assert s.chunk_type("/big", [0]) is ChunkType.native  # 800 bytes
    assert s.chunk_type("/g/a", [3]) is ChunkType.uninitialized
    assert s.chunk_type("/tiny", (1,)) is ChunkType.inline
    assert s.chunk_type("/big", (1,)) is ChunkType.uninitialized
    target = tmp_path / "blob.bin"
    target.write_bytes(np.arange(5, dtype="i4").tobytes())
    s.store.set_virtual_ref("g/a/c/3", f"file://{target}", offset=0, length=20,
                            validate_container=False)  # never read here: no container
    assert s.chunk_type("/g/a", [3]) is ChunkType.virtual
    assert s.all_virtual_chunk_locations() == [f"file://{target}"]
    nid = s.get_node_id("/g/a")
    with pytest.raises(NotFoundError):
        s.get_node_id("/nope")
    with pytest.raises(InvalidInputError):
        s.chunk_type("/g", [0])
    s.commit("mixed chunk types")
    r = repo.readonly_session("main")
    assert r.all_virtual_chunk_locations() == [f"file://{target}"]
    assert r.get_node_id("g/a") == nid


def test_default_commit_metadata(repo: Repository):
    repo.set_default_commit_metadata({"author": "ci", "job": 1})
    assert repo.default_commit_metadata() == {"author": "ci", "job": 1}
    s = repo.writable_session("main")
    zarr.group(store=s.store)
    sid = s.commit("with defaults", {"job": 2})
    assert dict(repo.lookup_snapshot(sid).metadata) == {"author": "ci", "job": 2}
    repo.set_default_commit_metadata({})
    s = repo.writable_session("main")
    zarr.create_group(store=s.store, path="h")
    assert dict(repo.lookup_snapshot(s.commit("no defaults")).metadata) == {}


def test_repository_metadata_updates_concurrently_without_loss(repo: Repository):
    assert repo.metadata == {}
    repo.set_metadata({"team": "ocean", "n": 0})
    assert repo.update_metadata({"n": 1}) == {"team": "ocean", "n": 1}

    def bump(i: int) -> None:
        Repository.open(repo.storage).update_metadata({f"w{i}": i})

    threads = [threading.Thread(target=bump, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert repo.metadata == {"team": "ocean", "n": 1, **{f"w{i}": i for i in range(6)}}
    with pytest.raises(InvalidInputError):
        repo.set_metadata({"bad": object()})
    with pytest.raises(InvalidInputError):
        repo.set_metadata(["not", "a", "dict"])  # type: ignore[arg-type]


def test_readonly_session_as_of(repo: Repository):
    first = _with_array(repo)
    time.sleep(0.01)
    between = datetime.now(UTC)
    time.sleep(0.01)
    s = repo.writable_session("main")
    zarr.open_array(s.store, path="g/a", mode="r+")[:] = 7
    s.commit("later")
    old = repo.readonly_session("main", as_of=between)
    assert old.snapshot_id == first
    np.testing.assert_array_equal(zarr.open_array(old.store, path="g/a")[:], np.arange(20))
    with pytest.raises(NotFoundError):
        repo.readonly_session("main", as_of=datetime(2000, 1, 1, tzinfo=UTC))
    with pytest.raises(InvalidInputError):
        repo.readonly_session("main", as_of=datetime.now())  # naive
    with pytest.raises(InvalidInputError):
        repo.readonly_session(tag="t", as_of=between)
    assert repo.readonly_session(branch="main", as_of=datetime.now(UTC) + timedelta(1)
                                 ).snapshot_id == repo.lookup_branch("main")


def test_amend_replaces_the_tip(repo: Repository):
    base = _with_array(repo)
    s = repo.writable_session("main")
    zarr.open_array(s.store, path="g/a", mode="r+")[0:5] = -1
    tip = s.commit("oops, incomplete")
    s = repo.writable_session("main")
    zarr.open_array(s.store, path="g/a", mode="r+")[5:10] = -2
    new = s.amend("complete", metadata={"k": 1})
    assert s.read_only and s.snapshot_id == new
    history = [i.id for i in repo.ancestry(branch="main")]
    assert history[:2] == [new, base] and tip not in history
    info = repo.lookup_snapshot(new)
    assert info.message == "complete" and info.parent_id == base
    want = np.arange(20)
    want[0:5], want[5:10] = -1, -2
    got = zarr.open_array(repo.readonly_session("main").store, path="g/a")[:]
    np.testing.assert_array_equal(got, want)
    # the amended commit's log holds both commits' changes
    d = repo.diff(from_snapshot_id=base, to_snapshot_id=new)
    assert d.updated_chunks == {"/g/a": [[0], [1]]}
    # only the message
    s = repo.writable_session("main")
    with pytest.raises(SessionStateError, match="no changes"):
        s.amend("again")
    assert repo.lookup_snapshot(s.amend("renamed", allow_empty=True)).message == "renamed"
    # refusals
    stale = repo.writable_session("main")
    mover = repo.writable_session("main")
    zarr.open_array(mover.store, path="g/a", mode="r+")[19] = 0
    mover.commit("moves main")
    zarr.open_array(stale.store, path="g/a", mode="r+")[18] = 0
    with pytest.raises(ConflictError):
        stale.amend("stale")
    with pytest.raises(SessionStateError):
        repo.readonly_session("main").amend("read-only")
    fresh = Repository.create(icd.in_memory_storage())
    s = fresh.writable_session("main")
    zarr.group(store=s.store)
    with pytest.raises(SessionStateError, match="first commit"):
        s.amend("the initial snapshot has no parent")


def test_move_renames_without_rewriting_chunks(tmp_path: Path):
    repo = Repository.create(icd.local_filesystem_storage(str(tmp_path / "repo")),
                             RepositoryConfig(inline_chunk_threshold_bytes=0))
    _with_array(repo)
    chunks_before = set((tmp_path / "repo" / "chunks").iterdir())
    manifests_before = set((tmp_path / "repo" / "manifests").iterdir())
    w = repo.writable_session("main")
    with pytest.raises(SessionStateError, match="rearrange"):
        w.move("/g/a", "/g/b")
    s = repo.rearrange_session("main")
    assert s.mode is SessionMode.rearrange
    s.move("/g/a", "/g/renamed")
    with pytest.raises(AlreadyExistsError):
        s.move("/g/renamed", "/g")
    with pytest.raises(NotFoundError):
        s.move("/g/a", "/g/x")
    with pytest.raises(NotFoundError):
        s.move("/g/renamed", "/nope/x")
    with pytest.raises(InvalidInputError):
        s.move("/g", "/g/inside")
    with pytest.raises(SessionStateError, match="only moves"):
        zarr.open_array(s.store, path="g/renamed", mode="r+")[0] = 1
    np.testing.assert_array_equal(zarr.open_array(s.store, path="g/renamed")[:], np.arange(20))
    s.move("/g", "/group")  # groups move with everything under them
    assert s.status().deleted_arrays == {"/g/a"} and s.status().new_arrays == {
        "/group/renamed"}
    sid = s.commit("rename")
    r = repo.readonly_session("main")
    assert r.snapshot_id == sid
    np.testing.assert_array_equal(zarr.open_array(r.store, path="group/renamed")[:],
                                  np.arange(20))
    assert "g" not in zarr.open_group(r.store, mode="r")
    assert set((tmp_path / "repo" / "chunks").iterdir()) == chunks_before
    assert set((tmp_path / "repo" / "manifests").iterdir()) == manifests_before
    # the move is recorded as old paths deleted and new paths created
    d = repo.diff(from_snapshot_id=repo.lookup_snapshot(sid).parent_id or "",
                  to_snapshot_id=sid)
    assert d.deleted_groups == {"/g"} and d.new_groups == {"/group"}


def test_move_conflicts_with_a_concurrent_writer(repo: Repository):
    _with_array(repo)
    writer = repo.writable_session("main")
    zarr.open_array(writer.store, path="g/a", mode="r+")[0:5] = 9
    s = repo.rearrange_session("main")
    s.move("/g/a", "/g/b")
    s.commit("rename")
    with pytest.raises(RebaseFailedError) as ei:
        writer.commit("late write to the old path", rebase_with=icd.ConflictDetector())
    assert ei.value.conflicts[0].path == "/g/a"
    late = repo.rearrange_session("main")
    w2 = repo.writable_session("main")
    zarr.open_array(w2.store, path="g/b", mode="r+")[0] = 1
    w2.commit("moves main")
    late.move("/g/b", "/g/c")
    with pytest.raises(ConflictError):
        late.commit("stale rearrange")


def test_ops_log_records_every_ref_update(repo: Repository):
    first = _with_array(repo)
    repo.create_branch("dev", first)
    repo.create_tag("v1", first)
    s = repo.writable_session("dev")
    zarr.open_array(s.store, path="g/a", mode="r+")[0] = 5
    c1 = s.commit("dev commit")
    s = repo.writable_session("dev")
    zarr.open_array(s.store, path="g/a", mode="r+")[1] = 5
    c2 = s.amend("amended")
    repo.reset_branch("dev", first)
    repo.delete_branch("dev")
    repo.delete_tag("v1")
    repo.set_metadata({"a": 1})
    repo.save_config()
    log = list(repo.ops_log())
    kinds = [type(u.kind).__name__ for u in log]
    assert kinds == ["ConfigChanged", "MetadataChanged", "TagDeleted", "BranchDeleted",
                     "BranchReset", "CommitAmended", "NewCommit", "TagCreated",
                     "BranchCreated", "NewCommit", "RepoInitialized"]
    assert [u.updated_at for u in log] == sorted((u.updated_at for u in log), reverse=True)
    assert log[5].kind == UpdateType.CommitAmended(branch="dev", previous_snap_id=c1,
                                                   new_snap_id=c2)
    assert log[6].kind == UpdateType.NewCommit(branch="dev", new_snap_id=c1)
    assert log[4].kind == UpdateType.BranchReset(name="dev", previous_snap_id=c2)
    assert log[9].kind == UpdateType.NewCommit(branch="main", new_snap_id=first)
    assert all(u.backup_path is None for u in log)
    # writers in other processes are seen too: the log is read from storage
    assert [type(u.kind).__name__ for u in Repository.open(repo.storage).ops_log()] == kinds


def test_session_config_merge_async_and_the_icechunk_error_name(repo: Repository):
    _with_array(repo)
    s = repo.writable_session("main")
    assert s.config == repo.config and s.config is not s.config
    f = s.fork()
    zarr.open_array(f.store, path="g/a", mode="r+")[0:5] = 4
    run(s.merge_async(f))
    with pytest.raises(icd.IcechunkError):  # Icechunk's base-class name catches ours
        s.merge(f)
    s.commit("merged asynchronously")
    assert zarr.open_array(repo.readonly_session("main").store, path="g/a")[0] == 4
    assert run(s.get_node_id_async("/g/a")) == s.get_node_id("/g/a")
