"""Repository.expire_snapshots (Icechunk's name and semantics) and the GC that follows it."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
from repo_contents import assert_same_contents, contents

import icechunk_dist as icd
from icechunk_dist.storage import ObjectMeta, Storage, WrapperStorage

_DIRS = ("chunks", "manifests", "snapshots", "transactions")


def _files(root: Path) -> set[str]:
    return {f"{d}/{p.name}" for d in _DIRS if (root / d).exists() for p in (root / d).iterdir()}


def _soon() -> datetime:
    return datetime.now(UTC) + timedelta(seconds=5)


class History:
    """main: g - c1 - c2 - c3 - c4 - c5; dev: c2 - d1; tag old -> c1; tag gone -> c2
    (deleted). Every commit of main rewrites all of x, so each holds its own chunks."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.repo = icd.Repository.create(icd.local_filesystem_storage(root))
        self.new_files: dict[str, set[str]] = {}
        rng = np.random.default_rng(7)
        self.ids: dict[str, str] = {}
        for name in ("c1", "c2", "c3"):
            self._commit(name, "main", rng)
        self.repo.create_branch("dev", self.ids["c2"])
        self.repo.create_tag("old", self.ids["c1"])
        self.repo.create_tag("gone", self.ids["c2"])
        self.repo.delete_tag("gone")
        for name, branch in (("c4", "main"), ("d1", "dev"), ("c5", "main")):
            self._commit(name, branch, rng)

    def _commit(self, name: str, branch: str, rng: np.random.Generator) -> None:
        before = _files(self.root)
        s = self.repo.writable_session(branch)
        if name == "c1":
            zarr.create_array(s.store, name="x", shape=(400,), chunks=(100,), dtype="f8",
                              fill_value=0.0)
            zarr.create_array(s.store, name="y", shape=(400,), chunks=(100,), dtype="f8",
                              fill_value=0.0)[:] = rng.random(400)
        zarr.open_array(s.store, path="x")[:] = rng.random(400)
        self.ids[name] = s.commit(name)
        self.new_files[name] = _files(self.root) - before

    def refs_contents(self) -> dict[str, tuple[str, Any]]:
        out: dict[str, tuple[str, Any]] = {}
        for b in sorted(self.repo.list_branches()):
            out[f"branch {b}"] = (self.repo.lookup_branch(b),
                                  contents(self.repo.readonly_session(b)))
        for t in sorted(self.repo.list_tags()):
            out[f"tag {t}"] = (self.repo.lookup_tag(t),
                               contents(self.repo.readonly_session(tag=t)))
        return out


def _assert_same_refs(a: dict[str, tuple[str, Any]], b: dict[str, tuple[str, Any]]) -> None:
    assert sorted(a) == sorted(b)
    for ref in a:
        assert a[ref][0] == b[ref][0], ref  # same snapshot id
        assert_same_contents(a[ref][1], b[ref][1])


def test_expire_keeps_every_ref_reading_the_same_and_gc_frees_exactly_the_expired(
    tmp_path: Path,
) -> None:
    h = History(tmp_path)
    repo, ids = h.repo, h.ids
    before = h.refs_contents()
    cutoff = repo.lookup_snapshot(ids["c4"]).written_at  # exclusive: c4 is kept

    expired = repo.expire_snapshots(cutoff)

    # c1 is tagged, d1 and c4 start the shortened histories of dev and main
    assert expired == {ids["c2"], ids["c3"]}
    _assert_same_refs(before, h.refs_contents())
    genesis = [i.id for i in repo.ancestry(snapshot_id=ids["c1"])][-1]
    assert [i.id for i in repo.ancestry(branch="main")] == [ids["c5"], ids["c4"], genesis]
    assert [i.id for i in repo.ancestry(branch="dev")] == [ids["d1"], genesis]
    assert [i.id for i in repo.ancestry(tag="old")] == [ids["c1"], genesis]

    files = _files(tmp_path)
    summary = repo.garbage_collect(_soon())
    gone = files - _files(tmp_path)
    assert gone == h.new_files["c2"] | h.new_files["c3"]
    assert summary.snapshots_deleted == 2 and summary.transaction_logs_deleted == 2
    assert summary.chunks_deleted == 8 and summary.manifests_deleted == 2
    _assert_same_refs(before, h.refs_contents())
    # nothing more to expire; a second collection finds nothing
    assert repo.expire_snapshots(cutoff) == set()
    assert repo.garbage_collect(_soon()).snapshots_deleted == 0


def test_expire_can_delete_expired_branches_and_tags(tmp_path: Path) -> None:
    h = History(tmp_path)
    repo, ids = h.repo, h.ids
    cutoff = repo.lookup_snapshot(ids["c5"]).written_at  # only c5 is new enough
    expired = repo.expire_snapshots(cutoff, delete_expired_branches=True,
                                    delete_expired_tags=True)
    assert repo.list_tags() == set()
    assert repo.list_branches() == {"main"}  # dev's tip d1 is older than the cut-off
    assert expired == {ids[n] for n in ("c1", "c2", "c3", "c4", "d1")}
    assert len(list(repo.ancestry(branch="main"))) == 2
    repo.garbage_collect(_soon())
    got = zarr.open_array(repo.readonly_session("main").store, path="y", mode="r")[:]
    assert got.shape == (400,)  # y's chunks (written in c1) are still reachable from c5


def test_expired_tip_keeps_its_snapshot_and_loses_its_history(tmp_path: Path) -> None:
    h = History(tmp_path)
    repo, ids = h.repo, h.ids
    before = h.refs_contents()
    expired = repo.expire_snapshots(_soon())  # everything is older: only tips and tags stay
    assert expired == {ids[n] for n in ("c2", "c3", "c4")}
    _assert_same_refs(before, h.refs_contents())
    assert len(list(repo.ancestry(branch="main"))) == 2


def test_expire_needs_aware_datetime_and_keeps_genesis(tmp_path: Path) -> None:
    repo = icd.Repository.create(icd.local_filesystem_storage(tmp_path))
    with pytest.raises(icd.InvalidInputError):
        repo.expire_snapshots(datetime.now())
    assert repo.expire_snapshots(_soon()) == set()
    assert len(list(repo.ancestry(branch="main"))) == 1


def test_diff_and_rebase_refuse_to_span_expired_history(tmp_path: Path) -> None:
    h = History(tmp_path)
    repo, ids = h.repo, h.ids
    stale = repo.writable_session("main")  # based on c5
    genesis = [i.id for i in repo.ancestry(branch="main")][-1]
    s = repo.writable_session("main")
    zarr.open_array(s.store, path="x")[:1] = 1.0
    s.commit("c6")
    repo.expire_snapshots(repo.lookup_snapshot(ids["c5"]).written_at)
    with pytest.raises(icd.InvalidInputError, match="expired"):
        repo.diff(from_snapshot_id=genesis, to_branch="main")
    # diff inside the kept history still works
    assert "x" in str(repo.diff(from_snapshot_id=ids["c5"], to_branch="main"))
    zarr.open_array(stale.store, path="y")[:1] = 2.0
    # the stale session's base c5 is kept, so rebasing onto c6 is fine
    stale.commit("late", rebase_with=icd.ConflictDetector())


# ---------------------------------------------------------------------------- incremental
class CountingStorage(WrapperStorage):
    """Real storage that counts LIST calls by prefix and every other call by kind."""

    def __init__(self, inner: Storage) -> None:
        super().__init__(inner)
        self.lists: list[str] = []
        self.calls: dict[str, int] = {}

    def _count(self, kind: str) -> None:
        self.calls[kind] = self.calls.get(kind, 0) + 1

    @property
    def supports_pickle(self) -> bool:
        return False  # holds hooks and counters of this process

    def describe(self) -> str:
        return "counting:" + self.inner.describe()

    async def get(self, key: str) -> bytes:
        self._count("get")
        return await self.inner.get(key)

    async def get_range(self, key: str, start: int, end: int) -> bytes:
        self._count("get")
        return await self.inner.get_range(key, start, end)

    async def get_suffix(self, key: str, length: int) -> bytes:
        self._count("get")
        return await self.inner.get_suffix(key, length)

    async def head(self, key: str) -> ObjectMeta:
        self._count("head")
        return await self.inner.head(key)

    async def put(self, key: str, data: bytes, *, mode: Any = "overwrite") -> None:
        self._count("put")
        await self.inner.put(key, data, mode=mode)

    async def delete(self, key: str) -> None:
        self._count("delete")
        await self.inner.delete(key)

    async def delete_many(self, keys: Iterable[str]) -> int:
        self._count("delete")
        return await self.inner.delete_many(keys)

    def list(self, prefix: str = "") -> AsyncIterator[ObjectMeta]:
        self.lists.append(prefix)
        return self.inner.list(prefix)


def test_incremental_gc_lists_no_chunks_and_deletes_what_a_full_gc_deletes(
    tmp_path: Path,
) -> None:
    h = History(tmp_path / "a")
    repo, ids = h.repo, h.ids
    repo.garbage_collect(_soon())  # an earlier collection
    repo.expire_snapshots(repo.lookup_snapshot(ids["c4"]).written_at)
    # a commit on a branch deleted since: its snapshot, log, manifest and chunks are garbage
    repo.create_branch("tmp", repo.lookup_branch("main"))
    s = repo.writable_session("tmp")
    zarr.open_array(s.store, path="x")[:] = np.random.default_rng(3).random(400)
    tmp_files = set(_files(tmp_path / "a"))
    dropped = s.commit("dropped")
    tmp_files = _files(tmp_path / "a") - tmp_files
    repo.delete_branch("tmp")
    shutil.copytree(tmp_path / "a", tmp_path / "b")  # copy2 keeps modification times
    before = _files(tmp_path / "a")
    assert before == _files(tmp_path / "b")
    cutoff = _soon()

    full_storage = CountingStorage(icd.local_filesystem_storage(tmp_path / "a"))
    full = icd.Repository.open(full_storage).garbage_collect(cutoff)
    inc_storage = CountingStorage(icd.local_filesystem_storage(tmp_path / "b"))
    inc = icd.Repository.open(inc_storage).garbage_collect(cutoff, incremental=True)

    assert "chunks/" in full_storage.lists
    assert not any(p.startswith("chunks") for p in inc_storage.lists)
    assert len(inc_storage.lists) < len(full_storage.lists)
    gone_full = before - _files(tmp_path / "a")
    gone_inc = before - _files(tmp_path / "b")
    assert gone_inc == gone_full
    assert h.new_files["c2"] | h.new_files["c3"] <= gone_full
    assert f"snapshots/{dropped}" in tmp_files and tmp_files <= gone_full
    assert (inc.chunks_deleted, inc.manifests_deleted, inc.snapshots_deleted,
            inc.bytes_deleted) == (full.chunks_deleted, full.manifests_deleted,
                                   full.snapshots_deleted, full.bytes_deleted)
    assert inc.incremental and not full.incremental
    for root in ("a", "b"):
        r = icd.Repository.open(icd.local_filesystem_storage(tmp_path / root))
        assert_same_contents(contents(r.readonly_session("main")),
                             contents(h.repo.readonly_session("main")))


def test_incremental_gc_leaves_chunks_no_manifest_names_to_a_full_gc(tmp_path: Path) -> None:
    """Chunks of a session that never wrote a manifest (discarded, crashed, lost task
    attempts) are found only by listing chunks/: a full collection."""
    h = History(tmp_path)
    repo = h.repo
    s = repo.writable_session("main")
    before = _files(tmp_path)
    zarr.open_array(s.store, path="x")[:] = np.random.default_rng(5).random(400)
    s.discard_changes()
    orphans = _files(tmp_path) - before
    assert len(orphans) == 4
    assert repo.garbage_collect(_soon(), incremental=True).chunks_deleted == 0
    assert orphans <= _files(tmp_path)
    assert repo.garbage_collect(_soon()).chunks_deleted == 4
    assert not orphans & _files(tmp_path)
