"""In-process core benchmarks: the engine's own write, merge, commit and history paths.

Rows (each measured in a fresh subprocess, so that one row's memory never counts in another's
peak RSS):

1. ``store.set`` of N chunks of 4 KiB in one process, on local disk: the raw async
   ``store.set`` loop (sequential awaits, and ``asyncio.gather`` with 64 in flight) and what
   zarr users do (``zarr.open_array(session.store)[...] = data`` with 4 KiB chunks).
2. ``session.merge`` of 1,000 forks of 1,000 refs each (fork change-sets built in-process,
   columnar, random chunk ids), then their commit.
3. ``commit`` of one change-set of 1M refs: time and driver peak RSS (sampled every 2 ms in a
   thread, process-wide: interpreter and imports included).
4. ``ancestry`` of 1,000 snapshots on the moto S3 server (its own process) with 10 ms of
   added latency per request (``FaultyStorage``): sequential parent walk (one GET per
   snapshot, the old algorithm), the same GETs issued all at once with the ids known (the
   server's throughput floor) vs ``Repository.ancestry`` (concurrent prefetch), and
   ``Repository.diff`` over the same range; then the walks on local disk + the latency.
5. commit cost against history length: a one-chunk commit after 1,000 commits against one
   after 10, interleaved, on in-memory storage (the engine's own cost: targeted) and on
   local disk (for information), with the requests per commit counted.

Usage::

    python benchmarks/core.py           # full sizes (a few minutes)
    python benchmarks/core.py --smoke   # tiny sizes (a few seconds)

``run(smoke) -> list[dict]`` returns the rows (keys: name, ours, unit, target, ok, config).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

# benchmarks/_rss.py beside this file, however this module is loaded (tests load it by path)
_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
from _rss import PeakRSS  # noqa: E402

MIB = 1024 * 1024
Row = dict[str, Any]

FULL = {"set_chunks": 100_000, "zarr_chunks": 100_000, "forks": 1_000, "refs_per_fork": 1_000,
        "commit_refs": 1_000_000, "history": 1_000, "latency": 0.010, "commits_history": 1_000}
SMOKE = {"set_chunks": 500, "zarr_chunks": 500, "forks": 20, "refs_per_fork": 100,
         "commit_refs": 20_000, "history": 12, "latency": 0.002, "commits_history": 20}


# ------------------------------------------------------------------------------ helpers
def _remove(path: Path | str) -> None:
    """Remove a repository directory once the tip hints of its commits have landed (they
    are written in the background after each commit, docs/design/006-o1-branch-tips.md; a
    hint landing during the removal would bring a directory back)."""
    from icechunk_dist import _sync

    _sync.run(_sync.drain_background())
    shutil.rmtree(path, ignore_errors=True)


def _row(name: str, ours: float, unit: str, target: str, ok: bool | None,
         config: str) -> Row:
    return {"name": name, "ours": ours, "unit": unit, "target": target, "ok": ok,
            "config": config}


def _new_repo(root: Path, wrap: Callable[[Any], Any] = lambda s: s) -> Any:
    """A new repository in the empty directory ``root``, on ``wrap(local storage)``."""
    import icechunk_dist as icd

    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    return icd.Repository.create(wrap(icd.local_filesystem_storage(str(root))))


# ------------------------------------------------------------------------------ store.set
def _settle() -> None:
    """Flush the page cache's dirty data (the previous part's 100,000 files, and their
    deletion) before a timed part, so that writeback is not timed in the next part (on this
    VM's disk the part that runs second is still often slower: docs/performance.md)."""
    os.sync()
    time.sleep(1.0)


def bench_store_set(sz: dict[str, Any], work: Path) -> list[Row]:
    import zarr
    from zarr.core.buffer import default_buffer_prototype

    n = sz["set_chunks"]
    rows: list[Row] = []
    payload = np.arange(1024, dtype="f4").tobytes()  # 4 KiB
    buf = default_buffer_prototype().buffer.from_bytes(payload)

    def setup(name: str) -> Any:
        repo = _new_repo(work / name)
        session = repo.writable_session("main")
        zarr.create_array(session.store, name="x", shape=(n * 1024,), chunks=(1024,),
                          dtype="f4", compressors=None, fill_value=0.0)
        return session

    # sequential awaits: one store.set after the other
    session = setup("set_seq")
    store = session.store

    async def seq() -> None:
        for i in range(n):
            await store.set(f"x/c/{i}", buf)

    _settle()
    c0 = time.process_time()
    t0 = time.perf_counter()
    asyncio.run(seq())
    dt = time.perf_counter() - t0
    cpu_us = (time.process_time() - c0) / n * 1e6
    t1 = time.perf_counter()
    session.commit("set")
    commit_s = time.perf_counter() - t1
    rows.append(_row("store.set, sequential awaits", n / dt, "chunks/s", ">= 4,000",
                     n / dt >= 4000,
                     f"{n:,} chunks of 4 KiB, local disk, one process; {cpu_us:.0f} us CPU "
                     f"per chunk; commit after: {commit_s:.2f} s"))
    _remove(work / "set_seq")

    # concurrent: 64 store.set in flight (what zarr and dask threads do)
    session = setup("set_conc")
    store = session.store

    async def conc() -> None:
        # 64 writers sharing one iterator: 64 store.set in flight at any time. (A gather of
        # n semaphore-guarded tasks measures asyncio instead: 100,000 pending tasks halve
        # the rate even on in-memory storage, 28k/s against 55k/s.)
        todo = iter(range(n))

        async def writer() -> None:
            for i in todo:
                await store.set(f"x/c/{i}", buf)

        await asyncio.gather(*(writer() for _ in range(64)))

    _settle()
    c0 = time.process_time()
    t0 = time.perf_counter()
    asyncio.run(conc())
    dt = time.perf_counter() - t0
    cpu_us = (time.process_time() - c0) / n * 1e6
    session.commit("set")
    rows.append(_row("store.set, 64 concurrent", n / dt, "chunks/s", ">= 4,000",
                     n / dt >= 4000,
                     f"{n:,} chunks of 4 KiB, local disk, 64 concurrent writers (64 in flight); "
                     f"{cpu_us:.0f} us CPU per chunk"))
    _remove(work / "set_conc")

    # zarr array write: what users do
    nz = sz["zarr_chunks"]
    repo = _new_repo(work / "set_zarr")
    session = repo.writable_session("main")
    arr = zarr.create_array(session.store, name="x", shape=(nz * 1024,), chunks=(1024,),
                            dtype="f4", compressors=None, fill_value=0.0)
    data = np.arange(nz * 1024, dtype="f4") + 1
    arr = zarr.open_array(session.store, path="x")
    _settle()
    t0 = time.perf_counter()
    arr[:] = data
    dt = time.perf_counter() - t0
    session.commit("zarr")
    rows.append(_row("zarr array[...] = data", nz / dt, "chunks/s", "(info)", None,
                     f"{nz:,} chunks of 4 KiB, no compressor, zarr default concurrency"))
    # plain zarr LocalStore for comparison
    plain = work / "plain.zarr"
    _remove(plain)
    parr = zarr.create_array(zarr.storage.LocalStore(str(plain)), name="x",
                             shape=(nz * 1024,), chunks=(1024,), dtype="f4",
                             compressors=None, fill_value=0.0)
    _settle()
    t0 = time.perf_counter()
    parr[:] = data
    pdt = time.perf_counter() - t0
    rows.append(_row("plain zarr LocalStore, same write", nz / pdt, "chunks/s", "(baseline)",
                     None, f"ratio icechunk/plain: {pdt / dt:.2f}x"))
    _remove(work / "set_zarr")
    _remove(plain)
    return rows


# ------------------------------------------------------------------------------ merge
def _fake_table(ndim: int, coords: np.ndarray, rng: np.random.Generator) -> Any:
    from icechunk_dist.format import KIND_NATIVE, ChunkTable

    n = len(coords)
    return ChunkTable(
        ndim=ndim,
        coords=np.ascontiguousarray(coords, dtype=np.int64),
        kinds=np.full(n, KIND_NATIVE, np.uint8),
        ids=rng.integers(0, 256, size=(n, 12), dtype=np.uint8),
        offsets=np.zeros(n, np.uint64),
        lengths=np.full(n, 4096, np.uint64),
        url_idx=np.full(n, -1, np.int32),
    )


def _grid(start: int, n: int, width: int) -> np.ndarray:
    lin = np.arange(start, start + n, dtype=np.int64)
    return np.stack([lin // width, lin % width], axis=1)


def _session_with_array(n_refs: int, root: Path) -> tuple[Any, Any, str]:
    import zarr

    repo = _new_repo(root)
    session = repo.writable_session("main")
    width = 1000
    rows = -(-n_refs // width)
    zarr.create_array(session.store, name="x", shape=(rows * 32, width * 32),
                      chunks=(32, 32), dtype="f4", compressors=None, fill_value=0.0)
    node = session._node("x")
    return repo, session, node.node_id


def bench_merge(sz: dict[str, Any], work: Path) -> list[Row]:
    from icechunk_dist.changeset import ArrayChunks

    nf, per = sz["forks"], sz["refs_per_fork"]
    best = float("inf")
    commit_s = 0.0
    for rep in range(3):
        _repo, session, nid = _session_with_array(nf * per, work / "merge")
        rng = np.random.default_rng(rep)
        root = session.fork()
        forks = []
        for i in range(nf):
            f = root.child()
            # normalized, as a fork's folded (or unpickled) change-set always is
            table = _fake_table(2, _grid(i * per, per, 1000), rng).normalized()
            f._changes.chunks[nid] = ArrayChunks(2, table)
            forks.append(f)
        gc.collect()
        t0 = time.perf_counter()
        session.merge(*forks)
        dt = time.perf_counter() - t0
        t1 = time.perf_counter()
        session.commit("merge")
        commit_s = time.perf_counter() - t1
        best = min(best, dt)
        _remove(work / "merge")
    ms = best * 1000
    return [_row(f"merge {nf:,} forks x {per:,} refs", ms, "ms", "<= 12", ms <= 12,
                 f"session.merge(*forks), best of 3; commit of the merged "
                 f"{nf * per:,} refs after: {commit_s:.2f} s")]


# ------------------------------------------------------------------------------ commit
def bench_commit(sz: dict[str, Any], work: Path) -> list[Row]:
    from icechunk_dist.changeset import ArrayChunks

    n = sz["commit_refs"]
    _repo, session, nid = _session_with_array(n, work / "commit")
    rng = np.random.default_rng(1)
    session._changes.chunks[nid] = ArrayChunks(2, _fake_table(2, _grid(0, n, 1000), rng))
    gc.collect()
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        session.commit(f"{n} refs")
        dt = time.perf_counter() - t0
    _remove(work / "commit")
    peak = mem.peak / MIB
    return [
        _row(f"commit {n:,} refs", dt, "s", "<= 0.8", dt <= 0.8,
             "one columnar change-set, fake native ids, manifests of 100,000 refs, local disk"),
        _row(f"commit {n:,} refs: driver peak RSS", peak, "MiB", "< 512", peak < 512,
             f"process RSS sampled every 2 ms (before: {mem.start / MIB:,.0f} MiB)"),
    ]


# ------------------------------------------------------------------------------ history
def _build_history(repo: Any, n: int) -> list[float]:
    """``n`` small commits on main; return the time of each commit."""
    import zarr

    session = repo.writable_session("main")
    zarr.create_array(session.store, name="x", shape=(n + 1,), chunks=(1,), dtype="i4",
                      fill_value=0)
    session.commit("array")
    times = []
    for i in range(n):
        s = repo.writable_session("main")
        a = zarr.open_array(s.store, path="x")
        a[i] = i + 1
        t0 = time.perf_counter()
        s.commit(f"c{i}")
        times.append(time.perf_counter() - t0)
    return times


def bench_history(sz: dict[str, Any], work: Path) -> list[Row]:
    import icechunk_dist as icd
    from icechunk_dist.session._io import gather_limited, read_snapshot, read_transaction_log
    from icechunk_dist.storage import Fault, FaultyStorage, s3_storage

    n = sz["history"]
    lat = sz["latency"]
    rows: list[Row] = []
    local = work / "hist"
    repo = _new_repo(local)
    _build_history(repo, n)
    tip = repo.lookup_branch("main")
    first = list(repo.ancestry(branch="main"))[-2].id  # the commit creating the array

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from _moto import moto_server  # a server in its own process: it must not share our GIL

    with moto_server() as (url, bucket):
        s3 = s3_storage(bucket=bucket, prefix="repo", region="us-east-1", endpoint_url=url,
                        allow_http=True, access_key_id="testing",
                        secret_access_key="testing")

        async def upload() -> None:
            sem = asyncio.Semaphore(32)
            files = [p for p in local.rglob("*") if p.is_file()]

            async def one(p: Path) -> None:
                async with sem:
                    await s3.put(str(p.relative_to(local)), p.read_bytes())

            await asyncio.gather(*(one(p) for p in files))

        asyncio.run(upload())
        slow = FaultyStorage(s3, [Fault.latency(lat)])
        srepo = icd.Repository.open(slow)

        async def sequential() -> int:
            sid: str | None = tip
            count = 0
            while sid is not None:
                snap = await read_snapshot(slow, sid)
                count += 1
                sid = snap.parent_id
            return count

        t0 = time.perf_counter()
        count = asyncio.run(sequential())
        seq_s = time.perf_counter() - t0
        # the floor: the same GETs with every id known up front, all issued at once (at
        # the repository's max_concurrent_requests): what the server can serve at best
        ids = [e.id for e in repo.ancestry(branch="main")]
        limit = srepo.config.max_concurrent_requests or 64

        async def all_at_once(with_logs: bool) -> None:
            reads = [read_snapshot(slow, i) for i in ids]
            if with_logs:
                reads += [read_transaction_log(slow, i) for i in ids[:n]]
            await gather_limited(reads, limit)

        t0 = time.perf_counter()
        asyncio.run(all_at_once(False))
        floor_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        got = list(srepo.ancestry(branch="main"))
        conc_s = time.perf_counter() - t0
        assert len(got) == count, (len(got), count)
        cfg = (f"{count:,} snapshots on moto S3 (own process) + {lat * 1000:.0f} ms latency "
               f"per request (FaultyStorage), {limit} requests in flight")
        rows.append(_row("ancestry, sequential parent walk (old)", seq_s, "s", "(baseline)",
                         None, cfg))
        rows.append(_row("ancestry, all GETs at once, ids known (floor)", floor_s, "s",
                         "(baseline)", None, f"{cfg}; the server's throughput bound"))
        rows.append(_row("ancestry, Repository.ancestry", conc_s, "s",
                         "<= floor x 1.5", conc_s <= floor_s * 1.5,
                         f"{cfg}; {seq_s / max(conc_s, 1e-9):.1f}x faster than sequential, "
                         f"{conc_s / max(floor_s, 1e-9):.2f}x the floor"))
        t0 = time.perf_counter()
        asyncio.run(all_at_once(True))
        dfloor_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        d = srepo.diff(from_snapshot_id=first, to_branch="main")
        diff_s = time.perf_counter() - t0
        assert len(d.updated_chunks.get("/x", [])) == n
        rows.append(_row(f"diff over {n:,} commits", diff_s, "s", "<= floor x 1.5",
                         diff_s <= dfloor_s * 1.5,
                         f"{cfg}; reads {n:,} snapshots and {n:,} transaction logs; "
                         f"floor (same GETs at once) {dfloor_s:.2f} s, "
                         f"{seq_s / max(diff_s, 1e-9):.1f}x faster than the sequential walk"))
    # the same walks on local disk with the same latency: the backend's own cost is small,
    # so the round-trip structure shows (moto serves each request with CPU on this machine)
    slow_local = FaultyStorage(icd.local_filesystem_storage(str(local)), [Fault.latency(lat)])
    lrepo = icd.Repository.open(slow_local)

    async def sequential_local() -> int:
        sid: str | None = tip
        count = 0
        while sid is not None:
            snap = await read_snapshot(slow_local, sid)
            count += 1
            sid = snap.parent_id
        return count

    t0 = time.perf_counter()
    count = asyncio.run(sequential_local())
    lseq = time.perf_counter() - t0
    t0 = time.perf_counter()
    got = list(lrepo.ancestry(branch="main"))
    lconc = time.perf_counter() - t0
    assert len(got) == count
    lcfg = f"{count:,} snapshots on local disk + {lat * 1000:.0f} ms latency per request"
    rows.append(_row("ancestry, sequential parent walk (old), local", lseq, "s",
                     "(baseline)", None, lcfg))
    rows.append(_row("ancestry, Repository.ancestry, local", lconc, "s",
                     "< sequential / 5", lconc < lseq / 5,
                     f"{lcfg}; {lseq / max(lconc, 1e-9):.1f}x faster"))
    _remove(local)
    return rows


def _history_repo(root: Path | None, n_chunks: int, commits: int) -> tuple[Any, Any]:
    """A repository (on local disk under ``root``, or in memory) whose array ``x`` has all
    ``n_chunks`` chunks written in its first commit, followed by ``commits`` one-chunk
    commits (so every repository built here has the same manifest size and differs only in
    the length of its history); returned with the request-counting storage it is on."""
    import zarr

    import icechunk_dist as icd
    from icechunk_dist.storage import FaultyStorage

    # FaultyStorage without faults: it counts the requests
    repo = (icd.Repository.create(FaultyStorage(icd.in_memory_storage())) if root is None
            else _new_repo(root, FaultyStorage))
    counter = repo.storage
    s = repo.writable_session("main")
    a = zarr.create_array(s.store, name="x", shape=(n_chunks,), chunks=(1,), dtype="i4",
                          fill_value=0)
    a[:] = np.arange(1, n_chunks + 1, dtype="i4")
    s.commit("array")
    for i in range(commits):
        _one_commit(repo, i, n_chunks)
    return repo, counter


def _one_commit(repo: Any, i: int, n_chunks: int) -> float:
    """Overwrite one chunk of ``x`` and commit; return the time of the commit alone."""
    import zarr

    s = repo.writable_session("main")
    zarr.open_array(s.store, path="x")[i % n_chunks] = -i
    t0 = time.perf_counter()
    s.commit(f"c{i}")
    return time.perf_counter() - t0


def bench_commit_vs_history(sz: dict[str, Any], work: Path) -> list[Row]:
    """A commit on a branch with ``n`` commits of history against one on a branch with 10,
    interleaved (one commit on each, in turn) so that both see the same machine state;
    both arrays have the same chunks, so only the history differs.

    The targeted row is on in-memory storage: it shows the engine's own cost, which is what
    could grow with history. The local-disk row is shown for information: there, file
    creation on this VM's rate-limited disk dominates and swings either way between runs
    (0.5x to 2.3x in back-to-back runs of the same code). Both count the requests."""
    n = sz["commits_history"]
    n_chunks, short_len, rounds = 64, 10, max(20, n // 10)
    rows: list[Row] = []
    for where in ("in memory", "local disk"):
        roots = ((None, None) if where == "in memory"
                 else (work / "chist-long", work / "chist-short"))
        long_repo, long_counter = _history_repo(roots[0], n_chunks, n)
        short_repo, short_counter = _history_repo(roots[1], n_chunks, short_len)
        short_t: list[float] = []
        long_t: list[float] = []
        for c in (long_counter, short_counter):
            c.reset_counters()
        for r in range(rounds):
            pair = ((short_repo, short_t), (long_repo, long_t))
            for repo, out in (pair if r % 2 == 0 else pair[::-1]):
                out.append(_one_commit(repo, n + r, n_chunks))

        def per_commit(counter: Any) -> str:
            return ", ".join(f"{k} {v / rounds:g}" for k, v in sorted(counter.requests.items()))

        short_req, long_req = per_commit(short_counter), per_commit(long_counter)
        early, late = float(np.median(short_t)), float(np.median(long_t))
        for root in roots:
            if root is not None:
                _remove(root)
        ratio = late / early
        cfg = (f"one-chunk commits, {where}, {n_chunks} chunks in both manifests, {rounds} "
               f"commits on each branch interleaved; median after {short_len} "
               f"{early * 1000:.2f} ms, after {n:,} {late * 1000:.2f} ms; requests per "
               f"commit after {short_len}: {short_req}; after {n:,}: {long_req}")
        if where == "in memory":
            rows.append(_row(f"commit after {n:,} commits / after {short_len}, in memory",
                             ratio, "x", "<= 1.5, same requests",
                             ratio <= 1.5 and short_req == long_req, cfg))
        else:
            rows.append(_row(f"commit after {n:,} commits / after {short_len}, local disk",
                             ratio, "x", "(info)", None, cfg))
    return rows


BENCHES: dict[str, Callable[[dict[str, Any], Path], list[Row]]] = {
    "store_set": bench_store_set,
    "merge": bench_merge,
    "commit": bench_commit,
    "history": bench_history,
    "commit_history": bench_commit_vs_history,
}


# ------------------------------------------------------------------------------ driver
def _run_one(name: str, smoke: bool) -> list[Row]:
    """Run one benchmark in a fresh interpreter (its memory and caches are its own)."""
    proc = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--only", name, "--json"]
        + (["--smoke"] if smoke else []),
        capture_output=True, text=True, check=False,
    )
    if proc.returncode != 0:
        err = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return [_row(name, float("nan"), "", "", False, f"FAILED: {err}")]
    return list(json.loads(proc.stdout.strip().splitlines()[-1]))


def run(smoke: bool) -> list[Row]:
    """Every core benchmark; the rows of all of them. Full sizes run each benchmark in its
    own subprocess (memory and caches of one never count in another); smoke sizes run
    in this process, to finish in seconds."""
    rows: list[Row] = []
    if smoke:
        with tempfile.TemporaryDirectory(prefix="icd-core-") as d:
            for bench in BENCHES.values():
                rows.extend(bench(SMOKE, Path(d)))
            _remove(d)
        return rows
    for name in BENCHES:
        rows.extend(_run_one(name, smoke))
    return rows


def _fmt(v: float) -> str:
    if v != v:
        return "nan"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) >= 1:
        return f"{v:,.2f}"
    return f"{v:.3f}"


def print_table(rows: list[Row]) -> None:
    w = max(len(r["name"]) for r in rows)
    print(f"{'benchmark':<{w}}  {'ours':>10} {'unit':<9} {'target':<17} {'ok':<4} config")
    for r in rows:
        ok = "-" if r["ok"] is None else ("yes" if r["ok"] else "NO")
        print(f"{r['name']:<{w}}  {_fmt(r['ours']):>10} {r['unit']:<9} {r['target']:<17} "
              f"{ok:<4} {r['config']}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="tiny sizes (a few seconds)")
    p.add_argument("--only", choices=sorted(BENCHES), help="run one benchmark in-process")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = p.parse_args(argv)
    sz = SMOKE if args.smoke else FULL
    if args.only:
        with tempfile.TemporaryDirectory(prefix="icd-core-") as d:
            rows = BENCHES[args.only](sz, Path(d))
            _remove(d)
    else:
        rows = run(args.smoke)
    if args.json:
        print(json.dumps(rows))
    else:
        print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
