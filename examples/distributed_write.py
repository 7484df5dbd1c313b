"""The main job: a multi-array dataset written by a local Dask cluster in ONE commit.

What it does, step by step:

1. starts a ``distributed.LocalCluster`` with 2 worker processes (one thread each);
2. creates a fresh repository on local disk (``./demo-repo`` by default; wiped first);
3. in one writable session, creates a group ``weather`` with two float32 arrays
   ``temperature[time, y, x]`` and ``precipitation[time, y, x]`` (1 MiB chunks) and a small
   ``time`` coordinate (about ``--size-gib`` GiB in total, 1 GiB by default);
4. forks the session, writes every block on the workers through the fork with
   :func:`icechunk_dist.dask.store_dask` (tree-reduce merge on the workers, progress on),
   merges the result into the session and commits **once**;
5. prints a summary (snapshot id, arrays, chunks, bytes, wall time, throughput) and checks a
   few random chunks read back through a read-only session against a recomputation of the
   deterministic source. Exits with status 1 on any mismatch.

Run it with ``make demo`` or ``python examples/distributed_write.py [--size-gib 0.1]``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import shutil
import sys
import time
from pathlib import Path

import dask.array as da
import numpy as np
import zarr
from distributed import Client, LocalCluster

import icechunk_dist as icd
from icechunk_dist.dask import store_dask

GROUP = "weather"
NY = NX = 512            # grid: one time step of one array is 1 MiB of float32
CHUNKS = (4, 256, 256)   # zarr chunks: 4 * 256 * 256 * 4 bytes = 1 MiB
BLOCK_T = 16             # dask blocks: 16 time steps = 16 MiB, 16 zarr chunks per task
MIB = 1024 * 1024


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--path", default="./demo-repo",
                   help="repository directory (wiped and created fresh; default ./demo-repo)")
    p.add_argument("--size-gib", type=float, default=1.0,
                   help="total logical size of the dataset in GiB (default 1.0)")
    p.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    p.add_argument("--threads-per-worker", type=int, default=1)
    p.add_argument("--seed", type=int, default=20240229, help="seed of the synthetic data")
    p.add_argument("--checks", type=int, default=8,
                   help="random chunks per array to verify after the commit (default 8)")
    p.add_argument("--no-progress", action="store_true", help="do not show progress bars")
    return p.parse_args(argv)


def make_sources(n_time: int, seed: int) -> dict[str, da.Array]:
    """Deterministic synthetic data: recomputing a slice gives the same bytes."""
    rs = da.random.RandomState(seed)
    shape = (n_time, NY, NX)
    chunks = (BLOCK_T, NY, NX)
    t = da.arange(n_time, chunks=BLOCK_T, dtype="f4")[:, None, None]
    y = da.arange(NY, chunks=NY, dtype="f4")[None, :, None]
    x = da.arange(NX, chunks=NX, dtype="f4")[None, None, :]
    seasonal = 10.0 * da.sin(2 * np.pi * t / 365.0)
    field = 5.0 * da.cos(2 * np.pi * y / NY) * da.sin(2 * np.pi * x / NX)
    temperature = (283.0 + seasonal + field
                   + rs.standard_normal(shape, chunks=chunks).astype("f4")).astype("f4")
    precipitation = da.maximum(
        rs.standard_normal(shape, chunks=chunks).astype("f4") - 1.0, 0.0
    ).astype("f4")
    time_coord = da.arange(n_time, chunks=max(n_time, 1), dtype="i8")
    return {"temperature": temperature, "precipitation": precipitation, "time": time_coord}


def create_dataset(session: icd.Session, n_time: int) -> None:
    """Create the group and the empty arrays in the session (pending, not committed)."""
    root = zarr.open_group(session.store, mode="a")
    g = root.create_group(GROUP, attributes={"title": "icechunk_dist demo dataset",
                                             "source": "synthetic, deterministic"})
    for name, units in (("temperature", "K"), ("precipitation", "mm/h")):
        g.create_array(name, shape=(n_time, NY, NX), chunks=CHUNKS, dtype="f4",
                       fill_value=0.0, dimension_names=("time", "y", "x"),
                       attributes={"units": units})
    g.create_array("time", shape=(n_time,), chunks=(max(n_time, 1),), dtype="i8",
                   fill_value=0, dimension_names=("time",),
                   attributes={"units": "hours since 2000-01-01"})


def dir_size(path: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.path.getsize(os.path.join(dirpath, f))
    return total


def verify(repo: icd.Repository, sources: dict[str, da.Array], snapshot_id: str,
           n_checks: int, seed: int) -> list[str]:
    """Compare random chunks (and the whole time axis) read back with the source."""
    ro = repo.readonly_session(snapshot_id=snapshot_id)
    g = zarr.open_group(ro.store, path=GROUP, mode="r")
    rng = np.random.default_rng(seed + 1)
    problems: list[str] = []
    checked = 0
    for name, src in sources.items():
        arr = g[name]
        assert isinstance(arr, zarr.Array)
        if arr.shape != src.shape or arr.dtype != src.dtype:
            problems.append(f"{name}: shape/dtype {arr.shape}/{arr.dtype} != "
                            f"{src.shape}/{src.dtype}")
            continue
        grid = [-(-s // c) for s, c in zip(arr.shape, arr.chunks, strict=True)]
        picks = {tuple(int(rng.integers(0, n)) for n in grid)
                 for _ in range(n_checks if src.ndim > 1 else 1)}
        for coord in sorted(picks):
            sel = tuple(slice(c * k, min((c + 1) * k, s))
                        for c, k, s in zip(coord, arr.chunks, arr.shape, strict=True))
            want = np.asarray(src[sel].compute())
            got = arr[sel]
            checked += 1
            if not np.array_equal(want, got):
                problems.append(f"{name} chunk {coord}: sha1 "
                                f"{hashlib.sha1(np.ascontiguousarray(got)).hexdigest()[:12]} "
                                f"!= {hashlib.sha1(np.ascontiguousarray(want)).hexdigest()[:12]}")
    print(f"read-back check: {checked} chunks compared against a recomputation of the source")
    return problems


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    progress = not args.no_progress
    n_time = max(1, round(args.size_gib * 1024 / 2))  # 2 arrays x 1 MiB per time step
    path = Path(args.path).resolve()
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)

    t_start = time.perf_counter()
    with LocalCluster(n_workers=args.workers, threads_per_worker=args.threads_per_worker,
                      processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        print(f"cluster: {len(client.scheduler_info()['workers'])} worker processes, "
              f"{args.threads_per_worker} thread(s) each")
        repo = icd.Repository.create(icd.local_filesystem_storage(str(path)))
        print(f"repository: {path}")
        history_before = len(list(repo.ancestry(branch="main")))

        session = repo.writable_session("main")
        create_dataset(session, n_time)
        sources = make_sources(n_time, args.seed)
        logical = sum(int(s.nbytes) for s in sources.values())
        print(f"dataset: group {GROUP!r}, arrays "
              + ", ".join(f"{k}{tuple(v.shape)}" for k, v in sources.items())
              + f", {logical / MIB:,.1f} MiB logical")

        fork = session.fork()
        targets = [zarr.open_array(fork.store, path=f"{GROUP}/{name}", mode="r+")
                   for name in sources]
        t_write = time.perf_counter()
        merged = store_dask(sources=list(sources.values()), targets=targets,
                            progress=progress)
        write_s = time.perf_counter() - t_write
        t_commit = time.perf_counter()
        session.merge(merged)
        status = session.status()
        snapshot_id = session.commit(
            f"write {GROUP} ({logical / MIB:,.0f} MiB) with {args.workers} dask workers",
            {"generator": "examples/distributed_write.py", "seed": args.seed},
        )
        commit_s = time.perf_counter() - t_commit
        wall_s = time.perf_counter() - t_write

        history_after = len(list(repo.ancestry(branch="main")))
        chunks_written = sum(v if isinstance(v, int) else len(v)
                             for v in status.updated_chunks.values())
        new_arrays = sorted(status.new_arrays)
        on_disk = dir_size(path)
        chunk_bytes = dir_size(path / "chunks")
        print()
        print("summary")
        print(f"  snapshot id         : {snapshot_id}")
        print(f"  commits added       : {history_after - history_before}")
        print(f"  arrays              : {len(new_arrays)} ({', '.join(new_arrays)})")
        print(f"  chunks written      : {chunks_written:,}")
        print(f"  bytes written       : {logical:,} logical, {on_disk:,} on disk "
              f"({chunk_bytes:,} in chunk objects)")
        print(f"  write time          : {write_s:.2f} s (dask, {args.workers} workers)")
        print(f"  merge + commit time : {commit_s:.2f} s")
        print(f"  wall time           : {wall_s:.2f} s (write + merge + commit)")
        print(f"  throughput          : {logical / MIB / wall_s:,.1f} MiB/s")

        problems = verify(repo, sources, snapshot_id, args.checks, args.seed)
        if history_after - history_before != 1:
            problems.append(f"expected exactly one new commit, got "
                            f"{history_after - history_before}")
    total_s = time.perf_counter() - t_start
    if problems:
        print("READ-BACK MISMATCH:")
        for p in problems:
            print(f"  {p}")
        return 1
    print(f"read-back check: OK  (total run {total_s:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
