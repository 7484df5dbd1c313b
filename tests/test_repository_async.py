"""Repository's async core and sync twins (issue 20): every Icechunk ``*_async`` Repository
method that has a sync counterpart here exists, takes Icechunk's argument names and
defaults, returns what its sync twin returns, and runs on the library's loop (the caller's
loop keeps running while it waits)."""

from __future__ import annotations

import asyncio
import inspect
import shutil
import time
from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest
import zarr

import icechunk_dist as icd
from icechunk_dist import BranchMovedError, Repository, RepositoryConfig

T = TypeVar("T")

# Every ``*_async`` method of Icechunk's Python ``Repository``
# (icechunk-python/python/icechunk/repository.py), split into the ones we have and the ones
# whose sync method we do not have either (listed in docs/api.md as absent).
ICECHUNK_ASYNC = [
    "create_async", "open_async", "open_or_create_async", "exists_async",
    "fetch_config_async", "save_config_async", "reopen_async",
    "get_metadata_async", "set_metadata_async", "update_metadata_async", "ops_log_async",
    "create_branch_async", "list_branches_async", "lookup_branch_async",
    "lookup_snapshot_async", "reset_branch_async", "delete_branch_async",
    "create_tag_async", "list_tags_async", "lookup_tag_async", "delete_tag_async",
    "diff_async", "readonly_session_async", "writable_session_async",
    "rearrange_session_async", "expire_snapshots_async", "garbage_collect_async",
    "get_status_async", "set_status_async", "fetch_spec_version_async",
    "rewrite_manifests_async", "chunk_storage_stats_async", "total_chunks_storage_async",
]
ICECHUNK_ASYNC_ABSENT = [
    "feature_flags_async",
    "enabled_feature_flags_async", "disabled_feature_flags_async", "set_feature_flag_async",
    "ancestry_graph_async", "list_manifest_files_async",
    "inspect_snapshot_async", "inspect_repo_info_async", "inspect_manifest_async",
    "inspect_transaction_log_async",
]

_REQ = inspect.Parameter.empty
_PK = inspect.Parameter.POSITIONAL_OR_KEYWORD
_KW = inspect.Parameter.KEYWORD_ONLY
# Icechunk's parameters (name, kind, default), leaving out the ones we do not accept:
# authorize_virtual_chunk_access, check_clean_root, storage_settings and garbage_collect's
# memory limits (docs/api.md); spec_version and create_version are keywords of ours after
# Icechunk's leading ones.
ICECHUNK_PARAMS: dict[str, list[tuple[str, Any, Any]]] = {
    "create_async": [("storage", _PK, _REQ), ("config", _PK, None)],
    "open_async": [("storage", _PK, _REQ), ("config", _PK, None)],
    "open_or_create_async": [("storage", _PK, _REQ), ("config", _PK, None)],
    "exists_async": [("storage", _PK, _REQ)],
    "fetch_config_async": [("storage", _PK, _REQ)],
    "save_config_async": [],
    "reopen_async": [("config", _PK, None)],
    "get_metadata_async": [],
    "set_metadata_async": [("metadata", _PK, _REQ)],
    "update_metadata_async": [("metadata", _PK, _REQ)],
    "ops_log_async": [],
    "create_branch_async": [("branch", _PK, _REQ), ("snapshot_id", _PK, _REQ)],
    "list_branches_async": [],
    "lookup_branch_async": [("branch", _PK, _REQ)],
    "lookup_snapshot_async": [("snapshot_id", _PK, _REQ)],
    "reset_branch_async": [("branch", _PK, _REQ), ("snapshot_id", _PK, _REQ),
                           ("from_snapshot_id", _KW, None)],
    "delete_branch_async": [("branch", _PK, _REQ)],
    "create_tag_async": [("tag", _PK, _REQ), ("snapshot_id", _PK, _REQ)],
    "list_tags_async": [],
    "lookup_tag_async": [("tag", _PK, _REQ)],
    "delete_tag_async": [("tag", _PK, _REQ)],
    "diff_async": [(f"{end}_{what}", _KW, None) for end in ("from", "to")
                   for what in ("branch", "tag", "snapshot_id")],
    "readonly_session_async": [("branch", _PK, None), ("tag", _KW, None),
                               ("snapshot_id", _KW, None), ("as_of", _KW, None)],
    "writable_session_async": [("branch", _PK, _REQ)],
    "rearrange_session_async": [("branch", _PK, _REQ)],
    "expire_snapshots_async": [("older_than", _PK, _REQ),
                               ("delete_expired_branches", _KW, False),
                               ("delete_expired_tags", _KW, False)],
    "garbage_collect_async": [("delete_object_older_than", _PK, _REQ), ("dry_run", _KW, False)],
    "get_status_async": [],
    "set_status_async": [("status", _PK, _REQ)],
    "fetch_spec_version_async": [("storage", _PK, _REQ)],
    "rewrite_manifests_async": [("message", _PK, _REQ), ("branch", _KW, _REQ),
                                ("metadata", _KW, None), ("commit_method", _KW, "new_commit")],
    # (their memory limits are not accepted, as for garbage_collect)
    "chunk_storage_stats_async": [],
    "total_chunks_storage_async": [],
    "async_ancestry": [("branch", _KW, None), ("tag", _KW, None), ("snapshot_id", _KW, None)],
}


def _params(name: str) -> list[inspect.Parameter]:
    ps = list(inspect.signature(getattr(Repository, name)).parameters.values())
    return [p for p in ps if p.name not in ("self", "cls")]


def test_every_icechunk_async_twin_of_a_method_we_have_exists() -> None:
    public = {m for m in dir(Repository) if not m.startswith("_")}
    for name in ICECHUNK_ASYNC:
        assert name[: -len("_async")] in public, name  # we have the sync method...
        assert name in public, name  # ...so we have its async twin
    for name in ICECHUNK_ASYNC_ABSENT:  # neither the sync method nor the twin exists
        assert name not in public and name[: -len("_async")] not in public, name
    # and no other public method has an Icechunk twin we forgot to list
    assert set(ICECHUNK_ASYNC).isdisjoint(ICECHUNK_ASYNC_ABSENT)
    assert "async_ancestry" in public and "ancestry_async" in public


@pytest.mark.parametrize("name", sorted(ICECHUNK_PARAMS))
def test_icechunk_argument_names_kinds_and_defaults(name: str) -> None:
    ours = _params(name)
    want = ICECHUNK_PARAMS[name]
    got = [(p.name, p.kind, p.default) for p in ours[: len(want)]]
    assert got == want, name
    # anything more of ours is an optional keyword after Icechunk's (e.g. incremental=)
    assert all(p.kind is _KW and p.default is not _REQ for p in ours[len(want):]), name


@pytest.mark.parametrize("name", sorted(ICECHUNK_ASYNC))
def test_sync_twin_takes_the_same_arguments(name: str) -> None:
    sync = name[: -len("_async")]
    assert [(p.name, p.kind, p.default) for p in _params(sync)] == [
        (p.name, p.kind, p.default) for p in _params(name)]
    assert inspect.iscoroutinefunction(getattr(Repository, name)) or name == "ops_log_async"


class Ticker:
    """A task counting its turns on the loop: if it advanced across an ``await``, the loop
    ran other work while that call waited."""

    def __init__(self) -> None:
        self.ticks = 0
        self._stop = False
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while not self._stop:
            self.ticks += 1
            await asyncio.sleep(0)

    async def step(self, aw: Awaitable[T]) -> T:
        before = self.ticks
        out = await aw
        assert self.ticks > before, "the caller's loop was held during the call"
        return out

    async def stop(self) -> None:
        self._stop = True
        await self._task


def _state(repo: Repository) -> tuple[dict[str, str], dict[str, str], dict[str, Any]]:
    branches = {b: repo.lookup_branch(b) for b in repo.list_branches()}
    tags = {t: repo.lookup_tag(t) for t in repo.list_tags()}
    return branches, tags, repo.get_metadata()


def _build(path: Path) -> tuple[str, str, str, datetime]:
    """init -> c1 -> c2 on main; returns their ids and a time between c1 and c2."""
    repo = Repository.create(icd.local_filesystem_storage(str(path)))
    init = repo.lookup_branch("main")
    s = repo.writable_session("main")
    zarr.create_array(s.store, name="x", shape=(8,), chunks=(4,), dtype="i4",
                      compressors=None)[:] = np.arange(8, dtype="i4")
    c1 = s.commit("one")
    time.sleep(0.05)
    between = datetime.now(UTC)
    time.sleep(0.05)
    s = repo.writable_session("main")
    zarr.open_array(s.store, path="x", mode="r+")[0:4] = -1
    c2 = s.commit("two")
    return init, c1, c2, between


async def test_every_async_twin_returns_what_its_sync_twin_returns(tmp_path: Path) -> None:
    """Each ``*_async`` is called with Icechunk's argument names (keyword form) on repository
    A, its sync twin with the same keywords on B, a byte copy of A: results and the
    resulting refs must be equal. Reads are compared on A itself."""
    init, c1, c2, between = await asyncio.to_thread(_build, tmp_path / "a")
    await asyncio.to_thread(shutil.copytree, tmp_path / "a", tmp_path / "b")
    sa = icd.local_filesystem_storage(str(tmp_path / "a"))
    sb = icd.local_filesystem_storage(str(tmp_path / "b"))
    t = Ticker()

    # lifecycle and config
    assert await t.step(Repository.exists_async(storage=sa)) is Repository.exists(storage=sb)
    nowhere = icd.local_filesystem_storage(str(tmp_path / "none"))
    assert await t.step(Repository.exists_async(storage=nowhere)) is False
    cfg = RepositoryConfig(inline_chunk_threshold_bytes=7)
    ra = await t.step(Repository.open_async(storage=sa, config=cfg))
    rb = Repository.open(storage=sb, config=cfg)
    assert ra.config == rb.config and ra.config.inline_chunk_threshold_bytes == 7
    assert (await t.step(Repository.fetch_config_async(storage=sa))
            == Repository.fetch_config(storage=sb))
    with pytest.raises(icd.RepositoryNotFoundError, match="the repository doesn't exist"):
        await t.step(Repository.fetch_config_async(storage=nowhere))
    await t.step(ra.save_config_async())
    rb.save_config()
    assert (await t.step(Repository.fetch_config_async(storage=sa))
            == Repository.fetch_config(storage=sb) == cfg)
    assert (await t.step(ra.reopen_async(config=RepositoryConfig(compression_level=5)))
            ).config == rb.reopen(config=RepositoryConfig(compression_level=5)).config
    created = await t.step(Repository.create_async(
        storage=icd.local_filesystem_storage(str(tmp_path / "c")), config=cfg))
    created_sync = Repository.create(
        storage=icd.local_filesystem_storage(str(tmp_path / "d")), config=cfg)
    assert created.config == created_sync.config == cfg
    again = await t.step(Repository.open_or_create_async(storage=created.storage, config=None))
    assert again.lookup_branch("main") == created.lookup_branch("main")
    fresh = await t.step(Repository.open_or_create_async(
        storage=icd.local_filesystem_storage(str(tmp_path / "e")), config=cfg))
    assert fresh.list_branches() == Repository.open_or_create(
        storage=icd.local_filesystem_storage(str(tmp_path / "f")), config=cfg
    ).list_branches() == {"main"}

    # metadata
    await t.step(ra.set_metadata_async(metadata={"a": 1}))
    rb.set_metadata(metadata={"a": 1})
    assert (await t.step(ra.update_metadata_async(metadata={"b": 2}))
            == rb.update_metadata(metadata={"b": 2}) == {"a": 1, "b": 2})
    assert await t.step(ra.get_metadata_async()) == rb.get_metadata() == {"a": 1, "b": 2}

    # refs
    await t.step(ra.create_branch_async(branch="dev", snapshot_id=c1))
    rb.create_branch(branch="dev", snapshot_id=c1)
    assert await t.step(ra.list_branches_async()) == rb.list_branches() == {"main", "dev"}
    assert await t.step(ra.lookup_branch_async(branch="dev")) == rb.lookup_branch("dev") == c1
    with pytest.raises(BranchMovedError):  # dev is at c1, not c2: nothing moves
        await t.step(ra.reset_branch_async(branch="dev", snapshot_id=init,
                                           from_snapshot_id=c2))
    with pytest.raises(BranchMovedError):
        rb.reset_branch(branch="dev", snapshot_id=init, from_snapshot_id=c2)
    assert ra.lookup_branch("dev") == rb.lookup_branch("dev") == c1
    await t.step(ra.reset_branch_async(branch="dev", snapshot_id=init, from_snapshot_id=c1))
    rb.reset_branch(branch="dev", snapshot_id=init, from_snapshot_id=c1)
    assert ra.lookup_branch("dev") == rb.lookup_branch("dev") == init
    await t.step(ra.reset_branch_async(branch="dev", snapshot_id=c2))
    rb.reset_branch(branch="dev", snapshot_id=c2)
    await t.step(ra.create_tag_async(tag="v1", snapshot_id=c1))
    rb.create_tag(tag="v1", snapshot_id=c1)
    await t.step(ra.create_tag_async(tag="v0", snapshot_id=init))
    rb.create_tag(tag="v0", snapshot_id=init)
    assert await t.step(ra.list_tags_async()) == rb.list_tags() == {"v0", "v1"}
    assert await t.step(ra.lookup_tag_async(tag="v1")) == rb.lookup_tag(tag="v1") == c1
    await t.step(ra.delete_tag_async(tag="v0"))
    rb.delete_tag(tag="v0")
    await t.step(ra.delete_branch_async(branch="dev"))
    rb.delete_branch(branch="dev")
    assert _state(ra) == _state(rb)

    # history
    assert (await t.step(ra.lookup_snapshot_async(snapshot_id=c1))
            == ra.lookup_snapshot(snapshot_id=c1))
    for start in ({"branch": "main"}, {"tag": "v1"}, {"snapshot_id": c2}):
        want = list(ra.ancestry(**start))
        assert [i async for i in ra.ancestry_async(**start)] == want
        assert [i async for i in ra.async_ancestry(**start)] == want
    assert [i.id for i in ra.ancestry(branch="main")] == [c2, c1, init]
    for ends in ({"from_snapshot_id": init, "to_branch": "main"},
                 {"from_tag": "v1", "to_snapshot_id": c2},
                 {"from_branch": "main", "to_branch": "main"}):
        assert await t.step(ra.diff_async(**ends)) == ra.diff(**ends)
    assert (await t.step(ra.diff_async(from_snapshot_id=init, to_branch="main"))
            ).updated_chunks == {"/x": [[0], [1]]}
    log = list(ra.ops_log())
    assert [u async for u in ra.ops_log_async()] == log
    assert [type(u.kind).__name__ for u in log] == [
        type(u.kind).__name__ for u in rb.ops_log()]

    # sessions
    for kw in ({"branch": "main"}, {"tag": "v1"}, {"snapshot_id": c1},
               {"branch": "main", "as_of": between}):
        a = await t.step(ra.readonly_session_async(**kw))
        b = ra.readonly_session(**kw)
        assert (a.snapshot_id, a.branch, a.read_only) == (b.snapshot_id, b.branch, b.read_only)
    assert ra.readonly_session(branch="main", as_of=between).snapshot_id == c1
    w = await t.step(ra.writable_session_async(branch="main"))
    assert (w.snapshot_id, w.branch, w.mode) == (c2, "main", icd.SessionMode.writable)
    r = await t.step(ra.rearrange_session_async(branch="main"))
    assert (r.snapshot_id, r.branch, r.mode) == (c2, "main", icd.SessionMode.rearrange)

    # maintenance: c1 is older than ``between`` and only tag v1 holds it; drop the tag
    await t.step(ra.delete_tag_async(tag="v1"))
    rb.delete_tag(tag="v1")
    assert (await t.step(ra.expire_snapshots_async(older_than=between,
                                                   delete_expired_branches=False,
                                                   delete_expired_tags=False))
            == rb.expire_snapshots(older_than=between, delete_expired_branches=False,
                                   delete_expired_tags=False) == {c1})
    later = datetime.now(UTC) + timedelta(days=1)
    dry = await t.step(ra.garbage_collect_async(delete_object_older_than=later, dry_run=True))
    assert dry == rb.garbage_collect(delete_object_older_than=later, dry_run=True)
    assert dry.snapshots_deleted == 1 and dry.dry_run
    done = await t.step(ra.garbage_collect_async(delete_object_older_than=later,
                                                 dry_run=False))
    assert done == rb.garbage_collect(delete_object_older_than=later, dry_run=False)
    assert done.snapshots_deleted == 1
    assert _state(ra) == _state(rb)
    await t.stop()


async def test_ancestry_twins_can_be_left_half_read_and_fail_alike(tmp_path: Path) -> None:
    repo = await Repository.create_async(icd.local_filesystem_storage(str(tmp_path)))
    ids = []
    for i in range(3):
        s = await repo.writable_session_async("main")
        ids.append(await s.commit_async(f"c{i}", allow_empty=True))
    first = await anext(repo.ancestry_async(branch="main"))
    assert first.id == ids[-1]
    assert next(repo.ancestry(branch="main")).id == ids[-1]
    with pytest.raises(icd.InvalidInputError):
        await anext(repo.ancestry_async())
    with pytest.raises(icd.InvalidInputError):
        next(repo.ancestry(branch="main", tag="t"))


async def test_errors_cross_from_the_library_loop_unchanged(tmp_path: Path) -> None:
    repo = await Repository.create_async(icd.local_filesystem_storage(str(tmp_path)))
    with pytest.raises(icd.NotFoundError):
        await repo.lookup_branch_async(branch="nope")
    with pytest.raises(icd.InvalidInputError):
        await repo.delete_branch_async(branch="main")
    with pytest.raises(icd.InvalidInputError):
        await repo.garbage_collect_async(delete_object_older_than=datetime.now())
    with pytest.raises(icd.RepositoryNotFoundError):
        await Repository.open_async(storage=icd.local_filesystem_storage(
            str(tmp_path / "none")))
    with pytest.raises(icd.AlreadyExistsError):
        await Repository.create_async(storage=repo.storage)
