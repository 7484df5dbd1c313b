"""What a small object costs on this machine's local disk: the figures behind design 016.

Each round writes 40 chunk-sized files (4 KiB, a fork's writes) and then, one after the other,
the operations a commit's object write can be made of, timed one by one:

- ``create``: ``open(O_CREAT|O_EXCL)`` of a new file + write of 800 bytes + close (an inode is
  allocated on the commit's path);
- ``tmpfile``: ``open(O_TMPFILE)`` alone (the allocation a spare inode is made with);
- ``write+link``: write 800 bytes into a spare, ``linkat`` it under a new name, close (what a
  commit's write costs with spares);
- ``3 creates, threads`` and ``3 creates, inline``: three creates from a thread pool and one
  after the other (does creating in parallel help?).

Medians over the rounds; microseconds. Linux only (``O_TMPFILE``, ``/proc/self/fd``).

Usage::

    python benchmarks/file_creates.py [--dir DIR] [--rounds N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor


def measure(root: str, rounds: int) -> dict[str, float]:
    for d in ("chunks", "objects"):
        os.makedirs(os.path.join(root, d), exist_ok=True)
    proc = os.open("/proc/self/fd", os.O_RDONLY | os.O_DIRECTORY)
    pool = ThreadPoolExecutor(3)
    out: dict[str, list[float]] = {}

    def name() -> str:
        return os.path.join(root, "objects", os.urandom(8).hex())

    def create() -> None:
        fd = os.open(name(), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.write(fd, b"x" * 800)
        os.close(fd)

    def timed(label: str, fn) -> None:  # type: ignore[no-untyped-def]
        t = time.perf_counter()
        fn()
        out.setdefault(label, []).append((time.perf_counter() - t) * 1e6)

    for i in range(rounds):
        for _ in range(40):
            fd = os.open(os.path.join(root, "chunks", os.urandom(8).hex()),
                         os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            os.write(fd, b"c" * 4096)
            os.close(fd)
        timed("create", create)
        spare: list[int] = []

        def make_spare(spare: list[int] = spare) -> None:
            spare.append(os.open(root, os.O_WRONLY | os.O_TMPFILE, 0o644))

        def publish(spare: list[int] = spare) -> None:
            os.write(spare[0], b"x" * 800)
            os.link(str(spare[0]), name(), src_dir_fd=proc)
            os.close(spare[0])

        timed("tmpfile", make_spare)
        timed("write+link", publish)
        if i % 2:
            timed("3 creates, threads", lambda: list(pool.map(lambda _: create(), range(3))))
        else:
            timed("3 creates, inline", lambda: [create() for _ in range(3)])
    os.close(proc)
    pool.shutdown()
    return {k: statistics.median(v) for k, v in out.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", default=None, help="a directory on the disk to measure "
                    "(default: a temporary directory next to this script)")
    ap.add_argument("--rounds", type=int, default=40)
    args = ap.parse_args(argv)
    if not hasattr(os, "O_TMPFILE") or not os.path.isdir("/proc/self/fd"):
        print("file_creates: needs Linux (O_TMPFILE, /proc/self/fd)")
        return 0
    base = args.dir or os.path.dirname(os.path.abspath(__file__))
    with tempfile.TemporaryDirectory(prefix="icd-creates-", dir=base) as d:
        figures = measure(d, args.rounds)
    print(f"small files on {base} ({args.rounds} rounds, each after 40 writes of 4 KiB), "
          "median µs:")
    for label, us in figures.items():
        print(f"  {label:20s} {us:8.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
