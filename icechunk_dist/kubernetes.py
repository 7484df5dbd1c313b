"""Kubernetes integration: DaskJob manifests for ingestions and a ``KubeCluster`` helper.

:func:`make_dask_job_spec` builds the same ``DaskJob`` (``kubernetes.dask.org/v1``, the custom
resource of the dask-kubernetes operator) that the ``helm/icechunk-dist`` chart renders, for
submission from Python (``kubectl apply``, the Kubernetes client, a workflow engine). It is pure:
no Kubernetes client is imported. :func:`kube_cluster` starts a Dask cluster through the operator
and needs the ``k8s`` extra (``pip install 'icechunk_dist[k8s]'``); dask-kubernetes is imported
inside it only.

Storage credentials never appear in a manifest: pods read them from a Kubernetes Secret named
by ``credentials_secret`` (``envFrom: secretRef``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from icechunk_dist.errors import InvalidInputError

if TYPE_CHECKING:  # pragma: no cover
    from dask_kubernetes.operator import KubeCluster

__all__ = [
    "CONFIG_FILE",
    "CONFIG_MOUNT",
    "make_dask_cluster_spec",
    "make_dask_job_spec",
    "make_ingest_config_map",
    "kube_cluster",
]

#: Where the job runner finds the ingestion config (the ConfigMap's mount point and key).
CONFIG_MOUNT = "/etc/icechunk-dist"
CONFIG_FILE = "ingest.json"

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
# environment variable names that carry secrets: they belong in a Secret, not a manifest
_SECRET_ENV = re.compile(r"SECRET|TOKEN|PASSWORD|ACCESS_KEY|CREDENTIAL", re.IGNORECASE)


def _label_name(what: str, name: str) -> str:
    # 53 leaves room for the "-runner" / "-scheduler" / "-default-worker-..." suffixes
    if not isinstance(name, str) or len(name) > 53 or not _DNS_LABEL.match(name):
        raise InvalidInputError(
            f"{what} must be a DNS-1123 label (lowercase letters, digits, '-') of at most "
            f"53 characters, got {name!r}"
        )
    return name


def _subdomain(what: str, name: str) -> str:
    if not isinstance(name, str) or len(name) > 253 or not _DNS_SUBDOMAIN.match(name):
        raise InvalidInputError(f"{what} must be a DNS-1123 subdomain, got {name!r}")
    return name


def _env_list(env: Mapping[str, str] | None) -> list[dict[str, str]]:
    out = []
    for key, value in sorted((env or {}).items()):
        if _SECRET_ENV.search(key):
            raise InvalidInputError(
                f"environment variable {key!r} looks like a credential; put it in a Kubernetes "
                "Secret and pass its name as credentials_secret"
            )
        out.append({"name": str(key), "value": str(value)})
    return out


def _container_extras(
    *,
    credentials_secret: str | None,
    env: Mapping[str, str] | None,
    resources: Mapping[str, Any] | None,
) -> dict[str, Any]:
    extras: dict[str, Any] = {}
    if credentials_secret:
        extras["envFrom"] = [{"secretRef": {"name": _subdomain("credentials_secret",
                                                                credentials_secret)}}]
    env_list = _env_list(env)
    if env_list:
        extras["env"] = env_list
    if resources:
        extras["resources"] = dict(resources)
    return extras


def _pod_common(service_account: str | None) -> dict[str, Any]:
    return {"serviceAccountName": service_account} if service_account else {}


def make_dask_cluster_spec(
    name: str,
    *,
    image: str,
    n_workers: int = 2,
    worker_threads: int = 2,
    credentials_secret: str | None = None,
    service_account: str | None = None,
    worker_resources: Mapping[str, Any] | None = None,
    scheduler_resources: Mapping[str, Any] | None = None,
    worker_env: Mapping[str, str] | None = None,
    image_pull_policy: str = "IfNotPresent",
    scheduler_service_type: str = "ClusterIP",
) -> dict[str, Any]:
    """The ``spec`` of a ``DaskCluster``: one scheduler (with its Service) and N workers.

    Workers get ``envFrom: secretRef`` of ``credentials_secret`` because they write chunk
    objects straight to storage; the scheduler never touches storage and gets no credentials.

    Raises
    ------
    InvalidInputError
        On a malformed name, a negative worker count or a credential passed as ``worker_env``.
    """
    _label_name("name", name)
    if not isinstance(n_workers, int) or n_workers < 0:
        raise InvalidInputError(f"n_workers must be an int >= 0, got {n_workers!r}")
    if not isinstance(worker_threads, int) or worker_threads < 1:
        raise InvalidInputError(f"worker_threads must be an int >= 1, got {worker_threads!r}")
    worker = {
        "name": "worker",
        "image": image,
        "imagePullPolicy": image_pull_policy,
        "args": [
            "dask-worker", "--name", "$(DASK_WORKER_NAME)", "--nthreads", str(worker_threads),
            "--memory-limit", "auto", "--dashboard", "--dashboard-address", "8788",
        ],
        "ports": [{"name": "http-dashboard", "containerPort": 8788, "protocol": "TCP"}],
        **_container_extras(credentials_secret=credentials_secret, env=worker_env,
                            resources=worker_resources),
    }
    probe = {"httpGet": {"port": "http-dashboard", "path": "/health"}}
    scheduler: dict[str, Any] = {
        "name": "scheduler",
        "image": image,
        "imagePullPolicy": image_pull_policy,
        "args": ["dask-scheduler"],
        "ports": [
            {"name": "tcp-comm", "containerPort": 8786, "protocol": "TCP"},
            {"name": "http-dashboard", "containerPort": 8787, "protocol": "TCP"},
        ],
        "readinessProbe": {**probe, "initialDelaySeconds": 5, "periodSeconds": 10},
        "livenessProbe": {**probe, "initialDelaySeconds": 15, "periodSeconds": 20},
    }
    if scheduler_resources:
        scheduler["resources"] = dict(scheduler_resources)
    return {
        "worker": {
            "replicas": n_workers,
            "spec": {**_pod_common(service_account), "containers": [worker]},
        },
        "scheduler": {
            "spec": {**_pod_common(service_account), "containers": [scheduler]},
            "service": {
                "type": scheduler_service_type,
                "selector": {"dask.org/cluster-name": name, "dask.org/component": "scheduler"},
                "ports": [
                    {"name": "tcp-comm", "protocol": "TCP", "port": 8786,
                     "targetPort": "tcp-comm"},
                    {"name": "http-dashboard", "protocol": "TCP", "port": 8787,
                     "targetPort": "http-dashboard"},
                ],
            },
        },
    }


def make_ingest_config_map(name: str, config: Mapping[str, Any], *,
                           namespace: str | None = None) -> dict[str, Any]:
    """A ``ConfigMap`` named ``<name>-ingest`` holding ``config`` as ``ingest.json``.

    Raises
    ------
    InvalidInputError
        On a malformed name, or a config that is not JSON-serialisable or holds credentials.
    """
    _label_name("name", name)
    storage = config.get("storage", {})
    if isinstance(storage, Mapping) and any(_SECRET_ENV.search(str(k)) for k in storage):
        raise InvalidInputError(
            "the ingestion config must not hold credentials; use credentials_secret"
        )
    try:
        body = json.dumps(config, indent=2, sort_keys=True)
    except (TypeError, ValueError) as e:
        raise InvalidInputError(f"ingestion config is not JSON-serialisable: {e}") from None
    meta: dict[str, Any] = {"name": f"{name}-ingest",
                            "labels": {"app.kubernetes.io/name": "icechunk-dist",
                                       "app.kubernetes.io/component": "ingest"}}
    if namespace:
        meta["namespace"] = namespace
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta,
            "data": {CONFIG_FILE: body + "\n"}}


def make_dask_job_spec(
    name: str,
    *,
    image: str,
    config_map: str | None = None,
    n_workers: int = 2,
    worker_threads: int = 2,
    credentials_secret: str | None = None,
    service_account: str | None = None,
    job_resources: Mapping[str, Any] | None = None,
    worker_resources: Mapping[str, Any] | None = None,
    scheduler_resources: Mapping[str, Any] | None = None,
    job_env: Mapping[str, str] | None = None,
    worker_env: Mapping[str, str] | None = None,
    extra_args: Sequence[str] = (),
    namespace: str | None = None,
    image_pull_policy: str = "IfNotPresent",
    scheduler_service_type: str = "ClusterIP",
) -> dict[str, Any]:
    """The ``DaskJob`` manifest that runs ``icechunk-dist ingest`` on a fresh Dask cluster.

    Equivalent to what ``helm template`` renders from ``helm/icechunk-dist``: a job runner pod
    (the driver, which merges the workers' change-sets and makes the one commit) reading its
    config from the ConfigMap ``config_map`` (default ``<name>-ingest``, see
    :func:`make_ingest_config_map`), one scheduler and ``n_workers`` workers. The operator
    names the cluster after the job and sets ``DASK_SCHEDULER_ADDRESS`` in the runner.

    Parameters
    ----------
    name
        DaskJob name (a DNS-1123 label); the cluster, runner pod and Service derive from it.
    image
        Image with ``icechunk_dist[dask]`` installed, used by every container.
    credentials_secret
        Name of a Secret whose keys become environment variables (``envFrom``) of the runner
        and the workers. Credentials themselves are never accepted.
    extra_args
        Appended to ``icechunk-dist ingest --config ...``.

    Raises
    ------
    InvalidInputError
        On malformed names, bad counts, or anything that looks like a credential in ``*_env``.
    """
    _label_name("name", name)
    cm = _subdomain("config_map", config_map or f"{name}-ingest")
    job_container: dict[str, Any] = {
        "name": "job",
        "image": image,
        "imagePullPolicy": image_pull_policy,
        "args": ["icechunk-dist", "ingest", "--config", f"{CONFIG_MOUNT}/{CONFIG_FILE}",
                 *[str(a) for a in extra_args]],
        **_container_extras(credentials_secret=credentials_secret, env=job_env,
                            resources=job_resources),
        "volumeMounts": [{"name": "ingest-config", "mountPath": CONFIG_MOUNT, "readOnly": True}],
    }
    labels = {"app.kubernetes.io/name": "icechunk-dist", "app.kubernetes.io/instance": name}
    meta: dict[str, Any] = {"name": name,
                            "labels": {**labels, "app.kubernetes.io/component": "ingest"}}
    if namespace:
        meta["namespace"] = namespace
    return {
        "apiVersion": "kubernetes.dask.org/v1",
        "kind": "DaskJob",
        "metadata": meta,
        "spec": {
            "job": {
                "metadata": {"labels": {**labels, "app.kubernetes.io/component": "job"}},
                "spec": {
                    **_pod_common(service_account),
                    "restartPolicy": "Never",
                    "containers": [job_container],
                    "volumes": [{"name": "ingest-config", "configMap": {"name": cm}}],
                },
            },
            "cluster": {
                "metadata": {"labels": labels},
                "spec": make_dask_cluster_spec(
                    name,
                    image=image,
                    n_workers=n_workers,
                    worker_threads=worker_threads,
                    credentials_secret=credentials_secret,
                    service_account=service_account,
                    worker_resources=worker_resources,
                    scheduler_resources=scheduler_resources,
                    worker_env=worker_env,
                    image_pull_policy=image_pull_policy,
                    scheduler_service_type=scheduler_service_type,
                ),
            },
        },
    }


def kube_cluster(
    name: str,
    *,
    image: str,
    n_workers: int = 2,
    credentials_secret: str | None = None,
    namespace: str | None = None,
    worker_resources: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> KubeCluster:
    """Start a Dask cluster on the dask-kubernetes operator for distributed writes.

    Builds the cluster from :func:`make_dask_cluster_spec` (so workers read storage
    credentials from ``credentials_secret``) and hands it to
    ``dask_kubernetes.operator.KubeCluster(custom_cluster_spec=...)``; further keyword
    arguments go to ``KubeCluster``.

    Raises
    ------
    ImportError
        If dask-kubernetes is not installed (``pip install 'icechunk_dist[k8s]'``).
    InvalidInputError
        On malformed names or counts.
    """
    spec = make_dask_cluster_spec(name, image=image, n_workers=n_workers,
                                  credentials_secret=credentials_secret,
                                  worker_resources=worker_resources)
    try:
        from dask_kubernetes.operator import KubeCluster
    except ImportError as e:
        raise ImportError(
            "kube_cluster needs dask-kubernetes: pip install 'icechunk_dist[k8s]'"
        ) from e
    manifest = {"apiVersion": "kubernetes.dask.org/v1", "kind": "DaskCluster",
                "metadata": {"name": name}, "spec": spec}
    if namespace:
        kwargs["namespace"] = namespace
    return KubeCluster(custom_cluster_spec=manifest, **kwargs)
