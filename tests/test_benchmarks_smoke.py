"""The benchmark runs at smoke size and prints its results table (not a performance test)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

RUN = Path(__file__).resolve().parent.parent / "benchmarks" / "run.py"


@pytest.mark.timeout(180)
def test_benchmark_smoke_prints_table(tmp_path: Path) -> None:
    pytest.importorskip("distributed")
    pytest.importorskip("psutil")
    proc = subprocess.run(
        [sys.executable, str(RUN), "--smoke", "--workdir", str(tmp_path / "scratch")],
        cwd=tmp_path, env=dict(os.environ, PYTHONUNBUFFERED="1"),
        capture_output=True, text=True, timeout=170,
    )
    out = proc.stdout
    assert proc.returncode == 0, (out + proc.stderr)[-4000:]
    for needle in (
        "RESULTS",
        "Distributed write",
        "bulk 1-D, ",
        "bulk 2-D, ",
        "small, 4 KiB chunks",
        "merge + commit of 10 forks (4 chunks each)",
        "one-chunk commit on local disk: storage requests",
        "Issue 24's rows",
        "Merge + commit of forks",
        "Commit of one change-set",
        "Driver peak RSS over the whole run",
    ):
        assert needle in out, f"missing {needle!r} in benchmark output:\n{out[-4000:]}"
    # one row per fork count and per commit size, each with a time
    lines = out.splitlines()
    assert any(line.split()[:2] == ["10", "1,000"] for line in lines if line.strip())
    assert any(line.split()[:1] == ["10,000"] for line in lines if line.strip())
