"""Virtual chunk refs: chunks that live in existing files or S3 objects, not copied."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import boto3
import numpy as np
import pytest
import zarr

import icechunk_dist as icd
from icechunk_dist.storage import Storage

S3_ACCESS_KEY_ID = S3_SECRET_ACCESS_KEY = "testing"  # as in conftest.py
S3_REGION = "us-east-1"


def _virtual_array(session: icd.Session) -> zarr.Array:
    return zarr.create_array(session.store, name="v", shape=(100,), chunks=(50,), dtype="<i4",
                             compressors=None, fill_value=0)


def test_virtual_refs_to_a_local_file(tmp_path: Path) -> None:
    raw = tmp_path / "legacy.bin"
    data = np.arange(100, dtype="<i4")
    raw.write_bytes(b"HEADER" + data.tobytes())
    repo = icd.Repository.create(icd.local_filesystem_storage(tmp_path / "repo"))
    s = repo.writable_session("main")
    _virtual_array(s)
    s.store.set_virtual_ref("v/c/0", f"file://{raw}", offset=6, length=200)
    s.store.set_virtual_ref("v/c/1", f"file://{raw}", offset=206, length=200)
    s.commit("reference legacy file")
    # nothing was copied: the repository holds no chunk objects
    assert not (tmp_path / "repo" / "chunks").exists()
    got = zarr.open_array(repo.readonly_session("main").store, path="v", mode="r")[:]
    np.testing.assert_array_equal(got, data)
    # partial reads go to the right byte range
    np.testing.assert_array_equal(
        zarr.open_array(repo.readonly_session("main").store, path="v", mode="r")[60:70],
        data[60:70],
    )


def test_virtual_ref_bad_input(tmp_path: Path) -> None:
    repo = icd.Repository.create(icd.local_filesystem_storage(tmp_path / "repo"))
    s = repo.writable_session("main")
    _virtual_array(s)
    with pytest.raises(icd.InvalidInputError, match="URL"):
        s.store.set_virtual_ref("v/c/0", "/no/scheme", offset=0, length=4)
    with pytest.raises(icd.InvalidInputError, match="metadata"):
        s.store.set_virtual_ref("v/zarr.json", "file:///x", offset=0, length=4)
    with pytest.raises(icd.InvalidInputError):
        s.store.set_virtual_ref("v/c/9", "file:///x", offset=0, length=4)  # outside grid
    s.store.set_virtual_ref("v/c/0", "ftp://host/x", offset=0, length=200)
    s.commit("unreachable location")
    with pytest.raises(icd.StorageError, match="cannot read virtual chunk"):
        zarr.open_array(repo.readonly_session("main").store, path="v", mode="r")[:]


@pytest.mark.s3
def test_virtual_refs_to_s3_objects_with_etag(
    s3_server: str, s3_bucket: str, make_s3_storage: Callable[..., Storage]
) -> None:
    client = boto3.client("s3", endpoint_url=s3_server, region_name=S3_REGION,
                          aws_access_key_id=S3_ACCESS_KEY_ID,
                          aws_secret_access_key=S3_SECRET_ACCESS_KEY)
    data = np.arange(100, dtype="<i4")
    put = client.put_object(Bucket=s3_bucket, Key="legacy/data.bin", Body=data.tobytes())
    etag = put["ETag"]
    repo = icd.Repository.create(make_s3_storage("repo"))
    s = repo.writable_session("main")
    _virtual_array(s)
    url = f"s3://{s3_bucket}/legacy/data.bin"
    s.store.set_virtual_ref("v/c/0", url, offset=0, length=200, checksum=etag)
    s.store.set_virtual_ref("v/c/1", url, offset=200, length=200, checksum=etag)
    s.commit("reference S3 object")
    got = zarr.open_array(repo.readonly_session("main").store, path="v", mode="r")[:]
    np.testing.assert_array_equal(got, data)
    # the object changes under us: reads refuse instead of returning other bytes
    client.put_object(Bucket=s3_bucket, Key="legacy/data.bin", Body=(data * 2).tobytes())
    with pytest.raises(icd.StorageError, match="changed since it was referenced"):
        zarr.open_array(repo.readonly_session("main").store, path="v", mode="r")[:]
