"""icechunk_dist.storage.from_url: the one parser of repository locations (the CLI and
ingestion use it; ingestion keeps only its parser of *source* globs)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import S3_ACCESS_KEY_ID, S3_REGION, S3_SECRET_ACCESS_KEY

import icechunk_dist.cli
import icechunk_dist.ingest
from icechunk_dist import InvalidInputError
from icechunk_dist.storage import (
    Storage,
    azure_storage,
    from_url,
    gcs_storage,
    local_filesystem_storage,
    s3_storage,
)


def test_local_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    want = local_filesystem_storage(tmp_path / "repo")
    for url in (str(tmp_path / "repo"), "repo", "./repo", "~/repo", tmp_path / "repo",
                (tmp_path / "repo").as_uri(), f"file://localhost{tmp_path}/repo",
                "file://" + str(tmp_path / "a b").replace(" ", "%20") + "/../repo"):
        assert from_url(url) == want, url
    # a path with '#' or '?' is a path, not a URL with a fragment or query
    assert from_url("x#1?y") == local_filesystem_storage(tmp_path / "x#1?y")
    assert from_url("C:\\data\\repo").backend == "local"  # a Windows drive, not scheme "c"
    # options of network backends are ignored for a path (one set serves repo and sources)
    assert from_url("repo", endpoint_url="http://127.0.0.1:9", region="eu-west-1",
                    allow_http=True) == want


def test_memory() -> None:
    a, b = from_url("memory://"), from_url("memory://")
    assert a.backend == "memory" and a != b  # every call makes a new store
    with pytest.raises(InvalidInputError, match="memory://"):
        from_url("memory://named")


def test_s3() -> None:
    assert from_url("s3://bucket/some/prefix/") == s3_storage(
        bucket="bucket", prefix="some/prefix", from_env=True)
    assert from_url("s3a://bucket") == s3_storage(bucket="bucket", prefix="", from_env=True)
    keys = {"access_key_id": "AK", "secret_access_key": "SK"}
    with_keys = from_url("s3://b/p", endpoint_url="http://127.0.0.1:9000", allow_http=True,
                         region="eu-west-1", **keys)
    assert with_keys == s3_storage(bucket="b", prefix="p", endpoint_url="http://127.0.0.1:9000",
                                   allow_http=True, region="eu-west-1", **keys)
    assert with_keys.describe() == "s3://b/p at http://127.0.0.1:9000"
    assert from_url("s3://b/p", anonymous=True) == s3_storage(bucket="b", prefix="p")
    with pytest.raises(InvalidInputError, match="anonymous"):
        from_url("s3://b/p", anonymous=True, **keys)
    # None means "not given"
    assert from_url("s3://b/p", region=None, endpoint_url=None) == from_url("s3://b/p")


def test_gcs() -> None:
    want = gcs_storage(bucket="bkt", prefix="repo", from_env=True)
    assert from_url("gs://bkt/repo") == want == from_url("gcs://bkt/repo")
    assert from_url("gs://bkt/repo", anonymous=True) == gcs_storage(bucket="bkt",
                                                                     prefix="repo",
                                                                     anonymous=True)
    assert from_url("gs://bkt/repo", endpoint_url="http://127.0.0.1:4443", allow_http=True,
                    region="ignored") == gcs_storage(
        bucket="bkt", prefix="repo", endpoint_url="http://127.0.0.1:4443", allow_http=True,
        from_env=True)


def test_azure(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AZURE_STORAGE_ACCOUNT_NAME", raising=False)
    monkeypatch.delenv("AZURE_STORAGE_ACCOUNT", raising=False)
    want = azure_storage(account="acct", container="cont", prefix="a/b", from_env=True)
    assert from_url("az://cont/a/b", account="acct") == want
    assert from_url("abfs://cont@acct.dfs.core.windows.net/a/b") == want
    assert from_url("abfss://cont@acct.dfs.core.windows.net/a/b") == want
    with pytest.raises(InvalidInputError, match="account"):
        from_url("az://cont/a/b")
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_NAME", "acct")
    assert from_url("az://cont/a/b") == want
    with pytest.raises(InvalidInputError, match="names account"):
        from_url("abfs://cont@acct.dfs.core.windows.net/a/b", account="other")
    with pytest.raises(InvalidInputError, match="container@account"):
        from_url("abfs://cont@acct.example.com/a/b")


@pytest.mark.parametrize(("url", "match"), [
    ("", "required"),
    ("gopher://x", "unsupported storage URL"),
    ("http://host/x", "unsupported"),
    ("s3:///nobucket", "names no bucket"),
    ("gs://", "names no bucket"),
    ("az:///prefix", "names no container"),
    ("file://otherhost/x", "must be local"),
    ("s3://b/p?versionId=1", "no query or fragment"),
])
def test_bad_urls(url: str, match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        from_url(url)


def test_unknown_option() -> None:
    with pytest.raises(InvalidInputError, match=r"unknown storage option.*'endpoint'"):
        from_url("s3://b/p", endpoint="http://x")
    with pytest.raises(InvalidInputError, match="unknown storage option"):
        from_url("/tmp/repo", regoin="x")  # a typo is caught even where options are unused


def test_round_trip_on_s3(make_s3_storage: Callable[..., Storage], s3_server: str,
                          s3_bucket: str) -> None:
    storage = from_url(f"s3://{s3_bucket}/repo", endpoint_url=s3_server, allow_http=True,
                       region=S3_REGION, access_key_id=S3_ACCESS_KEY_ID,
                       secret_access_key=S3_SECRET_ACCESS_KEY)
    assert storage == make_s3_storage("repo")
    storage.put_sync("k", b"v")
    assert make_s3_storage("repo").get_sync("k") == b"v"


def test_ingestion_holds_no_parser_of_its_own() -> None:
    assert not hasattr(icechunk_dist.ingest, "storage_from_url")
    assert not hasattr(icechunk_dist.cli, "storage_from_url")
