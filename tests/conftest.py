"""Shared pytest fixtures. Each section is self-contained; append new sections below."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest

from icechunk_dist.storage import Storage, s3_storage

# =============================================================================================
# S3 (moto) fixtures
#
#   s3_server        session: a moto S3 server on 127.0.0.1, returns "http://127.0.0.1:PORT"
#   s3_bucket        function: a fresh, uniquely named, empty bucket on that server
#   make_s3_storage  function: make_s3_storage(prefix="repo") -> Storage in s3_bucket
#
# Credentials are the dummy pair below, passed explicitly: nothing is put in os.environ.
# =============================================================================================
S3_ACCESS_KEY_ID = "testing"
S3_SECRET_ACCESS_KEY = "testing"
S3_REGION = "us-east-1"


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """Run a moto S3 server on a free port of 127.0.0.1 for the session; yield its URL."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(s3_server: str) -> str:
    """Create a fresh bucket on the moto server and return its name."""
    import boto3

    name = f"test-{uuid.uuid4().hex[:24]}"
    client = boto3.client(
        "s3",
        endpoint_url=s3_server,
        region_name=S3_REGION,
        aws_access_key_id=S3_ACCESS_KEY_ID,
        aws_secret_access_key=S3_SECRET_ACCESS_KEY,
    )
    client.create_bucket(Bucket=name)
    client.close()
    return name


@pytest.fixture
def make_s3_storage(s3_server: str, s3_bucket: str) -> Callable[..., Storage]:
    """Return ``make(prefix="repo") -> Storage`` for prefixes of the test's fresh bucket."""

    def make(prefix: str = "repo") -> Storage:
        return s3_storage(
            bucket=s3_bucket,
            prefix=prefix,
            region=S3_REGION,
            endpoint_url=s3_server,
            allow_http=True,
            access_key_id=S3_ACCESS_KEY_ID,
            secret_access_key=S3_SECRET_ACCESS_KEY,
        )

    return make


# =============================================================================================
# Local repositories, a Dask cluster, Hypothesis profiles (forks and distributed writes)
#
#   local_repo    function: a fresh Repository on local disk (tmp_path / "repo")
#   dask_client   session: a real distributed.LocalCluster (2 worker processes, 1 thread each)
#                 and a Client that is NOT the default: use ``with dask_client.as_current():``
#                 so tests of the threaded and processes schedulers never see it
#   hypothesis    profile "ci" registered (not loaded: other modules keep their own settings);
#                 select it with ``pytest --hypothesis-profile=ci``
# =============================================================================================
from pathlib import Path  # noqa: E402

from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile(
    "ci",
    max_examples=25,
    stateful_step_count=15,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@pytest.fixture
def local_repo(tmp_path: Path) -> object:
    """A fresh, empty repository on local disk under ``tmp_path / "repo"``."""
    import icechunk_dist as icd

    return icd.Repository.create(icd.local_filesystem_storage(str(tmp_path / "repo")))


@pytest.fixture(scope="session")
def dask_client() -> Iterator[object]:
    """A 2-process LocalCluster for the whole test session, with a non-default Client."""
    from distributed import Client, LocalCluster

    cluster = LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, host="127.0.0.1"
    )
    client = Client(cluster, set_as_default=False)
    try:
        client.wait_for_workers(2, timeout=60)
        yield client
    finally:
        client.close()
        cluster.close()


# =============================================================================================
# Azure (Azurite) and GCS (fake-gcs-server) emulators, see tests/cloud_emulators.py
#
#   azurite_server       session: Azurite's blob service on 127.0.0.1 (skips if node/npm
#                        are missing; installs azurite with npm into .venv/node on first use)
#   make_azure_storage   function: make_azure_storage(prefix="repo") -> Storage in a fresh
#                        container of that server
#   fake_gcs             session: fake-gcs-server on 127.0.0.1 (from its PyPI wheel)
#   gcs_bucket           function: a fresh bucket on it
# =============================================================================================


@pytest.fixture(scope="session")
def azurite_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    from cloud_emulators import EmulatorUnavailable, azurite

    try:
        with azurite(tmp_path_factory.mktemp("azurite")) as emu:
            yield emu
    except EmulatorUnavailable as exc:
        pytest.skip(f"Azurite unavailable: {exc}")


@pytest.fixture
def make_azure_storage(azurite_server: object) -> Callable[..., Storage]:
    from cloud_emulators import AZURITE_ACCOUNT, AZURITE_KEY, Emulator, azurite_create_container

    from icechunk_dist.storage import azure_storage

    assert isinstance(azurite_server, Emulator)
    container = f"test-{uuid.uuid4().hex[:24]}"
    azurite_create_container(azurite_server, container)

    def make(prefix: str = "repo") -> Storage:
        return azure_storage(
            account=AZURITE_ACCOUNT,
            container=container,
            prefix=prefix,
            access_key=AZURITE_KEY,
            endpoint_url=f"{azurite_server.url}/{AZURITE_ACCOUNT}",
            allow_http=True,
        )

    return make


@pytest.fixture(scope="session")
def fake_gcs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    from cloud_emulators import EmulatorUnavailable, fake_gcs_server

    try:
        with fake_gcs_server(tmp_path_factory.mktemp("fake-gcs")) as emu:
            yield emu
    except EmulatorUnavailable as exc:
        pytest.skip(f"fake-gcs-server unavailable: {exc}")


@pytest.fixture
def gcs_bucket(fake_gcs: object) -> str:
    from cloud_emulators import Emulator, fake_gcs_create_bucket

    assert isinstance(fake_gcs, Emulator)
    name = f"test-{uuid.uuid4().hex[:24]}"
    fake_gcs_create_bucket(fake_gcs, name)
    return name
