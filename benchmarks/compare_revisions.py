"""Compare the core benchmarks of two revisions in one run: the regression check.

Runs every benchmark of ``benchmarks/core.py`` (merge, commit, store.set, history, commit
against history length) for a baseline git revision and for the working tree, each side in
its own subprocess with its own code on ``PYTHONPATH`` and its own copy of ``core.py``, the
order of the two sides alternating between repetitions, and prints the median of each row
for both sides with the change. Both sides run on the same machine in the same run, so the
change is the code's, not the machine's.

Usage::

    python benchmarks/compare_revisions.py                      # baseline: the previous release
    python benchmarks/compare_revisions.py --baseline b222616 --repeat 3
    python benchmarks/compare_revisions.py --smoke              # tiny sizes, seconds

A row is reported as a regression when the working tree is worse than the baseline by more
than ``--tolerance`` (default 10 %) in the row's own direction (times, requests and memory:
lower is better; ratios ``x`` and rates ``/s``: higher is better).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BENCHES = ["merge", "commit", "commit_history", "history", "store_set"]
DEFAULT_BASELINE = "b222616"  # main before issue 20 (docs/performance.md run 5)


def export_revision(rev: str, dest: Path) -> Path:
    """The tree of git revision ``rev`` under ``dest`` (``git archive``, no work tree)."""
    blob = subprocess.run(["git", "-C", str(ROOT), "archive", rev], check=True,
                          capture_output=True).stdout
    with tarfile.open(fileobj=BytesIO(blob)) as tar:
        tar.extractall(dest, filter="data")
    return dest


def run_side(tree: Path, bench: str, smoke: bool) -> list[dict[str, Any]]:
    """The rows of one benchmark of ``benchmarks/core.py`` run with ``tree``'s code."""
    env = dict(os.environ, PYTHONPATH=str(tree))
    cmd = [sys.executable, str(tree / "benchmarks" / "core.py"), "--only", bench, "--json"]
    if smoke:
        cmd.append("--smoke")
    proc = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["?"])[-1]
        print(f"  {bench} failed in {tree}: {last}", file=sys.stderr)
        return []
    return list(json.loads(proc.stdout.strip().splitlines()[-1]))


def higher_is_better(unit: str) -> bool:
    return unit.strip() in ("x",) or "/s" in unit


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--baseline", default=DEFAULT_BASELINE, help="git revision to compare to")
    p.add_argument("--repeat", type=int, default=3, help="runs of each side (median kept)")
    p.add_argument("--smoke", action="store_true", help="tiny sizes")
    p.add_argument("--bench", nargs="+", choices=BENCHES, default=BENCHES)
    p.add_argument("--tolerance", type=float, default=0.10)
    args = p.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="icd-compare-") as tmp:
        base = export_revision(args.baseline, Path(tmp) / "baseline")
        sides = {"baseline": base, "current": ROOT}
        values: dict[tuple[str, str], dict[str, list[float]]] = {}
        units: dict[str, str] = {}
        order = list(sides)
        print(f"core benchmarks, baseline {args.baseline} vs the working tree, "
              f"{args.repeat} run(s) each, order alternating"
              + (" (smoke sizes)" if args.smoke else ""), flush=True)
        for i in range(args.repeat):
            for bench in args.bench:
                for side in (order if i % 2 == 0 else order[::-1]):
                    for row in run_side(sides[side], bench, args.smoke):
                        units[row["name"]] = row["unit"]
                        values.setdefault((bench, row["name"]), {}).setdefault(
                            side, []).append(float(row["ours"]))
            print(f"  run {i + 1} of {args.repeat} done", flush=True)

    regressions = 0
    width = max((len(name) for _, name in values), default=10)
    print(f"\n{'row':<{width}}  {'unit':<9} {'baseline':>11} {'current':>11}  change")
    for (_bench, name), sides_v in values.items():
        if "baseline" not in sides_v or "current" not in sides_v:
            print(f"{name:<{width}}  (only in {', '.join(sides_v)})")
            continue
        b = statistics.median(sides_v["baseline"])
        c = statistics.median(sides_v["current"])
        unit = units[name]
        if b != b or c != c or b == 0:
            change, bad = "n/a", False
        else:
            better = c / b if higher_is_better(unit) else b / c
            change = f"{better:.2f}x {'better' if better >= 1 else 'worse'}"
            bad = better < 1 - args.tolerance
        regressions += bad
        print(f"{name:<{width}}  {unit:<9} {b:>11.4g} {c:>11.4g}  {change}"
              + ("  REGRESSION" if bad else ""))
    print(f"\n{regressions} row(s) worse than the baseline by more than "
          f"{args.tolerance:.0%}")
    return 1 if regressions else 0


if __name__ == "__main__":
    sys.exit(main())
