"""benchmarks/core.py runs at smoke size and returns well-formed rows (not a perf test)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parent.parent / "benchmarks" / "core.py"


@pytest.mark.timeout(120)
def test_core_benchmark_smoke_rows() -> None:
    pytest.importorskip("moto")
    spec = importlib.util.spec_from_file_location("icd_bench_core", CORE)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["icd_bench_core"] = mod
    spec.loader.exec_module(mod)
    rows = mod.run(smoke=True)
    names = [r["name"] for r in rows]
    for needle in ("store.set, sequential", "store.set, 64 concurrent", "merge ", "commit ",
                   "peak RSS", "ancestry, sequential", "ancestry, Repository.ancestry",
                   "diff over", "commit after"):
        assert any(needle in n for n in names), (needle, names)
    for r in rows:
        assert set(r) == {"name", "ours", "unit", "target", "ok", "config"}
        assert r["ours"] == r["ours"] and r["ours"] > 0, r  # a measured, finite figure
        assert "FAILED" not in r["config"], r
