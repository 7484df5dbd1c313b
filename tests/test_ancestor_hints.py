"""Ancestor hints in snapshots (docs/design/007-ancestor-hints.md): history walks read
concurrently along them, and a missing, stale or wrong hint never changes what is read."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import numpy as np
import pytest
import zarr

import icechunk_dist as icd
from icechunk_dist.errors import FormatError, InvalidInputError
from icechunk_dist.format import (
    MAX_ANCESTOR_HINTS,
    ObjectType,
    SnapshotData,
    decode_object,
    encode_object,
)
from icechunk_dist.session._history import History
from icechunk_dist.session._io import read_snapshot, snapshot_key
from icechunk_dist.storage import Storage


def _history(repo: icd.Repository, n: int) -> list[str]:
    """``n`` one-chunk commits on main after creating the array; their ids, oldest first."""
    s = repo.writable_session("main")
    zarr.create_array(s.store, name="x", shape=(n + 1,), chunks=(1,), dtype="i4",
                      fill_value=0)
    ids = [s.commit("array")]
    for i in range(n):
        s = repo.writable_session("main")
        zarr.open_array(s.store, path="x")[i] = i + 1
        ids.append(s.commit(f"c{i}"))
    return ids


def _walk(storage: Storage, sid: str | None) -> list[str]:
    """The history by parent links alone, one read at a time (the reference)."""
    out = []
    while sid is not None:
        snap = asyncio.run(read_snapshot(storage, sid))
        out.append(snap.id)
        sid = snap.parent_id
    return out


def _rewrite(storage: Storage, sid: str, **changes: object) -> None:
    raw = storage.get_sync(snapshot_key(sid))
    snap = decode_object(raw, SnapshotData, ObjectType.SNAPSHOT, name=sid)
    storage.put_sync(snapshot_key(sid),
                     encode_object(msgspec.structs.replace(snap, **changes),
                                   ObjectType.SNAPSHOT))


@pytest.fixture
def repo(tmp_path: Path) -> icd.Repository:
    return icd.Repository.create(icd.local_filesystem_storage(str(tmp_path / "repo")))


def test_commits_carry_nearest_ancestors_truncated(repo: icd.Repository) -> None:
    n = MAX_ANCESTOR_HINTS + 15
    ids = _history(repo, n)
    chain = _walk(repo.storage, ids[-1])
    for depth in (0, 1, 2, 50, len(chain) - 1):
        snap = asyncio.run(read_snapshot(repo.storage, chain[depth]))
        # beyond the parent, nearest first, as long as the history allows, at most 100
        expect = chain[depth + 2 : depth + 2 + MAX_ANCESTOR_HINTS]
        assert list(snap.ancestors) == expect
    tip = asyncio.run(read_snapshot(repo.storage, ids[-1]))
    assert len(tip.ancestors) == MAX_ANCESTOR_HINTS


def test_ancestry_and_diff_match_the_parent_walk(repo: icd.Repository) -> None:
    ids = _history(repo, 40)
    walked = _walk(repo.storage, ids[-1])
    assert [s.id for s in repo.ancestry(branch="main")] == walked
    assert [s.id for s in repo.ancestry(snapshot_id=ids[10])] == _walk(repo.storage, ids[10])
    d = repo.diff(from_snapshot_id=ids[0], to_branch="main")
    assert sorted(d.updated_chunks["/x"]) == [[i] for i in range(40)]
    d = repo.diff(from_snapshot_id=ids[5], to_snapshot_id=ids[9])
    assert sorted(d.updated_chunks["/x"]) == [[i] for i in range(5, 9)]
    assert repo.diff(from_snapshot_id=ids[9], to_snapshot_id=ids[9]).is_empty()
    with pytest.raises(InvalidInputError, match="does not descend"):
        repo.diff(from_snapshot_id=ids[9], to_snapshot_id=ids[5])


def test_history_chain_limit_and_stop(repo: icd.Repository) -> None:
    ids = _history(repo, 12)
    st = repo.storage

    def chain(start: str, **kw: object) -> list[str]:
        async def go() -> list[str]:
            return [s.id for s in await History(st).chain(start, **kw)]  # type: ignore[arg-type]
        return asyncio.run(go())

    assert chain(ids[-1], limit=5) == _walk(st, ids[-1])[:5]
    assert chain(ids[-1], stop=ids[4]) == list(reversed(ids[5:]))
    assert chain(ids[3], stop=ids[3]) == []
    assert chain(ids[-1], limit=0) == []


def test_snapshots_without_hints_still_walk(repo: icd.Repository) -> None:
    """Snapshots written before hints existed decode with none; the walk reads them one by
    one and gets the same history."""
    ids = _history(repo, 8)
    for sid in ids:
        _rewrite(repo.storage, sid, ancestors=())
    assert [s.id for s in repo.ancestry(branch="main")] == _walk(repo.storage, ids[-1])
    # and a commit on such a base starts the hints again
    s = repo.writable_session("main")
    zarr.open_array(s.store, path="x")[8] = 9
    new = s.commit("after")
    snap = asyncio.run(read_snapshot(repo.storage, new))
    assert snap.ancestors == (ids[-2],)


def test_wrong_or_missing_hints_do_not_change_the_history(repo: icd.Repository) -> None:
    ids = _history(repo, 10)
    other = icd.Repository.create(icd.in_memory_storage())
    stranger = other.lookup_branch("main")
    # hints naming a snapshot that does not exist, one off the chain, and ourselves
    _rewrite(repo.storage, ids[-1], ancestors=(stranger, ids[2], ids[-1], ids[7]))
    assert [s.id for s in repo.ancestry(branch="main")] == _walk(repo.storage, ids[-1])
    d = repo.diff(from_snapshot_id=ids[0], to_branch="main")
    assert sorted(d.updated_chunks["/x"]) == [[i] for i in range(10)]


def test_expired_history_hints_are_stale_but_harmless(repo: icd.Repository) -> None:
    _history(repo, 12)
    future = datetime.now(UTC) + timedelta(days=1)
    repo.expire_snapshots(future)
    repo.garbage_collect(future)
    walked = _walk(repo.storage, repo.lookup_branch("main"))
    assert len(walked) < 14
    assert [s.id for s in repo.ancestry(branch="main")] == walked
    # a commit on the re-parented history passes on only the new parent
    s = repo.writable_session("main")
    zarr.open_array(s.store, path="x")[12] = 13
    sid = s.commit("after expiry")
    assert [x.id for x in repo.ancestry(branch="main")] == _walk(repo.storage, sid)
    snap = asyncio.run(read_snapshot(repo.storage, sid))
    assert set(snap.ancestors) <= set(walked)
    np.testing.assert_array_equal(
        zarr.open_array(repo.readonly_session("main").store, path="x")[:],
        np.arange(1, 14, dtype="i4"),
    )


def test_hint_lists_are_checked_on_decode(repo: icd.Repository) -> None:
    sid = repo.lookup_branch("main")
    raw = repo.storage.get_sync(snapshot_key(sid))
    snap = decode_object(raw, SnapshotData, ObjectType.SNAPSHOT, name=sid)
    for bad in ((sid,) * (MAX_ANCESTOR_HINTS + 1), ("not-an-id",)):
        data = encode_object(msgspec.structs.replace(snap, ancestors=bad),
                             ObjectType.SNAPSHOT)
        with pytest.raises(FormatError):
            decode_object(data, SnapshotData, ObjectType.SNAPSHOT, name=sid)


def test_old_readers_ignore_the_hints(repo: icd.Repository) -> None:
    """A reader built from the struct without the field (an older version) decodes a new
    snapshot: the field is appended with a default, msgspec skips unknown map keys."""

    class OldSnapshot(msgspec.Struct, frozen=True):
        id: str
        parent_id: str | None
        written_at: datetime
        message: str
        metadata: dict[str, object] = {}
        original_parent_id: str | None = None

    ids = _history(repo, 3)
    raw = repo.storage.get_sync(snapshot_key(ids[-1]))
    new = decode_object(raw, SnapshotData, ObjectType.SNAPSHOT, name="s")
    assert new.ancestors
    body = msgspec.msgpack.encode(new)
    old = msgspec.msgpack.decode(body, type=OldSnapshot)
    assert old.id == new.id and old.parent_id == new.parent_id
