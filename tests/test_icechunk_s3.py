"""Icechunk's S3 calls (issue 23) against the moto S3 server (tests/conftest.py):
``s3_storage(..., force_path_style=True)`` and Icechunk's other S3 keywords,
``storage.s3_object_store_storage``, ``S3Options``, ``s3_store`` / ``local_filesystem_store``
and the ``ObjectStoreConfig`` values, and a repository status kept on S3.

Icechunk's own S3 tests all pass ``force_path_style=True`` (a MinIO at
``http://localhost:4200``); here the same calls reach moto. Requests to an ``endpoint_url``
are path-style either way; what ``force_path_style`` changes is how AWS itself is
addressed, checked on the obstore client the storage builds (no request to AWS is made).
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import zarr

import icechunk_dist as ic
from icechunk_dist import (
    ObjectStoreConfig,
    RepoAvailability,
    Repository,
    RepoStatus,
    S3Options,
)
from icechunk_dist.storage import s3_object_store_storage
from tests.conftest import S3_ACCESS_KEY_ID, S3_REGION, S3_SECRET_ACCESS_KEY


def _s3(s3_server: str, bucket: str, prefix: str | None, factory=ic.s3_storage, **kw):  # type: ignore[no-untyped-def]
    return factory(
        endpoint_url=s3_server,
        allow_http=True,
        force_path_style=True,
        region=S3_REGION,
        bucket=bucket,
        prefix=prefix,
        access_key_id=S3_ACCESS_KEY_ID,
        secret_access_key=S3_SECRET_ACCESS_KEY,
        **kw,
    )


def _roundtrip(storage: ic.Storage) -> None:
    repo = Repository.create(storage=storage, config=ic.RepositoryConfig(
        inline_chunk_threshold_bytes=0))
    session = repo.writable_session("main")
    root = zarr.group(store=session.store)
    array = root.ones(name="ones", shape=(10, 10), chunks=(5, 5), dtype="float32")
    array[:] = 20
    session.commit("firsttt")
    # another process's view: a pickled storage, a freshly opened repository
    again = Repository.open(pickle.loads(pickle.dumps(storage)))
    got = zarr.open_array(again.readonly_session("main").store, path="ones", mode="r")
    np.testing.assert_array_equal(got[:], np.full((10, 10), 20, "float32"))


def test_s3_storage_force_path_style(s3_server: str, s3_bucket: str) -> None:
    _roundtrip(_s3(s3_server, s3_bucket, "test-repo__force_path_style"))


def test_s3_object_store_storage(s3_server: str, s3_bucket: str) -> None:
    _roundtrip(_s3(s3_server, s3_bucket, "test-repo__object_store",
                   factory=s3_object_store_storage))
    assert ic.s3_object_store_storage is s3_object_store_storage


def test_s3_storage_at_the_bucket_root(s3_server: str, s3_bucket: str) -> None:
    storage = _s3(s3_server, s3_bucket, None)  # Icechunk's prefix=None
    _roundtrip(storage)
    assert storage == _s3(s3_server, s3_bucket, "")


def test_repository_status_on_s3(s3_server: str, s3_bucket: str) -> None:
    storage = _s3(s3_server, s3_bucket, "status")
    repo = Repository.create(storage)
    repo.set_status(RepoStatus(availability=RepoAvailability.read_only))
    other = Repository.open(_s3(s3_server, s3_bucket, "status"))
    assert other.status.availability == RepoAvailability.read_only
    with pytest.raises(ic.ReadOnlyError, match="repository status is read-only"):
        other.writable_session("main")
    other.set_status(RepoStatus(availability=RepoAvailability.online))
    session = repo.writable_session("main")
    zarr.group(session.store)
    session.commit("online again")


def _client_config(storage: ic.Storage) -> dict[str, object]:
    """The settings of the obstore client that ``storage`` builds (no request is made)."""
    from icechunk_dist.storage._spec import make_store

    return dict(make_store(storage._spec).config)  # type: ignore[attr-defined]


def test_force_path_style_on_aws_and_the_other_options() -> None:
    def aws(**kw: object) -> ic.Storage:
        return ic.s3_storage(bucket="my-bucket", prefix="p", region="eu-west-1",
                             access_key_id="k", secret_access_key="s", **kw)

    virtual = _client_config(aws())
    assert virtual["virtual_hosted_style_request"] == "true"  # obstore gives strings
    assert virtual["endpoint"] == "https://my-bucket.s3.eu-west-1.amazonaws.com"
    path = _client_config(aws(force_path_style=True))
    assert path["virtual_hosted_style_request"] == "false"
    assert path["endpoint"] == "https://s3.eu-west-1.amazonaws.com"
    assert _client_config(aws(requester_pays=True))["request_payer"] == "true"
    assert "request_payer" not in _client_config(aws())
    anon = _client_config(ic.s3_storage(bucket="b", prefix="p", anonymous=True))
    assert anon["skip_signature"] == "true"
    with pytest.raises(ic.InvalidInputError, match="anonymous"):
        aws(anonymous=True)
    # defaults leave the storage as it was: same spec, equal storages
    assert aws(force_path_style=False, requester_pays=False) == aws()


def test_s3_options_and_object_store_configs(tmp_path: object) -> None:
    opts = S3Options()
    assert (opts.region, opts.endpoint_url, opts.allow_http, opts.anonymous,
            opts.force_path_style, opts.network_stream_timeout_seconds, opts.requester_pays,
            opts.checksum_algorithm) == (None, None, False, False, False, None, False, None)
    opts = S3Options(region="us-east-1", allow_http=True, requester_pays=True)
    assert "S3Options(" in repr(opts) and "requester_pays=True" in repr(opts)

    store_config = ic.s3_store(region="us-east-1", endpoint_url="http://localhost:4200",
                               allow_http=True, force_path_style=True, s3_compatible=True)
    assert isinstance(store_config, ObjectStoreConfig.S3Compatible)
    assert store_config.options.force_path_style and store_config.options.allow_http
    assert store_config.options.network_stream_timeout_seconds == 60
    aws = ic.s3_store(region="us-east-1")
    assert isinstance(aws, ObjectStoreConfig.S3) and not isinstance(
        aws, ObjectStoreConfig.S3Compatible)
    assert aws == ObjectStoreConfig.S3(S3Options(region="us-east-1",
                                                 network_stream_timeout_seconds=60))
    assert aws != ObjectStoreConfig.S3Compatible(aws.options)

    local = ic.local_filesystem_store("/foo")
    assert local == ObjectStoreConfig.LocalFileSystem("/foo") and local.path == "/foo"
    gcs = ic.gcs_store({"google_service_account": "x"})
    assert gcs.options == {"google_service_account": "x"}
    azure = ic.storage.azure_store(account="acct", config={"azure_skip_signature": "true"})
    assert azure.options == {"account": "acct", "azure_skip_signature": "true"}
    http = ic.http_store({"timeout": "5s"}, headers={"authorization": "Bearer t"})
    for value in (store_config, aws, local, gcs, azure, http, ObjectStoreConfig.InMemory()):
        assert pickle.loads(pickle.dumps(value)) == value
    with pytest.raises(ic.InvalidInputError):
        ic.local_filesystem_store("")
    with pytest.raises(ic.InvalidInputError):
        ObjectStoreConfig.S3({"region": "x"})  # type: ignore[arg-type]
    with pytest.raises(ic.InvalidInputError):
        S3Options(network_stream_timeout_seconds=-1)
