"""A commit retried after a rebase rewrites only the manifest splits that the commits landed
meanwhile touched (issue 4)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import zarr

import icechunk_dist as icd
from icechunk_dist import ConflictDetector, RepositoryConfig
from icechunk_dist.storage import Storage, WrapperStorage


class RaceStorage(WrapperStorage):
    """Real local storage that runs ``hook`` once, right before the next snapshot is written:
    the moment another writer can land between our tip check and our ref update."""

    def __init__(self, inner: Storage) -> None:
        super().__init__(inner)
        self.hook: Callable[[], None] | None = None
        self.manifest_puts = 0

    @property
    def supports_pickle(self) -> bool:
        return False  # holds hooks and counters of this process

    def describe(self) -> str:
        return "race:" + self.inner.describe()

    async def put(self, key: str, data: bytes, *, mode: Any = "overwrite") -> None:
        if key.startswith("manifests/"):
            self.manifest_puts += 1
        if key.startswith("snapshots/") and self.hook is not None:
            hook, self.hook = self.hook, None
            import asyncio

            await asyncio.to_thread(hook)
        await self.inner.put(key, data, mode=mode)



def test_retry_rewrites_only_the_splits_the_landed_commit_touched(tmp_path: Path) -> None:
    storage = RaceStorage(icd.local_filesystem_storage(tmp_path))
    # 10 chunks per manifest split: rows 0-9 are split 0, rows 10-19 split 1, ...
    repo = icd.Repository.create(storage, RepositoryConfig(manifest_split_size=10))
    s = repo.writable_session("main")
    zarr.create_array(s.store, name="x", shape=(100, 4), chunks=(1, 4), dtype="i8",
                      fill_value=-1, compressors=None)
    s.commit("create")

    ours = repo.writable_session("main")
    arr = zarr.open_array(ours.store, path="x")
    arr[0:75] = 1  # splits 0..7, leaving row 75 to the other writer
    arr[76:80] = 1

    def other_writer_lands() -> None:
        other = repo.writable_session("main")
        zarr.open_array(other.store, path="x")[75:76] = 2  # split 7, a chunk we did not write
        other.commit("other")

    storage.hook = other_writer_lands
    storage.manifest_puts = 0
    ours.commit("ours", rebase_with=ConflictDetector())
    # attempt 1 wrote 8 splits and lost the race; "other" wrote 1; the retry rewrote only
    # split 7, the one the landed commit touched
    assert storage.manifest_puts == 8 + 1 + 1
    got = zarr.open_array(repo.readonly_session("main").store, path="x", mode="r")[:, 0]
    expected = np.full(100, -1)
    expected[0:80] = 1
    expected[75] = 2
    np.testing.assert_array_equal(got, expected)


def test_retry_reuses_all_splits_when_the_landed_commit_is_elsewhere(tmp_path: Path) -> None:
    storage = RaceStorage(icd.local_filesystem_storage(tmp_path))
    repo = icd.Repository.create(storage, RepositoryConfig(manifest_split_size=10))
    s = repo.writable_session("main")
    zarr.create_array(s.store, name="x", shape=(100, 4), chunks=(1, 4), dtype="i8",
                      fill_value=-1, compressors=None)
    s.commit("create")

    ours = repo.writable_session("main")
    zarr.open_array(ours.store, path="x")[0:50] = 1  # splits 0..4

    def other_writer_lands() -> None:
        other = repo.writable_session("main")
        zarr.open_array(other.store, path="x")[95:100] = 2  # split 9
        other.commit("other")

    storage.hook = other_writer_lands
    storage.manifest_puts = 0
    ours.commit("ours", rebase_with=ConflictDetector())
    # attempt 1: 5 splits; other: 1; retry: 0 (every split reused)
    assert storage.manifest_puts == 5 + 1
    got = zarr.open_array(repo.readonly_session("main").store, path="x", mode="r")[:, 0]
    expected = np.full(100, -1)
    expected[0:50] = 1
    expected[95:100] = 2
    np.testing.assert_array_equal(got, expected)
    assert [i.message for i in repo.ancestry(branch="main")][:3] == ["ours", "other", "create"]
