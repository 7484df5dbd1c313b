"""Benchmark: ingest 200 small NetCDF files vs ``xr.open_mfdataset(...).to_zarr(...)``.

Not a test. On one ``distributed.LocalCluster`` (2 worker processes x 1 thread), in one run
on the same machine and the same files:

- **ours**: ``icechunk_dist.ingest.ingest(repo, files, client=client)``: expand, summarize
  every file on the workers, check, create the arrays, write every file's region through a
  fork on the workers, tree-merge, one commit (records the inputs for safe re-runs);
- **baseline**: ``xr.open_mfdataset(files, parallel=True, ...).to_zarr(dir)`` into a plain
  Zarr v3 directory (no versioning, no checks, no commit).

The ratio is throughput (baseline time / our time); the target is >= 0.8x, with exactly one
commit. The best of ``repeat`` runs of each side is reported (sides alternate).

Usage::

    python benchmarks/ingest.py            # 200 files, best of 2
    python benchmarks/ingest.py --smoke    # 20 files, once

``run(smoke)`` returns the result rows (name, ours_s, baseline_s, ratio, target, ok, config)
for ``benchmarks/run.py``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

TARGET = 0.8


def _files(workdir: Path, n: int) -> list[Path]:
    from netcdf_data import write_files  # tests/netcdf_data.py

    return write_files(workdir / "netcdf", n, steps=24, nlat=32, nlon=64)


def _ours(files: list[Path], dest: Path, client: Any) -> tuple[float, int]:
    from icechunk_dist.ingest import ingest

    t = time.perf_counter()
    result = ingest(str(dest), [str(p) for p in files], client=client, progress=False)
    return time.perf_counter() - t, len(result.snapshot_ids)


def _baseline(files: list[Path], dest: Path, client: Any) -> float:
    import xarray as xr

    t = time.perf_counter()
    with client.as_current():
        ds = xr.open_mfdataset(files, combine="nested", concat_dim="time", parallel=True,
                               data_vars="minimal", coords="minimal", compat="override",
                               join="exact", engine="h5netcdf")
        ds.to_zarr(dest, mode="w", consolidated=False, zarr_format=3)
        ds.close()
    return time.perf_counter() - t


# imports on the workers, outside both timings. A builtin (not a function of this module):
# run.py loads this file under another module name, which workers cannot import by reference
_WARM = "import h5netcdf, xarray, icechunk_dist.ingest"


def run(smoke: bool = False, *, repeat: int | None = None, workers: int = 2,
        workdir: str | None = None) -> list[dict[str, Any]]:
    """Run the benchmark; return one row per measured case."""
    from distributed import Client, LocalCluster

    n = 20 if smoke else 200
    repeat = repeat or (1 if smoke else 2)
    tmp = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    tmp.mkdir(parents=True, exist_ok=True)
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                           dashboard_address=":0")
    client = Client(cluster, set_as_default=False)
    try:
        client.run(exec, _WARM)
        files = _files(tmp, n)
        ours, base, commits = [], [], 0
        for i in range(repeat):
            for side in ((0, 1) if i % 2 == 0 else (1, 0)):
                dest = tmp / f"{'ours' if side == 0 else 'plain'}-{i}"
                shutil.rmtree(dest, ignore_errors=True)
                if side == 0:
                    s, commits = _ours(files, dest, client)
                    ours.append(s)
                else:
                    base.append(_baseline(files, dest, client))
                shutil.rmtree(dest, ignore_errors=True)
        best, best_base = min(ours), min(base)
        ratio = best_base / best
        size = sum(p.stat().st_size for p in files)
        return [{
            "name": f"ingest {n} NetCDF files",
            "ours_s": round(best, 3),
            "baseline_s": round(best_base, 3),
            "ratio": round(ratio, 3),
            "target": TARGET,
            "ok": bool(ratio >= TARGET and commits == 1),
            "config": (f"{n} files x 24 steps x 32 x 64, 4 variables, {size / 2**20:.1f} MiB; "
                       f"{workers} workers x 1 thread; commits: {commits}; best of {repeat}"),
            "commits": commits,
        }]
    finally:
        client.close()
        cluster.close()
        if not workdir:
            shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="20 files, one repeat")
    p.add_argument("--repeat", type=int, default=None)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--workdir", default=None)
    args = p.parse_args(argv)
    rows = run(args.smoke, repeat=args.repeat, workers=args.workers, workdir=args.workdir)
    print("RESULTS: ingestion vs open_mfdataset(...).to_zarr(...)")
    for r in rows:
        print(f"  {r['name']}: ours {r['ours_s']:.2f} s, plain Zarr {r['baseline_s']:.2f} s, "
              f"ratio {r['ratio']:.2f}x (target >= {r['target']}x), commits {r['commits']}, "
              f"{'OK' if r['ok'] else 'BELOW TARGET'}")
        print(f"    {r['config']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
