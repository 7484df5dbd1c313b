"""The DaskJob / DaskCluster manifest builders: the chart's spec, built from Python.

``make_dask_job_spec`` is checked equal to what ``helm template`` renders for the same settings
(one source of truth), and every manifest against the operator's CRD. ``kube_cluster`` is
checked to forward each argument it accepts (a recording stand-in replaces ``KubeCluster``:
no Kubernetes API is reachable here).
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path
from typing import Any, ClassVar

import pytest

from icechunk_dist import InvalidInputError
from icechunk_dist.kubernetes import (
    CONFIG_FILE,
    CONFIG_MOUNT,
    DEFAULT_POD_SECURITY_CONTEXT,
    DEFAULT_SECURITY_CONTEXT,
    kube_cluster,
    make_dask_cluster_spec,
    make_dask_job_spec,
    make_ingest_config,
    make_ingest_config_map,
)

RES = {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"cpu": "2", "memory": "4Gi"}}


def _containers(pod_spec: dict) -> dict[str, dict]:
    return {c["name"]: c for c in pod_spec["containers"]}


def test_dask_job_shape() -> None:
    job = make_dask_job_spec("nightly", image="example/icechunk-dist:1", n_workers=5,
                             credentials_secret="s3-creds", service_account="ingest",
                             worker_resources=RES, extra_args=["--dry-run"],
                             namespace="data")
    assert job["apiVersion"] == "kubernetes.dask.org/v1" and job["kind"] == "DaskJob"
    assert job["metadata"]["name"] == "nightly" and job["metadata"]["namespace"] == "data"

    runner = job["spec"]["job"]["spec"]
    assert runner["restartPolicy"] == "Never" and runner["serviceAccountName"] == "ingest"
    assert runner["activeDeadlineSeconds"] == 21600
    (c,) = runner["containers"]
    assert c["image"] == "example/icechunk-dist:1"
    assert "command" not in c
    assert c["args"] == ["icechunk-dist", "ingest", "--config", f"{CONFIG_MOUNT}/{CONFIG_FILE}",
                         "--scheduler", "$(DASK_SCHEDULER_ADDRESS)", "--wait-for-workers", "5",
                         "--timeout", "600", "--no-progress", "--dry-run"]
    assert c["envFrom"] == [{"secretRef": {"name": "s3-creds"}}]
    assert runner["volumes"] == [{"name": "ingest-config",
                                  "configMap": {"name": "nightly-ingest"}}]
    assert "metadata" not in job["spec"]["cluster"]

    cluster = job["spec"]["cluster"]["spec"]
    assert cluster["worker"]["replicas"] == 5
    worker = _containers(cluster["worker"]["spec"])["worker"]
    assert worker["resources"] == RES
    assert worker["envFrom"] == [{"secretRef": {"name": "s3-creds"}}]
    assert worker["args"][:2] == ["dask", "worker"]
    scheduler = _containers(cluster["scheduler"]["spec"])["scheduler"]
    assert scheduler["args"][:2] == ["dask", "scheduler"]
    assert "envFrom" not in scheduler  # the scheduler never touches storage
    for pod in (runner, cluster["worker"]["spec"], cluster["scheduler"]["spec"]):
        assert pod["securityContext"] == DEFAULT_POD_SECURITY_CONTEXT
        for ctr in pod["containers"]:
            assert ctr["securityContext"] == DEFAULT_SECURITY_CONTEXT
    svc = cluster["scheduler"]["service"]
    assert svc["selector"] == {"dask.org/cluster-name": "nightly",
                               "dask.org/component": "scheduler"}
    assert {p["port"] for p in svc["ports"]} == {8786, 8787}
    json.dumps(job)  # a plain JSON document, ready for kubectl / the Kubernetes API


def test_no_secret_means_no_env_from() -> None:
    job = make_dask_job_spec("job", image="img", n_workers=1, active_deadline_seconds=None)
    (c,) = job["spec"]["job"]["spec"]["containers"]
    assert "envFrom" not in c and "resources" not in c
    assert "activeDeadlineSeconds" not in job["spec"]["job"]["spec"]


def test_credentials_are_refused() -> None:
    with pytest.raises(InvalidInputError, match="Secret"):
        make_dask_job_spec("job", image="img", worker_env={"AWS_SECRET_ACCESS_KEY": "x"})
    with pytest.raises(InvalidInputError, match="Secret"):
        make_dask_job_spec("job", image="img", job_env={"AWS_SESSION_TOKEN": "x"})
    with pytest.raises(InvalidInputError, match="Secret"):
        make_ingest_config_map("job", {"repo": "s3://b/p", "sources": ["a.nc"],
                                       "secret_access_key": "x"})
    ok = make_dask_job_spec("job", image="img", worker_env={"AWS_REGION": "eu-west-1"})
    worker = ok["spec"]["cluster"]["spec"]["worker"]["spec"]["containers"][0]
    assert worker["env"] == [{"name": "AWS_REGION", "value": "eu-west-1"}]


@pytest.mark.parametrize("name", ["", "Upper", "under_score", "-lead", "x" * 38, "a/b", "a.b"])
def test_bad_names(name: str) -> None:
    with pytest.raises(InvalidInputError):
        make_dask_job_spec(name, image="img")


def test_bad_counts_and_secret_names() -> None:
    for kw in ({"n_workers": 0}, {"n_workers": -1}, {"worker_threads": 0},
               {"n_workers": True}, {"idle_timeout": -1}, {"image_pull_policy": "Sometimes"}):
        with pytest.raises(InvalidInputError):
            make_dask_cluster_spec("c", image="img", **kw)
    with pytest.raises(InvalidInputError):
        make_dask_job_spec("c", image="img", credentials_secret="Bad Name")
    with pytest.raises(InvalidInputError):
        make_dask_job_spec("c", image="img", timeout=0)
    with pytest.raises(InvalidInputError):
        make_dask_job_spec("c", image="img", kind="delete")
    with pytest.raises(InvalidInputError, match="module:function"):
        make_dask_job_spec("c", image="img", kind="map",
                           map_options={"repo": "s3://b/r", "to_branch": "x", "func": "f"})


def test_ingest_config_and_map() -> None:
    cfg = make_ingest_config("s3://bucket/repo", ["s3://bucket/in/*.nc"], concat_dim="time",
                             batch_size=4)
    assert cfg == {"repo": "s3://bucket/repo", "sources": ["s3://bucket/in/*.nc"],
                   "concat_dim": "time", "group": None, "branch": "main", "batch_size": 4,
                   "message": None, "endpoint_url": None, "allow_http": False, "region": None}
    cm = make_ingest_config_map("nightly", cfg, namespace="data")
    assert cm["kind"] == "ConfigMap" and cm["metadata"]["name"] == "nightly-ingest"
    assert json.loads(cm["data"][CONFIG_FILE]) == cfg
    for bad in ({"arrays": []}, {"x": object()}):
        with pytest.raises(InvalidInputError):
            make_ingest_config_map("nightly", bad)
    with pytest.raises(InvalidInputError):
        make_ingest_config("s3://b/r", "one.nc")  # a string is not a list of sources
    with pytest.raises(InvalidInputError):
        make_ingest_config("s3://b/r", ["a.nc"], batch_size=0)


# ---------------------------------------------------------------------------------------------
# One source of truth: the builder's spec IS the chart's spec.
# ---------------------------------------------------------------------------------------------
def _chart_spec(values: dict[str, Any], tmp_path: Path) -> tuple[dict[str, Any],
                                                                   dict[str, Any] | None]:
    pytest.importorskip("yaml")
    import chart_tools

    chart_tools.require_helm()
    docs = chart_tools.render(values=values, tmp_path=tmp_path)
    (job,) = [d for d in docs if d["kind"] == "DaskJob"]
    cms = [d for d in docs if d["kind"] == "ConfigMap" and "ingest.json" in d["data"]]
    return job, (json.loads(cms[0]["data"]["ingest.json"]) if cms else None)


CASES: list[tuple[dict[str, Any], dict[str, Any]]] = [
    # (helm values, make_dask_job_spec keyword arguments) for the same job
    ({}, dict(service_account="rel-icechunk-dist", worker_resources=RES)),
    ({"image": {"repository": "img", "tag": "1"}, "storage": {"credentialsSecret": "creds"},
      "worker": {"replicas": 3}},
     dict(image="img:1", n_workers=3, credentials_secret="creds",
          service_account="rel-icechunk-dist", worker_resources=RES)),
    ({"fullnameOverride": "era5", "serviceAccount": {"create": False, "name": "writer"},
      "image": {"pullPolicy": "Always", "pullSecrets": [{"name": "regcred"}]},
      "job": {"waitForWorkers": 4, "timeoutSeconds": 120, "activeDeadlineSeconds": None,
              "progress": True,
              "resources": {"limits": {"memory": "2Gi"}}, "env": [{"name": "A", "value": "1"}],
              "nodeSelector": {"pool": "sys"},
              "tolerations": [{"key": "k", "operator": "Exists"}]},
      "ingest": {"extraArgs": ["--dry-run"]},
      "scheduler": {"resources": {"requests": {"cpu": "500m"}}, "serviceType": "NodePort",
                    "idleTimeoutSeconds": 600, "nodeSelector": {"pool": "sys"}},
      "worker": {"replicas": 6, "threads": 3, "resources": None, "env": [{"name": "B",
                                                                         "value": "2"}],
                 "nodeSelector": {"pool": "spot"},
                 "tolerations": [{"key": "spot", "operator": "Exists",
                                  "effect": "NoSchedule"}]},
      "storage": {"credentialsSecret": "s3"}},
     dict(name="era5", n_workers=6, worker_threads=3, wait_for_workers=4, timeout=120,
          progress=True,
          active_deadline_seconds=None, service_account="writer", image_pull_policy="Always",
          image_pull_secrets=["regcred"], job_resources={"limits": {"memory": "2Gi"}},
          job_env={"A": "1"}, worker_env={"B": "2"}, job_node_selector={"pool": "sys"},
          job_tolerations=[{"key": "k", "operator": "Exists"}],
          scheduler_resources={"requests": {"cpu": "500m"}}, scheduler_service_type="NodePort",
          idle_timeout=600, scheduler_node_selector={"pool": "sys"},
          worker_node_selector={"pool": "spot"},
          worker_tolerations=[{"key": "spot", "operator": "Exists", "effect": "NoSchedule"}],
          credentials_secret="s3", extra_args=["--dry-run"])),
    ({"job": {"kind": "map"}, "storage": {"endpointUrl": "http://minio:9000",
                                          "allowHttp": True, "region": "r1"},
      "map": {"from": "v1", "toBranch": "fixed", "func": "pkg.mod:fix", "group": "g",
              "rechunk": {"time": 24, "lat": 10}, "message": "fix"}},
     dict(kind="map", service_account="rel-icechunk-dist", worker_resources=RES,
          endpoint_url="http://minio:9000", allow_http=True, region="r1",
          map_options={"repo": "s3://my-bucket/repos/my-dataset", "from": "v1",
                       "to_branch": "fixed", "func": "pkg.mod:fix", "group": "g",
                       "rechunk": {"time": 24, "lat": 10}, "message": "fix"})),
]


@pytest.mark.parametrize(("values", "kwargs"), CASES)
def test_builder_equals_chart(values: dict[str, Any], kwargs: dict[str, Any],
                              tmp_path: Path) -> None:
    import chart_tools

    rendered, _ = _chart_spec(values, tmp_path)
    kw = dict(kwargs)
    name = kw.pop("name", "rel-icechunk-dist")
    kw.setdefault("image", "ghcr.io/icechunk-dist/icechunk-dist:0.1.0")
    built = make_dask_job_spec(name, instance="rel", **kw)
    assert built["spec"] == rendered["spec"]
    assert built["metadata"]["name"] == rendered["metadata"]["name"]
    assert built["metadata"]["labels"].items() <= rendered["metadata"]["labels"].items()
    chart_tools.validate_dask_job(built)


def test_ingest_config_equals_chart(tmp_path: Path) -> None:
    values = {"storage": {"url": "s3://b/repo", "endpointUrl": "http://127.0.0.1:9000",
                          "allowHttp": True},
              "ingest": {"sources": ["s3://b/in/*.nc", "s3://b/extra.nc"], "concatDim": "time",
                         "group": "g", "batchSize": 2, "branch": "dev", "message": "m"}}
    _, cfg = _chart_spec(values, tmp_path)
    assert cfg == make_ingest_config("s3://b/repo", ["s3://b/in/*.nc", "s3://b/extra.nc"],
                                     concat_dim="time", group="g", batch_size=2, branch="dev",
                                     message="m", endpoint_url="http://127.0.0.1:9000",
                                     allow_http=True)
    _, cfg = _chart_spec({}, tmp_path)
    assert cfg == make_ingest_config("s3://my-bucket/repos/my-dataset",
                                     ["s3://my-bucket/incoming/*.nc"])


# ---------------------------------------------------------------------------------------------
# kube_cluster forwards every argument.
# ---------------------------------------------------------------------------------------------
class _RecordingKubeCluster:
    calls: ClassVar[list[dict[str, Any]]] = []

    def __init__(self, **kwargs: Any) -> None:
        type(self).calls.append(kwargs)


@pytest.fixture
def fake_operator(monkeypatch: pytest.MonkeyPatch) -> type[_RecordingKubeCluster]:
    _RecordingKubeCluster.calls = []
    pkg = types.ModuleType("dask_kubernetes")
    op = types.ModuleType("dask_kubernetes.operator")
    op.KubeCluster = _RecordingKubeCluster  # type: ignore[attr-defined]
    pkg.operator = op  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "dask_kubernetes", pkg)
    monkeypatch.setitem(sys.modules, "dask_kubernetes.operator", op)
    return _RecordingKubeCluster


def test_kube_cluster_forwards_every_argument(fake_operator: type[_RecordingKubeCluster]) -> None:
    import inspect

    args: dict[str, Any] = dict(
        image="reg/img:2", n_workers=7, worker_threads=3, credentials_secret="s3",
        namespace="data", service_account="writer", worker_resources=RES,
        scheduler_resources={"requests": {"cpu": "250m"}}, worker_env={"A": "1"},
        image_pull_policy="Always", image_pull_secrets=["regcred"],
        scheduler_service_type="LoadBalancer", idle_timeout=300,
        pod_security_context={**DEFAULT_POD_SECURITY_CONTEXT, "runAsUser": 2000},
        security_context={**DEFAULT_SECURITY_CONTEXT, "readOnlyRootFilesystem": True},
    )
    # this test names every parameter kube_cluster has
    params = set(inspect.signature(kube_cluster).parameters) - {"name", "kwargs"}
    assert params == set(args)
    result = kube_cluster("mycluster", **args, shutdown_on_close=False, resource_timeout=30,
                          quiet=True)
    assert isinstance(result, fake_operator)
    (call,) = fake_operator.calls
    manifest = call.pop("custom_cluster_spec")
    assert call == {"namespace": "data", "shutdown_on_close": False, "resource_timeout": 30,
                    "quiet": True}
    assert manifest["metadata"] == {"name": "mycluster", "namespace": "data"}
    expected = {k: v for k, v in args.items() if k != "namespace"}
    assert manifest["spec"] == make_dask_cluster_spec("mycluster", **expected)
    spec = manifest["spec"]
    worker = spec["worker"]["spec"]["containers"][0]
    assert spec["worker"]["replicas"] == 7 and spec["idleTimeout"] == 300
    assert worker["args"][worker["args"].index("--nthreads") + 1] == "3"
    assert worker["envFrom"] == [{"secretRef": {"name": "s3"}}]
    assert worker["securityContext"]["readOnlyRootFilesystem"] is True
    assert spec["worker"]["spec"]["securityContext"]["runAsUser"] == 2000
    assert spec["worker"]["spec"]["serviceAccountName"] == "writer"
    assert spec["worker"]["spec"]["imagePullSecrets"] == [{"name": "regcred"}]
    assert spec["scheduler"]["service"]["type"] == "LoadBalancer"
    assert spec["scheduler"]["spec"]["containers"][0]["resources"] == {
        "requests": {"cpu": "250m"}}
    assert worker["image"] == "reg/img:2" and worker["imagePullPolicy"] == "Always"
    with pytest.raises(InvalidInputError, match="custom_cluster_spec"):
        kube_cluster("c", image="img", custom_cluster_spec={})


def test_kube_cluster_without_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    # simulate a missing dask-kubernetes even where it is installed
    monkeypatch.setitem(sys.modules, "dask_kubernetes", None)
    monkeypatch.setitem(sys.modules, "dask_kubernetes.operator", None)
    with pytest.raises(ImportError, match=r"icechunk_dist\[k8s\]"):
        kube_cluster("c", image="img")
