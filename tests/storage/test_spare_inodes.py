"""Spare inodes for small local writes (docs/design/016-spare-inodes.md).

A create, an overwrite and a commit on local disk write into unnamed files (``O_TMPFILE``)
made ahead by a background thread, then link them under their names. What must hold: the
objects and the create semantics are exactly those of the staging-file path, nothing extra is
ever visible under the root (not even after a kill), a forked child never writes into its
parent's spares, and a removed root is never brought back.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

import icechunk_dist as icd
from icechunk_dist.storage import _inodes, _local

pytestmark = pytest.mark.skipif(not getattr(os, "O_TMPFILE", 0) or not os.path.isdir(
    "/proc/self/fd"), reason="O_TMPFILE and /proc are Linux features")


def _wait_for_spares(root: Path, at_least: int = _inodes.SPARES_PER_ROOT) -> None:
    deadline = time.monotonic() + 10
    while len(_inodes._spares.get(str(root), ())) < at_least:
        assert str(root) not in _inodes._unsupported, "O_TMPFILE refused on this file system"
        assert time.monotonic() < deadline, "the spares were never made"
        time.sleep(0.01)


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def _warm(root: Path) -> icd.Storage:
    """A local storage whose root has its spares made (a first put asks for them)."""
    storage = icd.local_filesystem_storage(str(root))
    storage.put_sync("warm/up", b"0")
    _wait_for_spares(root)
    return storage


def test_puts_through_spares_are_ordinary_objects(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "st"
    storage = _warm(root)
    taken: list[int] = []
    real = _local.take_spare

    def counting(r: str) -> int | None:
        fd = real(r)
        if fd is not None:
            taken.append(fd)
        return fd

    monkeypatch.setattr(_local, "take_spare", counting)
    storage.put_sync("a/b/created", b"one", mode="create")  # a new directory too
    storage.put_sync("a/over", b"first")
    storage.put_sync("a/over", b"second")  # overwrite: the rename of a linked spare
    assert len(taken) == 3, "every put took a spare"
    assert storage.get_sync("a/b/created") == b"one"
    assert storage.get_sync("a/over") == b"second"
    # a create of an existing name fails as it does without spares, and changes nothing
    with pytest.raises(icd.AlreadyExistsError):
        storage.put_sync("a/b/created", b"two", mode="create")
    assert storage.get_sync("a/b/created") == b"one"
    # a directory in the object's place is bad input, as on the staging path
    (root / "a" / "dir").mkdir()
    with pytest.raises(icd.InvalidInputError, match="directory"):
        storage.put_sync("a/dir", b"x", mode="create")
    # nothing else under the root: no staging file, no spare
    assert _files(root) == ["a/b/created", "a/over", "warm/up"]
    assert (root / "a" / "over").stat().st_mode & 0o777 == (root / "warm" / "up"
                                                               ).stat().st_mode & 0o777


def test_a_commit_writes_its_objects_into_spares(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "repo"
    repo = icd.Repository.create(icd.local_filesystem_storage(str(root)))
    s = repo.writable_session("main")
    zarr.create_array(s.store, name="x", shape=(8,), chunks=(4,), dtype="i4", fill_value=0)
    s.commit("array")
    _wait_for_spares(root)
    taken: list[int] = []
    real = _local.take_spare
    monkeypatch.setattr(_local, "take_spare",
                        lambda r: taken.append(1) or real(r))  # type: ignore[func-returns-value]
    s = repo.writable_session("main")
    zarr.open_array(s.store, path="x", mode="r+")[:] = np.arange(8, dtype="i4")
    before = set(_files(root))
    s.commit("data")
    # manifest, transaction log, snapshot and branch version (the tip hint comes after)
    assert len(taken) >= 4
    new = {p.split("/")[0] for p in set(_files(root)) - before}
    assert {"manifests", "transactions", "snapshots", "refs"} <= new
    out = zarr.open_array(icd.Repository.open(icd.local_filesystem_storage(str(root)))
                          .readonly_session("main").store, path="x", mode="r")[:]
    np.testing.assert_array_equal(out, np.arange(8, dtype="i4"))


def test_a_forked_child_never_writes_into_its_parents_spares(tmp_path: Path) -> None:
    """Parent and child each write 8 objects right after the fork; with shared spares they
    would write into the same inodes and the objects' bytes would mix."""
    root = tmp_path / "st"
    storage = _warm(root)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            for i in range(_inodes.SPARES_PER_ROOT):
                storage.put_sync(f"child/{i}", f"child {i} ".encode() * 50, mode="create")
            code = 0
        finally:
            os._exit(code)
    for i in range(_inodes.SPARES_PER_ROOT):
        storage.put_sync(f"parent/{i}", f"parent {i} ".encode() * 40, mode="create")
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    for i in range(_inodes.SPARES_PER_ROOT):
        assert storage.get_sync(f"parent/{i}") == f"parent {i} ".encode() * 40
        assert storage.get_sync(f"child/{i}") == f"child {i} ".encode() * 50


KILLED = r"""
import os, signal, sys, time
import icechunk_dist as icd
from icechunk_dist.storage import _inodes
st = icd.local_filesystem_storage(sys.argv[1])
st.put_sync("k/0", b"zero", mode="create")
while len(_inodes._spares.get(sys.argv[1], ())) < _inodes.SPARES_PER_ROOT:
    time.sleep(0.01)
st.put_sync("k/1", b"one", mode="create")
print("READY", flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_killed_writer_leaves_no_trace_of_its_spares(tmp_path: Path) -> None:
    root = tmp_path / "st"
    done = subprocess.run([sys.executable, "-c", KILLED, str(root)], capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert "READY" in done.stdout
    assert _files(root) == ["k/0", "k/1"]


def test_a_removed_root_is_not_brought_back(tmp_path: Path) -> None:
    root = tmp_path / "gone"
    storage = _warm(root)
    for path in sorted(root.rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    root.rmdir()
    storage.put_sync("again", b"1", mode="create")  # takes a spare made before the removal
    assert storage.get_sync("again") == b"1"
    (root / "again").unlink()
    root.rmdir()
    time.sleep(0.1)  # the refill the put asked for has run
    assert not root.exists()
    assert str(root) not in _inodes._spares


def test_replace_never_creates_a_directory(tmp_path: Path) -> None:
    """``put(mode="replace")`` overwrites like ``overwrite`` but, on local disk, fails with
    ObjectNotFoundError instead of creating the object's directory (a tip hint landing
    after its repository was removed must not bring it back)."""
    root = tmp_path / "st"
    storage = icd.local_filesystem_storage(str(root))
    storage.put_sync("d/k", b"one")
    storage.put_sync("d/k", b"two", mode="replace")
    assert storage.get_sync("d/k") == b"two"
    with pytest.raises(icd.NotFoundError):
        storage.put_sync("gone/k", b"x", mode="replace")
    assert not (root / "gone").exists()
    memory = icd.in_memory_storage()
    memory.put_sync("a/b", b"1", mode="replace")  # elsewhere: an overwrite
    assert memory.get_sync("a/b") == b"1"


def test_a_tip_hint_landing_after_the_repository_was_removed_brings_nothing_back(
        tmp_path: Path) -> None:
    import shutil

    from icechunk_dist import _sync, refs
    from icechunk_dist.format import RefData

    root = tmp_path / "repo"
    storage = icd.local_filesystem_storage(str(root))
    repo = icd.Repository.create(storage)
    sid = repo.lookup_branch("main")
    _sync.run(_sync.drain_background())
    shutil.rmtree(root)
    ref = RefData(snapshot_id=sid, write_id="w", written_at=0)
    _sync.run(refs._write_hint(storage, "main", 1, ref))  # what a late hint write does
    assert not root.exists()
