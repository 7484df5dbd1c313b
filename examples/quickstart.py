"""Quickstart: a versioned Zarr repository on local disk in a few lines.

Creates a repository in a temporary directory, writes an array with plain zarr, commits,
makes a branch and a tag, changes the data on the branch, and reads old versions back
("time travel") through read-only sessions.

Run it with ``python examples/quickstart.py``.
"""

from __future__ import annotations

import sys
import tempfile

import numpy as np
import zarr

import icechunk_dist as icd


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="icechunk-quickstart-") as tmp:
        repo = icd.Repository.create(icd.local_filesystem_storage(tmp))
        print(f"created repository in {tmp}")

        # 1. write with plain zarr through a writable session, then commit once
        session = repo.writable_session("main")
        root = zarr.open_group(session.store, mode="a")
        arr = root.create_array("temperature", shape=(4, 6), chunks=(2, 3), dtype="f4",
                                attributes={"units": "K"})
        arr[:] = np.arange(24, dtype="f4").reshape(4, 6)
        print("pending changes:\n  " + str(session.status()).replace("\n", "\n  "))
        first = session.commit("add temperature")
        print(f"commit 1 on main: {first}")

        # 2. tag it (tags never move) and branch off it
        repo.create_tag("v1", first)
        repo.create_branch("experiment", first)
        print(f"branches: {sorted(repo.list_branches())}, tags: {sorted(repo.list_tags())}")

        # 3. change the data on the branch: main does not see it
        dev = repo.writable_session("experiment")
        zarr.open_array(dev.store, path="temperature", mode="r+")[0, :] = -1.0
        second = dev.commit("first row to -1 on experiment")
        print(f"commit 2 on experiment: {second}")

        # 4. change main too
        s = repo.writable_session("main")
        zarr.open_array(s.store, path="temperature", mode="r+")[:, 0] = 100.0
        third = s.commit("first column to 100 on main")
        print(f"commit 3 on main: {third}")

        # 5. time travel: read the tag, the branch tips and a snapshot id
        def read(**where: str) -> np.ndarray:
            ro = repo.readonly_session(**where)
            return np.asarray(zarr.open_array(ro.store, path="temperature", mode="r")[:])

        at_tag = read(tag="v1")
        on_main = read(branch="main")
        on_exp = read(branch="experiment")
        by_id = read(snapshot_id=first)
        print(f"tag v1         row 0: {at_tag[0].tolist()}")
        print(f"branch main    row 0: {on_main[0].tolist()}")
        print(f"branch experim row 0: {on_exp[0].tolist()}")
        print("history of main:")
        for info in repo.ancestry(branch="main"):
            print(f"  {info.id}  {info.message}")

        ok = (
            np.array_equal(at_tag, np.arange(24, dtype="f4").reshape(4, 6))
            and np.array_equal(by_id, at_tag)
            and bool(np.all(on_exp[0] == -1.0)) and bool(np.all(on_main[:, 0] == 100.0))
            and on_main[0, 1] == 1.0 and on_exp[1, 0] == 6.0
        )
        if not ok:
            print("time travel check: FAILED")
            return 1
        print("time travel check: OK")
        return 0


if __name__ == "__main__":
    sys.exit(main())
