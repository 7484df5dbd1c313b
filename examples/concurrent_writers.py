"""Concurrent writers: independent processes commit to one branch with ``rebase_with=``.

Several "jobs" (separate processes, as cron or Kubernetes jobs would be) each open their own
session, write a disjoint block of rows of one array, wait for each other so that they all
commit at the same moment, and commit with ``rebase_with=ConflictDetector()``. One more job
appends rows to the same array meanwhile. Every job lands: a commit that finds the branch
moved rebases onto the new tip and retries (with jittered backoff), failing only on a real
conflict. Finally two sessions write the *same* chunk, to show how a conflict is named and
how ``BasicConflictSolver`` resolves it.

Run it with ``python examples/concurrent_writers.py`` (a temporary directory on local disk).
"""

from __future__ import annotations

import multiprocessing as mp
import sys
import tempfile
import time
from typing import Any

import numpy as np
import zarr

import icechunk_dist as icd

N_JOBS = 4
ROWS = 8  # rows per job
COLS = 64
CHUNKS = (4, 32)


def block(i: int) -> np.ndarray:
    return np.full((ROWS, COLS), i + 1, dtype="f4")


def writer_job(path: str, i: int, barrier: Any, results: Any) -> None:
    """An uncooperative job: its own session, its own rows, its own commit."""
    repo = icd.Repository.open(icd.local_filesystem_storage(path))
    session = repo.writable_session("main")
    arr = zarr.open_array(session.store, path="data", mode="r+")
    arr[i * ROWS:(i + 1) * ROWS] = block(i)
    barrier.wait(timeout=60)  # everybody commits at the same moment
    t0 = time.perf_counter()
    sid = session.commit(f"job {i}: rows {i * ROWS}-{(i + 1) * ROWS - 1}",
                         rebase_with=icd.ConflictDetector())
    results.put((f"job {i}", sid, time.perf_counter() - t0))


def appender_job(path: str, barrier: Any, results: Any) -> None:
    """Appends ROWS rows along axis 0 (resize + write the new chunks) meanwhile."""
    repo = icd.Repository.open(icd.local_filesystem_storage(path))
    session = repo.writable_session("main")
    arr = zarr.open_array(session.store, path="data", mode="r+")
    n = arr.shape[0]
    arr.resize((n + ROWS, COLS))
    arr[n:] = -1.0
    barrier.wait(timeout=60)
    t0 = time.perf_counter()
    sid = session.commit("append rows", rebase_with=icd.ConflictDetector())
    results.put(("appender", sid, time.perf_counter() - t0))


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="icechunk-concurrent-") as path:
        repo = icd.Repository.create(icd.local_filesystem_storage(path))
        setup = repo.writable_session("main")
        zarr.create_array(setup.store, name="data", shape=(N_JOBS * ROWS, COLS),
                          chunks=CHUNKS, dtype="f4", fill_value=0.0)
        first = setup.commit("create data")

        # 1. uncooperative jobs, all committing at once
        ctx = mp.get_context("spawn")
        barrier, results = ctx.Barrier(N_JOBS + 1), ctx.Queue()
        procs = [ctx.Process(target=writer_job, args=(path, i, barrier, results))
                 for i in range(N_JOBS)]
        procs.append(ctx.Process(target=appender_job, args=(path, barrier, results)))
        t0 = time.perf_counter()
        for p in procs:
            p.start()
        landed = [results.get(timeout=120) for _ in procs]
        for p in procs:
            p.join(timeout=60)
        print(f"{len(landed)} jobs committed concurrently:")
        for name, sid, secs in sorted(landed):
            print(f"  {name:<9} landed {sid} after {secs:.2f} s")
        print(f"all landed within {time.perf_counter() - t0:.1f} s (including process start)")

        history = list(repo.ancestry(branch="main"))
        new = history[:history.index(next(h for h in history if h.id == first))]
        print(f"history is linear: {len(new)} new snapshots on top of the setup commit")
        data = zarr.open_array(repo.readonly_session("main").store, path="data", mode="r")[:]
        print(f"final shape: {data.shape}")
        ok = (len(new) == N_JOBS + 1
              and data.shape == ((N_JOBS + 1) * ROWS, COLS)
              and all(np.array_equal(data[i * ROWS:(i + 1) * ROWS], block(i))
                      for i in range(N_JOBS))
              and bool(np.all(data[N_JOBS * ROWS:] == -1.0)))

        # 2. a real conflict: two sessions write the same chunk
        a, b = repo.writable_session("main"), repo.writable_session("main")
        zarr.open_array(a.store, path="data", mode="r+")[0:8, 0:32] = 100.0  # chunks (0,0) (1,0)
        zarr.open_array(b.store, path="data", mode="r+")[4:12, 0:32] = 200.0  # chunks (1,0) (2,0)
        a.commit("a writes rows 0-7")
        try:
            b.commit("b writes rows 4-11", rebase_with=icd.ConflictDetector())
            print("conflict: NOT DETECTED")
            ok = False
        except icd.RebaseFailedError as e:
            for c in e.conflicts:
                print(f"conflict: {c.conflict_type.name} at {c.path}, "
                      f"chunks {c.conflicted_chunks}")
        # b is intact: resolve with a policy (ours wins on chunks both wrote) and land
        b.commit("b writes rows 4-11", rebase_with=icd.BasicConflictSolver(
            on_chunk_conflict=icd.VersionSelection.UseOurs))
        col = zarr.open_array(repo.readonly_session("main").store, path="data", mode="r")[:16:2, 0]
        print(f"after UseOurs, column 0 of rows 0, 2, ..., 14: {col.tolist()}")
        ok = ok and col.tolist() == [100.0] * 2 + [200.0] * 4 + [2.0] * 2

        print("concurrent writers check: " + ("OK" if ok else "FAILED"))
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
