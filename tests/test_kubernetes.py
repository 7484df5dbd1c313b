"""The pure DaskJob / DaskCluster manifest builders (no Kubernetes cluster needed)."""

from __future__ import annotations

import json
import sys

import pytest

from icechunk_dist import InvalidInputError
from icechunk_dist.kubernetes import (
    CONFIG_FILE,
    CONFIG_MOUNT,
    kube_cluster,
    make_dask_cluster_spec,
    make_dask_job_spec,
    make_ingest_config_map,
)

RES = {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"cpu": "2", "memory": "4Gi"}}


def _containers(pod_spec: dict) -> dict[str, dict]:
    return {c["name"]: c for c in pod_spec["containers"]}


def test_dask_job_shape() -> None:
    job = make_dask_job_spec("nightly", image="example/icechunk-dist:1", n_workers=5,
                             credentials_secret="s3-creds", service_account="ingest",
                             worker_resources=RES, extra_args=["--no-progress"],
                             namespace="data")
    assert job["apiVersion"] == "kubernetes.dask.org/v1" and job["kind"] == "DaskJob"
    assert job["metadata"]["name"] == "nightly" and job["metadata"]["namespace"] == "data"

    runner = job["spec"]["job"]["spec"]
    assert runner["restartPolicy"] == "Never" and runner["serviceAccountName"] == "ingest"
    (c,) = runner["containers"]
    assert c["image"] == "example/icechunk-dist:1"
    assert c["args"] == ["icechunk-dist", "ingest", "--config", f"{CONFIG_MOUNT}/{CONFIG_FILE}",
                         "--no-progress"]
    assert c["envFrom"] == [{"secretRef": {"name": "s3-creds"}}]
    assert runner["volumes"] == [{"name": "ingest-config",
                                  "configMap": {"name": "nightly-ingest"}}]

    cluster = job["spec"]["cluster"]["spec"]
    assert cluster["worker"]["replicas"] == 5
    worker = _containers(cluster["worker"]["spec"])["worker"]
    assert worker["resources"] == RES
    assert worker["envFrom"] == [{"secretRef": {"name": "s3-creds"}}]
    assert worker["args"][0] == "dask-worker"
    scheduler = _containers(cluster["scheduler"]["spec"])["scheduler"]
    assert scheduler["args"] == ["dask-scheduler"]
    assert "envFrom" not in scheduler  # the scheduler never touches storage
    svc = cluster["scheduler"]["service"]
    assert svc["selector"] == {"dask.org/cluster-name": "nightly",
                               "dask.org/component": "scheduler"}
    assert {p["port"] for p in svc["ports"]} == {8786, 8787}
    json.dumps(job)  # a plain JSON document, ready for kubectl / the Kubernetes API


def test_no_secret_means_no_env_from() -> None:
    job = make_dask_job_spec("job", image="img", n_workers=0)
    (c,) = job["spec"]["job"]["spec"]["containers"]
    assert "envFrom" not in c and "resources" not in c
    assert job["spec"]["cluster"]["spec"]["worker"]["replicas"] == 0


def test_credentials_are_refused() -> None:
    with pytest.raises(InvalidInputError, match="Secret"):
        make_dask_job_spec("job", image="img", worker_env={"AWS_SECRET_ACCESS_KEY": "x"})
    with pytest.raises(InvalidInputError, match="Secret"):
        make_dask_job_spec("job", image="img", job_env={"AWS_SESSION_TOKEN": "x"})
    with pytest.raises(InvalidInputError, match="credentials"):
        make_ingest_config_map("job", {"storage": {"url": "s3://b/p",
                                                   "secret_access_key": "x"}})
    ok = make_dask_job_spec("job", image="img", worker_env={"AWS_REGION": "eu-west-1"})
    worker = ok["spec"]["cluster"]["spec"]["worker"]["spec"]["containers"][0]
    assert worker["env"] == [{"name": "AWS_REGION", "value": "eu-west-1"}]


@pytest.mark.parametrize("name", ["", "Upper", "under_score", "-lead", "x" * 54, "a/b"])
def test_bad_names(name: str) -> None:
    with pytest.raises(InvalidInputError):
        make_dask_job_spec(name, image="img")


def test_bad_counts_and_secret_names() -> None:
    with pytest.raises(InvalidInputError):
        make_dask_cluster_spec("c", image="img", n_workers=-1)
    with pytest.raises(InvalidInputError):
        make_dask_cluster_spec("c", image="img", worker_threads=0)
    with pytest.raises(InvalidInputError):
        make_dask_job_spec("c", image="img", credentials_secret="Bad Name")


def test_config_map() -> None:
    cfg = {"storage": {"url": "s3://bucket/repo"}, "arrays": [{"path": "a", "shape": [4],
                                                               "chunks": [2]}]}
    cm = make_ingest_config_map("nightly", cfg, namespace="data")
    assert cm["kind"] == "ConfigMap" and cm["metadata"]["name"] == "nightly-ingest"
    assert json.loads(cm["data"][CONFIG_FILE]) == cfg
    with pytest.raises(InvalidInputError):
        make_ingest_config_map("nightly", {"x": object()})


def test_kube_cluster_without_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    # simulate a missing dask-kubernetes even where it is installed
    monkeypatch.setitem(sys.modules, "dask_kubernetes", None)
    monkeypatch.setitem(sys.modules, "dask_kubernetes.operator", None)
    with pytest.raises(ImportError, match=r"icechunk_dist\[k8s\]"):
        kube_cluster("c", image="img")
