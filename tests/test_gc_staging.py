"""Staging files of killed writers are collected (scenario 7).

A put on local disk writes ``<key>#<digits>`` and then renames (or hard-links) it onto
``<key>``. A writer killed between the two leaves the staging file; listings never show it,
so garbage collection used to leave it forever. A full collection now deletes staging files
last written before its cut-off (a live writer's is younger) and reports them.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import zarr

import icechunk_dist as icd
from icechunk_dist import _sync

# The writer: a real commit whose process dies right after its first staging file is
# written, before the rename that would make it an object (SIGKILL: no cleanup runs). Chunk
# objects are written in place (fresh names, Storage.put(mode="fresh")), so the first staged
# object is one the commit writes: a manifest, its transaction log or its snapshot.
WRITER = r"""
import os, signal, sys
import numpy as np, zarr
import icechunk_dist as icd
from icechunk_dist import _sync

real_replace, real_link = os.replace, os.link

def die_if_staged(src, *args, **kwargs):
    if "#" in os.path.basename(os.fspath(src)) and os.path.exists(src):
        print("STAGED", os.fspath(src), flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    return (real_link if kwargs.pop("_link", False) else real_replace)(src, *args, **kwargs)

repo = icd.Repository.open(icd.local_filesystem_storage(sys.argv[1]))
s = repo.writable_session("main")
arr = zarr.open_array(s.store, path="x", mode="r+")
os.replace = die_if_staged
os.link = lambda src, dst: die_if_staged(src, dst, _link=True)
arr[:] = 7
s.commit("never lands")
print("COMMITTED", flush=True)
"""

STAGING = re.compile(r".+#\d+")


def staging_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and STAGING.fullmatch(p.name))


def killed_writer(root: Path) -> tuple[icd.Repository, Path]:
    """A repository with array ``x`` (all 1), and the staging file a killed writer left."""
    repo = icd.Repository.create(icd.local_filesystem_storage(root))
    s = repo.writable_session("main")
    zarr.create_array(s.store, name="x", shape=(4096,), chunks=(4096,), dtype="f8",
                      fill_value=0.0, compressors=None)[:] = 1.0
    s.commit("ones")
    _sync.run(_sync.drain_background())  # the commit's tip hint, written behind it
    done = subprocess.run([sys.executable, "-c", WRITER, str(root)], capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == -signal.SIGKILL, (done.returncode, done.stdout, done.stderr)
    assert "STAGED" in done.stdout and "COMMITTED" not in done.stdout
    (left,) = staging_files(root)
    assert done.stdout.split()[1] == str(left)
    assert left.stat().st_size > 0  # a whole object, never renamed into place
    return repo, left


def read_x(repo: icd.Repository) -> np.ndarray:
    return zarr.open_array(repo.readonly_session("main").store, path="x", mode="r")[:]


def test_a_killed_writers_staging_file_is_collected(tmp_path: Path) -> None:
    repo, left = killed_writer(tmp_path / "repo")
    key = left.relative_to(tmp_path / "repo").as_posix()
    assert key not in {m.key for m in repo.storage.list_sync("")}  # invisible to listings
    later = datetime.now(UTC) + timedelta(minutes=1)

    dry = repo.garbage_collect(later, dry_run=True)
    assert dry.staging_files_deleted == 1 and left.exists()
    assert "1 staging files of unfinished writes" in str(dry)

    summary = repo.garbage_collect(later)
    assert summary.staging_files_deleted == 1
    assert summary.bytes_deleted >= 4096 * 8
    # the collection's fence moved the branch, whose tip hint is written behind it through
    # a staging file of its own (renamed into place): wait for it before looking
    _sync.run(_sync.drain_background())
    assert not left.exists() and staging_files(tmp_path / "repo") == []
    np.testing.assert_array_equal(read_x(repo), 1.0)  # the repository is untouched
    assert [i.message for i in repo.ancestry(branch="main")] == ["ones",
                                                                 "Repository initialized"]
    assert repo.garbage_collect(later).staging_files_deleted == 0


def test_a_staging_file_younger_than_the_cutoff_is_kept(tmp_path: Path) -> None:
    """A staging file last written after the cut-off may be a live writer's: kept."""
    repo, left = killed_writer(tmp_path / "repo")
    written = datetime.fromtimestamp(left.stat().st_mtime, UTC)
    kept = repo.garbage_collect(written - timedelta(seconds=5))
    assert kept.staging_files_deleted == 0 and left.exists()
    # the same file, aged as a dead writer's would be, goes once it is older than the cut-off
    old = (written - timedelta(days=8)).timestamp()
    os.utime(left, (old, old))
    assert repo.garbage_collect(written - timedelta(days=7)).staging_files_deleted == 1
    assert not left.exists()


def test_incremental_runs_leave_them_to_a_full_run(tmp_path: Path) -> None:
    repo, left = killed_writer(tmp_path / "repo")
    later = datetime.now(UTC) + timedelta(minutes=1)
    assert repo.garbage_collect(later, incremental=True).staging_files_deleted == 0
    assert left.exists()
    assert repo.garbage_collect(later).staging_files_deleted == 1
    assert not left.exists()


def test_the_cli_reports_them(tmp_path: Path, capsys: object) -> None:
    from icechunk_dist.cli import main

    _, left = killed_writer(tmp_path / "repo")
    later = (datetime.now(UTC) + timedelta(minutes=1)).isoformat()
    assert main(["gc", str(tmp_path / "repo"), "--older-than", later]) == 0
    out = capsys.readouterr().out  # type: ignore[attr-defined]
    assert "1 staging files of unfinished writes" in out
    assert not left.exists()
