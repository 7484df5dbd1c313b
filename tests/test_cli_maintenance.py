"""``icechunk-dist gc`` and ``icechunk-dist expire``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import zarr

import icechunk_dist as icd
from icechunk_dist.cli import main


def test_expire_then_gc(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo = icd.Repository.create(icd.local_filesystem_storage(tmp_path))
    ids = []
    for i in range(3):
        s = repo.writable_session("main")
        if i == 0:
            zarr.create_array(s.store, name="x", shape=(300,), chunks=(100,), dtype="f8")
        zarr.open_array(s.store, path="x")[:] = np.random.default_rng(i).random(300)
        ids.append(s.commit(f"c{i}"))
    cutoff = repo.lookup_snapshot(ids[2]).written_at
    capsys.readouterr()
    assert main(["expire", str(tmp_path), "--older-than", cutoff.isoformat()]) == 0
    out = capsys.readouterr().out
    assert ids[1] in out and ids[0] in out and "expired 2 snapshots" in out
    soon = (datetime.now(UTC) + timedelta(seconds=5)).isoformat()
    assert main(["gc", str(tmp_path), "--older-than", soon, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.count("would delete") == 1 and "6 chunks" in out and "2 snapshots" in out
    assert main(["gc", str(tmp_path), "--older-than", soon, "--incremental"]) == 0
    assert "deleted 6 chunks" in capsys.readouterr().out
    got = zarr.open_array(repo.readonly_session("main").store, path="x", mode="r")[:]
    np.testing.assert_array_equal(got, np.random.default_rng(2).random(300))


def test_expire_needs_a_cutoff(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    icd.Repository.create(icd.local_filesystem_storage(tmp_path))
    assert main(["expire", str(tmp_path)]) != 0
    assert "--older-than" in capsys.readouterr().err
    assert main(["gc", str(tmp_path), "--older-than", "yesterday"]) != 0
