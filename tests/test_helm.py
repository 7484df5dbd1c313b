"""The Helm chart in helm/icechunk-dist, checked with a real ``helm`` binary.

``make test`` installs helm into .venv/bin (see the Makefile). Elsewhere helm is taken from
$HELM or PATH; the tests skip only when no helm binary exists at all, and never on CI on
Linux x86-64, where ``make test`` always installs one. Every rendered DaskJob is validated
against the DaskJob CRD shipped in the dask-kubernetes wheel (unknown fields rejected), every
core kind with ``kubernetes-validate --strict``.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

yaml = pytest.importorskip("yaml")
jsonschema = pytest.importorskip("jsonschema")

from chart_tools import (  # noqa: E402
    CHART,
    by_kind,
    containers,
    helm,
    kubernetes_validate,
    operator_objects,
    render,
    require_helm,
    validate_dask_job,
)

require_helm()

# What a platform engineer sets for a real nightly ingestion.
REALISTIC: dict[str, Any] = {
    "fullnameOverride": "era5-nightly",
    "image": {"repository": "registry.example.com/data/icechunk-dist", "tag": "0.1.0",
              "pullPolicy": "Always", "pullSecrets": [{"name": "regcred"}]},
    "serviceAccount": {"annotations": {
        "eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/era5-writer"}},
    "storage": {"url": "s3://climate/repos/era5", "credentialsSecret": "era5-s3",
                "endpointUrl": "https://s3.eu-central-1.amazonaws.com", "region": "eu-central-1"},
    "job": {"waitForWorkers": 6, "timeoutSeconds": 900, "activeDeadlineSeconds": 7200,
            "resources": {"requests": {"cpu": "500m", "memory": "1Gi"},
                          "limits": {"memory": "2Gi"}},
            "env": [{"name": "DASK_LOGGING__DISTRIBUTED", "value": "info"}],
            "nodeSelector": {"pool": "system"}},
    "ingest": {"sources": ["s3://climate/incoming/era5/2026/*.nc"], "concatDim": "time",
               "group": "surface", "batchSize": 16, "branch": "ingest",
               "message": "nightly ERA5 surface"},
    "scheduler": {"resources": {"requests": {"cpu": "500m", "memory": "1Gi"}},
                  "idleTimeoutSeconds": 3600},
    "worker": {"replicas": 8, "threads": 4,
               "resources": {"requests": {"cpu": "3", "memory": "12Gi"},
                             "limits": {"cpu": "4", "memory": "16Gi"}},
               "tolerations": [{"key": "spot", "operator": "Exists", "effect": "NoSchedule"}],
               "nodeSelector": {"pool": "spot"}},
    "schedule": {"enabled": True, "cron": "30 1 * * *", "timeZone": "Europe/Berlin",
                 "backoffLimit": 2, "activeDeadlineSeconds": 10800, "keepDaskJobs": 5},
}


def _validate_all(docs: list[dict[str, Any]], tmp_path: Path) -> None:
    for d in docs:
        if d["kind"] == "DaskJob":
            validate_dask_job(d)
        elif d["kind"] == "ConfigMap" and "daskjob.yaml" in d["data"]:
            manifest = yaml.safe_load(d["data"]["daskjob.yaml"].replace("__DASKJOB_NAME__",
                                                                         "20260102030405"))
            validate_dask_job(manifest)
    kubernetes_validate(docs, tmp_path)


def _pods(job: dict[str, Any]) -> list[dict[str, Any]]:
    cluster = job["spec"]["cluster"]["spec"]
    return [job["spec"]["job"]["spec"], cluster["worker"]["spec"], cluster["scheduler"]["spec"]]


def test_lint_strict() -> None:
    for extra in ([], ["--set", "storage.credentialsSecret=s", "--set", "worker.replicas=8"],
                  ["--set", "schedule.enabled=true"],
                  ["--set", "job.kind=map", "--set", "map.toBranch=fixed",
                   "--set", "map.func=mypkg.fix:apply"]):
        out = helm("lint", "--strict", str(CHART), *extra).stdout
        assert "0 chart(s) failed" in out


def test_defaults_render_a_valid_dask_job(tmp_path: Path) -> None:
    docs = render()
    kinds = by_kind(docs)
    assert {d["kind"] for d in docs} == {"ServiceAccount", "ConfigMap", "DaskJob"}
    _validate_all(docs, tmp_path)
    job = kinds["DaskJob"]
    assert job["apiVersion"] == "kubernetes.dask.org/v1"
    assert job["metadata"]["name"] == "rel-icechunk-dist"
    assert "metadata" not in job["spec"]["cluster"]  # not a field of the CRD
    runner = containers(job["spec"]["job"]["spec"])["job"]
    assert "command" not in runner  # the image has no ENTRYPOINT: args is the command line
    assert runner["args"] == ["icechunk-dist", "ingest", "--config",
                              "/etc/icechunk-dist/ingest.json",
                              "--scheduler", "$(DASK_SCHEDULER_ADDRESS)",
                              "--wait-for-workers", "2", "--timeout", "600", "--no-progress"]
    assert "envFrom" not in runner  # no Secret named: ambient credentials
    cluster = job["spec"]["cluster"]["spec"]
    assert cluster["worker"]["replicas"] == 2
    worker = containers(cluster["worker"]["spec"])["worker"]
    scheduler = containers(cluster["scheduler"]["spec"])["scheduler"]
    assert worker["args"][:2] == ["dask", "worker"]
    assert scheduler["args"][:2] == ["dask", "scheduler"]
    assert cluster["scheduler"]["service"]["selector"]["dask.org/cluster-name"] == \
        "rel-icechunk-dist"
    cfg = json.loads(kinds["ConfigMap"]["data"]["ingest.json"])
    assert cfg == {"repo": "s3://my-bucket/repos/my-dataset",
                   "sources": ["s3://my-bucket/incoming/*.nc"], "concat_dim": None,
                   "group": None, "branch": "main", "batch_size": None, "message": None,
                   "endpoint_url": None, "allow_http": False, "region": None}
    sa = kinds["ServiceAccount"]["metadata"]["name"]
    for pod in _pods(job):
        assert pod["serviceAccountName"] == sa
    assert job["spec"]["job"]["spec"]["activeDeadlineSeconds"] == 21600


def test_ingest_config_is_an_ingest_config(tmp_path: Path) -> None:
    # the ConfigMap holds exactly the IngestConfig contract (msgspec, unknown fields forbidden)
    docs = by_kind(render(values=REALISTIC, tmp_path=tmp_path))
    cfg = json.loads(docs["ConfigMap"]["data"]["ingest.json"])
    assert cfg == {"repo": "s3://climate/repos/era5",
                   "sources": ["s3://climate/incoming/era5/2026/*.nc"], "concat_dim": "time",
                   "group": "surface", "branch": "ingest", "batch_size": 16,
                   "message": "nightly ERA5 surface",
                   "endpoint_url": "https://s3.eu-central-1.amazonaws.com",
                   "allow_http": False, "region": "eu-central-1"}
    try:
        from icechunk_dist.ingest import load_config
    except ImportError:
        return  # the ingest module lands separately; the keys above are its contract
    f = tmp_path / "ingest.json"
    f.write_text(docs["ConfigMap"]["data"]["ingest.json"])
    loaded = load_config(f)
    assert loaded.repo == cfg["repo"] and loaded.sources == cfg["sources"]
    assert loaded.concat_dim == "time" and loaded.batch_size == 16


def test_realistic_overrides_render_valid_manifests(tmp_path: Path) -> None:
    docs = render(values=REALISTIC, tmp_path=tmp_path)
    _validate_all(docs, tmp_path)
    kinds = by_kind(docs)
    assert {"DaskJob", "CronJob", "Role", "RoleBinding", "ServiceAccount",
            "ConfigMap"} <= set(kinds)
    job = kinds["DaskJob"]
    assert job["metadata"]["name"] == "era5-nightly"
    cluster = job["spec"]["cluster"]["spec"]
    assert cluster["worker"]["replicas"] == 8 and cluster["idleTimeout"] == 3600
    runner = containers(job["spec"]["job"]["spec"])["job"]
    worker = containers(cluster["worker"]["spec"])["worker"]
    scheduler = containers(cluster["scheduler"]["spec"])["scheduler"]
    for c in (runner, worker, scheduler):
        assert c["image"] == "registry.example.com/data/icechunk-dist:0.1.0"
        assert c["imagePullPolicy"] == "Always"
    for pod in _pods(job):
        assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert runner["args"][runner["args"].index("--wait-for-workers") + 1] == "6"
    assert runner["args"][runner["args"].index("--timeout") + 1] == "900"
    assert runner["envFrom"] == worker["envFrom"] == [{"secretRef": {"name": "era5-s3"}}]
    assert "envFrom" not in scheduler
    assert runner["env"] == [{"name": "DASK_LOGGING__DISTRIBUTED", "value": "info"}]
    assert worker["args"][worker["args"].index("--nthreads") + 1] == "4"
    assert worker["resources"]["limits"] == {"cpu": "4", "memory": "16Gi"}
    assert cluster["worker"]["spec"]["tolerations"][0]["key"] == "spot"
    assert job["spec"]["job"]["spec"]["activeDeadlineSeconds"] == 7200
    assert job["spec"]["job"]["spec"]["nodeSelector"] == {"pool": "system"}


def test_runner_waits_for_every_worker_by_default() -> None:
    job = by_kind(render("worker.replicas=5"))["DaskJob"]
    runner = containers(job["spec"]["job"]["spec"])["job"]
    assert runner["args"][runner["args"].index("--wait-for-workers") + 1] == "5"
    job = by_kind(render("worker.replicas=5", "job.waitForWorkers=0",
                         "job.timeoutSeconds=30"))["DaskJob"]
    runner = containers(job["spec"]["job"]["spec"])["job"]
    assert runner["args"][-5:] == ["--wait-for-workers", "0", "--timeout", "30",
                                   "--no-progress"]
    job = by_kind(render("job.progress=true"))["DaskJob"]
    assert "--no-progress" not in containers(job["spec"]["job"]["spec"])["job"]["args"]


def test_map_job(tmp_path: Path) -> None:
    docs = render("job.kind=map", "map.toBranch=rechunked", "map.func=mypkg.fix:apply",
                  "map.from=v1", "map.group=surface", "map.rechunk.time=24",
                  "map.rechunk.lat=90", "map.message=rechunk for time series",
                  "storage.endpointUrl=http://minio:9000", "storage.allowHttp=true")
    _validate_all(docs, tmp_path)
    kinds = by_kind(docs)
    assert "ConfigMap" not in kinds  # map takes everything on its command line
    runner = containers(kinds["DaskJob"]["spec"]["job"]["spec"])["job"]
    assert runner["args"] == [
        "icechunk-dist", "map", "s3://my-bucket/repos/my-dataset", "--from", "v1",
        "--to-branch", "rechunked", "--func", "mypkg.fix:apply", "--group", "surface",
        "--rechunk", "lat=90,time=24",
        "-m", "rechunk for time series", "--endpoint-url", "http://minio:9000",
        "--allow-http", "--scheduler", "$(DASK_SCHEDULER_ADDRESS)", "--wait-for-workers",
        "2", "--timeout", "600", "--no-progress"]
    assert "volumeMounts" not in runner
    rechunk_only = by_kind(render("job.kind=map", "map.toBranch=r", "map.rechunk.time=8"))
    args = containers(rechunk_only["DaskJob"]["spec"]["job"]["spec"])["job"]["args"]
    assert "--func" not in args and args[args.index("--rechunk") + 1] == "time=8"
    for bad, msg in ((["job.kind=map"], "map.toBranch is required"),
                     (["job.kind=map", "map.toBranch=b"], "map.func (module:function) and/or"),
                     (["job.kind=map", "map.toBranch=b", "map.func=nocolon"], "module:function")):
        done = helm("template", "rel", str(CHART), *[a for s in bad for a in ("--set", s)],
                    check=False)
        assert done.returncode != 0 and msg in done.stderr


def test_restricted_pod_security(tmp_path: Path) -> None:
    docs = by_kind(render(values=REALISTIC, tmp_path=tmp_path))
    cron_pod = docs["CronJob"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    for pod in [*_pods(docs["DaskJob"]), cron_pod]:
        psc = pod["securityContext"]
        assert psc["runAsNonRoot"] is True and psc["runAsUser"] != 0
        assert psc["seccompProfile"] == {"type": "RuntimeDefault"}
        for c in pod["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"] == {"drop": ["ALL"]}
            assert sc["runAsNonRoot"] is True and sc["runAsUser"] != 0
            assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
            assert not sc.get("privileged")
        for v in pod.get("volumes", []):  # restricted allows no hostPath
            assert set(v) & {"configMap", "emptyDir", "secret", "projected"}


@pytest.mark.parametrize(("release", "sets"), [
    ("a" * 51, []), ("ingest-" + "x" * 46, []), ("era5.surface.nightly", []),
    ("rel", ["fullnameOverride=" + "f" * 63]), ("rel", ["nameOverride=" + "n" * 63]),
])
def test_every_name_fits_63(release: str, sets: list[str]) -> None:
    docs = render("schedule.enabled=true", *sets, release=release)
    job = by_kind(docs)["DaskJob"]
    name = job["metadata"]["name"]
    # what the operator derives from the DaskJob name (dask_kubernetes controller)
    derived = [f"{name}-scheduler", f"{name}-runner", f"{name}-default",
               f"{name}-default-worker-{'f' * 10}"]
    (submit,) = by_kind(docs)["CronJob"]["spec"]["jobTemplate"]["spec"]["template"]["spec"][
        "containers"]
    prefix = {e["name"]: e.get("value") for e in submit["env"]}["NAME_PREFIX"]
    sched = f"{prefix}-20260102030405"  # date -u +%Y%m%d%H%M%S
    derived += [sched, f"{sched}-default-worker-{'f' * 10}"]
    for d in docs:
        derived.append(d["metadata"]["name"])
        derived += [str(v) for v in d["metadata"].get("labels", {}).values()]
    assert max(len(n) for n in derived) <= 63, max(derived, key=len)
    assert "." not in name  # a Service name is a DNS-1035 label


@pytest.mark.parametrize("setting", [
    "worker.replicas=-3", "worker.replicas=eight", "worker.replicas=0", "worker.threads=0",
    "worker.threads=1.5", "job.kind=delete", "job.timeoutSeconds=0", "job.waitForWorkers=-1",
    "job.activeDeadlineSeconds=0", "job.progress=maybe", "ingest.batchSize=0",
    "image.pullPolicy=Sometimes",
    "scheduler.serviceType=Ingress", "worker.resources.limits.cpu=2", "workers.replicas=2",
    "ingest.concat_dim=time", "schedule.backoffLimit=-1", "schedule.enabled=yes",
    "storage.url=ftp://x/y", "fullnameOverride=Not_A_Name", "map.rechunk.time=0",
])
def test_nonsense_values_are_refused(setting: str) -> None:
    done = helm("template", "rel", str(CHART), "--set", setting, check=False)
    assert done.returncode != 0, f"{setting} rendered:\n{done.stdout[:500]}"
    assert "schema" in done.stderr, done.stderr


def test_schema_covers_every_value() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    defs = schema.get("definitions", {})

    def resolve(s: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in s:
            s = defs[s["$ref"].rsplit("/", 1)[-1]]
        return s

    def walk(v: Any, s: dict[str, Any], path: str) -> None:
        s = resolve(s)
        assert "type" in s or "enum" in s, f"{path} has no type"
        if isinstance(v, dict) and "properties" in s:
            assert s.get("additionalProperties") is False, f"{path} accepts unknown keys"
            for k, sub in v.items():
                assert k in s["properties"], f"{path}.{k} is not in values.schema.json"
                walk(sub, s["properties"][k], f"{path}.{k}")

    walk(values, schema, "values")
    jsonschema.Draft7Validator(schema).validate(values)


def test_no_secret_values_are_rendered() -> None:
    # the chart has no place for credentials, and refuses the obvious attempts
    for key in ("secretAccessKey", "accessKeyId", "sessionToken"):
        done = helm("template", "rel", str(CHART), "--set", f"storage.{key}=hunter2",
                    check=False)
        assert done.returncode != 0
        assert "credentialsSecret" in done.stderr
    out = helm("template", "rel", str(CHART), "--set", "storage.credentialsSecret=creds",
               "--set", "schedule.enabled=true").stdout
    assert "hunter2" not in out and "AWS_SECRET_ACCESS_KEY" not in out
    assert "kind: Secret" not in out


def test_service_account_optional() -> None:
    docs = by_kind(render("serviceAccount.create=false", "serviceAccount.name=existing"))
    assert "ServiceAccount" not in docs
    for pod in _pods(docs["DaskJob"]):
        assert pod["serviceAccountName"] == "existing"
        assert pod["automountServiceAccountToken"] is False


def test_storage_url_required() -> None:
    done = helm("template", "rel", str(CHART), "--set", "storage.url=", check=False)
    assert done.returncode != 0 and "storage.url is required" in done.stderr
    done = helm("template", "rel", str(CHART), "--set", "ingest.sources=null", check=False)
    assert done.returncode != 0 and "ingest.sources" in done.stderr


def test_schedule_least_privilege(tmp_path: Path) -> None:
    docs = render("schedule.enabled=true", "job.runOnInstall=false")
    _validate_all(docs, tmp_path)
    kinds = by_kind(docs)
    assert "DaskJob" not in kinds  # only the schedule creates them
    cron = kinds["CronJob"]
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    assert cron["spec"]["schedule"] == "0 2 * * *"
    job_spec = cron["spec"]["jobTemplate"]["spec"]
    assert job_spec["backoffLimit"] == 0 and job_spec["ttlSecondsAfterFinished"] == 86400
    pod = job_spec["template"]["spec"]
    sa = pod["serviceAccountName"]
    (role,) = [d for d in docs if d["kind"] == "Role"]
    assert role["rules"] == [{"apiGroups": ["kubernetes.dask.org"], "resources": ["daskjobs"],
                              "verbs": ["create", "get", "list", "delete"]}]
    (binding,) = [d for d in docs if d["kind"] == "RoleBinding"]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": role["metadata"]["name"]}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa, "namespace": "data"}]
    assert not [d for d in docs if d["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    # the Dask pods' own ServiceAccount is not the one with the Role
    assert sa != "rel-icechunk-dist"


def test_scheduled_run_script(tmp_path: Path) -> None:
    """Run the CronJob's rendered script with a recording fake kubectl: every run creates a
    DaskJob with a fresh valid name that the CRD accepts, prunes the oldest, and exits with the
    DaskJob's outcome."""
    docs = render("schedule.enabled=true", "schedule.keepDaskJobs=2", "schedule.pollSeconds=1",
                  release="a" * 51)
    kinds = by_kind(docs)
    (cm,) = [d for d in docs if d["kind"] == "ConfigMap" and "run.sh" in d["data"]]
    cron_pod = kinds["CronJob"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (c,) = cron_pod["containers"]
    mount = tmp_path / "schedule"
    mount.mkdir()
    for key, text in cm["data"].items():
        (mount / key).write_text(text)
    script = (mount / "run.sh").read_text().replace("/etc/icechunk-dist/schedule", str(mount))
    (mount / "run.sh").write_text(script)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    kubectl = bindir / "kubectl"
    kubectl.write_text(f"""#!/bin/sh
echo "$*" >> {tmp_path}/calls
case "$*" in
  create*) cp "$(echo "$*" | sed 's/.* -f //')" {tmp_path}/created.yaml ;;
  "get daskjobs"*) printf 'daskjob.kubernetes.dask.org/old-1\\ndaskjob.kubernetes.dask.org/old-2\\n'
                   printf 'daskjob.kubernetes.dask.org/new\\n' ;;
  "get daskjob"*) n=$(cat {tmp_path}/polls 2>/dev/null || echo 0); echo $((n+1)) > {tmp_path}/polls
                  if [ "$n" -ge 1 ]; then printf "$OUTCOME"; else printf Running; fi ;;
esac
""")
    kubectl.chmod(kubectl.stat().st_mode | stat.S_IEXEC)
    for outcome, rc in (("Successful", 0), ("Failed", 1)):
        for f in ("calls", "polls"):
            (tmp_path / f).unlink(missing_ok=True)
        env = {e["name"]: e.get("value", "") for e in c["env"]}
        env.update(NAMESPACE="data", HOME=str(tmp_path), OUTCOME=outcome,
                   PATH=f"{bindir}:{os.environ['PATH']}")
        done = subprocess.run([c["command"][0], str(mount / "run.sh")], env=env,
                              capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == rc, done.stdout + done.stderr
        calls = (tmp_path / "calls").read_text().splitlines()
        assert calls[0].startswith("create --namespace data -f ")
        created = yaml.safe_load((tmp_path / "created.yaml").read_text())
        validate_dask_job(created)
        name = created["metadata"]["name"]
        assert "__" not in name and len(name) <= 37
        assert created["spec"]["cluster"]["spec"]["scheduler"]["service"]["selector"][
            "dask.org/cluster-name"] == name
        assert created["metadata"]["labels"]["icechunk-dist/scheduled"] == "true"
        # keep 2 of the 3 listed: the oldest goes
        deletes = [x for x in calls if x.startswith("delete")]
        assert deletes == ["delete --namespace data --wait=false "
                           "daskjob.kubernetes.dask.org/old-1"]
        assert calls[-1].startswith(f"get daskjob --namespace data {name}")


def test_crd_validation_rejects_unknown_fields() -> None:
    # the validator is not vacuous: the old chart's spec.cluster.metadata, a misspelt container
    # field and a wrong type all fail, as the API server would refuse or prune them
    import copy

    job = by_kind(render())["DaskJob"]
    validate_dask_job(job)
    bad = copy.deepcopy(job)
    bad["spec"]["cluster"]["metadata"] = {"labels": {"a": "b"}}
    with pytest.raises(jsonschema.ValidationError, match="metadata"):
        validate_dask_job(bad)
    bad = copy.deepcopy(job)
    bad["spec"]["job"]["spec"]["containers"][0]["comand"] = ["x"]
    with pytest.raises(jsonschema.ValidationError, match="comand"):
        validate_dask_job(bad)
    bad = copy.deepcopy(job)
    bad["spec"]["job"]["spec"]["ttlSecondsAfterFinished"] = 60  # a Job field, not a PodSpec one
    with pytest.raises(jsonschema.ValidationError, match="ttlSecondsAfterFinished"):
        validate_dask_job(bad)
    bad = copy.deepcopy(job)
    bad["spec"]["cluster"]["spec"]["worker"]["replicas"] = "two"
    with pytest.raises(jsonschema.ValidationError):
        validate_dask_job(bad)


@pytest.mark.parametrize("release", ["rel", "a" * 51])
def test_what_the_operator_creates_is_valid(release: str, tmp_path: Path) -> None:
    """The runner Pod, scheduler Deployment and Service and worker Deployment, as the
    operator's controller functions build them from the rendered DaskJob, pass
    kubernetes-validate --strict, keep every name and label value within 63 characters and
    run the commands the image installs."""
    docs = render(values=REALISTIC, release=release, tmp_path=tmp_path)
    objs = operator_objects(by_kind(docs)["DaskJob"], "data")
    kubernetes_validate(objs, tmp_path)
    pod, sched, svc, worker = objs
    assert pod["kind"] == "Pod" and svc["kind"] == "Service"
    for o in objs:
        assert len(o["metadata"]["name"]) <= 63
        assert all(len(str(v)) <= 63 for v in o["metadata"]["labels"].values())
    (runner,) = pod["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in runner["env"]}
    name = pod["metadata"]["labels"]["dask.org/cluster-name"]
    assert env["DASK_SCHEDULER_ADDRESS"] == f"tcp://{name}-scheduler.data.svc.cluster.local:8786"
    assert svc["metadata"]["name"] == f"{name}-scheduler"
    # the Service selects the scheduler Deployment's pods
    template_labels = sched["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= template_labels.items()
    assert worker["spec"]["template"]["spec"]["containers"][0]["args"][:2] == ["dask", "worker"]
