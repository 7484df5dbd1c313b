"""The guarantees of the foundation issue, proven on real storage (local disk, and S3 via moto).

1. Isolation: a reader never sees uncommitted data, even with chunk objects already on disk.
2. Interrupted updates (an exception, or a crash at any commit step) leave nothing visible.
3. Concurrent reader: every read is exactly one committed version, never a mix.
4. Time travel: every snapshot reads back exactly as it was; tags keep their targets.
5. Concurrent commits from N processes: exactly one wins, the rest get ConflictError,
   history stays linear and nothing is lost.
6. Bad input: corrupt or missing objects and bad keys give our errors; the repo stays readable.
"""

from __future__ import annotations

import asyncio
import itertools
import multiprocessing as mp
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
import zarr.storage

from icechunk_dist import (
    ConflictError,
    FormatError,
    InvalidInputError,
    NotFoundError,
    Repository,
    Storage,
    StorageError,
    local_filesystem_storage,
)
from icechunk_dist import refs as refs_module
from icechunk_dist.session import _commit

N_CHUNKS = 8
CHUNK = 256  # int32 elements: 1 KiB per chunk, above the 512-byte inline threshold
SHAPE = (N_CHUNKS * CHUNK,)


def objects(root: Path, kind: str) -> set[str]:
    d = root / kind
    return {p.name for p in d.iterdir()} if d.exists() else set()


def new_array(store: Any, name: str = "x", fill: int = 0) -> zarr.Array:
    """An int32 array of N_CHUNKS uncompressed 1 KiB chunks: every chunk is its own object."""
    arr = zarr.create_array(store, name=name, shape=SHAPE, chunks=(CHUNK,), dtype="i4",
                            compressors=None, fill_value=-1)
    arr[:] = fill
    return arr


def read(repo: Repository, name: str = "x", **where: str) -> np.ndarray:
    return zarr.open_array(repo.readonly_session(**where).store, path=name, mode="r")[:]


def full(v: int) -> np.ndarray:
    return np.full(SHAPE, v, dtype="i4")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "repo"


@pytest.fixture
def repo(root: Path) -> Repository:
    return Repository.create(local_filesystem_storage(root))


# ================================================================================ 1. isolation
def test_reader_never_sees_uncommitted_chunks(repo: Repository, root: Path) -> None:
    with repo.transaction("main", message="zeros") as store:
        new_array(store, fill=0)
    reader = repo.readonly_session("main")
    before = objects(root, "chunks")
    snapshots = objects(root, "snapshots")

    writer = repo.writable_session("main")
    arr = zarr.open_array(writer.store, path="x", mode="r+")
    arr[: SHAPE[0] // 2] = 7  # half of the chunks
    written = objects(root, "chunks") - before
    assert len(written) == N_CHUNKS // 2  # the chunk objects are already on disk ...
    assert objects(root, "snapshots") == snapshots  # nothing else was written

    # ... but no reader sees them: neither one opened before the writes, nor one opened now
    for r in (reader, repo.readonly_session("main")):
        np.testing.assert_array_equal(zarr.open_array(r.store, path="x", mode="r")[:], full(0))
    # the writer sees its own writes
    expected = full(0)
    expected[: SHAPE[0] // 2] = 7
    np.testing.assert_array_equal(arr[:], expected)

    arr[SHAPE[0] // 2 :] = 7
    sid = writer.commit("sevens")
    # the old reader stays on its snapshot forever; a new reader sees the whole commit
    np.testing.assert_array_equal(zarr.open_array(reader.store, path="x", mode="r")[:], full(0))
    np.testing.assert_array_equal(read(repo), full(7))
    assert repo.readonly_session("main").snapshot_id == sid
    # and so does a repository opened afresh from disk
    np.testing.assert_array_equal(read(Repository.open(repo.storage)), full(7))


def test_new_array_invisible_until_commit(repo: Repository) -> None:
    writer = repo.writable_session("main")
    new_array(writer.store, name="fresh", fill=3)
    for r in (repo.readonly_session("main"), repo.writable_session("main")):
        with pytest.raises(FileNotFoundError):
            zarr.open_array(r.store, path="fresh", mode="r")
    writer.commit("fresh")
    np.testing.assert_array_equal(read(repo, "fresh"), full(3))


# ====================================================================== 2. interrupted updates
class Interrupted(Exception):
    pass


def test_exception_inside_transaction_leaves_nothing_visible(repo: Repository,
                                                              root: Path) -> None:
    with repo.transaction("main", message="zeros") as store:
        new_array(store, fill=0)
    tip = repo.lookup_branch("main")
    snapshots = objects(root, "snapshots")

    with pytest.raises(Interrupted), repo.transaction("main", message="never") as store:
        arr = zarr.open_array(store, path="x", mode="r+")
        arr[: SHAPE[0] // 2] = 9
        new_array(store, name="y", fill=9)
        raise Interrupted("half-way through")

    assert repo.lookup_branch("main") == tip
    assert objects(root, "snapshots") == snapshots
    np.testing.assert_array_equal(read(repo), full(0))
    with pytest.raises(FileNotFoundError):
        zarr.open_array(repo.readonly_session("main").store, path="y", mode="r")
    assert len(list(repo.ancestry(branch="main"))) == 2


@pytest.mark.parametrize("crash_at", ["manifest", "transaction log", "snapshot", "ref update"])
def test_crash_at_any_commit_step_leaves_branch_unchanged(
    repo: Repository, root: Path, monkeypatch: pytest.MonkeyPatch, crash_at: str
) -> None:
    """Commit order is manifests -> transaction log -> snapshot -> ref. Dying at any step
    before the ref update leaves the branch (and every reader) where it was."""
    with repo.transaction("main", message="zeros") as store:
        new_array(store, fill=0)
    tip = repo.lookup_branch("main")

    prefix = {"manifest": "manifests/", "transaction log": "transactions/",
              "snapshot": "snapshots/"}.get(crash_at)
    if prefix is not None:
        real_write = _commit.write_object

        async def dying_write(storage: Storage, key: str, *args: Any) -> None:
            if key.startswith(prefix):
                raise Interrupted(f"process died writing {key}")
            await real_write(storage, key, *args)

        monkeypatch.setattr(_commit, "write_object", dying_write)
    else:
        async def dying_ref(*args: Any, **kwargs: Any) -> None:
            raise Interrupted("process died before moving the branch")

        monkeypatch.setattr(refs_module, "write_branch", dying_ref)

    writer = repo.writable_session("main")
    zarr.open_array(writer.store, path="x", mode="r+")[:] = 5
    with pytest.raises(Interrupted):
        writer.commit("doomed")
    monkeypatch.undo()

    assert repo.lookup_branch("main") == tip
    np.testing.assert_array_equal(read(repo), full(0))
    assert [i.message for i in repo.ancestry(branch="main")] == ["zeros",
                                                                 "Repository initialized"]
    # the repository is fully usable afterwards
    w = repo.writable_session("main")
    zarr.open_array(w.store, path="x", mode="r+")[:] = 6
    w.commit("six")
    np.testing.assert_array_equal(read(repo), full(6))


def test_plain_zarr_shows_a_torn_update(tmp_path: Path) -> None:
    """The problem we solve: plain zarr readers see a half-written update."""
    store = zarr.storage.LocalStore(tmp_path / "plain")
    new_array(store, fill=0)
    zarr.open_array(store, path="x", mode="r+")[: SHAPE[0] // 2] = 7  # interrupted here
    mean = zarr.open_array(store, path="x", mode="r")[:].mean()
    assert mean == 3.5  # neither the old value (0) nor the new one (7)


# ======================================================================= 3. concurrent reader
def test_concurrent_reader_sees_only_committed_versions(repo: Repository) -> None:
    with repo.transaction("main", message="v0") as store:
        new_array(store, fill=0)
    versions = 12
    committed = {0}
    means: list[float] = []
    torn: list[np.ndarray] = []
    errors: list[BaseException] = []
    first_read = threading.Event()
    writer_done = threading.Event()

    def writer() -> None:
        try:
            first_read.wait(30)
            for v in range(1, versions + 1):
                s = repo.writable_session("main")
                arr = zarr.open_array(s.store, path="x", mode="r+")
                for c in range(N_CHUNKS):  # chunk by chunk, like a slow job
                    arr[c * CHUNK : (c + 1) * CHUNK] = v
                committed.add(v)  # before the commit: a reader may see v from now on
                s.commit(f"v{v}")
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)
        finally:
            writer_done.set()

    def reader() -> None:
        try:
            while True:
                done = writer_done.is_set()
                data = read(repo)
                means.append(float(data.mean()))
                if not np.all(data == data[0]):
                    torn.append(data)
                first_read.set()
                if done:
                    return
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)
            first_read.set()

    threads = [threading.Thread(target=writer), threading.Thread(target=reader),
               threading.Thread(target=reader)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert not torn, f"{len(torn)} torn reads"
    assert set(means) <= {float(v) for v in committed}
    assert 0.0 in means and float(versions) in means
    assert len(means) >= 4


# ============================================================================ 4. time travel
def test_time_travel(repo: Repository, root: Path) -> None:
    states: list[tuple[str, dict[str, Any]]] = []

    def snapshot_state(session: Any) -> dict[str, Any]:
        g = zarr.open_group(session.store, mode="r")
        out: dict[str, Any] = {"attrs": dict(g.attrs), "members": sorted(g.array_keys())}
        for name in out["members"]:
            out[name] = g[name][:].copy()
        return out

    # v1: group attrs, array a
    s = repo.writable_session("main")
    g = zarr.open_group(s.store, mode="a", attributes={"version": 1})
    a = g.create_array("a", shape=(6, 4), chunks=(2, 2), dtype="f8", fill_value=0.0)
    a[:] = np.arange(24, dtype="f8").reshape(6, 4)
    states.append((s.commit("v1"), snapshot_state(s)))
    old_reader = repo.readonly_session("main")
    # v2: overwrite a few chunks, add array b
    s = repo.writable_session("main")
    g = zarr.open_group(s.store, mode="r+")
    g["a"][0:2, :] = -1.0
    b = g.create_array("b", shape=(3,), chunks=(1,), dtype="i8", fill_value=0)
    b[:] = [10, 20, 30]
    states.append((s.commit("v2"), snapshot_state(s)))
    # v3: append to a (resize + write the new rows), change attributes
    s = repo.writable_session("main")
    g = zarr.open_group(s.store, mode="r+")
    g.attrs["version"] = 3
    g["a"].resize((8, 4))
    g["a"][6:8, :] = 100.0
    states.append((s.commit("v3"), snapshot_state(s)))
    # v4: delete b, overwrite all of a
    s = repo.writable_session("main")
    g = zarr.open_group(s.store, mode="r+")
    del g["b"]
    g["a"][:] = 0.5
    states.append((s.commit("v4"), snapshot_state(s)))

    for i, (sid, _) in enumerate(states, 1):
        repo.create_tag(f"v{i}", sid)
    # later history must not disturb the tags
    s = repo.writable_session("main")
    zarr.open_group(s.store, mode="r+")["a"][:] = 42.0
    s.commit("v5")

    assert states[0][1]["members"] == ["a"]
    assert states[1][1]["members"] == ["a", "b"]
    assert states[2][1]["a"].shape == (8, 4)
    assert states[3][1]["members"] == ["a"]

    for fresh in (repo, Repository.open(local_filesystem_storage(root))):
        for i, (sid, expected) in enumerate(states, 1):
            assert fresh.lookup_tag(f"v{i}") == sid
            for session in (fresh.readonly_session(snapshot_id=sid),
                            fresh.readonly_session(tag=f"v{i}")):
                got = snapshot_state(session)
                assert got["attrs"] == expected["attrs"]
                assert got["members"] == expected["members"]
                for name in expected["members"]:
                    assert got[name].dtype == expected[name].dtype
                    np.testing.assert_array_equal(got[name], expected[name])
    # explicit values, not only "same as we read back then"
    np.testing.assert_array_equal(states[0][1]["a"], np.arange(24.0).reshape(6, 4))
    assert states[1][1]["a"][0:2].tolist() == [[-1.0] * 4] * 2
    assert states[2][1]["a"][6:].tolist() == [[100.0] * 4] * 2
    assert states[2][1]["attrs"] == {"version": 3}
    # a reader opened at v1 still shows v1 after all of that
    assert snapshot_state(old_reader)["members"] == ["a"]
    np.testing.assert_array_equal(snapshot_state(old_reader)["a"], states[0][1]["a"])
    assert [i.message for i in repo.ancestry(tag="v3")] == ["v3", "v2", "v1",
                                                            "Repository initialized"]


# ===================================================================== 5. concurrent commits
N_PROCS = 6


def _commit_racer(storage: Storage, me: int, barrier: Any, results: Any) -> None:
    """Spawned process: open a session, write, wait for all, commit; then retry if lost."""
    try:
        repo = Repository.open(storage)
        session = repo.writable_session("main")
        base = session.snapshot_id
        zarr.open_array(session.store, path="x", mode="r+")[:] = me + 1
        barrier.wait(timeout=120)  # every process holds a session on the same base
        try:
            sid = session.commit(f"writer {me}", {"writer": me})
            first: tuple[Any, ...] = ("won", base, sid)
        except ConflictError as e:
            first = ("conflict", base, e.expected_parent, e.actual_parent)
        barrier.wait(timeout=120)  # round one is over for everybody
        final = first[2] if first[0] == "won" else None
        while final is None:  # nothing is lost: a loser retries on the new tip
            session = repo.writable_session("main")
            zarr.open_array(session.store, path="x", mode="r+")[:] = me + 1
            try:
                final = session.commit(f"writer {me}", {"writer": me})
            except ConflictError:
                time.sleep(random.uniform(0, 0.05))
        results.put((me, first, final))
    except BaseException as exc:  # report, never hang the parent
        results.put((me, ("error", repr(exc)), None))


def run_commit_race(storage: Storage) -> None:
    repo = Repository.create(storage)
    with repo.transaction("main", message="base") as store:
        new_array(store, fill=0)
    base = repo.lookup_branch("main")

    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(N_PROCS), ctx.Queue()
    procs = [ctx.Process(target=_commit_racer, args=(storage, i, barrier, results))
             for i in range(N_PROCS)]
    for p in procs:
        p.start()
    try:
        outcomes = sorted(results.get(timeout=240) for _ in range(N_PROCS))
    finally:
        for p in procs:
            p.join(timeout=60)
            if p.is_alive():  # pragma: no cover
                p.kill()
    assert all(o[1][0] != "error" for o in outcomes), outcomes
    assert all(p.exitcode == 0 for p in procs)

    # round one: exactly one winner; everyone else got a ConflictError naming both parents
    winners = [o for o in outcomes if o[1][0] == "won"]
    assert len(winners) == 1, outcomes
    winner, (_, winner_base, winner_sid), _ = winners[0]
    assert winner_base == base
    for me, first, _final in outcomes:
        if me != winner:
            assert first == ("conflict", base, base, winner_sid), (me, first)
    np.testing.assert_array_equal(read(repo, snapshot_id=winner_sid), full(winner + 1))

    # history is linear and holds every writer's commit exactly once
    hist = list(repo.ancestry(branch="main"))
    assert len(hist) == 2 + N_PROCS
    for newer, older in itertools.pairwise(hist):
        assert newer.parent_id == older.id
    assert hist[-2].id == base and hist[-3].id == winner_sid
    writers = [h.metadata["writer"] for h in hist[:N_PROCS]]
    assert sorted(writers) == list(range(N_PROCS))
    assert {o[2] for o in outcomes} == {h.id for h in hist[:N_PROCS]}
    for h in hist[:N_PROCS]:
        np.testing.assert_array_equal(read(repo, snapshot_id=h.id), full(h.metadata["writer"] + 1))
    np.testing.assert_array_equal(read(repo), full(hist[0].metadata["writer"] + 1))


@pytest.mark.slow
def test_concurrent_commits_processes_local(root: Path) -> None:
    run_commit_race(local_filesystem_storage(root))


@pytest.mark.slow
@pytest.mark.s3
def test_concurrent_commits_processes_s3(make_s3_storage: Callable[..., Storage]) -> None:
    run_commit_race(make_s3_storage(prefix="race/repo"))


# =============================================================================== 6. bad input
def _two_commits(repo: Repository) -> tuple[str, str]:
    with repo.transaction("main", message="one") as store:
        new_array(store, fill=1)
    first = repo.lookup_branch("main")
    with repo.transaction("main", message="two") as store:
        zarr.open_array(store, path="x", mode="r+")[:] = 2
    return first, repo.lookup_branch("main")


def _corrupt(path: Path, how: str) -> None:
    raw = path.read_bytes()
    if how == "flip":
        b = bytearray(raw)
        b[len(b) // 2] ^= 0xFF
        raw = bytes(b)
    elif how == "truncate":
        raw = raw[: len(raw) // 2]
    elif how == "empty":
        raw = b""
    elif how == "foreign":
        raw = b'{"zarr_format": 3, "node_type": "group"}'
    path.write_bytes(raw)


CORRUPTIONS = ["flip", "truncate", "empty", "foreign"]


@pytest.mark.parametrize("how", CORRUPTIONS)
def test_corrupt_snapshot(repo: Repository, root: Path, how: str) -> None:
    first, second = _two_commits(repo)
    _corrupt(root / "snapshots" / second, how)
    name = f"snapshots/{second}"
    for call in (lambda: repo.readonly_session("main"),
                 lambda: repo.writable_session("main"),
                 lambda: repo.lookup_snapshot(second),
                 lambda: list(repo.ancestry(branch="main"))):
        with pytest.raises(FormatError) as info:
            call()
        assert info.value.object_name == name
        assert name in str(info.value)
    # every other snapshot is still readable, and the branch can be repaired
    np.testing.assert_array_equal(read(repo, snapshot_id=first), full(1))
    assert next(repo.ancestry(snapshot_id=first)).id == first
    repo.reset_branch("main", first)
    np.testing.assert_array_equal(read(repo), full(1))


@pytest.mark.parametrize("how", CORRUPTIONS)
def test_corrupt_manifest(repo: Repository, root: Path, how: str) -> None:
    with repo.transaction("main", message="x") as store:
        new_array(store, name="x", fill=1)
    before = objects(root, "manifests")
    with repo.transaction("main", message="y") as store:
        new_array(store, name="y", fill=2)
    [manifest] = objects(root, "manifests") - before  # only y's manifest was written
    _corrupt(root / "manifests" / manifest, how)

    session = repo.readonly_session("main")
    y = zarr.open_array(session.store, path="y", mode="r")  # metadata is in the snapshot
    with pytest.raises(FormatError) as info:
        y[:]
    assert info.value.object_name == f"manifests/{manifest}"
    # the other array of the same snapshot, and older snapshots, read fine
    np.testing.assert_array_equal(zarr.open_array(session.store, path="x", mode="r")[:],
                                  full(1))
    parent = repo.lookup_snapshot(session.snapshot_id).parent_id
    assert parent is not None
    np.testing.assert_array_equal(read(repo, "x", snapshot_id=parent), full(1))


def test_missing_manifest(repo: Repository, root: Path) -> None:
    with repo.transaction("main", message="x") as store:
        new_array(store, fill=1)
    [manifest] = objects(root, "manifests")
    (root / "manifests" / manifest).unlink()
    with pytest.raises(FormatError) as info:
        read(repo)
    assert info.value.object_name == f"manifests/{manifest}"
    assert "missing" in str(info.value)


def test_missing_chunk_object(repo: Repository, root: Path) -> None:
    before = objects(root, "chunks")
    s = repo.writable_session("main")
    arr = new_array(s.store, fill=4)
    s.commit("fours")
    chunk_ids = objects(root, "chunks") - before
    assert len(chunk_ids) == N_CHUNKS
    s = repo.writable_session("main")  # learn which object holds chunk 2
    before = objects(root, "chunks")
    arr = zarr.open_array(s.store, path="x", mode="r+")
    arr[2 * CHUNK : 3 * CHUNK] = 5
    s.commit("chunk 2 = 5")
    [victim] = objects(root, "chunks") - before
    (root / "chunks" / victim).unlink()

    arr = zarr.open_array(repo.readonly_session("main").store, path="x", mode="r")
    with pytest.raises(FormatError) as info:
        arr[:]
    assert info.value.object_name == f"chunks/{victim}"
    assert "'x/c/2'" in str(info.value) and "missing" in str(info.value)
    # the other chunks, and the previous snapshot, still read
    np.testing.assert_array_equal(arr[: 2 * CHUNK], np.full(2 * CHUNK, 4, "i4"))
    np.testing.assert_array_equal(arr[3 * CHUNK :], np.full(SHAPE[0] - 3 * CHUNK, 4, "i4"))
    parent = repo.lookup_snapshot(repo.lookup_branch("main")).parent_id
    assert parent is not None
    np.testing.assert_array_equal(read(repo, snapshot_id=parent), full(4))


@pytest.mark.parametrize("key", ["a//b", "../x", "/abs", "a/./b", "x/", "", "a\\b", "a\nb"])
def test_invalid_keys(repo: Repository, key: str) -> None:
    s = repo.writable_session("main")
    store = s.store
    value = zarr.core.buffer.cpu.Buffer.from_bytes(b"data")
    with pytest.raises(InvalidInputError):
        asyncio.run(store.set(key, value))
    with pytest.raises(InvalidInputError):
        asyncio.run(store.delete(key))
    assert not s.has_uncommitted_changes
    # the session and the repository are still fine
    new_array(store, fill=8)
    s.commit("after bad keys")
    np.testing.assert_array_equal(read(repo), full(8))


def test_chunk_outside_grid(repo: Repository) -> None:
    with repo.transaction("main", message="x") as store:
        new_array(store, fill=1)
    s = repo.writable_session("main")
    buf = zarr.core.buffer.cpu.Buffer.from_bytes(b"\x00" * CHUNK * 4)
    for key in (f"x/c/{N_CHUNKS}", "x/c/1000000"):
        with pytest.raises(InvalidInputError, match="outside array 'x'"):
            asyncio.run(s.store.set(key, buf))
    assert not s.has_uncommitted_changes
    # a grown array accepts the same chunk
    arr = zarr.open_array(s.store, path="x", mode="r+")
    arr.resize((SHAPE[0] + CHUNK,))
    asyncio.run(s.store.set(f"x/c/{N_CHUNKS}", buf))
    s.commit("grow")
    got = read(repo)
    assert got.shape == (SHAPE[0] + CHUNK,)
    np.testing.assert_array_equal(got[-CHUNK:], np.zeros(CHUNK, "i4"))
    np.testing.assert_array_equal(got[:-CHUNK], full(1))


def test_missing_refs_and_snapshots_are_not_found(repo: Repository) -> None:
    with pytest.raises(NotFoundError):
        repo.readonly_session("nope")
    with pytest.raises(NotFoundError):
        repo.readonly_session(snapshot_id="0" * 20)
    with pytest.raises(InvalidInputError):
        repo.readonly_session(snapshot_id="../../etc/passwd")


def test_wrong_chunk_size_for_dtype(repo: Repository) -> None:
    """An uncompressed chunk must have exactly the bytes its dtype and chunk shape say."""
    with repo.transaction("main", message="x") as store:
        new_array(store, fill=1)
    s = repo.writable_session("main")
    as_float64 = np.full(CHUNK, 2.0).tobytes()  # right element count, wrong data type
    for data in (as_float64, b"", b"\x00" * (CHUNK * 4 - 1)):
        with pytest.raises(InvalidInputError, match="wrong data type"):
            asyncio.run(s.store.set("x/c/0", zarr.core.buffer.cpu.Buffer.from_bytes(data)))
    assert not s.has_uncommitted_changes
    with pytest.raises(ValueError):  # zarr itself refuses values it cannot cast
        zarr.open_array(s.store, path="x", mode="r+")[:] = "not a number"
    assert not s.has_uncommitted_changes
    np.testing.assert_array_equal(read(repo), full(1))


def test_unreadable_virtual_ref_is_our_error(repo: Repository) -> None:
    """A manifest row this storage cannot resolve is reported, not a crash."""
    s = repo.writable_session("main")
    new_array(s.store, fill=1)
    node = s._node("x")
    assert node is not None
    s._changes.array_chunks(node.node_id, 1).set_virtual((3,), "s3://elsewhere/f.bin", 0,
                                                         CHUNK * 4, None)
    s.commit("virtual chunk 3")
    arr = zarr.open_array(repo.readonly_session("main").store, path="x", mode="r")
    with pytest.raises(StorageError, match=r"s3://elsewhere/f\.bin"):
        arr[:]
    np.testing.assert_array_equal(arr[: 3 * CHUNK], np.full(3 * CHUNK, 1, "i4"))
