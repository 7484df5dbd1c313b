"""Test helper: render helm/icechunk-dist with a real helm binary and validate what it renders.

- :func:`render` runs ``helm template`` and returns the documents.
- :func:`validate_dask_job` checks a DaskJob against the CRD shipped in the installed
  dask-kubernetes wheel, with ``additionalProperties: false`` injected into every object schema
  that lists its properties, so an unknown field (what the API server prunes, or rejects under
  strict field validation) fails.
- :func:`kubernetes_validate` runs ``kubernetes-validate --strict`` on core kinds.
"""

from __future__ import annotations

import copy
import functools
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "helm" / "icechunk-dist"
CORE_KINDS = {"ServiceAccount", "ConfigMap", "CronJob", "Role", "RoleBinding",
              "Pod", "Deployment", "Service"}

__all__ = ["CHART", "CORE_KINDS", "HELM", "by_kind", "containers", "crd_schema", "helm",
           "kubernetes_validate", "operator_objects", "render", "require_helm",
           "validate_dask_job"]


def _find_helm() -> str | None:
    for cand in (os.environ.get("HELM"), str(Path(sys.prefix) / "bin" / "helm"),
                 str(ROOT / ".venv" / "bin" / "helm"), shutil.which("helm")):
        if cand and Path(cand).is_file() and os.access(cand, os.X_OK):
            return cand
    return None


HELM = _find_helm()


def require_helm() -> None:
    """Skip the calling module without helm (fail on CI on Linux x86-64: make test installs it)."""
    if HELM is not None:
        return
    if os.environ.get("CI") and platform.system() == "Linux" and platform.machine() == "x86_64":
        pytest.fail("helm is missing: `make test` installs it into .venv/bin/helm", pytrace=False)
    pytest.skip("no helm binary (make test installs one on Linux x86-64)",
                allow_module_level=True)


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    assert HELM is not None
    done = subprocess.run([HELM, *args], capture_output=True, text=True, timeout=120,
                          check=False, env={**os.environ, "HELM_CACHE_HOME": "/tmp/helm-cache"})
    if check:
        assert done.returncode == 0, done.stderr + done.stdout
    return done


def render(*sets: str, values: dict[str, Any] | None = None, release: str = "rel",
           namespace: str = "data", tmp_path: Path | None = None) -> list[dict[str, Any]]:
    """``helm template`` of the chart with ``--set`` items and/or a values mapping."""
    args = ["template", release, str(CHART), "--namespace", namespace]
    for s in sets:
        args += ["--set", s]
    if values is not None:
        assert tmp_path is not None
        f = tmp_path / f"values-{len(list(tmp_path.glob('values-*')))}.yaml"
        f.write_text(yaml.safe_dump(values))
        args += ["-f", str(f)]
    return [d for d in yaml.safe_load_all(helm(*args).stdout) if d]


def by_kind(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for d in docs:
        assert d["kind"] not in out or d["kind"] in ("ServiceAccount", "ConfigMap"), d["kind"]
        out.setdefault(d["kind"], d)
    return out


def containers(pod_spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in pod_spec["containers"]}


def _crd_file() -> Path:
    import dask_kubernetes

    base = Path(dask_kubernetes.__file__).parent / "operator"
    for cand in (base / "deployment" / "helm" / "dask-kubernetes-operator" / "crds" /
                 "daskjob.yaml", base / "customresources" / "daskjob.yaml"):
        if cand.is_file() and "$ref" not in cand.read_text():
            return cand
    raise AssertionError("no resolved daskjob CRD in the installed dask-kubernetes")


def _close(schema: Any) -> None:
    if isinstance(schema, dict):
        if (schema.get("type") == "object" and "properties" in schema
                and "additionalProperties" not in schema
                and not schema.get("x-kubernetes-preserve-unknown-fields")):
            schema["additionalProperties"] = False
        for v in schema.values():
            _close(v)
    elif isinstance(schema, list):
        for v in schema:
            _close(v)


@functools.cache
def crd_schema() -> dict[str, Any]:
    """The DaskJob openAPIV3Schema of the installed operator, closed to unknown fields."""
    crd = yaml.safe_load(_crd_file().read_text())
    assert crd["spec"]["names"]["kind"] == "DaskJob"
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    schema = copy.deepcopy(version["schema"]["openAPIV3Schema"])
    # every object has apiVersion, kind and ObjectMeta beside what the CRD lists
    schema["properties"].update({"apiVersion": {"type": "string", "enum": [
        f"{crd['spec']['group']}/v1"]}, "kind": {"type": "string", "enum": ["DaskJob"]},
        "metadata": {"type": "object"}})
    schema["required"] = ["apiVersion", "kind", "metadata", "spec"]
    _close(schema)
    return schema


def validate_dask_job(doc: dict[str, Any]) -> None:
    """Raise jsonschema.ValidationError unless ``doc`` is a DaskJob the CRD accepts fully."""
    import jsonschema

    jsonschema.Draft7Validator(crd_schema()).validate(doc)


def kubernetes_validate(docs: list[dict[str, Any]], tmp_path: Path) -> str:
    """``kubernetes-validate --strict`` over the core-kind documents; returns its output."""
    core = [d for d in docs if d["kind"] in CORE_KINDS]
    assert core
    f = tmp_path / "core.yaml"
    f.write_text(yaml.safe_dump_all(core))
    exe = Path(sys.executable).parent / "kubernetes-validate"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "kubernetes_validate"]
    done = subprocess.run([*cmd, "--strict", "-k", "1.30.0", str(f)], capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def operator_objects(job: dict[str, Any], namespace: str) -> list[dict[str, Any]]:
    """The Pod, Deployments and Service the operator creates for ``job``, built by the
    operator's own controller functions (dask_kubernetes.operator.controller)."""
    from dask_kubernetes.operator.controller import controller as op

    name = job["metadata"]["name"]
    labels = dict(job["metadata"].get("labels", {}))
    cluster = job["spec"]["cluster"]["spec"]
    runner_labels = {**labels, **job["spec"]["job"].get("metadata", {}).get("labels", {})}
    return [
        op.build_job_pod_spec(job_name=name, cluster_name=name, namespace=namespace,
                              spec=job["spec"]["job"]["spec"], annotations={},
                              labels=runner_labels),
        op.build_scheduler_deployment_spec(name, cluster["scheduler"]["spec"], {}, labels),
        op.build_scheduler_service_spec(name, cluster["scheduler"]["service"], {}, labels),
        op.build_worker_deployment_spec(f"{name}-default", namespace, name, "f" * 10,
                                        cluster["worker"]["spec"], {}, labels),
    ]
