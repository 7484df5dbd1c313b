"""Branch-tip reads and commits after a short and a long history (issue 9, O(1) branch reads).

For each backend (local disk; the moto S3 server on 127.0.0.1) and each history length
(default 100 and 3,000 versions of ``main``), prints the median time of

- ``Repository.lookup_branch("main")`` (the tip-hint read of docs/design/006-o1-branch-tips.md),
- the listing read it replaced (list every version, then read the newest),
- a small commit (one 4-chunk int32 array),

the requests one ``lookup_branch`` makes, and the long/short ratio (target: <= 1.5x).

History is built through the real protocol (``refs.write_branch``, one create plus one hint
write per version), not by writing files behind its back.

Usage::

    python benchmarks/branch_tip.py                 # local and moto, 100 vs 3,000
    python benchmarks/branch_tip.py --backends local --histories 100 1000
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import zarr

import icechunk_dist as icd
from icechunk_dist import refs
from icechunk_dist._sync import run
from icechunk_dist.storage import FaultyStorage, Storage


@dataclass
class Row:
    backend: str
    history: int
    lookup_ms: float
    listing_ms: float
    commit_ms: float
    lookup_requests: str
    commit_requests: str


def _commit(repo: icd.Repository, value: int) -> None:
    s = repo.writable_session("main")
    arr = zarr.create_array(s.store, name="x", shape=(8,), chunks=(2,), dtype="i4",
                            overwrite=True)
    arr[:] = value
    s.commit(f"x={value}")


def _grow_to(storage: Storage, genesis: str, versions: int) -> None:
    """Move main until its tip is version ``versions - 1`` (``versions`` versions)."""

    async def go() -> None:
        tip = await refs.read_branch(storage, "main", genesis)
        assert tip.snapshot_id is not None
        while tip.version < versions - 1:
            tip = await refs.write_branch(storage, "main", expected=tip,
                                          snapshot_id=tip.snapshot_id, genesis=genesis)

    run(go())


def _requests(counter: FaultyStorage) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counter.requests.items()))


def _interleaved_ms(fns: list[Callable[[], object]], repeat: int) -> list[float]:
    """Median ms of each function, timed in alternating rounds (A B A B ...) so that load
    from other processes falls on all of them alike."""
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeat):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            fn()
            times[i].append(time.perf_counter() - t0)
    return [statistics.median(t) * 1000 for t in times]


def measure(backend: str, make: Callable[[str], Storage], histories: list[int], repeat: int
            ) -> list[Row]:
    """One repository per history length, built first; then every measurement alternates
    between them."""
    setups = []
    for n in sorted(histories):
        storage = make(f"h{n}")
        counter = FaultyStorage(storage)
        repo = icd.Repository.create(counter)
        genesis = list(repo.ancestry(branch="main"))[-1].id
        _commit(repo, 0)
        _grow_to(storage, genesis, n)
        repo.lookup_branch("main")  # warm
        setups.append((n, storage, counter, repo, genesis))
        print(f"  {backend}: {n} versions written", file=sys.stderr, flush=True)
    lookups = _interleaved_ms([lambda r=r: r.lookup_branch("main")
                               for _, _, _, r, _ in setups], repeat)
    listings = _interleaved_ms([lambda s=s, g=g: run(refs._list_tip(s, "main", g))
                                for _, s, _, _, g in setups], max(5, repeat // 4))
    commits = _interleaved_ms([lambda r=r: _commit(r, 1) for _, _, _, r, _ in setups], 9)
    rows = []
    for (n, _s, counter, repo, _g), lk, ls, cm in zip(setups, lookups, listings, commits,
                                                      strict=True):
        counter.reset_counters()
        repo.lookup_branch("main")
        reqs = _requests(counter)
        counter.reset_counters()
        _commit(repo, 2)
        rows.append(Row(backend, n, lk, ls, cm, reqs, _requests(counter)))
    return rows


@contextmanager
def _moto() -> Iterator[Callable[[str], Storage]]:
    import logging

    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        url = f"http://{host}:{port}"
        bucket = f"bench-{uuid.uuid4().hex[:12]}"
        boto3.client("s3", endpoint_url=url, region_name="us-east-1",
                     aws_access_key_id="testing",
                     aws_secret_access_key="testing").create_bucket(Bucket=bucket)

        def make(prefix: str) -> Storage:
            return icd.s3_storage(bucket=bucket, prefix=prefix, region="us-east-1",
                                  endpoint_url=url, allow_http=True, access_key_id="testing",
                                  secret_access_key="testing")

        yield make
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--backends", nargs="+", default=["local", "s3"], choices=["local", "s3"])
    p.add_argument("--histories", nargs="+", type=int, default=[100, 3000])
    p.add_argument("--repeat", type=int, default=40, help="lookups timed per point")
    args = p.parse_args(argv)
    rows: list[Row] = []
    for backend in args.backends:
        if backend == "local":
            with tempfile.TemporaryDirectory() as tmp:
                rows += measure("local",
                                lambda name, tmp=tmp: icd.local_filesystem_storage(
                                    str(Path(tmp) / name)),
                                args.histories, args.repeat)
        else:
            with _moto() as make:
                rows += measure("moto S3", make, args.histories, args.repeat)
    print(f"{'backend':<9} {'versions':>8} {'lookup_branch':>14} {'listing read':>13} "
          f"{'commit':>9}  requests per lookup / per commit")
    for r in rows:
        print(f"{r.backend:<9} {r.history:>8} {r.lookup_ms:>11.2f} ms {r.listing_ms:>10.2f} ms "
              f"{r.commit_ms:>6.1f} ms  {r.lookup_requests} / {r.commit_requests}")
    for backend in dict.fromkeys(r.backend for r in rows):
        mine = [r for r in rows if r.backend == backend]
        short, long = mine[0], mine[-1]
        print(f"{backend}: lookup_branch {long.history} vs {short.history} versions: "
              f"{long.lookup_ms / short.lookup_ms:.2f}x (target <= 1.5x); commit "
              f"{long.commit_ms / short.commit_ms:.2f}x; listing read "
              f"{long.listing_ms / short.listing_ms:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
