"""Generator of ``tests/data/repo-v1``: a small repository in on-disk format version 1.

**Never re-run this to overwrite ``tests/data/repo-v1``.** The stored repository is the
format's promise: every later version of icechunk_dist must read it exactly as
``tests/test_can_read_old.py`` says (docs/spec.md section 9). Its ids, timestamps and bytes
were produced once, by the code of the day, and the test holds them as literals. A
regenerated copy would only prove that today's code reads what today's code writes. A future
format version gets its own directory (``repo-v2``) and its own generator; this one is kept
as the record of how ``repo-v1`` was made. It refuses to write over an existing directory.

Run once, from the repository root::

    PYTHONPATH=$PWD python tests/data/make_repo_v1.py

What it holds (all on local disk, about 60 small files):

- ``repo`` with ``manifest_split_size=2`` (arrays have several manifest splits), a saved
  config (``config/``) and repository metadata (``metadata/``);
- ``main``: four commits after the initial snapshot. The first is expired (the second was
  re-parented onto the initial snapshot by ``expire_snapshots``);
- a group ``g`` with attributes (changed by a later commit), an array ``g/temps`` with
  native chunks, inline chunks and an unwritten chunk (appended to later), an array
  ``g/old`` deleted later, a 0-d array ``g/scalar``, an array ``v2enc`` with the ``v2``
  chunk key encoding, a sharded array ``s`` with one native and one inline shard, and a
  loose key;
- tag ``v1``, a deleted tag ``gone``, a deleted branch ``tmp``;
- branch ``dev`` whose tip was amended, with an array ``virt`` of virtual chunks pointing
  into ``file:///tmp/icechunk_dist-repo-v1/virtual.bin`` (a copy of
  ``tests/data/repo-v1-virtual.bin``, put there by the test).
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import zarr
from zarr.core.buffer import default_buffer_prototype

import icechunk_dist as icd
from icechunk_dist._sync import run

HERE = Path(__file__).resolve().parent
OUT = HERE / "repo-v1"
VIRTUAL_SRC = HERE / "repo-v1-virtual.bin"
VIRTUAL_DIR = Path("/tmp/icechunk_dist-repo-v1")
VIRTUAL_URL = f"file://{VIRTUAL_DIR}/virtual.bin"
LOOSE = b"a loose key, not an array chunk\n" * 20  # 640 bytes: a native loose object


def row(r: int) -> np.ndarray:
    """Row ``r`` of ``g/temps``: a multiplicative hash, which zstd cannot shrink much."""
    return ((np.arange(256, dtype=np.uint64) + 256 * r) * 2654435761 % 2**32).astype("<u4")


def virtual_bytes() -> bytes:
    return b"VIRTUAL\n" + (np.arange(32, dtype="<i4") * 3).tobytes()


def main() -> int:
    if OUT.exists() or VIRTUAL_SRC.exists():
        print(f"{OUT} exists: never overwrite the stored format fixture", file=sys.stderr)
        return 1
    VIRTUAL_SRC.write_bytes(virtual_bytes())
    VIRTUAL_DIR.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(VIRTUAL_SRC, VIRTUAL_DIR / "virtual.bin")

    storage = icd.local_filesystem_storage(OUT)
    repo = icd.Repository.create(storage, icd.RepositoryConfig(manifest_split_size=2))
    init = repo.lookup_branch("main")
    repo.reopen(icd.RepositoryConfig(max_concurrent_requests=16)).save_config()
    repo.set_metadata({"project": "repo-v1 fixture", "format": 1})

    # C1 (expired below): the group, temps rows 0-2, an array to delete later
    s = repo.writable_session("main")
    root = zarr.open_group(s.store, mode="w", attributes={"title": "repo-v1"})
    g = root.create_group("g", attributes={"answer": 42, "nested": {"a": [1, 2]}})
    temps = g.create_array("temps", shape=(4, 256), chunks=(1, 256), dtype="<u4",
                           fill_value=4294967295)
    temps[0] = row(0)
    temps[1] = 7  # compresses to a few bytes: an inline chunk
    temps[2] = row(2)  # row 3 is never written: the fill value
    old = g.create_array("old", shape=(3,), chunks=(3,), dtype="<i2", fill_value=0)
    old[:] = [1, 2, 3]
    scalar = g.create_array("scalar", shape=(), dtype="<f8", fill_value=0.0)
    scalar[()] = 3.25
    v2 = root.create_array("v2enc", shape=(2, 3), chunks=(1, 3), dtype="i1", fill_value=0,
                           chunk_key_encoding={"name": "v2", "separator": "."})
    v2[:] = [[1, 2, 3], [4, 5, 6]]
    c1 = s.commit("c1: group g, temps, old", {"step": 1})
    time.sleep(0.05)
    cutoff = datetime.now(UTC)
    time.sleep(0.05)

    # C2: a sharded array (one native shard, one inline shard) and a loose key
    s = repo.writable_session("main")
    sh = zarr.create_array(s.store, name="s", shape=(256,), chunks=(32,), shards=(128,),
                           dtype="<i4", fill_value=-1, compressors=None)
    sh[0:128] = np.arange(128, dtype="<i4")
    sh[128:160] = np.arange(1000, 1032, dtype="<i4")
    proto = default_buffer_prototype()
    run(s.store.set("notes/readme.txt", proto.buffer.from_bytes(LOOSE)))
    c2 = s.commit("c2: sharded s", {"step": 2})
    repo.create_tag("v1", c2)

    # C3: overwrite a native chunk, append a row, change the group's attributes
    s = repo.writable_session("main")
    g = zarr.open_group(s.store, path="g", mode="r+")
    g.attrs["answer"] = 43
    temps = zarr.open_array(s.store, path="g/temps", mode="r+")
    temps[0] = row(0) + 1
    temps.resize((5, 256))
    temps[4] = 9
    c3 = s.commit("c3: temps row 0, row 4 appended, answer 43", {"step": 3})

    # C4: delete g/old
    s = repo.writable_session("main")
    zarr.open_group(s.store, mode="r+").__delitem__("g/old")
    c4 = s.commit("c4: delete g/old")

    # dev from C2: virtual chunks, then an amended tip
    repo.create_branch("dev", c2)
    s = repo.writable_session("dev")
    zarr.create_array(s.store, name="virt", shape=(32,), chunks=(16,), dtype="<i4",
                      fill_value=0, compressors=None)
    s.store.set_virtual_ref("virt/c/0", VIRTUAL_URL, offset=8, length=64)
    s.store.set_virtual_ref("virt/c/1", VIRTUAL_URL, offset=72, length=64)
    d1 = s.commit("d1: virtual virt")
    s = repo.writable_session("dev")
    zarr.open_array(s.store, path="virt", mode="r+").attrs["units"] = "m"
    d1a = s.amend("d1 amended: virtual virt with units")

    # refs that no longer exist
    repo.create_branch("tmp", c3)
    repo.delete_branch("tmp")
    repo.create_tag("gone", c1)
    repo.delete_tag("gone")

    expired = repo.expire_snapshots(cutoff)
    summary = {"init": init, "c1": c1, "c2": c2, "c3": c3, "c4": c4, "d1": d1, "d1a": d1a,
               "cutoff": cutoff.isoformat(), "expired": sorted(expired)}
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
