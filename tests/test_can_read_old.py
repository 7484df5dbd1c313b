"""The format is a promise: a repository written by format version 1 reads exactly as it did.

``tests/data/repo-v1`` was written once by ``tests/data/make_repo_v1.py`` (never re-run: a
future format gets its own directory) and is kept byte for byte. Everything below is checked
against literals taken when it was written, never against a fresh generation: ids,
timestamps, messages, history, refs, the ops log, every value of every array, chunk sizes
and diffs. The repository is copied to a temporary directory first, and reading it must
not change a byte of the copy (docs/spec.md sections 1 and 9).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
from zarr.core.buffer import default_buffer_prototype

import icechunk_dist as icd
from icechunk_dist._sync import run

DATA = Path(__file__).resolve().parent / "data"
STORED = DATA / "repo-v1"
VIRTUAL_SRC = DATA / "repo-v1-virtual.bin"
VIRTUAL_FILE = Path("/tmp/icechunk_dist-repo-v1/virtual.bin")  # the url the repo records
VIRTUAL_URL = f"file://{VIRTUAL_FILE}"

INIT = "1HDV307M70FHX40MVBRJ"
C1 = "0TPAJWZMJP2Y7GSEVHSA"  # expired: no ref reaches it any more
C2 = "0AHKERAYSXFTAQ1FXAWZ"  # tag v1; re-parented onto INIT by expire_snapshots
C3 = "1WD2E6FQ6QFVQ9PMVM5E"
C4 = "0PZDXHSVVGDFK4DJ2Z6Y"  # main
D1 = "14G4WBRZA36ACP4DYPEA"  # dev's commit before it was amended
D1A = "1HXM9WCNASKCPZ2PZ30J"  # dev: the amended commit
D1X = "0PKY3QN49ENSWWV5CBRH"  # written by amend on top of D1, reached by no ref


def _t(sec: int, micro: int) -> datetime:
    return datetime(2026, 12, 7, 9, 5, sec, micro, tzinfo=UTC)


SNAPSHOTS = {  # id: (parent, written_at, message, metadata)
    INIT: (None, _t(36, 414051), "Repository initialized", {}),
    C1: (INIT, _t(36, 452043), "c1: group g, temps, old", {"step": 1}),
    C2: (INIT, _t(36, 562523), "c2: sharded s", {"step": 2}),
    C3: (C2, _t(36, 575348), "c3: temps row 0, row 4 appended, answer 43", {"step": 3}),
    C4: (C3, _t(36, 578560), "c4: delete g/old", {}),
    D1: (C2, _t(36, 582852), "d1: virtual virt", {}),
    D1X: (D1, _t(36, 585068), "d1 amended: virtual virt with units", {}),
    D1A: (C2, _t(36, 585068), "d1 amended: virtual virt with units", {}),
}

LOOSE = b"a loose key, not an array chunk\n" * 20
FILL_U4 = 4294967295
COMMON_SIZES = {  # zarr key -> stored bytes (native chunks and objects, inline chunks)
    "g/scalar/c": 17, "g/temps/c/0/0": 1034, "g/temps/c/1/0": 21, "g/temps/c/2/0": 1034,
    "s/c/0": 580, "s/c/1": 196, "v2enc/0.0": 12, "v2enc/1.0": 12,
}


def _row(r: int) -> np.ndarray:
    """Row ``r`` of ``g/temps`` as written: a multiplicative hash of the element index."""
    return ((np.arange(256, dtype=np.uint64) + 256 * r) * 2654435761 % 2**32).astype("<u4")


def _tree(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.fixture
def repo(tmp_path: Path) -> Any:
    copy = tmp_path / "repo-v1"
    shutil.copytree(STORED, copy)
    before = _tree(copy)
    assert before == _tree(STORED)
    if not VIRTUAL_FILE.exists() or VIRTUAL_FILE.read_bytes() != VIRTUAL_SRC.read_bytes():
        VIRTUAL_FILE.parent.mkdir(parents=True, exist_ok=True)
        staged = VIRTUAL_FILE.with_name(f"virtual.bin.{os.getpid()}")
        shutil.copyfile(VIRTUAL_SRC, staged)
        os.replace(staged, VIRTUAL_FILE)
    yield icd.Repository.open(icd.local_filesystem_storage(copy))
    assert _tree(copy) == before, "reading an old repository changed it"


def test_the_stored_repository_is_unchanged() -> None:
    # the fixture is kept byte for byte: a changed digest means it was edited or
    # regenerated, which breaks the promise (restore it from git, never update the digest)
    tree = _tree(STORED)
    digest = hashlib.sha256(
        "".join(f"{k}\0{v}\n" for k, v in sorted(tree.items())).encode()).hexdigest()
    assert digest == "5df74546954314570f50ed36c538a667f8cc782608905247a03655efcff3aaed"
    assert hashlib.sha256(VIRTUAL_SRC.read_bytes()).hexdigest() == (
        "b603d4e73df1fa982eb835365744a6bff51ac65aa4084721b21f3370ca06bf07")
    dirs: dict[str, int] = {}
    for k in tree:
        dirs[k.split("/")[0]] = dirs.get(k.split("/")[0], 0) + 1
    assert dirs == {"amends": 1, "chunks": 5, "config": 1, "manifests": 9, "metadata": 1,
                    "refs": 15, "repo": 1, "snapshots": 8, "transactions": 8}
    for k in tree:  # every framed object says format version 1
        if k.split("/")[0] in ("repo", "snapshots", "manifests", "transactions", "refs"):
            assert (STORED / k).read_bytes()[:9] == b"ICDIST\x00\x01\x01", k
    assert sum(p.stat().st_size for p in STORED.rglob("*") if p.is_file()) < 200_000


def test_refs_and_config(repo: icd.Repository) -> None:
    assert repo.list_branches() == {"main", "dev"}
    assert repo.list_tags() == {"v1"}
    assert repo.lookup_branch("main") == C4
    assert repo.lookup_branch("dev") == D1A
    assert repo.lookup_tag("v1") == C2
    for gone, lookup in (("tmp", repo.lookup_branch), ("gone", repo.lookup_tag)):
        with pytest.raises(icd.NotFoundError):
            lookup(gone)
    with pytest.raises(icd.AlreadyExistsError):
        repo.create_tag("gone", C4)  # a deleted tag's name stays taken
    assert repo.get_metadata() == {"project": "repo-v1 fixture", "format": 1}
    assert repo.config.max_concurrent_requests == 16  # saved config (config/)
    assert repo.config.manifest_split_size == 2  # from the repo marker
    assert repo.config.inline_chunk_threshold_bytes == 512


def test_history(repo: icd.Repository) -> None:
    for sid, (parent, written_at, message, metadata) in SNAPSHOTS.items():
        info = repo.lookup_snapshot(sid)
        assert (info.id, info.parent_id, info.written_at, info.message,
                dict(info.metadata)) == (sid, parent, written_at, message, metadata)
    for where, ids in ((dict(branch="main"), [C4, C3, C2, INIT]),
                       (dict(branch="dev"), [D1A, C2, INIT]),
                       (dict(tag="v1"), [C2, INIT]),
                       (dict(snapshot_id=D1X), [D1X, D1, C2, INIT]),
                       (dict(snapshot_id=C1), [C1, INIT])):
        hist = list(repo.ancestry(**where))  # type: ignore[arg-type]
        assert [h.id for h in hist] == ids, where
        assert [(h.parent_id, h.written_at, h.message, dict(h.metadata)) for h in hist] == [
            SNAPSHOTS[i] for i in ids]


def test_ops_log(repo: icd.Repository) -> None:
    u = icd.UpdateType
    log = [(e.kind, e.updated_at) for e in repo.ops_log()]
    assert log[:10] == [
        (u.TagDeleted(name="gone"), _t(36, 598366)),
        (u.TagCreated(name="gone"), _t(36, 597792)),
        (u.BranchDeleted(name="tmp", previous_snap_id=C3), _t(36, 597250)),
        (u.BranchCreated(name="tmp"), _t(36, 595659)),
        (u.CommitAmended(branch="dev", previous_snap_id=D1, new_snap_id=D1A), _t(36, 594628)),
        (u.NewCommit(branch="dev", new_snap_id=D1), _t(36, 583208)),
        (u.BranchCreated(name="dev"), _t(36, 580152)),
        (u.NewCommit(branch="main", new_snap_id=C4), _t(36, 579323)),
        (u.NewCommit(branch="main", new_snap_id=C3), _t(36, 575821)),
        (u.TagCreated(name="v1"), _t(36, 565075)),
    ]
    # the commit of C2: expiry re-parented C2 onto INIT, so today's log reads it as a reset
    # from C1; a log that follows original_parent_id would call it a commit
    assert log[10][0] in (u.BranchReset(name="main", previous_snap_id=C1),
                          u.NewCommit(branch="main", new_snap_id=C2))
    assert log[10][1] == _t(36, 563000)
    assert log[11:] == [
        (u.NewCommit(branch="main", new_snap_id=C1), _t(36, 452473)),
        (u.MetadataChanged(), _t(36, 416083)),
        (u.ConfigChanged(), _t(36, 415525)),
        (u.RepoInitialized(), _t(36, 414051)),
    ]


def _keys(session: icd.Session) -> list[str]:
    async def go() -> list[str]:
        return sorted([k async for k in session.store.list()])

    return run(go())


def _sizes(session: icd.Session) -> dict[str, int]:
    async def go() -> dict[str, int]:
        return {k: await session.store.getsize(k) async for k in session.store.list()
                if not k.endswith("zarr.json")}

    return run(go())


def _array(session: icd.Session, path: str) -> zarr.Array:
    return zarr.open_array(session.store, path=path, mode="r")


def _check_common(s: icd.Session, *, answer: int) -> None:
    """What every snapshot from C2 on holds, apart from g/temps and the later arrays."""
    root = zarr.open_group(s.store, mode="r")
    assert dict(root.attrs) == {"title": "repo-v1"}
    assert dict(zarr.open_group(s.store, path="g", mode="r").attrs) == {
        "answer": answer, "nested": {"a": [1, 2]}}
    scalar = _array(s, "g/scalar")
    assert (scalar.shape, scalar.dtype, scalar[()]) == ((), np.dtype("<f8"), 3.25)
    v2 = _array(s, "v2enc")
    assert (v2.shape, v2.chunks, v2.dtype) == ((2, 3), (1, 3), np.dtype("i1"))
    np.testing.assert_array_equal(v2[:], [[1, 2, 3], [4, 5, 6]])
    sh = _array(s, "s")
    assert (sh.shape, sh.chunks, sh.shards, sh.dtype, sh.fill_value) == (
        (256,), (32,), (128,), np.dtype("<i4"), -1)
    want = np.concatenate([np.arange(128), np.arange(1000, 1032), np.full(96, -1)])
    np.testing.assert_array_equal(sh[:], want)
    np.testing.assert_array_equal(sh[120:136], want[120:136])  # across the two shards
    assert sh[200] == -1
    loose = run(s.store.get("notes/readme.txt", default_buffer_prototype()))
    assert loose is not None and loose.to_bytes() == LOOSE


def _check_temps(s: icd.Session, rows: int, row0: np.ndarray) -> None:
    temps = _array(s, "g/temps")
    assert (temps.shape, temps.chunks, temps.dtype, temps.fill_value) == (
        (rows, 256), (1, 256), np.dtype("<u4"), FILL_U4)
    want = [row0, np.full(256, 7), _row(2), np.full(256, FILL_U4), np.full(256, 9)][:rows]
    np.testing.assert_array_equal(temps[:], np.stack(want))
    np.testing.assert_array_equal(temps[2, 10:14], _row(2)[10:14])


def test_main(repo: icd.Repository) -> None:
    s = repo.readonly_session("main")
    assert s.snapshot_id == C4
    assert _keys(s) == [
        "g/scalar/c", "g/scalar/zarr.json", "g/temps/c/0/0", "g/temps/c/1/0", "g/temps/c/2/0",
        "g/temps/c/4/0", "g/temps/zarr.json", "g/zarr.json", "notes/readme.txt", "s/c/0",
        "s/c/1", "s/zarr.json", "v2enc/0.0", "v2enc/1.0", "v2enc/zarr.json", "zarr.json"]
    assert _sizes(s) == {**COMMON_SIZES, "g/temps/c/4/0": 21, "notes/readme.txt": 640}
    assert _row(0)[:4].tolist() == [0, 2654435761, 1013904226, 3668339987]
    _check_temps(s, 5, _row(0) + 1)
    _check_common(s, answer=43)
    assert "old" not in zarr.open_group(s.store, path="g", mode="r")
    assert s.all_virtual_chunk_locations() == []


def test_tag_and_expired_snapshot(repo: icd.Repository) -> None:
    s = repo.readonly_session(tag="v1")
    assert s.snapshot_id == C2
    _check_temps(s, 4, _row(0))
    _check_common(s, answer=42)
    np.testing.assert_array_equal(_array(s, "g/old")[:], [1, 2, 3])
    assert _sizes(s) == {**COMMON_SIZES, "g/old/c/0": 15, "notes/readme.txt": 640}
    # the expired snapshot still reads (nothing was garbage-collected)
    c1 = repo.readonly_session(snapshot_id=C1)
    _check_temps(c1, 4, _row(0))
    assert _keys(c1) == [
        "g/old/c/0", "g/old/zarr.json", "g/scalar/c", "g/scalar/zarr.json", "g/temps/c/0/0",
        "g/temps/c/1/0", "g/temps/c/2/0", "g/temps/zarr.json", "g/zarr.json", "v2enc/0.0",
        "v2enc/1.0", "v2enc/zarr.json", "zarr.json"]


def test_dev_virtual_and_amended(repo: icd.Repository) -> None:
    # reading virtual chunks takes an authorized container (issue 22): the old repository's
    # refs read once one covering their file is configured and authorized, never before
    with pytest.raises(icd.VirtualChunkAccessError, match="no virtual chunk container"):
        _array(repo.readonly_session(snapshot_id=D1), "virt")[:]
    prefix = f"file://{VIRTUAL_FILE.parent}/"
    config = icd.RepositoryConfig()
    config.set_virtual_chunk_container(icd.VirtualChunkContainer(
        prefix, icd.local_filesystem_store(str(VIRTUAL_FILE.parent))))
    repo = repo.reopen(config, authorize_virtual_chunk_access={
        prefix: icd.LocalFileSystemAccess})
    for sid, attrs in ((D1A, {"units": "m"}), (D1, {})):
        s = repo.readonly_session(snapshot_id=sid)
        _check_temps(s, 4, _row(0))
        _check_common(s, answer=42)
        virt = _array(s, "virt")
        assert dict(virt.attrs) == attrs
        np.testing.assert_array_equal(virt[:], np.arange(32) * 3)
        np.testing.assert_array_equal(virt[14:18], [42, 45, 48, 51])
        assert s.all_virtual_chunk_locations() == [VIRTUAL_URL]
        assert _sizes(s) == {**COMMON_SIZES, "g/old/c/0": 15, "notes/readme.txt": 640,
                             "virt/c/0": 64, "virt/c/1": 64}
    assert repo.readonly_session("dev").snapshot_id == D1A


def test_diffs(repo: icd.Repository) -> None:
    d = repo.diff(from_tag="v1", to_branch="main")
    assert (d.new_groups, d.new_arrays, d.deleted_groups, d.deleted_arrays, d.updated_groups,
            d.updated_arrays, d.updated_keys) == (
        set(), set(), set(), {"/g/old"}, {"/g"}, {"/g/temps"}, set())
    assert {k: sorted(v) for k, v in d.updated_chunks.items()} == {
        "/g/temps": [[0, 0], [4, 0]]}
    d = repo.diff(from_tag="v1", to_branch="dev")
    assert (d.new_arrays, d.deleted_arrays, d.updated_groups, d.updated_arrays) == (
        {"/virt"}, set(), set(), set())
    assert {k: sorted(v) for k, v in d.updated_chunks.items()} == {"/virt": [[0], [1]]}
    d = repo.diff(from_snapshot_id=C3, to_branch="main")
    assert (d.deleted_arrays, d.updated_groups, d.updated_arrays, d.updated_chunks) == (
        {"/g/old"}, set(), set(), {})
    with pytest.raises(icd.InvalidInputError, match="expired"):
        repo.diff(from_snapshot_id=INIT, to_branch="main")  # spans the re-parented C2
