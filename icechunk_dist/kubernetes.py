"""Kubernetes integration: DaskJob manifests for ingestions and a ``KubeCluster`` helper.

:func:`make_dask_job_spec` builds exactly the ``DaskJob`` (``kubernetes.dask.org/v1``, the
custom resource of the dask-kubernetes operator) whose ``spec`` the ``helm/icechunk-dist`` chart
renders (tests/test_kubernetes.py compares them), for submission from Python (``kubectl
apply``, the Kubernetes client, a workflow engine): a job runner running ``icechunk-dist ingest
--config ...`` (or ``map``) that waits for its workers with a timeout, ``dask scheduler`` and
``dask worker`` pods, all under the restricted Pod Security profile, and only fields the CRD
knows. :func:`make_ingest_config` / :func:`make_ingest_config_map` give the ingestion config
(the ``IngestConfig`` JSON) the runner reads. It is pure: no Kubernetes client is imported.
:func:`kube_cluster` starts a Dask cluster through the operator and needs the ``k8s`` extra
(``pip install 'icechunk_dist[k8s]'``); dask-kubernetes is imported inside it only.

Storage credentials never appear in a manifest: pods read them from a Kubernetes Secret named
by ``credentials_secret`` (``envFrom: secretRef``). docs/kubernetes.md is the walk-through.
"""

from __future__ import annotations

import copy
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
    "DEFAULT_POD_SECURITY_CONTEXT",
    "DEFAULT_SECURITY_CONTEXT",
    "MAX_NAME_LENGTH",
    "kube_cluster",
    "make_dask_cluster_spec",
    "make_dask_job_spec",
    "make_ingest_config",
    "make_ingest_config_map",
    "runner_args",
]

#: Where the job runner finds the ingestion config (the ConfigMap's mount point and key).
CONFIG_MOUNT = "/etc/icechunk-dist"
CONFIG_FILE = "ingest.json"

#: Longest DaskJob / DaskCluster name: the operator derives "<name>-default-worker-<10 hex>"
#: (26 more characters) from it and Kubernetes names and label values stop at 63. The chart
#: caps its fullname at the same length.
MAX_NAME_LENGTH = 37

#: The chart's default ``podSecurityContext`` / ``securityContext`` (restricted Pod Security
#: profile, the image's uid/gid 1000).
DEFAULT_POD_SECURITY_CONTEXT: dict[str, Any] = {
    "runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 1000,
    "seccompProfile": {"type": "RuntimeDefault"},
}
DEFAULT_SECURITY_CONTEXT: dict[str, Any] = {
    "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
    "runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000,
    "seccompProfile": {"type": "RuntimeDefault"},
}

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
_FUNC = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_.]*$")
# environment variable names that carry secrets: they belong in a Secret, not a manifest
_SECRET_ENV = re.compile(r"SECRET|TOKEN|PASSWORD|ACCESS_KEY|CREDENTIAL", re.IGNORECASE)
# the keys of icechunk_dist.ingest.IngestConfig, in the chart's order
_INGEST_KEYS = ("repo", "sources", "concat_dim", "group", "branch", "batch_size", "message",
                "endpoint_url", "allow_http", "region")


def _label_name(what: str, name: str) -> str:
    if not isinstance(name, str) or len(name) > MAX_NAME_LENGTH or not _DNS_LABEL.match(name):
        raise InvalidInputError(
            f"{what} must be a DNS-1123 label (lowercase letters, digits, '-') of at most "
            f"{MAX_NAME_LENGTH} characters, got {name!r}"
        )
    return name


def _subdomain(what: str, name: str) -> str:
    if not isinstance(name, str) or len(name) > 253 or not _DNS_SUBDOMAIN.match(name):
        raise InvalidInputError(f"{what} must be a DNS-1123 subdomain, got {name!r}")
    return name


def _count(what: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidInputError(f"{what} must be an int >= {minimum}, got {value!r}")
    return value


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
        extras["resources"] = copy.deepcopy(dict(resources))
    return extras


def _pod_common(service_account: str | None, pod_security_context: Mapping[str, Any],
                image_pull_secrets: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if service_account:
        out["serviceAccountName"] = service_account
    out["automountServiceAccountToken"] = False  # no pod here talks to the Kubernetes API
    out["securityContext"] = copy.deepcopy(dict(pod_security_context))
    if image_pull_secrets:
        out["imagePullSecrets"] = [{"name": _subdomain("image_pull_secrets", s)}
                                   for s in image_pull_secrets]
    return out


def _placement(node_selector: Mapping[str, str] | None,
               tolerations: Sequence[Mapping[str, Any]] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if node_selector:
        out["nodeSelector"] = dict(node_selector)
    if tolerations:
        out["tolerations"] = [dict(t) for t in tolerations]
    return out


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
    image_pull_secrets: Sequence[str] = (),
    scheduler_service_type: str = "ClusterIP",
    idle_timeout: int = 0,
    pod_security_context: Mapping[str, Any] = DEFAULT_POD_SECURITY_CONTEXT,
    security_context: Mapping[str, Any] = DEFAULT_SECURITY_CONTEXT,
    worker_node_selector: Mapping[str, str] | None = None,
    worker_tolerations: Sequence[Mapping[str, Any]] | None = None,
    scheduler_node_selector: Mapping[str, str] | None = None,
    scheduler_tolerations: Sequence[Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """The ``spec`` of a ``DaskCluster``: one scheduler (with its Service) and N workers.

    Exactly the chart's ``spec.cluster.spec``: the containers run ``dask scheduler`` and
    ``dask worker`` (the commands ``distributed`` installs), under the restricted Pod Security
    profile. Workers get ``envFrom: secretRef`` of ``credentials_secret`` because they write
    chunk objects straight to storage; the scheduler never touches storage and gets none.
    ``idle_timeout`` is the operator's ``spec.idleTimeout`` (seconds; 0 never).

    Raises
    ------
    InvalidInputError
        On a malformed name, a worker count < 1, threads < 1, or a credential in ``worker_env``.
    """
    _label_name("name", name)
    _count("n_workers", n_workers, 1)
    _count("worker_threads", worker_threads, 1)
    _count("idle_timeout", idle_timeout, 0)
    if image_pull_policy not in ("Always", "IfNotPresent", "Never"):
        raise InvalidInputError(f"image_pull_policy must be Always, IfNotPresent or Never, "
                                f"got {image_pull_policy!r}")
    if scheduler_service_type not in ("ClusterIP", "NodePort", "LoadBalancer"):
        raise InvalidInputError(f"scheduler_service_type must be ClusterIP, NodePort or "
                                f"LoadBalancer, got {scheduler_service_type!r}")
    common = _pod_common(service_account, pod_security_context, image_pull_secrets)
    worker = {
        "name": "worker",
        "image": image,
        "imagePullPolicy": image_pull_policy,
        "args": ["dask", "worker", "--name", "$(DASK_WORKER_NAME)",
                 "--nthreads", str(worker_threads), "--memory-limit", "auto",
                 "--dashboard", "--dashboard-address", ":8788"],
        "ports": [{"name": "http-dashboard", "containerPort": 8788, "protocol": "TCP"}],
        "securityContext": copy.deepcopy(dict(security_context)),
        **_container_extras(credentials_secret=credentials_secret, env=worker_env,
                            resources=worker_resources),
    }
    probe = {"httpGet": {"port": "http-dashboard", "path": "/health"}}
    scheduler: dict[str, Any] = {
        "name": "scheduler",
        "image": image,
        "imagePullPolicy": image_pull_policy,
        "args": ["dask", "scheduler", "--port", "8786", "--dashboard-address", ":8787"],
        "ports": [
            {"name": "tcp-comm", "containerPort": 8786, "protocol": "TCP"},
            {"name": "http-dashboard", "containerPort": 8787, "protocol": "TCP"},
        ],
        "readinessProbe": {**probe, "initialDelaySeconds": 5, "periodSeconds": 10},
        "livenessProbe": {**probe, "initialDelaySeconds": 15, "periodSeconds": 20},
        "securityContext": copy.deepcopy(dict(security_context)),
    }
    if scheduler_resources:
        scheduler["resources"] = copy.deepcopy(dict(scheduler_resources))
    return {
        "idleTimeout": idle_timeout,
        "worker": {
            "replicas": n_workers,
            "spec": {**copy.deepcopy(common), "containers": [worker],
                     **_placement(worker_node_selector, worker_tolerations)},
        },
        "scheduler": {
            "spec": {**copy.deepcopy(common), "containers": [scheduler],
                     **_placement(scheduler_node_selector, scheduler_tolerations)},
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


def make_ingest_config(
    repo: str,
    sources: Sequence[str],
    *,
    concat_dim: str | None = None,
    group: str | None = None,
    branch: str = "main",
    batch_size: int | None = None,
    message: str | None = None,
    endpoint_url: str | None = None,
    allow_http: bool = False,
    region: str | None = None,
) -> dict[str, Any]:
    """The ingestion config (``icechunk_dist.ingest.IngestConfig`` as JSON) the chart renders.

    Raises
    ------
    InvalidInputError
        On an empty repository, no sources or a batch size < 1.
    """
    if not repo or not isinstance(repo, str):
        raise InvalidInputError("repo is required (a path, file:// or s3:// URL)")
    if isinstance(sources, str) or not sources or not all(
            isinstance(s, str) and s for s in sources):
        raise InvalidInputError("sources must be a non-empty list of paths, URLs or globs")
    if batch_size is not None:
        _count("batch_size", batch_size, 1)
    return {"repo": repo, "sources": list(sources), "concat_dim": concat_dim or None,
            "group": group or None, "branch": branch, "batch_size": batch_size,
            "message": message or None, "endpoint_url": endpoint_url or None,
            "allow_http": bool(allow_http), "region": region or None}


def make_ingest_config_map(name: str, config: Mapping[str, Any], *,
                           namespace: str | None = None) -> dict[str, Any]:
    """A ``ConfigMap`` named ``<name>-ingest`` holding ``config`` as ``ingest.json``.

    ``config`` is an IngestConfig mapping (see :func:`make_ingest_config`).

    Raises
    ------
    InvalidInputError
        On a malformed name, a key the IngestConfig does not know (credentials included), or a
        config that is not JSON-serialisable.
    """
    _label_name("name", name)
    unknown = sorted(set(config) - set(_INGEST_KEYS))
    if unknown:
        hint = ("; credentials belong in a Secret (credentials_secret)"
                if any(_SECRET_ENV.search(str(k)) for k in unknown) else "")
        raise InvalidInputError(f"unknown ingestion config key(s) {unknown}: the keys are "
                                f"{list(_INGEST_KEYS)}{hint}")
    try:
        body = json.dumps(dict(config), indent=2)
    except (TypeError, ValueError) as e:
        raise InvalidInputError(f"ingestion config is not JSON-serialisable: {e}") from None
    meta: dict[str, Any] = {"name": f"{name}-ingest",
                            "labels": {"app.kubernetes.io/name": "icechunk-dist",
                                       "app.kubernetes.io/instance": name,
                                       "app.kubernetes.io/component": "ingest"}}
    if namespace:
        meta["namespace"] = namespace
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta,
            "data": {CONFIG_FILE: body + "\n"}}


def runner_args(
    kind: str = "ingest",
    *,
    wait_for_workers: int,
    timeout: int = 600,
    progress: bool = False,
    map_options: Mapping[str, Any] | None = None,
    endpoint_url: str | None = None,
    allow_http: bool = False,
    region: str | None = None,
    extra_args: Sequence[str] = (),
) -> list[str]:
    """The job runner's arguments after ``icechunk-dist`` (the rest of the chart's ``args``).

    ``kind="ingest"`` reads the mounted config; ``kind="map"`` needs ``map_options`` with
    ``repo``, ``to_branch`` and ``func`` (``module:function``) and/or ``rechunk``
    ({dim: size}), and optionally ``from`` (default ``main``), ``group`` and ``message``.
    Both connect to the operator's ``$(DASK_SCHEDULER_ADDRESS)`` and wait ``timeout``
    seconds for ``wait_for_workers`` workers; without ``progress`` they log plain lines
    (``--no-progress``).

    Raises
    ------
    InvalidInputError
        On an unknown kind or incomplete map options.
    """
    if kind == "ingest":
        args = ["ingest", "--config", f"{CONFIG_MOUNT}/{CONFIG_FILE}"]
    elif kind == "map":
        opts = dict(map_options or {})
        unknown = sorted(set(opts) - {"repo", "from", "to_branch", "func", "group", "rechunk",
                                      "message"})
        if unknown:
            raise InvalidInputError(f"unknown map option(s) {unknown}")
        if not opts.get("repo") or not opts.get("to_branch"):
            raise InvalidInputError("kind='map' needs map_options repo and to_branch")
        if not opts.get("func") and not opts.get("rechunk"):
            raise InvalidInputError("kind='map' needs map_options func (module:function) "
                                    "and/or rechunk")
        if opts.get("func") and not _FUNC.match(str(opts["func"])):
            raise InvalidInputError(f"map func must be module:function, got {opts['func']!r}")
        args = ["map", str(opts["repo"]), "--from", str(opts.get("from") or "main"),
                "--to-branch", str(opts["to_branch"])]
        if opts.get("func"):
            args += ["--func", str(opts["func"])]
        if opts.get("group"):
            args += ["--group", str(opts["group"])]
        rechunk = opts.get("rechunk") or {}
        if rechunk:
            args += ["--rechunk", ",".join(f"{d}={_count('rechunk size', n, 1)}"
                                           for d, n in sorted(rechunk.items()))]
        if opts.get("message"):
            args += ["-m", str(opts["message"])]
        if endpoint_url:
            args += ["--endpoint-url", endpoint_url]
        if allow_http:
            args += ["--allow-http"]
        if region:
            args += ["--region", region]
    else:
        raise InvalidInputError(f"kind must be 'ingest' or 'map', got {kind!r}")
    _count("wait_for_workers", wait_for_workers, 0)
    _count("timeout", timeout, 1)
    return [*args, "--scheduler", "$(DASK_SCHEDULER_ADDRESS)",
            "--wait-for-workers", str(wait_for_workers), "--timeout", str(timeout),
            *([] if progress else ["--no-progress"]), *[str(a) for a in extra_args]]


def make_dask_job_spec(
    name: str,
    *,
    image: str,
    kind: str = "ingest",
    config_map: str | None = None,
    map_options: Mapping[str, Any] | None = None,
    n_workers: int = 2,
    worker_threads: int = 2,
    wait_for_workers: int | None = None,
    timeout: int = 600,
    progress: bool = False,
    active_deadline_seconds: int | None = 21600,
    idle_timeout: int = 0,
    credentials_secret: str | None = None,
    service_account: str | None = None,
    job_resources: Mapping[str, Any] | None = None,
    worker_resources: Mapping[str, Any] | None = None,
    scheduler_resources: Mapping[str, Any] | None = None,
    job_env: Mapping[str, str] | None = None,
    worker_env: Mapping[str, str] | None = None,
    extra_args: Sequence[str] = (),
    endpoint_url: str | None = None,
    allow_http: bool = False,
    region: str | None = None,
    namespace: str | None = None,
    instance: str | None = None,
    image_pull_policy: str = "IfNotPresent",
    image_pull_secrets: Sequence[str] = (),
    scheduler_service_type: str = "ClusterIP",
    pod_security_context: Mapping[str, Any] = DEFAULT_POD_SECURITY_CONTEXT,
    security_context: Mapping[str, Any] = DEFAULT_SECURITY_CONTEXT,
    job_node_selector: Mapping[str, str] | None = None,
    job_tolerations: Sequence[Mapping[str, Any]] | None = None,
    worker_node_selector: Mapping[str, str] | None = None,
    worker_tolerations: Sequence[Mapping[str, Any]] | None = None,
    scheduler_node_selector: Mapping[str, str] | None = None,
    scheduler_tolerations: Sequence[Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """The ``DaskJob`` manifest that runs ``icechunk-dist ingest`` (or ``map``) on a fresh cluster.

    Its ``spec`` is exactly what ``helm template`` renders from ``helm/icechunk-dist`` for the
    same settings (tests/test_kubernetes.py checks that): a job runner pod (the driver, which
    merges the workers' change-sets and makes the one commit) reading its config from the
    ConfigMap ``config_map`` (default ``<instance>-ingest``, see :func:`make_ingest_config_map`),
    one scheduler and ``n_workers`` workers. The operator names the cluster after the job and
    sets ``DASK_SCHEDULER_ADDRESS`` in the runner, which waits for ``wait_for_workers``
    (default ``n_workers``) workers at most ``timeout`` seconds. ``active_deadline_seconds``
    is the runner pod's deadline (the only deadline the DaskJob CRD carries; None for none).

    Parameters
    ----------
    name
        DaskJob name (a DNS-1123 label of at most :data:`MAX_NAME_LENGTH` characters); the
        cluster, runner pod and Service derive from it.
    image
        Image built from the repository's Dockerfile, used by every container.
    credentials_secret
        Name of a Secret whose keys become environment variables (``envFrom``) of the runner
        and the workers. Credentials themselves are never accepted.
    instance
        The ``app.kubernetes.io/instance`` label (the Helm release name); default ``name``.
    extra_args
        Appended to the runner's command line.

    Raises
    ------
    InvalidInputError
        On malformed names, bad counts, or anything that looks like a credential in ``*_env``.
    """
    _label_name("name", name)
    inst = instance or name
    cm = _subdomain("config_map", config_map or f"{name}-ingest")
    if active_deadline_seconds is not None:
        _count("active_deadline_seconds", active_deadline_seconds, 1)
    args = runner_args(kind, wait_for_workers=n_workers if wait_for_workers is None
                       else wait_for_workers, timeout=timeout, progress=progress,
                       map_options=map_options,
                       endpoint_url=endpoint_url, allow_http=allow_http, region=region,
                       extra_args=extra_args)
    job_container: dict[str, Any] = {
        "name": "job",
        "image": image,
        "imagePullPolicy": image_pull_policy,
        "args": ["icechunk-dist", *args],
        "securityContext": copy.deepcopy(dict(security_context)),
        **_container_extras(credentials_secret=credentials_secret, env=job_env,
                            resources=job_resources),
    }
    pod: dict[str, Any] = {
        **_pod_common(service_account, pod_security_context, image_pull_secrets),
        "restartPolicy": "Never",
    }
    if active_deadline_seconds is not None:
        pod["activeDeadlineSeconds"] = active_deadline_seconds
    pod["containers"] = [job_container]
    if kind == "ingest":
        job_container["volumeMounts"] = [{"name": "ingest-config", "mountPath": CONFIG_MOUNT,
                                          "readOnly": True}]
        pod["volumes"] = [{"name": "ingest-config", "configMap": {"name": cm}}]
    pod.update(_placement(job_node_selector, job_tolerations))
    labels = {"app.kubernetes.io/name": "icechunk-dist", "app.kubernetes.io/instance": inst}
    meta: dict[str, Any] = {"name": name,
                            "labels": {**labels, "app.kubernetes.io/component": kind}}
    if namespace:
        meta["namespace"] = namespace
    return {
        "apiVersion": "kubernetes.dask.org/v1",
        "kind": "DaskJob",
        "metadata": meta,
        "spec": {
            "job": {
                "metadata": {"labels": {**labels, "app.kubernetes.io/component": "job"}},
                "spec": pod,
            },
            "cluster": {
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
                    image_pull_secrets=image_pull_secrets,
                    scheduler_service_type=scheduler_service_type,
                    idle_timeout=idle_timeout,
                    pod_security_context=pod_security_context,
                    security_context=security_context,
                    worker_node_selector=worker_node_selector,
                    worker_tolerations=worker_tolerations,
                    scheduler_node_selector=scheduler_node_selector,
                    scheduler_tolerations=scheduler_tolerations,
                ),
            },
        },
    }


def kube_cluster(
    name: str,
    *,
    image: str,
    n_workers: int = 2,
    worker_threads: int = 2,
    credentials_secret: str | None = None,
    namespace: str | None = None,
    service_account: str | None = None,
    worker_resources: Mapping[str, Any] | None = None,
    scheduler_resources: Mapping[str, Any] | None = None,
    worker_env: Mapping[str, str] | None = None,
    image_pull_policy: str = "IfNotPresent",
    image_pull_secrets: Sequence[str] = (),
    scheduler_service_type: str = "ClusterIP",
    idle_timeout: int = 0,
    pod_security_context: Mapping[str, Any] = DEFAULT_POD_SECURITY_CONTEXT,
    security_context: Mapping[str, Any] = DEFAULT_SECURITY_CONTEXT,
    **kwargs: Any,
) -> KubeCluster:
    """Start a Dask cluster on the dask-kubernetes operator for distributed writes.

    Every cluster argument goes into :func:`make_dask_cluster_spec` (so workers read storage
    credentials from ``credentials_secret`` and run under the restricted securityContext), the
    resulting ``DaskCluster`` manifest is handed to
    ``dask_kubernetes.operator.KubeCluster(custom_cluster_spec=...)`` together with
    ``namespace`` and every further keyword argument (``shutdown_on_close``,
    ``resource_timeout``, ``port_forward_cluster_ip``, ``quiet``, ...).

    Raises
    ------
    ImportError
        If dask-kubernetes is not installed (``pip install 'icechunk_dist[k8s]'``).
    InvalidInputError
        On malformed names or counts, or a ``KubeCluster`` argument this function already
        sets from the spec (``custom_cluster_spec``, ``image``, ``n_workers``, ...).
    """
    clash = sorted(set(kwargs) & {"custom_cluster_spec", "name", "image", "n_workers",
                                  "resources", "env", "worker_command", "idle_timeout",
                                  "scheduler_service_type"})
    if clash:
        raise InvalidInputError(f"kube_cluster sets {clash} itself (from its own arguments)")
    spec = make_dask_cluster_spec(
        name, image=image, n_workers=n_workers, worker_threads=worker_threads,
        credentials_secret=credentials_secret, service_account=service_account,
        worker_resources=worker_resources, scheduler_resources=scheduler_resources,
        worker_env=worker_env, image_pull_policy=image_pull_policy,
        image_pull_secrets=image_pull_secrets, scheduler_service_type=scheduler_service_type,
        idle_timeout=idle_timeout, pod_security_context=pod_security_context,
        security_context=security_context,
    )
    try:
        from dask_kubernetes.operator import KubeCluster
    except ImportError as e:
        raise ImportError(
            "kube_cluster needs dask-kubernetes: pip install 'icechunk_dist[k8s]'"
        ) from e
    manifest: dict[str, Any] = {"apiVersion": "kubernetes.dask.org/v1", "kind": "DaskCluster",
                                "metadata": {"name": name}, "spec": spec}
    if namespace:
        manifest["metadata"]["namespace"] = namespace
        kwargs["namespace"] = namespace
    return KubeCluster(custom_cluster_spec=manifest, **kwargs)
