"""Every script in examples/ runs as a subprocess, exits 0 and prints its key lines."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SCRIPTS = sorted(p.name for p in EXAMPLES.glob("*.py"))

# extra arguments (a tmp path is substituted for "{tmp}") and lines that must appear
ARGS: dict[str, list[str]] = {
    "distributed_write.py": ["--size-gib", "0.02", "--path", "{tmp}/demo-repo"],
}
EXPECT: dict[str, list[str]] = {
    "distributed_write.py": [
        r"snapshot id\s+: [0-9A-Z]{20}",
        r"commits added\s+: 1\b",
        r"arrays\s+: 3 ",
        r"chunks written\s+: \d",
        r"bytes written\s+: [\d,]+ logical, [\d,]+ on disk",
        r"throughput\s+: [\d,.]+ MiB/s",
        r"read-back check: OK",
    ],
    "concurrent_writers.py": [r"concurrent writers check: OK"],
    "reprocess.py": [
        r"job 1 \(function\) : [0-9A-Z]{20} on daily \(new branch\)",
        r"job 2 \(rechunk\)  : [0-9A-Z]{20} on by-time",
        r"reprocess check: OK",
    ],
    "ingest_netcdf.py": [
        r"run 1: ingested 4 file\(s\) along 'time' in 1 commit",
        r"run 2: ingested 2 file\(s\).*skipped 4 already landed",
        r"run 3: nothing new to ingest",
        r"open_mfdataset check: OK",
    ],
    "quickstart.py": [
        r"commit 1 on main: [0-9A-Z]{20}",
        r"tags: \['v1'\]",
        r"time travel check: OK",
    ],
}


def test_every_example_is_covered() -> None:
    assert "distributed_write.py" in SCRIPTS
    assert "quickstart.py" in SCRIPTS


@pytest.mark.parametrize("script", SCRIPTS)
def test_example_runs(script: str, tmp_path: Path) -> None:
    if script == "distributed_write.py":
        pytest.importorskip("distributed")
    args = [a.replace("{tmp}", str(tmp_path)) for a in ARGS.get(script, [])]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{script} exited {proc.returncode}:\n{out[-4000:]}"
    for pattern in EXPECT.get(script, []):
        assert re.search(pattern, proc.stdout), f"{script}: no line matching {pattern!r}:\n" \
            + proc.stdout[-4000:]
