"""Icechunk's ``Session.shift_array`` / ``Session.reindex_array`` and
``Repository.rewrite_manifests`` (issue 23), with Icechunk's names and documented rules:

- ``reindex_array(array_path, forward, backward=None)`` visits existing chunks only;
  ``forward`` gives the new index or None (leave it); without ``backward`` a vacated
  position keeps its chunk, with it a position nothing moved onto is cleared when its
  source is outside the grid or empty. Only regular chunk grids.
- ``shift_array(array_path, chunk_offset)``: chunks shifted out of the grid are dropped,
  vacated positions read as the fill value.
- ``rewrite_manifests(message, *, branch, metadata=None, commit_method="new_commit")``
  rewrites every manifest with the configured splitting, in one commit that changes no
  data and records ``"splitting_config"`` under ``"__icechunk"``.

Both move chunk refs (no chunk is copied), so the tests also check that garbage collection,
full and incremental, keeps the moved chunks alive, and that a session rebased across a
rewrite builds its manifests on the new splits.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import zarr
from zarr.core.buffer import cpu

import icechunk_dist as ic
from icechunk_dist import ConflictDetector, Repository, RepositoryConfig


@pytest.fixture
def repo(tmp_path: Path) -> Repository:
    return Repository.create(ic.local_filesystem_storage(str(tmp_path / "repo")))


def _data_array(repo: Repository, data: np.ndarray, chunks: tuple[int, ...],
                fill_value: int = -1, name: str = "array") -> None:
    session = repo.writable_session("main")
    root = zarr.group(store=session.store, overwrite=True)
    root.create_array(name, chunks=chunks, fill_value=fill_value, data=data)
    session.commit("create array")


def _read(repo: Repository, name: str = "array") -> np.ndarray:
    return zarr.open_array(repo.readonly_session("main").store, path=name, mode="r")[:]


# --------------------------------------------------------------------------- shift
def test_shift_left_clears_the_vacated_positions(repo: Repository) -> None:
    _data_array(repo, np.arange(50, dtype="i4"), (2,), fill_value=42)
    session = repo.writable_session("main")
    session.shift_array("/array", (-4,))
    array = zarr.open_array(session.store, path="array")
    np.testing.assert_equal(array[0:42], np.arange(8, 50))
    np.testing.assert_equal(array[42:], 42)


def test_shift_right_drops_what_leaves_the_grid(repo: Repository) -> None:
    _data_array(repo, np.arange(50, dtype="i4"), (2,))
    session = repo.writable_session("main")
    session.shift_array("/array", [4])
    array = zarr.open_array(session.store, path="array")
    np.testing.assert_equal(array[0:8], -1)
    np.testing.assert_equal(array[8:50], np.arange(0, 42))


def test_resize_then_shift_keeps_everything_and_persists(repo: Repository) -> None:
    _data_array(repo, np.arange(50, dtype="i4"), (2,), fill_value=42)
    session = repo.writable_session("main")
    array = zarr.open_array(session.store, path="array")
    array.resize((58,))
    session.shift_array("/array", (4,))
    np.testing.assert_equal(array[0:8], 42)
    np.testing.assert_equal(array[8:58], np.arange(50))
    sid = session.commit("shifted")
    np.testing.assert_equal(_read(repo)[8:58], np.arange(50))
    assert _read(repo).shape == (58,)
    # the shift is a change of chunks: its diff names them, as a status did
    parent = repo.lookup_snapshot(sid).parent_id
    assert repo.diff(from_snapshot_id=parent, to_snapshot_id=sid).updated_chunks["/array"][
        :2] == [[0], [1]]


def test_shift_2d_and_3d_mixed_offsets(repo: Repository) -> None:
    _data_array(repo, np.arange(16, dtype="i4").reshape(4, 4), (2, 2))
    session = repo.writable_session("main")
    session.shift_array("/array", (1, 0))
    array = zarr.open_array(session.store, path="array")
    np.testing.assert_equal(array[0:2, :], -1)
    np.testing.assert_equal(array[2:4, :], np.arange(8).reshape(2, 4))

    original = np.arange(6 * 4 * 8, dtype="i4").reshape(6, 4, 8)
    _data_array(repo, original, (2, 2, 4), name="cube")
    session = repo.writable_session("main")
    session.shift_array("/cube", (-1, 0, -1))
    cube = zarr.open_array(session.store, path="cube")
    np.testing.assert_equal(cube[0:4, :, 0:4], original[2:6, :, 4:8])
    np.testing.assert_equal(cube[4:6], -1)
    np.testing.assert_equal(cube[:, :, 4:8], -1)


def test_shift_by_zero_and_with_missing_chunks(repo: Repository) -> None:
    _data_array(repo, np.arange(10, dtype="i4"), (2,), fill_value=42)
    session = repo.writable_session("main")
    session.shift_array("/array", (0,))
    np.testing.assert_equal(zarr.open_array(session.store, path="array")[:], np.arange(10))

    session = repo.writable_session("main")
    arr = zarr.open_array(session.store, path="data", mode="w", shape=(3,), chunks=(1,),
                          dtype="f4", fill_value=-1)
    arr[1] = 2.0  # only c/1 written
    session.commit("initial")
    session = repo.writable_session("main")
    arr = zarr.open_array(session.store, path="data")
    session.shift_array("/data", (1,))
    np.testing.assert_equal(arr[:], [-1, -1, 2])


def test_resize_then_shift_in_one_session_skips_the_deleted_positions(
        repo: Repository) -> None:
    session = repo.writable_session("main")
    arr = zarr.open_array(session.store, path="d", mode="w", shape=(3,), chunks=(1,),
                          dtype="f4", fill_value=-1)
    arr[:] = [1.0, 2.0, 3.0]
    session.commit("init")
    session = repo.writable_session("main")
    arr = zarr.open_array(session.store, path="d")
    arr.resize((2,))
    session.shift_array("/d", (-1,))
    np.testing.assert_equal(zarr.open_array(session.store, path="d")[:], [2.0, -1.0])


# --------------------------------------------------------------------------- reindex
def test_reindex_forward_only_keeps_stale_chunks(repo: Repository) -> None:
    _data_array(repo, np.arange(50, dtype="i4"), (2,), fill_value=42)
    session = repo.writable_session("main")
    array = zarr.open_array(session.store, path="array")

    def reindex(idx: Iterable[int]) -> Iterable[int] | None:
        idx = list(idx)
        return [idx[0] - 4] if idx[0] >= 4 else None

    session.reindex_array("/array", forward=reindex)
    np.testing.assert_equal(array[0:42], np.arange(8, 50))
    np.testing.assert_equal(array[42:], np.arange(42, 50))


def test_reindex_forward_backward_clears(repo: Repository) -> None:
    _data_array(repo, np.arange(50, dtype="i4"), (2,))
    session = repo.writable_session("main")
    array = zarr.open_array(session.store, path="array")
    n_chunks = 25

    def forward(idx: Iterable[int]) -> Iterable[int] | None:
        new = next(iter(idx)) - 4
        return [new] if 0 <= new < n_chunks else None

    def backward(idx: Iterable[int]) -> Iterable[int] | None:
        new = next(iter(idx)) + 4
        return [new] if 0 <= new < n_chunks else None

    session.reindex_array("/array", forward=forward, backward=backward)
    np.testing.assert_equal(array[0:42], np.arange(8, 50))
    np.testing.assert_equal(array[42:], np.full(8, -1))


def test_reindex_with_missing_chunks(repo: Repository) -> None:
    session = repo.writable_session("main")
    arr = zarr.open_array(session.store, path="data", mode="w", shape=(3,), chunks=(1,),
                          dtype="f4", fill_value=-1)
    arr[0] = 1.0
    arr[2] = 3.0
    session.commit("initial")

    def fwd(idx: Iterable[int]) -> Iterable[int] | None:
        new = next(iter(idx)) + 1
        return [new] if 0 <= new < 3 else None

    def bwd(idx: Iterable[int]) -> Iterable[int] | None:
        new = next(iter(idx)) - 1
        return [new] if 0 <= new < 3 else None

    session = repo.writable_session("main")
    arr = zarr.open_array(session.store, path="data")
    session.reindex_array("/data", forward=fwd)
    np.testing.assert_equal(arr[:], [1, 1, 3])
    session = repo.writable_session("main")
    arr = zarr.open_array(session.store, path="data")
    session.reindex_array("/data", forward=fwd, backward=bwd)
    np.testing.assert_equal(arr[:], [-1, 1, -1])


def test_reindex_refusals(repo: Repository, tmp_path: Path) -> None:
    _data_array(repo, np.arange(8, dtype="i4"), (2,))
    session = repo.writable_session("main")
    with pytest.raises(ic.InvalidInputError, match="invalid chunk index"):
        session.reindex_array("/array", lambda idx: [next(iter(idx)) + 10])
    with pytest.raises(ic.InvalidInputError, match="dimensions"):
        session.shift_array("/array", (1, 1))
    with pytest.raises(ic.NodeNotFoundError):
        session.shift_array("/nope", (1,))
    with pytest.raises(ic.InvalidInputError, match="group"):
        session.shift_array("/", (1,))
    assert not session.has_uncommitted_changes
    with pytest.raises(ic.ReadOnlyError):
        repo.readonly_session("main").shift_array("/array", (1,))
    # an array whose chunk grid is not regular: moving chunks would corrupt it
    meta = {"zarr_format": 3, "node_type": "array", "shape": [3], "data_type": "int32",
            "chunk_grid": {"name": "rectilinear",
                           "configuration": {"kind": "inline", "chunk_shapes": [[1, 2]]}},
            "chunk_key_encoding": {"name": "default"}, "fill_value": 0,
            "codecs": [{"name": "bytes", "configuration": {"endian": "little"}}]}
    import asyncio

    asyncio.run(session.store.set("a/zarr.json",
                                  cpu.Buffer.from_bytes(json.dumps(meta).encode())))
    with pytest.raises(ic.IcechunkError, match="rectilinear"):
        session.shift_array("/a", (1,))
    with pytest.raises(ic.IcechunkError, match="rectilinear"):
        session.reindex_array("/a", lambda index: index)


@pytest.mark.parametrize("incremental", [False, True])
def test_collection_keeps_moved_chunks(tmp_path: Path, incremental: bool) -> None:
    """A moved chunk is named at its new position by the manifests that stay; the manifests
    that named it at its old one become garbage. Neither collection deletes it."""
    config = RepositoryConfig(inline_chunk_threshold_bytes=0)
    config.manifest_split_size = 2  # chunk 1 and chunk 5 sit in different manifest splits
    repo = Repository.create(ic.local_filesystem_storage(str(tmp_path / "r")), config)
    data = np.arange(20, dtype="i4")
    _data_array(repo, data, (2,))
    session = repo.writable_session("main")
    session.shift_array("/array", (-4,))
    sid = session.commit("shift")
    # make the commit that wrote the chunks unreachable, then collect everything old
    repo.expire_snapshots(repo.lookup_snapshot(sid).written_at)
    summary = repo.garbage_collect(datetime.now(UTC) + timedelta(seconds=1),
                                   incremental=incremental)
    assert summary.manifests_deleted > 0
    expected = np.concatenate([data[8:], np.full(8, -1, "i4")])
    np.testing.assert_equal(_read(repo), expected)
    # and the chunks that truly became garbage (shifted out) are gone
    assert summary.chunks_deleted == 4


# --------------------------------------------------------------------------- rewrite
def _manifests(repo: Repository, sid: str) -> int:
    return sum(len(n.manifests) for n in _snapshot(repo, sid).nodes)


def _snapshot(repo: Repository, sid: str) -> object:
    from icechunk_dist._sync import run
    from icechunk_dist.session._io import read_snapshot

    return run(read_snapshot(repo.storage, sid))


def test_rewrite_manifests_resplits_and_keeps_the_data(repo: Repository) -> None:
    data = np.arange(400, dtype="i4").reshape(20, 20)
    _data_array(repo, data, (2, 2))
    before = repo.lookup_branch("main")
    assert _manifests(repo, before) == 1  # 100 chunks, one split at the default size
    small = RepositoryConfig()
    small.manifest_split_size = 10
    rewritten = repo.reopen(small)
    sid = rewritten.rewrite_manifests("rewritten manifests", branch="main",
                                      metadata={"who": "me"})
    assert sid != before and repo.lookup_branch("main") == sid
    info = repo.lookup_snapshot(sid)
    assert (info.message, info.parent_id) == ("rewritten manifests", before)
    assert info.metadata == {"who": "me",
                             "__icechunk": {"splitting_config": {"split_sizes": 10}}}
    assert _manifests(repo, sid) == 10
    np.testing.assert_equal(_read(repo), data)
    assert repo.diff(from_snapshot_id=before, to_snapshot_id=sid).is_empty()
    # amend replaces the tip instead of adding a commit
    history = [s.id for s in repo.ancestry(branch="main")]
    again = repo.reopen().rewrite_manifests("amended", branch="main", commit_method="amend")
    assert [s.id for s in repo.ancestry(branch="main")] == [again, *history[1:]]
    assert _manifests(repo, again) == 1
    np.testing.assert_equal(_read(repo), data)
    with pytest.raises(ic.InvalidInputError):
        repo.rewrite_manifests("m", branch="main", commit_method="squash")  # type: ignore[arg-type]


def test_sessions_across_a_rewrite_and_collections_after_it(tmp_path: Path) -> None:
    config = RepositoryConfig(inline_chunk_threshold_bytes=0)
    repo = Repository.create(ic.local_filesystem_storage(str(tmp_path / "r")), config)
    data = np.arange(400, dtype="i4").reshape(20, 20)
    _data_array(repo, data, (2, 2))
    # a session opened before the rewrite changes the array's metadata and chunks
    session = repo.writable_session("main")
    arr = zarr.open_array(session.store, path="array")
    arr.resize((22, 20))
    arr[20:22, :] = 7
    arr[0:2, 0:2] = 5
    small = RepositoryConfig()
    small.manifest_split_size = 10
    repo.reopen(small).rewrite_manifests("resplit", branch="main")
    with pytest.raises(ic.ConflictError):
        session.commit("no solver: the branch moved")
    sid = session.commit("rebased across the rewrite", rebase_with=ConflictDetector())
    expected = np.concatenate([data, np.full((2, 20), 7, "i4")])
    expected[0:2, 0:2] = 5
    np.testing.assert_equal(_read(repo), expected)
    # nothing of it is lost to collections: old manifests (the other split shape) go
    repo.expire_snapshots(repo.lookup_snapshot(sid).written_at)
    for incremental in (True, False):
        repo.garbage_collect(datetime.now(UTC) + timedelta(seconds=1), incremental=incremental)
        np.testing.assert_equal(_read(repo), expected)


def test_rewrite_manifests_async_and_refusals(repo: Repository) -> None:
    import asyncio

    _data_array(repo, np.arange(8, dtype="i4"), (2,))

    async def main() -> str:
        return await repo.rewrite_manifests_async("rewritten", branch="main")

    sid = asyncio.run(main())
    assert next(iter(repo.ancestry(branch="main"))).id == sid
    repo.set_status(ic.RepoStatus(ic.RepoAvailability.read_only))
    with pytest.raises(ic.ReadOnlyError, match="repository status is read-only"):
        repo.rewrite_manifests("no", branch="main")
    repo.set_status(ic.RepoStatus(ic.RepoAvailability.online))
    with pytest.raises(ic.NotFoundError):
        repo.rewrite_manifests("no", branch="nope")
    first = Repository.create(ic.in_memory_storage())
    with pytest.raises(ic.SessionStateError, match="first commit"):
        first.rewrite_manifests("no", branch="main", commit_method="amend")
