"""A writer process for tests/test_crash.py: commit ``x[:] = VALUE`` to ``main`` through a
FaultyStorage that SIGKILLs this process at one step of the commit.

Usage: python crash_writer.py URL_OR_PATH_JSON OP PREFIX WHEN VALUE
"""

from __future__ import annotations

import json
import sys

import zarr

import icechunk_dist as icd
from icechunk_dist.storage import Fault, FaultyStorage


def main() -> None:
    where, op, prefix, when, value = sys.argv[1:6]
    spec = json.loads(where)
    inner = (icd.local_filesystem_storage(spec["path"]) if "path" in spec
             else icd.s3_storage(**spec["s3"]))
    storage = FaultyStorage(inner, [Fault.kill(op=op, prefix=prefix, when=when)])  # type: ignore[arg-type]
    repo = icd.Repository.open(storage)
    session = repo.writable_session("main")
    arr = zarr.open_array(session.store, path="x", mode="r+")
    arr[:] = int(value)
    sid = session.commit(f"x={value}")
    print(f"COMMITTED {sid}", flush=True)


if __name__ == "__main__":
    main()
