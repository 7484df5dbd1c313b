"""The storage contract, run against every backend we can reach (local, memory, moto S3)."""

from __future__ import annotations

import asyncio
import copy
import multiprocessing as mp
import pickle
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import obstore.exceptions as obe
import pytest

from icechunk_dist.errors import (
    AlreadyExistsError,
    IcechunkDistError,
    InvalidInputError,
    NotFoundError,
    StorageError,
)
from icechunk_dist.storage import (
    ObjectExistsError,
    ObjectMeta,
    ObjectNotFoundError,
    Storage,
    azure_storage,
    gcs_storage,
    in_memory_storage,
    local_filesystem_storage,
    s3_storage,
)
from icechunk_dist.storage._obstore import ObstoreStorage
from icechunk_dist.storage._retry import RetryPolicy, is_transient, translate_error, with_retries
from icechunk_dist.storage._spec import make_store

BAD_KEYS = ["", "/abs", "a//b", "a/", "a/../b", "..", "a/./b", "a\\b", "a\x00b", "a\nb"]
DIGITS = b"0123456789"


async def keys_of(storage: Storage, prefix: str = "") -> list[str]:
    return sorted([m.key async for m in storage.list(prefix)])


def race_worker(storage: Storage, keys: list[str], me: int, barrier: Any, results: Any) -> None:
    """Spawned process: wait for every racer, then try to create each key."""
    for key in keys:
        barrier.wait(timeout=120)
        try:
            storage.put_sync(key, f"writer-{me}".encode(), mode="create")
            outcome = "won"
        except ObjectExistsError:
            outcome = "exists"
        except BaseException as exc:  # report, never hang the parent
            outcome = f"error: {exc!r}"
        results.put((key, me, outcome))


def run_race(storage: Storage, n: int = 8, rounds: int = 3) -> None:
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(n), ctx.Queue()
    keys = [f"refs/branch.race{r}/ref.json" for r in range(rounds)]
    procs = [
        ctx.Process(target=race_worker, args=(storage, keys, i, barrier, results)) for i in range(n)
    ]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=180) for _ in range(n * rounds)]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    for key in keys:
        mine = [(me, out) for k, me, out in outcomes if k == key]
        assert sorted(out for _, out in mine) == ["exists"] * (n - 1) + ["won"], mine
        winner = next(me for me, out in mine if out == "won")
        assert storage.get_sync(key) == f"writer-{winner}".encode()


class StorageTests:
    """The behaviour every backend must show. Subclasses provide the ``storage`` fixture."""

    picklable = True

    @pytest.fixture
    def storage(self) -> Storage:
        raise NotImplementedError

    async def test_put_get(self, storage: Storage) -> None:
        data = bytes(range(256)) * 3
        await storage.put("chunks/abc", data)
        assert await storage.get("chunks/abc") == data
        await storage.put("empty", b"")
        assert await storage.get("empty") == b""

    async def test_fresh_puts_read_back_whole(self, storage: Storage) -> None:
        """``mode="fresh"`` (a new random name, e.g. a chunk object): the object reads back
        whole, under a new directory too, and lists like any other; a bad mode is refused."""
        data = bytes(range(256)) * 40
        await storage.put("chunks/fresh1", data, mode="fresh")
        await storage.put("deep/new/dir/fresh2", b"x", mode="fresh")
        assert await storage.get("chunks/fresh1") == data
        assert await storage.get("deep/new/dir/fresh2") == b"x"
        assert {m.key for m in storage.list_sync("chunks/")} >= {"chunks/fresh1"}
        with pytest.raises(InvalidInputError, match="fresh"):
            await storage.put("chunks/bad", b"x", mode="sideways")  # type: ignore[arg-type]

    async def test_overwrite(self, storage: Storage) -> None:
        await storage.put("k", b"one")
        await storage.put("k", b"two", mode="overwrite")
        assert await storage.get("k") == b"two"

    async def test_create_conflict(self, storage: Storage) -> None:
        await storage.put("refs/branch.main/ref.json", b"first", mode="create")
        with pytest.raises(ObjectExistsError) as info:
            await storage.put("refs/branch.main/ref.json", b"second", mode="create")
        assert info.value.key == "refs/branch.main/ref.json"
        assert isinstance(info.value, AlreadyExistsError)
        assert await storage.get("refs/branch.main/ref.json") == b"first"

    async def test_concurrent_creates_one_winner(self, storage: Storage) -> None:
        async def attempt(i: int) -> bool:
            try:
                await storage.put("race", str(i).encode(), mode="create")
            except ObjectExistsError:
                return False
            return True

        won = await asyncio.gather(*(attempt(i) for i in range(16)))
        assert sum(won) == 1
        assert await storage.get("race") == str(won.index(True)).encode()

    async def test_get_missing(self, storage: Storage) -> None:
        with pytest.raises(ObjectNotFoundError) as info:
            await storage.get("nope/x")
        assert info.value.key == "nope/x"
        assert isinstance(info.value, NotFoundError)
        assert isinstance(info.value, KeyError)
        with pytest.raises(ObjectNotFoundError):
            await storage.head("nope/x")
        with pytest.raises(ObjectNotFoundError):
            await storage.get_range("nope/x", 0, 4)
        with pytest.raises(ObjectNotFoundError):
            await storage.get_suffix("nope/x", 4)

    @pytest.mark.parametrize(
        ("start", "end", "expected"),
        [(0, 10, DIGITS), (2, 5, b"234"), (5, 100, b"56789"), (9, 10, b"9"), (10, 12, b""),
         (20, 30, b""), (3, 3, b""), (5, 2, b"")],
    )  # fmt: skip
    async def test_get_range(self, storage: Storage, start: int, end: int, expected: bytes) -> None:
        await storage.put("d", DIGITS)
        assert await storage.get_range("d", start, end) == expected

    async def test_get_range_empty_object(self, storage: Storage) -> None:
        await storage.put("e", b"")
        assert await storage.get_range("e", 0, 10) == b""
        assert await storage.get_range("e", 0, 0) == b""
        assert await storage.get_suffix("e", 5) == b""

    async def test_get_range_negative(self, storage: Storage) -> None:
        with pytest.raises(InvalidInputError):
            await storage.get_range("d", -1, 3)
        with pytest.raises(InvalidInputError):
            await storage.get_suffix("d", -1)

    async def test_get_suffix(self, storage: Storage) -> None:
        await storage.put("d", DIGITS)
        assert await storage.get_suffix("d", 3) == b"789"
        assert await storage.get_suffix("d", 10) == DIGITS
        assert await storage.get_suffix("d", 50) == DIGITS
        assert await storage.get_suffix("d", 0) == b""

    async def test_head(self, storage: Storage) -> None:
        await storage.put("a/b", DIGITS)
        meta = await storage.head("a/b")
        assert isinstance(meta, ObjectMeta)
        assert (meta.key, meta.size) == ("a/b", 10)
        assert meta.last_modified.tzinfo is not None
        assert meta.last_modified.utcoffset() == timedelta(0)
        assert abs(datetime.now(UTC) - meta.last_modified) < timedelta(minutes=5)
        assert meta.etag is None or isinstance(meta.etag, str)

    async def test_exists(self, storage: Storage) -> None:
        assert not await storage.exists("x")
        await storage.put("x", b"1")
        assert await storage.exists("x")

    async def test_delete(self, storage: Storage) -> None:
        await storage.put("x", b"1")
        await storage.delete("x")
        assert not await storage.exists("x")
        await storage.delete("x")  # missing: not an error
        await storage.delete("never/was")

    async def test_delete_many(self, storage: Storage, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr("icechunk_dist.storage._obstore._DELETE_BATCH", 3)
        for i in range(5):
            await storage.put(f"c/{i}", b"x")
        await storage.put("keep", b"x")
        wanted = (k for k in ["c/0", "missing/1", "c/1", "c/2", "c/3", "missing/2", "c/4"])
        assert await storage.delete_many(wanted) == 7
        assert await keys_of(storage) == ["keep"]
        assert await storage.delete_many([]) == 0

    async def test_list(self, storage: Storage) -> None:
        keys = [
            "chunks/1",
            "refs/branch.main/ref.json",
            "refs/branch.main/zz",
            "refs/branch.mainline/ref.json",
            "refs/tag.v1/ref.json",
            "top",
        ]
        for k in keys:
            await storage.put(k, k.encode())
        assert await keys_of(storage) == keys
        assert await keys_of(storage, "refs/branch.main/") == keys[1:3]
        assert await keys_of(storage, "refs/branch.main") == keys[1:4]
        assert await keys_of(storage, "refs/") == keys[1:5]
        assert await keys_of(storage, "re") == keys[1:5]
        assert await keys_of(storage, "t") == ["top"]
        assert await keys_of(storage, "nothing/here/") == []
        metas = [m async for m in storage.list("chunks/")]
        assert [(m.key, m.size) for m in metas] == [("chunks/1", 8)]

    async def test_list_many(self, storage: Storage) -> None:
        keys = [f"many/{i:04d}" for i in range(1010)]  # > one S3 listing page (1000)
        await asyncio.gather(*(storage.put(k, b"") for k in keys))
        assert await keys_of(storage, "many/") == keys

    @pytest.mark.parametrize("key", BAD_KEYS)
    async def test_bad_keys(self, storage: Storage, key: str) -> None:
        for call in (
            lambda: storage.get(key),
            lambda: storage.put(key, b"x"),
            lambda: storage.put(key, b"x", mode="create"),
            lambda: storage.head(key),
            lambda: storage.exists(key),
            lambda: storage.delete(key),
            lambda: storage.delete_many(["ok", key]),
            lambda: storage.get_range(key, 0, 1),
            lambda: storage.get_suffix(key, 1),
        ):
            with pytest.raises(InvalidInputError):
                await call()

    @pytest.mark.parametrize("prefix", ["/a", "a//b", "../x", "a\\b", "a\x01"])
    def test_bad_prefix(self, storage: Storage, prefix: str) -> None:
        with pytest.raises(InvalidInputError):
            storage.list(prefix)

    async def test_bad_mode(self, storage: Storage) -> None:
        with pytest.raises(InvalidInputError):
            await storage.put("k", b"x", mode="append")  # type: ignore[arg-type]

    def test_sync_twins(self, storage: Storage) -> None:
        storage.put_sync("s/1", b"one")
        storage.put_sync("s/2", b"two")
        with pytest.raises(ObjectExistsError):
            storage.put_sync("s/1", b"again", mode="create")
        assert storage.get_sync("s/1") == b"one"
        assert storage.exists_sync("s/2")
        assert sorted(m.key for m in storage.list_sync("s/")) == ["s/1", "s/2"]
        storage.delete_sync("s/2")
        assert not storage.exists_sync("s/2")
        with pytest.raises(ObjectNotFoundError):
            storage.get_sync("s/2")

    async def test_empty_and_staged(self, storage: Storage) -> None:
        """A fresh location is empty and holds no staging objects; one put makes it
        non-empty; deleting no staging objects is no error."""
        assert await storage.is_empty()
        assert [m async for m in storage.list_staged("")] == []
        assert await storage.delete_staged([]) == 0
        await storage.put("d/k", b"v")
        assert not await storage.is_empty()
        assert [m async for m in storage.list_staged("d/")] == []

    def test_identity(self, storage: Storage) -> None:
        assert storage == storage
        assert hash(storage) == hash(storage)
        assert copy.copy(storage) is storage
        assert copy.deepcopy(storage) is storage
        assert storage.backend in ("local", "memory", "s3", "gcs", "azure")
        assert storage.describe() in repr(storage)

    def test_pickle(self, storage: Storage) -> None:
        assert storage.supports_pickle is self.picklable
        if not self.picklable:
            with pytest.raises(InvalidInputError, match="local_filesystem_storage or s3_storage"):
                pickle.dumps(storage)
            return
        storage.put_sync("p", b"data")  # a live client must not get in the way
        clone = pickle.loads(pickle.dumps(storage))
        assert clone == storage
        assert hash(clone) == hash(storage)
        assert clone.get_sync("p") == b"data"


class TestLocalStorage(StorageTests):
    @pytest.fixture
    def storage(self, tmp_path: Path) -> Storage:
        return local_filesystem_storage(tmp_path / "repo")

    def test_describe_and_lazy_dir(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.chdir(tmp_path)
        storage = local_filesystem_storage("rel/repo")
        assert storage.describe() == f"local filesystem at {tmp_path / 'rel' / 'repo'}"
        assert not (tmp_path / "rel").exists()
        storage.put_sync("a/b", b"1")
        assert (tmp_path / "rel" / "repo" / "a" / "b").read_bytes() == b"1"

    def test_equality_by_path(self, tmp_path: Path) -> None:
        assert local_filesystem_storage(tmp_path) == local_filesystem_storage(str(tmp_path))
        assert local_filesystem_storage(tmp_path) != local_filesystem_storage(tmp_path / "x")

    def test_multiprocess_create_race(self, storage: Storage) -> None:
        run_race(storage)

    async def test_staging_files(self, tmp_path: Path) -> None:
        """A writer's staging file (``<key>#<digits>``, as put names it) is invisible to
        ``list`` and found by ``list_staged``; only staging names can be deleted that way."""
        storage = local_filesystem_storage(tmp_path / "repo")
        await storage.put("chunks/AAA", b"done")
        left = tmp_path / "repo" / "chunks" / "BBB#8120398"
        left.write_bytes(b"half")
        assert [m.key async for m in storage.list("")] == ["chunks/AAA"]
        staged = [m async for m in storage.list_staged("chunks/")]
        assert [(m.key, m.size) for m in staged] == [("chunks/BBB#8120398", 4)]
        assert abs(staged[0].last_modified.timestamp() - left.stat().st_mtime) < 1e-3
        assert [m async for m in storage.list_staged("manifests/")] == []
        assert not await storage.is_empty()
        with pytest.raises(InvalidInputError, match="not a staging file"):
            await storage.delete_staged(["chunks/AAA"])
        assert await storage.delete_staged(["chunks/BBB#8120398", "chunks/CCC#1"]) == 2
        assert not left.exists() and await storage.get("chunks/AAA") == b"done"

    async def test_root_blocked_by_a_file(self, tmp_path: Path) -> None:
        (tmp_path / "FILE").write_text("x")
        for root in (tmp_path / "FILE", tmp_path / "FILE" / "sub"):
            storage = local_filesystem_storage(root)
            for call in (storage.head("repo"), storage.get("repo"), storage.put("k", b"v"),
                         storage.is_empty(), storage.check_conditional_writes()):
                with pytest.raises(InvalidInputError, match="is a file"):
                    await call
        assert (tmp_path / "FILE").read_text() == "x"

    async def test_a_directory_where_the_object_goes(self, tmp_path: Path) -> None:
        """On local disk a directory and an object cannot share a name: a create there is
        refused as bad input, not reported as an existing object."""
        storage = local_filesystem_storage(tmp_path)
        (tmp_path / "repo").mkdir()
        assert not await storage.exists("repo")
        for mode in ("create", "overwrite"):
            with pytest.raises(InvalidInputError, match="a directory of that name"):
                await storage.put("repo", b"v", mode=mode)  # type: ignore[arg-type]

    def test_fork(self, tmp_path: Path) -> None:
        # a fresh interpreter, so that no earlier test has started obstore's runtime
        result = subprocess.run(
            [sys.executable, "-W", "error", "-c", FORK_SCRIPT, str(tmp_path / "repo")],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        # put/get of local files are plain file I/O and work in a forked child; a call into
        # obstore's runtime (a listing) after the parent used it fails at once, never hangs
        assert result.stdout.split() == ["before-io:ok:ok", "after-io:ok:StorageError"]


FORK_SCRIPT = """
import multiprocessing as mp, sys, warnings
warnings.filterwarnings("ignore", ".*multi-threaded.*fork", DeprecationWarning)
from icechunk_dist.errors import StorageError
from icechunk_dist.storage import local_filesystem_storage

def child(storage, q):
    try:
        storage.put_sync("child", b"c")
        rw = "ok" if storage.get_sync("child") == b"c" else "bad"
    except StorageError:
        rw = "StorageError"
    try:
        import asyncio

        async def keys():
            return [m.key async for m in storage.list("")]

        ls = "ok" if "child" in asyncio.run(keys()) else "bad"
    except StorageError:
        ls = "StorageError"
    q.put(f"{rw}:{ls}")

storage = local_filesystem_storage(sys.argv[1])
ctx = mp.get_context("fork")
for label in ("before-io", "after-io"):
    q = ctx.Queue()
    p = ctx.Process(target=child, args=(storage, q))
    p.start()
    print(f"{label}:{q.get(timeout=60)}")
    p.join(timeout=60)
    assert p.exitcode == 0
    storage.put_sync("parent", b"p")  # the parent's I/O works either way
    assert storage.get_sync("child") == b"c"
    storage.list_sync("")  # starts obstore's runtime in the parent
"""


class TestMemoryStorage(StorageTests):
    picklable = False

    @pytest.fixture
    def storage(self) -> Storage:
        return in_memory_storage()

    async def test_no_staging_objects(self, storage: Storage) -> None:
        with pytest.raises(InvalidInputError, match="no staging objects"):
            await storage.delete_staged(["a#1"])

    def test_two_are_different(self) -> None:
        a, b = in_memory_storage(), in_memory_storage()
        assert a != b
        a.put_sync("k", b"1")
        assert not b.exists_sync("k")


@pytest.mark.s3
class TestS3Storage(StorageTests):
    @pytest.fixture
    def storage(self, make_s3_storage: Callable[..., Storage]) -> Storage:
        return make_s3_storage(prefix="some/repo")

    async def test_keys_relative_to_prefix(self, make_s3_storage: Callable[..., Storage]) -> None:
        outer, inner = make_s3_storage(prefix="p"), make_s3_storage(prefix="p/q")
        await inner.put("k/1", b"x")
        assert await keys_of(inner) == ["k/1"]
        assert await keys_of(outer) == ["q/k/1"]
        assert (await inner.head("k/1")).key == "k/1"

    def test_describe(self, storage: Storage, s3_bucket: str, s3_server: str) -> None:
        assert storage.describe() == f"s3://{s3_bucket}/some/repo at {s3_server}"

    def test_multiprocess_create_race(self, storage: Storage) -> None:
        run_race(storage)

    async def test_environment_does_not_leak(
        self, make_s3_storage: Callable[..., Storage], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "from-env-without-secret")
        monkeypatch.setenv("AWS_SKIP_SIGNATURE", "true")
        storage = make_s3_storage(prefix="env")
        await storage.put("k", b"v")
        assert await storage.get("k") == b"v"
        anonymous = s3_storage(bucket="b", prefix="p", region="eu-west-1")
        assert isinstance(anonymous, ObstoreStorage)
        config = anonymous._client().config  # type: ignore[attr-defined]
        assert config["endpoint"] == "https://b.s3.eu-west-1.amazonaws.com"

    async def test_missing_bucket(self, s3_server: str) -> None:
        storage = s3_storage(
            bucket="no-such-bucket", prefix="p", endpoint_url=s3_server, allow_http=True,
            access_key_id="testing", secret_access_key="testing",
        )  # fmt: skip
        with pytest.raises(IcechunkDistError):
            await storage.put("k", b"v")

    async def test_unreachable_endpoint(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(ObstoreStorage, "retry_policy", RetryPolicy(attempts=2, base=0.001))
        storage = s3_storage(
            bucket="b", prefix="p", endpoint_url="http://127.0.0.1:9", allow_http=True,
            access_key_id="testing", secret_access_key="testing",
        )  # fmt: skip
        with pytest.raises(StorageError) as info:
            await storage.get("some/key")
        assert info.value.key == "some/key"
        assert "'some/key'" in str(info.value) and "s3" in str(info.value)
        assert info.value.cause is not None


# ---------------------------------------------------------------------------------------------
# factories that need no server


def test_secrets_stay_out_of_text() -> None:
    made = [
        s3_storage(bucket="b", prefix="p", access_key_id="AKIDXX", secret_access_key="SECRET1",
                   session_token="SECRET2"),
        gcs_storage(bucket="b", prefix="p", service_account_key='{"SECRET1": 1}'),
        azure_storage(account="acct", container="c", prefix="p", access_key="SECRET1",
                      sas_token="SECRET2"),
    ]  # fmt: skip
    for storage in made:
        assert isinstance(storage, ObstoreStorage)
        for text in (repr(storage), str(storage), storage.describe(), repr(storage._spec)):
            assert "SECRET" not in text, text


@pytest.mark.parametrize(
    ("storage", "description"),
    [
        (gcs_storage(bucket="bk", prefix="a/b"), "gs://bk/a/b"),
        (gcs_storage(bucket="bk", prefix="", from_env=True), "gs://bk"),
        (azure_storage(account="acct", container="c", prefix="/a/"), "azure://acct/c/a"),
        (azure_storage(account="acct", container="c", prefix="a", access_key="a2V5"), None),
        (s3_storage(bucket="bk", prefix="x", from_env=True), "s3://bk/x"),
    ],
)
def test_cloud_factories_construct_and_pickle(storage: Storage, description: str | None) -> None:
    if description is not None:
        assert storage.describe() == description
    assert storage.supports_pickle
    clone = pickle.loads(pickle.dumps(storage))
    assert clone == storage and hash(clone) == hash(storage)
    assert isinstance(clone, ObstoreStorage)
    make_store(clone._spec)  # builds the obstore client, does no I/O


@pytest.mark.parametrize(
    "make",
    [
        lambda: s3_storage(bucket="", prefix="p"),
        lambda: s3_storage(bucket="a/b", prefix="p"),
        lambda: s3_storage(bucket="b", prefix="a//b"),
        lambda: s3_storage(bucket="b", prefix="../b"),
        lambda: s3_storage(bucket="b", prefix="p", access_key_id="only-one"),
        lambda: local_filesystem_storage(""),
        lambda: azure_storage(account="", container="c", prefix="p"),
    ],
)
def test_factories_validate(make: Callable[[], Storage]) -> None:
    with pytest.raises(InvalidInputError):
        make()


# ---------------------------------------------------------------------------------------------
# error translation and retry


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (FileNotFoundError("gone"), ObjectNotFoundError),
        (obe.AlreadyExistsError("there"), ObjectExistsError),
        (obe.PreconditionError("412"), ObjectExistsError),
        (obe.PermissionDeniedError("no"), StorageError),
        (obe.GenericError("Server returned non-2xx status code: 500 Internal"), StorageError),
        (ValueError("odd"), StorageError),
    ],
)
def test_translate_error(exc: Exception, expected: type[Exception]) -> None:
    out = translate_error(exc, backend="s3", key="a/b", op="get")
    assert type(out) is expected
    assert getattr(out, "key", None) == "a/b"
    if expected is StorageError:
        assert isinstance(out, StorageError) and out.cause is exc
        assert "'a/b'" in str(out) and "s3" in str(out)


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (obe.GenericError("Server returned non-2xx status code: 503 Service Unavailable"), True),
        (obe.GenericError("non-2xx status code: 500 Internal Server Error"), True),
        (obe.GenericError("non-2xx status code: 429 Too Many Requests"), True),
        (obe.GenericError("non-2xx status code: 400 Bad Request: timeout in body"), False),
        (obe.GenericError("HTTP error: error sending request"), True),
        (obe.GenericError("operation timed out"), True),
        (obe.GenericError("Requested range was invalid"), False),
        (ConnectionResetError(), True),
        (TimeoutError(), True),
        (FileNotFoundError(), False),
        (obe.AlreadyExistsError("x"), False),
        (obe.PreconditionError("x"), False),
        (obe.PermissionDeniedError("x"), False),
    ],
)
def test_is_transient(exc: Exception, transient: bool) -> None:
    assert is_transient(exc) is transient


def _flaky(
    failures: list[BaseException], result: str = "ok"
) -> tuple[Callable[[], Any], list[int]]:
    calls = [0]

    async def call() -> str:
        calls[0] += 1
        if failures:
            raise failures.pop(0)
        return result

    return call, calls


async def test_retry_transient_then_succeed() -> None:
    call, calls = _flaky([obe.GenericError("status code: 503 SlowDown"), TimeoutError()])
    policy = RetryPolicy(attempts=5, base=0.001)
    assert await with_retries(call, backend="s3", key="k", op="get", policy=policy) == "ok"
    assert calls == [3]


async def test_retry_gives_up() -> None:
    call, calls = _flaky([obe.GenericError("status code: 503")] * 10)
    policy = RetryPolicy(attempts=3, base=0.001)
    with pytest.raises(StorageError):
        await with_retries(call, backend="s3", key="k", op="get", policy=policy)
    assert calls == [3]


@pytest.mark.parametrize(
    ("exc", "expected"),
    [(FileNotFoundError(), ObjectNotFoundError), (obe.AlreadyExistsError(), ObjectExistsError)],
)
async def test_never_retry_answers(exc: Exception, expected: type[Exception]) -> None:
    call, calls = _flaky([exc])
    with pytest.raises(expected):
        await with_retries(call, backend="s3", key="k", op="put", policy=RetryPolicy(base=0.001))
    assert calls == [1]


def test_backoff_is_capped_and_jittered() -> None:
    policy = RetryPolicy(attempts=5, base=0.05, cap=2.0)
    delays = [policy.delay(i) for i in range(12) for _ in range(20)]
    assert all(0 <= d <= 2.0 for d in delays)
    assert len(set(delays)) > 100


def test_errors_pickle() -> None:
    err = ObjectExistsError("exists", key="refs/x")
    clone = pickle.loads(pickle.dumps(err))
    assert type(clone) is ObjectExistsError and clone.key == "refs/x"
    assert ObjectNotFoundError.__module__ == "icechunk_dist.storage"
