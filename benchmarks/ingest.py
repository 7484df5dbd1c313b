"""Benchmark: ingest 60 ERA5-like daily NetCDF files vs ``xr.open_mfdataset(...).to_zarr()``.

Not a test. The workload of issue 21: 60 daily NetCDF4 files like ERA5 downloads (24 hourly
steps x 181 x 360, two int16-packed variables, ~6 MB each, ``tests/netcdf_data.py``'s
``era5_like_files``), on one ``distributed.LocalCluster`` (2 worker processes x 1 thread),
side by side in one run on the same files:

- **ours**: ``icechunk_dist.ingest.ingest(repo, files, client=client)``: expand, summarize
  every file on the workers, check, create the arrays, write every file's region through a
  fork on the workers, tree-merge, record the inputs, one commit;
- **plain Zarr**: ``xr.open_mfdataset(files, parallel=True, ...).to_zarr(dir)`` into a plain
  Zarr v3 directory (no versioning, no checks, no commit). Both write the same chunks (one
  file's 24 steps x the whole grid) with the same int16 packing and zarr's default codecs.

Reported: the best of ``repeat`` runs of each side (sides alternate), the throughput ratio
(plain time / our time; target >= 1.0x, with exactly one commit), and separately the
first-file overhead: one file each way, where fixed costs dominate (creating the
repository and arrays, the commit, task round trips).

Usage::

    python benchmarks/ingest.py            # 60 files, best of 2
    python benchmarks/ingest.py --smoke    # 6 small files, once

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

TARGET = 1.0


def _files(workdir: Path, n: int, smoke: bool) -> list[Path]:
    from netcdf_data import era5_like_files  # tests/netcdf_data.py

    grid = {"nlat": 46, "nlon": 90} if smoke else {}
    return era5_like_files(workdir / "netcdf", n, **grid)


def _ours(files: list[Path], dest: Path, client: Any) -> tuple[float, int]:
    from icechunk_dist.ingest import ingest

    t = time.perf_counter()
    result = ingest(str(dest), [str(p) for p in files], client=client)
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


def _best_of(files: list[Path], tmp: Path, client: Any, repeat: int, tag: str
             ) -> tuple[float, float, int]:
    ours, base, commits = [], [], 0
    for i in range(repeat):
        for side in ((0, 1) if i % 2 == 0 else (1, 0)):
            dest = tmp / f"{tag}-{'ours' if side == 0 else 'plain'}-{i}"
            shutil.rmtree(dest, ignore_errors=True)
            if side == 0:
                s, commits = _ours(files, dest, client)
                ours.append(s)
            else:
                base.append(_baseline(files, dest, client))
            shutil.rmtree(dest, ignore_errors=True)
    return min(ours), min(base), commits


def run(smoke: bool = False, *, repeat: int | None = None, workers: int = 2,
        workdir: str | None = None) -> list[dict[str, Any]]:
    """Run the benchmark; return one row per measured case."""
    from distributed import Client, LocalCluster

    n = 6 if smoke else 60
    repeat = repeat or (1 if smoke else 2)
    tmp = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    tmp.mkdir(parents=True, exist_ok=True)
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                           dashboard_address=":0")
    client = Client(cluster, set_as_default=False)
    try:
        client.run(exec, _WARM)
        files = _files(tmp, n, smoke)
        size = sum(p.stat().st_size for p in files)
        _best_of(files[:1], tmp, client, 1, "warm")  # first use of each code path
        best, best_base, commits = _best_of(files, tmp, client, repeat, "all")
        one, one_base, _ = _best_of(files[:1], tmp, client, max(repeat, 3), "one")
        ratio = best_base / best
        grid = "24 x 46 x 90" if smoke else "24 x 181 x 360"
        return [{
            "name": f"ingest {n} ERA5-like NetCDF files",
            "ours_s": round(best, 3),
            "baseline_s": round(best_base, 3),
            "ratio": round(ratio, 3),
            "target": TARGET,
            "ok": bool(ratio >= TARGET and commits == 1),
            "config": (f"{n} files x {grid}, two int16-packed variables, "
                       f"{size / 1e6:.1f} MB; {workers} workers x 1 thread; commits: "
                       f"{commits}; best of {repeat}; ours {size / 1e6 / best:.1f} MB/s, "
                       f"plain {size / 1e6 / best_base:.1f} MB/s"),
            "commits": commits,
        }, {
            "name": "first-file overhead (1 file each way)",
            "ours_s": round(one, 3),
            "baseline_s": round(one_base, 3),
            "ratio": round(one_base / one, 3),
            "target": None,
            "ok": None,
            "config": (f"fixed costs: ours {one - best / n:.2f} s above one file's share of "
                       f"the {n}-file run, plain {one_base - best_base / n:.2f} s; best of "
                       f"{max(repeat, 3)}"),
            "commits": 1,
        }]
    finally:
        client.close()
        cluster.close()
        if not workdir:
            shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="6 small files, one repeat")
    p.add_argument("--repeat", type=int, default=None)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--workdir", default=None)
    args = p.parse_args(argv)
    rows = run(args.smoke, repeat=args.repeat, workers=args.workers, workdir=args.workdir)
    print("RESULTS: ingestion vs open_mfdataset(..., parallel=True).to_zarr(...)")
    for r in rows:
        verdict = "" if r["ok"] is None else (", OK" if r["ok"] else ", BELOW TARGET")
        target = "" if r["target"] is None else f" (target >= {r['target']}x)"
        print(f"  {r['name']}: ours {r['ours_s']:.2f} s, plain Zarr {r['baseline_s']:.2f} s, "
              f"ratio {r['ratio']:.2f}x{target}, commits {r['commits']}{verdict}")
        print(f"    {r['config']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
