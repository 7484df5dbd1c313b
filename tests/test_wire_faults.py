"""Faults on the wire: a proxy in front of the moto S3 server forwards each request and drops
the response (the request landed, the client's connection closes), for matching requests or
at random. obstore and our retry layer see what they would see on a real network.

Every commit, merge, rebase, tag and branch operation succeeds exactly once or fails cleanly
(issue 10, bugs 3 and 4 on the wire), and a branch tip costs the same requests after a long
history as after a short one (issue 9), counted on the wire."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import pytest
import zarr
from conftest import S3_ACCESS_KEY_ID, S3_REGION, S3_SECRET_ACCESS_KEY
from lossy_proxy import LossyProxy, lossy_proxy

import icechunk_dist as icd
from icechunk_dist import BasicConflictSolver, ConflictError, Repository, StorageError
from icechunk_dist.storage import Storage
from icechunk_dist.storage._obstore import ObstoreStorage
from icechunk_dist.storage._retry import RetryPolicy


@pytest.fixture
def proxy(s3_server: str) -> Iterator[LossyProxy]:
    with lossy_proxy(s3_server, seed=7) as p:
        yield p


@pytest.fixture
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    # our retry layer's backoff, shortened (obstore's own retries stay as shipped)
    monkeypatch.setattr(ObstoreStorage, "retry_policy", RetryPolicy(attempts=3, base=0.01))


@pytest.fixture
def via_proxy(proxy: LossyProxy, s3_bucket: str) -> Callable[[], Storage]:
    def make() -> Storage:
        return icd.s3_storage(bucket=s3_bucket, prefix="repo", region=S3_REGION,
                              endpoint_url=proxy.url, allow_http=True,
                              access_key_id=S3_ACCESS_KEY_ID,
                              secret_access_key=S3_SECRET_ACCESS_KEY)

    return make


@pytest.fixture
def direct(make_s3_storage: Callable[..., Storage]) -> Storage:
    """The same repository, straight to moto (no proxy): the ground truth."""
    return make_s3_storage("repo")


def write_x(session: icd.Session, value: int) -> None:
    zarr.create_array(session.store, name="x", shape=(8,), chunks=(2,), dtype="i4",
                      fill_value=-1, overwrite=True)[:] = value


def history(storage: Storage) -> list[str]:
    return [s.message for s in Repository.open(storage).ancestry(branch="main")]


def put_to(fragment: str, *, once: bool = True) -> Callable[[str, str], bool]:
    """Drop the response of the (first) PUT whose path contains ``fragment``."""
    done: list[str] = []

    def rule(method: str, path: str) -> bool:
        if method != "PUT" or fragment not in path or (once and done):
            return False
        done.append(path)
        return True

    return rule


@pytest.mark.parametrize("fragment", ["/manifests/", "/transactions/", "/snapshots/",
                                      "/refs/branch.main/9"])
def test_commit_with_a_dropped_response(proxy: LossyProxy, via_proxy: Callable[[], Storage],
                                        direct: Storage, fragment: str) -> None:
    repo = Repository.create(via_proxy())
    s = repo.writable_session("main")
    write_x(s, 5)
    proxy.rules(drop_if=put_to(fragment))
    sid = s.commit("five")
    assert proxy.dropped == 1
    assert Repository.open(direct).lookup_branch("main") == sid
    assert history(direct) == ["five", "Repository initialized"]
    np.testing.assert_array_equal(
        zarr.open_array(Repository.open(direct).readonly_session("main").store, path="x")[:],
        5)


@pytest.mark.parametrize("fragment", ["/snapshots/", "/transactions/", "/repo/repo"])
def test_create_with_a_dropped_response(proxy: LossyProxy, via_proxy: Callable[[], Storage],
                                        direct: Storage, fragment: str) -> None:
    proxy.rules(drop_if=put_to(fragment))
    repo = Repository.create(via_proxy())
    assert proxy.dropped == 1
    assert Repository.open(direct).lookup_branch("main") == repo.lookup_branch("main")


def test_ref_write_whose_every_retry_fails(proxy: LossyProxy, fast_retries: None,
                                           via_proxy: Callable[[], Storage],
                                           direct: Storage) -> None:
    """Bug 4 on the wire: the ref create lands; the responses of it and of every retry are
    dropped; the commit reads the version back and reports success."""
    repo = Repository.create(via_proxy())
    s = repo.writable_session("main")
    write_x(s, 6)
    proxy.rules(drop_if=put_to("/refs/branch.main/9", once=False))
    sid = s.commit("six")
    assert proxy.dropped >= 2
    assert Repository.open(direct).lookup_branch("main") == sid
    assert history(direct) == ["six", "Repository initialized"]


def test_tags_and_branches_with_dropped_responses(proxy: LossyProxy,
                                                  via_proxy: Callable[[], Storage],
                                                  direct: Storage) -> None:
    repo = Repository.create(via_proxy())
    sid = repo.lookup_branch("main")
    for fragment, op in [("/refs/tag.v1/ref", lambda: repo.create_tag("v1", sid)),
                         ("/refs/branch.dev/", lambda: repo.create_branch("dev", sid)),
                         ("/refs/tag.v1/deleted", lambda: repo.delete_tag("v1")),
                         ("/refs/branch.dev/", lambda: repo.delete_branch("dev"))]:
        proxy.rules(drop_if=put_to(fragment))
        op()
        assert proxy.dropped == 1, fragment
    truth = Repository.open(direct)
    assert truth.list_tags() == set() and truth.list_branches() == {"main"}


def test_random_dropped_responses(proxy: LossyProxy, fast_retries: None,
                                  via_proxy: Callable[[], Storage], direct: Storage) -> None:
    """Commits, merges of forks, rebases, tags, branches with 15% of all responses dropped:
    every operation that returned landed exactly once; every one that raised left nothing."""
    repo = Repository.create(via_proxy())
    proxy.rules(probability=0.15)
    expected = ["Repository initialized"]
    tags: set[str] = set()
    branches = {"main"}
    arrays: dict[str, int] = {}
    failed = 0
    for i in range(10):
        kind = ("commit", "merge", "rebase", "tag", "branch")[i % 5]
        try:
            if kind == "tag":
                repo.create_tag(f"t{i}", repo.lookup_branch("main"))
                tags.add(f"t{i}")
                continue
            if kind == "branch":
                repo.create_branch(f"b{i}", repo.lookup_branch("main"))
                branches.add(f"b{i}")
                continue
            s = repo.writable_session("main")
            if kind == "merge":
                forks = [s.fork(), s.fork()]
                for j, f in enumerate(forks):
                    zarr.create_array(f.store, name=f"m{i}_{j}", shape=(2,), dtype="i4")[:] = i
                s.merge(*forks)
                names = [f"m{i}_0", f"m{i}_1"]
            else:
                zarr.create_array(s.store, name=f"a{i}", shape=(2,), dtype="i4")[:] = i
                names = [f"a{i}"]
            if kind == "rebase":
                other = Repository.open(direct).writable_session("main")
                zarr.create_array(other.store, name=f"o{i}", shape=(2,), dtype="i4")[:] = i
                other.commit(f"other{i}")
                expected.insert(0, f"other{i}")
                arrays[f"o{i}"] = i
                s.commit(f"{kind}{i}", rebase_with=BasicConflictSolver())
            else:
                s.commit(f"{kind}{i}")
            expected.insert(0, f"{kind}{i}")
            arrays.update(dict.fromkeys(names, i))
        except (StorageError, ConflictError):
            failed += 1
    assert proxy.dropped > 3  # the faults really happened
    truth = Repository.open(direct)
    assert history(direct) == expected
    assert truth.list_tags() == tags and truth.list_branches() == branches
    root = zarr.open_group(truth.readonly_session("main").store, mode="r")
    assert {name for name, _ in root.members()} == set(arrays)
    for name, value in arrays.items():
        np.testing.assert_array_equal(root[name][:], value)  # type: ignore[index]
    assert failed < 10


def test_branch_tip_requests_do_not_grow_with_history(proxy: LossyProxy,
                                                      via_proxy: Callable[[], Storage]
                                                      ) -> None:
    """Issue 9 on S3, counted on the wire: 3 GETs and no LIST, after 3 or after 25
    versions (the listing read needed one LIST page per 1,000 versions)."""
    repo = Repository.create(via_proxy())
    sid = repo.lookup_branch("main")
    costs = []
    grown = 0
    for versions in (3, 25):
        while grown < versions:
            repo.reset_branch("main", sid)
            grown += 1
        repo.lookup_branch("main")  # lets the last move's tip hint (written behind it) land
        proxy.clear()
        assert repo.lookup_branch("main") == sid
        costs.append(proxy.counts())
    assert costs[0] == costs[1] == {"GET": 3}
