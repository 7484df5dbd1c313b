"""Icechunk's Python API, ported by changing the import (issue 23): each behaviour is
written with Icechunk's call and argument names, from Icechunk's public documentation
(icechunk-python/python/icechunk/*.py docstrings and the error texts its own tests match).

Covered here: repository status (``RepoStatus``, ``set_status``), ``create_version=`` /
``spec_version=``, the error tree (``NodeNotFoundError`` ...) and Icechunk's key phrases in
messages, ``UpdateType.GCRan`` in the ops log, shapes of values (chunk coordinates as
lists, the rebase bookkeeping entry, default commit metadata of pickled and reopened
repositories), store semantics (``list_prefix`` as a path, zarr keys only, ``_is_open``)
and pickling of sessions. Shifting and reindexing arrays and ``rewrite_manifests`` are in
``test_icechunk_reindex.py``; the S3 options in ``test_icechunk_s3.py``.
"""

from __future__ import annotations

import asyncio
import pickle
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import zarr
from zarr.core.buffer import cpu

import icechunk_dist as ic
from icechunk_dist import (
    ConflictDetector,
    IcechunkError,
    RepoAvailability,
    Repository,
    RepoStatus,
    UpdateType,
)


@pytest.fixture
def repo(tmp_path: Path) -> Repository:
    return Repository.create(ic.local_filesystem_storage(str(tmp_path / "repo")))


def _array(repo: Repository, name: str = "x", value: int = 1) -> str:
    s = repo.writable_session("main")
    arr = zarr.create_array(s.store, name=name, shape=(8, 8), chunks=(2, 2), dtype="i4",
                            fill_value=-1, overwrite=True)
    arr[:] = value
    return s.commit(f"{name}={value}")


def _buf(data: bytes) -> cpu.Buffer:
    return cpu.Buffer.from_bytes(data)


# --------------------------------------------------------------------------- repo status
class TestRepoStatus:
    def test_new_repository_is_online_since_its_creation(self, repo: Repository) -> None:
        status = repo.status
        assert status.availability == RepoAvailability.online
        assert status.limited_availability_reason is None
        created = [u for u in repo.ops_log() if isinstance(u.kind, UpdateType.RepoInitialized)]
        assert status.set_at == created[0].updated_at
        assert repo.get_status() == status

    def test_repo_status_value(self) -> None:
        before = datetime.now(UTC)
        s = RepoStatus(availability=RepoAvailability.read_only)
        assert s.availability is RepoAvailability.read_only
        assert before <= s.set_at <= datetime.now(UTC)
        when = datetime(2024, 1, 2, tzinfo=UTC)
        s = RepoStatus(RepoAvailability.online, when, "maintenance")
        assert (s.set_at, s.limited_availability_reason) == (when, "maintenance")
        assert RepoAvailability.online.value == 0 and RepoAvailability.read_only.value == 1
        with pytest.raises(ic.InvalidInputError):
            RepoStatus(availability="read_only")  # type: ignore[arg-type]
        with pytest.raises(ic.InvalidInputError):
            RepoStatus(RepoAvailability.online, datetime(2024, 1, 2))  # naive

    def test_read_only_refuses_every_write_and_online_allows_them_again(
            self, repo: Repository) -> None:
        snapshot_id = _array(repo)
        session = repo.writable_session("main")  # opened while online
        zarr.open_array(session.store, path="x", mode="r+")[0, 0] = 7
        rearrange = repo.rearrange_session("main")
        rearrange.move("/x", "/y")

        repo.set_status(RepoStatus(availability=RepoAvailability.read_only,
                                   limited_availability_reason="migrating"))
        assert repo.status.availability == RepoAvailability.read_only
        refused = [
            lambda: repo.writable_session("main"),
            lambda: repo.rearrange_session("main"),
            lambda: repo.create_branch("oops_read_only", snapshot_id=snapshot_id),
            lambda: repo.create_tag("oops_read_only", snapshot_id=snapshot_id),
            lambda: repo.reset_branch("main", snapshot_id),
            lambda: session.commit("commit after repo changed to read only"),
            lambda: rearrange.commit("move after repo changed to read only"),
            lambda: repo.garbage_collect(datetime.now(UTC)),
            lambda: repo.expire_snapshots(datetime.now(UTC)),
            lambda: repo.set_metadata({"a": 1}),
            lambda: repo.update_metadata({"a": 1}),
            lambda: repo.save_config(),
        ]
        for call in refused:
            with pytest.raises(IcechunkError) as e:
                call()
            assert isinstance(e.value, ic.ReadOnlyError)
            assert "repository status is read-only" in e.value.message
            assert "migrating" in e.value.message
        # reads go on; a dry run of the collector only reads
        assert repo.readonly_session("main").read_only
        repo.garbage_collect(datetime.now(UTC), dry_run=True)
        assert repo.lookup_branch("main") == snapshot_id

        repo.set_status(RepoStatus(availability=RepoAvailability.online))
        new_snapshot_id = session.commit("we can commit again")
        repo.create_branch("not read-only anymore!", snapshot_id=new_snapshot_id)
        repo.create_tag("an online tag", snapshot_id=new_snapshot_id)
        repo.garbage_collect(datetime.now(UTC) - timedelta(days=1))

    def test_status_is_the_repositorys_not_the_objects(self, repo: Repository) -> None:
        other = Repository.open(repo.storage)
        repo.set_status(RepoStatus(RepoAvailability.read_only))
        assert other.status.availability == RepoAvailability.read_only
        with pytest.raises(ic.ReadOnlyError, match="repository status is read-only"):
            other.writable_session("main")
        other.set_status(RepoStatus(RepoAvailability.online))
        repo.writable_session("main")

    def test_status_changes_show_in_the_ops_log(self, repo: Repository) -> None:
        repo.set_status(RepoStatus(availability=RepoAvailability.read_only))
        last_op = next(repo.ops_log())
        assert isinstance(last_op.kind, UpdateType.RepoStatusChanged)
        assert last_op.kind.status.availability == RepoAvailability.read_only
        repo.set_status(RepoStatus(availability=RepoAvailability.online))
        last_op = next(repo.ops_log())
        assert isinstance(last_op.kind, UpdateType.RepoStatusChanged)
        assert last_op.kind.status == repo.status

    def test_async_twins(self, repo: Repository) -> None:
        async def main() -> None:
            snapshot_id = repo.lookup_branch("main")
            await repo.set_status_async(RepoStatus(availability=RepoAvailability.read_only))
            status = await repo.get_status_async()
            assert status.availability == RepoAvailability.read_only
            with pytest.raises(IcechunkError):
                await repo.writable_session_async("main")
            with pytest.raises(IcechunkError) as e:
                await repo.create_branch_async("oops_read_only", snapshot_id=snapshot_id)
            assert "repository status is read-only" in e.value.message
            await repo.set_status_async(RepoStatus(availability=RepoAvailability.online))
            assert (await repo.get_status_async()).availability == RepoAvailability.online
            session = await repo.writable_session_async("main")
            assert not session.read_only

        asyncio.run(main())


# --------------------------------------------------------------------------- versions
def test_create_version_and_spec_version_take_icechunk_2s_values(tmp_path: Path) -> None:
    for i, version in enumerate([None, 2, ic.SpecVersion.v2]):
        storage = ic.local_filesystem_storage(str(tmp_path / f"r{i}"))
        assert Repository.fetch_spec_version(storage) is None
        repo = Repository.open_or_create(storage, create_version=version)
        assert repo.spec_version == ic.SpecVersion.v2 == ic.SpecVersion.current()
        assert Repository.fetch_spec_version(storage) == ic.SpecVersion.v2
        # and opening an existing one with it is fine too
        Repository.open_or_create(storage, create_version=version)
    repo = Repository.create(ic.local_filesystem_storage(str(tmp_path / "c")),
                             spec_version=ic.SpecVersion.v2)
    assert repo.list_branches() == {"main"}
    for bad in (1, ic.SpecVersion.v1):
        with pytest.raises(ic.InvalidInputError, match="version 1 format"):
            Repository.open_or_create(ic.in_memory_storage(), create_version=bad)
        with pytest.raises(ic.InvalidInputError, match="version 1 format"):
            Repository.create(ic.in_memory_storage(), spec_version=bad)
    with pytest.raises(ic.InvalidInputError):
        Repository.create(ic.in_memory_storage(), spec_version=3)

    async def main() -> None:
        r = await Repository.open_or_create_async(ic.in_memory_storage(), create_version=2)
        assert await Repository.fetch_spec_version_async(r.storage) == ic.SpecVersion.v2

    asyncio.run(main())


# --------------------------------------------------------------------------- errors
class TestErrorTree:
    def test_node_not_found(self, repo: Repository) -> None:
        _array(repo)
        session = repo.rearrange_session("main")
        with pytest.raises(KeyError) as excinfo:
            session.move("/definitely/not/here", "/elsewhere")
        err = excinfo.value
        assert isinstance(err, ic.NodeNotFoundError)
        assert isinstance(err, ic.NotFoundError) and isinstance(err, IcechunkError)
        assert err.kind == ic.ErrorKind.NODE_NOT_FOUND
        ro = repo.readonly_session("main")
        with pytest.raises(ic.NodeNotFoundError, match="node not found"):
            ro.get_node_id("/nope")
        with pytest.raises(ic.NodeNotFoundError):
            ro.chunk_type("/nope", [0])

    def test_snapshot_and_ref_not_found(self, repo: Repository) -> None:
        with pytest.raises(ic.RefNotFoundError) as e:
            repo.lookup_branch("does-not-exist")
        assert isinstance(e.value, KeyError) and isinstance(e.value, ic.NotFoundError)
        with pytest.raises(ic.RefNotFoundError):
            repo.readonly_session(branch="does-not-exist")
        with pytest.raises(ic.RefNotFoundError):
            repo.readonly_session(tag="does-not-exist")
        repo.create_tag("gone", repo.lookup_branch("main"))
        repo.delete_tag("gone")
        with pytest.raises(IcechunkError, match="ref not found"):
            repo.lookup_tag("gone")
        with pytest.raises(ic.SnapshotNotFoundError):
            repo.readonly_session(snapshot_id="1CECHNKREP0F1RSTCMT0")

    def test_tree_shape(self) -> None:
        for cls in (ic.NodeNotFoundError, ic.SnapshotNotFoundError, ic.RefNotFoundError,
                    ic.RepositoryNotFoundError):
            assert issubclass(cls, ic.NotFoundError) and issubclass(cls, KeyError)
        assert issubclass(ic.InternalError, IcechunkError)
        for err in (ic.NodeNotFoundError("missing node"), ic.InternalError("bug")):
            back = pickle.loads(pickle.dumps(err))
            assert type(back) is type(err) and back.message == err.message


class TestIcechunksKeyPhrases:
    """Where Icechunk's tests match error text, ours contains the phrase (and says more)."""

    def test_fork_commit_and_read_only_fork(self, repo: Repository) -> None:
        session = repo.writable_session("main")
        zarr.group(session.store)
        fork = session.fork()
        with pytest.raises(IcechunkError, match="commits are not allowed"):
            fork.commit("foo")
        session.commit("init")
        with pytest.raises(IcechunkError, match="cannot fork a read-only session"):
            session.fork()
        with pytest.raises(IcechunkError, match="commits are not allowed"):
            session.commit("again")

    def test_nothing_to_commit(self, repo: Repository) -> None:
        session = repo.writable_session("main")
        fork = pickle.loads(pickle.dumps(session.fork()))
        zarr.create_group(fork.store, path="/foo")
        with pytest.raises(IcechunkError, match="cannot commit"):
            session.commit("foo")
        with pytest.raises(IcechunkError, match="no changes made to the session"):
            repo.writable_session("main").commit("empty commit")

    def test_repository_does_not_exist(self, tmp_path: Path) -> None:
        missing = ic.local_filesystem_storage(str(tmp_path / "should_not_exist"))
        with pytest.raises(IcechunkError, match=r"the repository doesn.t exist"):
            Repository.open(missing)
        with pytest.raises(ic.RepositoryNotFoundError, match=r"the repository doesn.t exist"):
            Repository.fetch_config(missing)

        async def fetch() -> None:
            await Repository.fetch_config_async(missing)

        with pytest.raises(IcechunkError, match=r"the repository doesn.t exist"):
            asyncio.run(fetch())

    def test_branch_update_conflict(self, repo: Repository) -> None:
        prev = _array(repo, value=1)
        last = _array(repo, value=2)
        with pytest.raises(ic.ConflictError, match="branch update conflict"):
            repo.reset_branch("main", prev, from_snapshot_id="1CECHNKREP0F1RSTCMT0")
        assert repo.lookup_branch("main") == last
        repo.reset_branch("main", prev, from_snapshot_id=last)
        assert repo.lookup_branch("main") == prev
        # a commit whose branch moved says it in Icechunk's words too
        a, b = repo.writable_session("main"), repo.writable_session("main")
        zarr.open_array(a.store, path="x", mode="r+")[0, 0] = 5
        zarr.open_array(b.store, path="x", mode="r+")[0, 0] = 6
        a.commit("a")
        with pytest.raises(ic.ConflictError) as e:
            b.commit("b")
        assert "Failed to commit, expected parent" in str(e.value)
        assert e.value.expected_parent == prev and e.value.actual_parent is not None
        # (ours said this one in Icechunk's words already)
        with pytest.raises(IcechunkError, match="main branch cannot be deleted"):
            repo.delete_branch("main")

    def test_read_only_store(self, repo: Repository) -> None:
        _array(repo)
        store = repo.readonly_session("main").store
        with pytest.raises(IcechunkError, match="read-only store"):
            asyncio.run(store.set("x/c/0/0", _buf(b"0000")))

    def test_commit_metadata_must_be_json(self, repo: Repository) -> None:
        class NoJson:
            pass

        session = repo.writable_session("main")
        zarr.group(store=session.store, overwrite=True)
        with pytest.raises(TypeError, match="metadata") as e:
            session.commit("some message", metadata={"foo": NoJson()})
        assert isinstance(e.value, ic.InvalidInputError)  # ours too: bad input

    def test_set_needs_a_buffer(self, repo: Repository) -> None:
        store = repo.writable_session("main").store
        with pytest.raises((ValueError, TypeError),
                           match=r"\S+\.set\(\): `value` must be a Buffer instance. Got an "
                                 r"instance of <class 'int'> instead."):
            asyncio.run(store.set("zarr.json", 1))  # type: ignore[arg-type]


# --------------------------------------------------------------------------- ops log: GC
def test_gc_runs_show_in_the_ops_log(repo: Repository) -> None:
    _array(repo, value=1)
    _array(repo, value=2)
    repo.garbage_collect(datetime.now(UTC), dry_run=True)  # a dry run changes nothing
    assert not any(isinstance(u.kind, UpdateType.GCRan) for u in repo.ops_log())
    before = list(repo.ops_log())
    summary = repo.garbage_collect(datetime.now(UTC) + timedelta(seconds=1))
    assert summary.attributes_deleted == 0
    log = list(repo.ops_log())
    assert isinstance(log[0].kind, UpdateType.GCRan)
    # the collector's fences of the branches are not updates of the branches
    assert log[1:] == before
    assert UpdateType.GCRan() == log[0].kind


# --------------------------------------------------------------------------- shapes
class TestShapes:
    def test_chunk_coordinates_are_lists(self, repo: Repository) -> None:
        base = _array(repo)
        a, b = repo.writable_session("main"), repo.writable_session("main")
        zarr.open_array(a.store, path="x", mode="r+")[0:2, 0:4] = 5
        zarr.open_array(b.store, path="x", mode="r+")[0:2, 2:4] = 6
        assert b.status().updated_chunks == {"/x": [[0, 1]]}
        a.commit("a")
        with pytest.raises(ic.RebaseFailedError) as e:
            b.commit("b", rebase_with=ConflictDetector())
        assert e.value.conflicts[0].conflicted_chunks == [[0, 1]]
        diff = repo.diff(from_snapshot_id=base, to_branch="main")
        assert diff.updated_chunks == {"/x": [[0, 0], [0, 1]]}
        c = ic.Conflict(ic.ConflictType.ChunkDoubleUpdate, "/some/array", [(0, 0), (1, 1)])
        assert c.conflicted_chunks == [[0, 0], [1, 1]]
        assert pickle.loads(pickle.dumps(c)) == c

    def test_rebase_bookkeeping_in_commit_metadata(self, repo: Repository) -> None:
        _array(repo)
        a, b = repo.writable_session("main"), repo.writable_session("main")
        zarr.open_array(a.store, path="x", mode="r+")[0, 0] = 5
        zarr.open_array(b.store, path="x", mode="r+")[7, 7] = 6
        a.commit("a")
        b.commit("update array", {"user": "me"}, rebase_with=ConflictDetector())
        info = next(iter(repo.ancestry(branch="main")))
        assert info.metadata["__icechunk"] == {"rebase_attempts": 1}
        assert info.metadata["user"] == "me"
        c = repo.writable_session("main")
        zarr.open_array(c.store, path="x", mode="r+")[1, 1] = 3
        c.commit("no rebase needed", rebase_with=ConflictDetector())
        assert next(iter(repo.ancestry(branch="main"))).metadata == {
            "__icechunk": {"rebase_attempts": 0}}
        d = repo.writable_session("main")
        zarr.open_array(d.store, path="x", mode="r+")[1, 1] = 4
        d.commit("no solver")
        assert next(iter(repo.ancestry(branch="main"))).metadata == {}

    def test_default_commit_metadata_pickled_and_reopened(self, repo: Repository) -> None:
        repo.set_default_commit_metadata({"author": "test"})
        roundtripped = pickle.loads(pickle.dumps(repo))
        assert roundtripped.default_commit_metadata() == {"author": "test"}
        assert roundtripped.list_branches() == repo.list_branches()
        # as Icechunk's: the default belongs to one repository object, reopen starts empty
        assert repo.reopen().default_commit_metadata() == {}
        assert roundtripped.reopen().default_commit_metadata() == {}
        session = roundtripped.writable_session("main")
        zarr.group(session.store)
        sid = session.commit("c")
        assert repo.lookup_snapshot(sid).metadata == {"author": "test"}


# --------------------------------------------------------------------------- store
class TestStoreSemantics:
    def test_list_prefix_is_a_path(self, repo: Repository) -> None:
        session = repo.writable_session("main")
        root = zarr.group(store=session.store)
        root.create_group("foo-bar")
        group = root.create_group("foo")
        arrays = {"bar", "baz"}
        for array in arrays:
            group.create_array(name=array, shape=(2,), chunks=(1,), dtype="i4")

        async def check_keys(store: ic.IcechunkStore) -> None:
            keys = {k async for k in store.list_prefix("foo")}
            assert keys == {f"foo/{a}/zarr.json" for a in arrays} | {"foo/zarr.json"}
            assert {k async for k in store.list_prefix("foo/")} == keys
            keys = {k async for k in store.list_dir("foo")}
            assert keys == arrays | {"zarr.json"}
            assert {k async for k in store.list_prefix("")} == {
                k async for k in store.list_prefix("/")} == {k async for k in store.list()}
            assert [k async for k in store.list_prefix("foo/bar/zarr.json")] == [
                "foo/bar/zarr.json"]

        asyncio.run(check_keys(session.store))
        session.commit("commit")
        asyncio.run(check_keys(repo.readonly_session(branch="main").store))

    def test_only_zarr_keys_are_written(self, repo: Repository) -> None:
        store = repo.writable_session("main").store

        async def main() -> None:
            with pytest.raises(IcechunkError):
                await store.set("foo", _buf(b"bar"))
            with pytest.raises(ic.InvalidInputError, match="not a zarr v3 key"):
                await store.set("notes/readme.txt", _buf(b"bar"))
            with pytest.raises(IcechunkError):
                await store.set_if_not_exists("foo", _buf(b"bar"))
            await store.set("foo/zarr.json", _buf(b'{"zarr_format":3,"node_type":"group"}'))
            assert await store.exists("foo/zarr.json")
            # the library's own documents (ingestion records) live under .icechunk_dist/
            await store.set("foo/.icechunk_dist/ingest.json", _buf(b"{}"))

        asyncio.run(main())
        arr = zarr.create_array(store, name="a", shape=(4,), chunks=(2,), dtype="i4")
        arr[:] = [1, 2, 3, 4]  # chunk keys: a/c/0, a/c/1
        np.testing.assert_array_equal(arr[:], [1, 2, 3, 4])
        v2 = zarr.create_array(store, name="b", shape=(2, 2), chunks=(1, 1), dtype="i4",
                               chunk_key_encoding={"name": "v2", "separator": "."})
        v2[:] = 9  # chunk keys: b/0.0 ...
        np.testing.assert_array_equal(v2[:], 9)

    def test_is_open(self, repo: Repository) -> None:
        session = repo.writable_session("main")
        store = session.store
        assert store._is_open
        assert repo.readonly_session("main").store._is_open
        writer = store.with_read_only(read_only=False)
        assert not writer._is_open and not writer.read_only
        zarr.group(store=store).create_array(name="foo", shape=(1,), chunks=(1,), dtype="i8")
        asyncio.run(writer.set("foo/c/0", _buf(b"barbazqu")))
        asyncio.run(writer.delete("foo/c/0"))
        assert pickle.loads(pickle.dumps(session.fork().store))._is_open
        store.sync_clear()  # Icechunk's sync twin of clear()
        assert asyncio.run(store.is_empty(""))
        # built directly (zarr's Store.open does), it starts closed and zarr opens it
        direct = ic.IcechunkStore(session)
        assert not direct._is_open
        opened = asyncio.run(ic.IcechunkStore.open(session=session))
        assert opened._is_open


# --------------------------------------------------------------------------- pickling
def test_read_only_sessions_pickle_writable_ones_refuse(repo: Repository) -> None:
    _array(repo)
    session = repo.writable_session("main")
    assert session.store._read_only is False and session.read_only is False
    with pytest.raises(ValueError, match=r"Session\.fork\(\)"):
        pickle.dumps(session)
    with pytest.raises(ValueError):
        pickle.dumps(session.store)
    with pytest.raises(ic.SessionStateError):
        pickle.dumps(session)
    assert pickle.loads(pickle.dumps(session.fork().store))._read_only is False
    zarr.open_array(session.store, path="x", mode="r+")[0, 0] = 9
    session.commit("committed: now read-only")
    back = pickle.loads(pickle.dumps(session))
    assert back.read_only and back.snapshot_id == session.snapshot_id
    assert back.branch == session.branch
    ro = repo.readonly_session("main")
    back = pickle.loads(pickle.dumps(ro))
    assert zarr.open_array(back.store, path="x", mode="r")[0, 0] == 9
    store = pickle.loads(pickle.dumps(ro.store))
    assert zarr.open_array(store, path="x", mode="r")[0, 0] == 9


def test_public_names(repo: Repository) -> None:
    for name in ("RepoStatus", "RepoAvailability", "SpecVersion", "NodeNotFoundError",
                 "SnapshotNotFoundError", "RefNotFoundError", "InternalError", "S3Options",
                 "ObjectStoreConfig", "s3_store", "local_filesystem_store", "gcs_store",
                 "http_store", "GCSummary"):
        assert name in ic.__all__ and hasattr(ic, name), name
    assert ic.storage.s3_object_store_storage is ic.s3_object_store_storage
    assert isinstance(repo.garbage_collect(datetime.now(UTC), dry_run=True), ic.GCSummary)


# --------------------------------------------------------------------------- flush
def test_flush_writes_a_detached_snapshot(repo: Repository) -> None:
    base = _array(repo, value=1)
    session = repo.writable_session("main")
    zarr.open_array(session.store, path="x", mode="r+")[:] = 2
    first_snapshot_id = session.flush("commit 1", metadata={"k": 1})
    assert session.read_only and session.branch is None
    assert session.snapshot_id == first_snapshot_id
    assert repo.lookup_branch("main") == base  # no branch moved
    info = repo.lookup_snapshot(first_snapshot_id)
    assert (info.parent_id, info.message, info.metadata) == (base, "commit 1", {"k": 1})
    detached = repo.readonly_session(snapshot_id=first_snapshot_id)
    assert zarr.open_array(detached.store, path="x", mode="r")[0, 0] == 2
    repo.reset_branch("main", first_snapshot_id)
    assert zarr.open_array(repo.readonly_session("main").store, path="x")[7, 7] == 2

    async def main() -> str:
        s = await repo.writable_session_async("main")
        zarr.open_array(s.store, path="x", mode="r+")[:] = 3
        return await s.flush_async("commit 2")

    second = asyncio.run(main())
    assert repo.lookup_snapshot(second).parent_id == first_snapshot_id
    with pytest.raises(ic.SessionStateError, match="commits are not allowed"):
        session.flush("again")
    # a rearrange session flushes its moves
    rearrange = repo.rearrange_session("main")
    rearrange.move("/x", "/y")
    moved = rearrange.flush("moved")
    assert zarr.open_array(repo.readonly_session(snapshot_id=moved).store, path="y")[0, 0] == 2
    assert repo.lookup_branch("main") == first_snapshot_id


# --------------------------------------------------------------------------- distributed
def test_merge_sessions_and_extract_session(repo: Repository) -> None:
    from icechunk_dist.distributed import extract_session, merge_sessions

    session = repo.writable_session("main")
    root = zarr.group(session.store)
    for name in ("a", "b", "c"):
        root.create_array(name, shape=(4,), chunks=(2,), dtype="i4", fill_value=0)
    forks = [pickle.loads(pickle.dumps(session.fork())) for _ in range(3)]
    for value, (fork, name) in enumerate(zip(forks, ("a", "b", "c"), strict=True), 1):
        zarr.open_array(fork.store, path=name, mode="r+")[:] = value
    with pytest.raises(TypeError, match="Received 'Session'"):
        merge_sessions(session, *forks)  # type: ignore[arg-type]
    merged = merge_sessions(forks[0], [forks[1], [forks[2]]])
    assert merged is forks[0]
    session.merge(merged)
    session.commit("all done")
    ro = repo.readonly_session("main").store
    for value, name in enumerate(("a", "b", "c"), 1):
        np.testing.assert_array_equal(zarr.open_array(ro, path=name, mode="r")[:], value)
    arr = zarr.open_array(forks[0].store, path="a", mode="r")
    assert extract_session(arr) is forks[0]
    with pytest.raises(ic.InvalidInputError):
        extract_session(np.zeros(2))


# --------------------------------------------------------------------------- stats
def test_chunk_storage_stats(tmp_path: Path) -> None:
    repo = Repository.create(storage=ic.local_filesystem_storage(str(tmp_path / "r")),
                             config=ic.RepositoryConfig(inline_chunk_threshold_bytes=0))
    session = repo.writable_session("main")
    group = zarr.group(store=session.store, overwrite=True)
    array = group.create_array("array", shape=(100,), chunks=(1,), dtype="i4",
                               compressors=None)
    array[:] = 42
    first = session.commit("commit 1")
    stats = repo.chunk_storage_stats()
    assert (stats.native_bytes, stats.virtual_bytes, stats.inlined_bytes) == (400, 0, 0)
    with pytest.warns(DeprecationWarning, match="total_chunks_storage"):
        assert repo.total_chunks_storage() == 100 * 4

    # overwritten chunks stay in history; inline and virtual chunks count too
    source = tmp_path / "source.bin"
    source.write_bytes(bytes(range(64)))
    config = ic.RepositoryConfig(inline_chunk_threshold_bytes=100)
    prefix = f"file://{tmp_path}/"
    config.set_virtual_chunk_container(
        ic.VirtualChunkContainer(prefix, ic.local_filesystem_store(str(tmp_path))))
    vrepo = repo.reopen(config, authorize_virtual_chunk_access={prefix: None})
    session = vrepo.writable_session("main")
    arr = zarr.open_array(session.store, path="array", mode="r+")
    arr[0:10] = 7  # 10 inline chunks of 4 bytes
    session.store.set_virtual_ref("array/c/10", f"file://{source}", offset=8, length=4)
    session.store.set_virtual_ref("array/c/11", f"file://{source}", offset=8, length=4)
    session.commit("commit 2")
    stats = repo.chunk_storage_stats()
    assert (stats.native_bytes, stats.virtual_bytes, stats.inlined_bytes) == (400, 4, 40)
    assert (stats.non_virtual_bytes(), stats.total_bytes()) == (440, 444)
    got = zarr.open_array(vrepo.readonly_session("main").store, path="array")[10]
    assert got == int.from_bytes(bytes(range(8, 12)), "little")

    async def main() -> int:
        with pytest.warns(DeprecationWarning, match="total_chunks_storage_async"):
            return await repo.total_chunks_storage_async()

    assert asyncio.run(main()) == 400
    # what no ref reaches does not count
    repo.reset_branch("main", first)
    repo.reset_branch("main", repo.lookup_snapshot(first).parent_id)
    assert repo.chunk_storage_stats().total_bytes() == 0
