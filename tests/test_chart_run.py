"""The rendered-chart run: what a cluster would execute, executed here.

``helm template`` renders helm/icechunk-dist against the moto S3 server holding NetCDF sources.
Each container's ``command``, ``args`` and ``env`` are taken exactly as rendered; the kubelet's
and the operator's parts are replayed the way they do them, and nothing else is added:

- ``envFrom: secretRef`` -> the Secret's keys become environment variables (the test's Secret
  holds moto's dummy keys; the chart never sees them);
- the operator injects ``DASK_SCHEDULER_ADDRESS`` (``tcp://<job>-scheduler.<ns>.svc...:8786``)
  into the runner and the workers, and ``DASK_WORKER_NAME`` into each worker; here the Service
  host becomes 127.0.0.1 and each declared ``containerPort`` a free loopback port;
- ``$(VAR)`` references in command/args are expanded from the container's env (kubelet);
- the ConfigMap volume is a directory holding its keys, at the rendered ``mountPath``'s place;
- PATH (the image's /usr/local/bin: here this venv's bin) and HOME come from the image.

The scheduler, two workers and the job runner then run as local processes with only that
environment; the scheduler's rendered readinessProbe (``/health`` on the dashboard port) is
what the test waits for. The run must land one commit with the ingested data. A second test
runs the rendered runner against a scheduler no worker ever joins: it must fail with a clear
message and exit code 4 instead of hanging.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest

yaml = pytest.importorskip("yaml")
xr = pytest.importorskip("xarray")
pytest.importorskip("h5netcdf")

from chart_tools import render, require_helm, validate_dask_job  # noqa: E402
from conftest import S3_ACCESS_KEY_ID, S3_REGION, S3_SECRET_ACCESS_KEY  # noqa: E402
from netcdf_data import write_files  # noqa: E402

import icechunk_dist as icd  # noqa: E402

require_helm()

pytestmark = [pytest.mark.s3, pytest.mark.dask, pytest.mark.slow]

NAMESPACE = "data"
SECRET_NAME = "s3-credentials"
# the Secret a platform engineer creates (kubectl create secret generic s3-credentials ...)
SECRET = {"AWS_ACCESS_KEY_ID": S3_ACCESS_KEY_ID, "AWS_SECRET_ACCESS_KEY": S3_SECRET_ACCESS_KEY}
# the image's environment (Dockerfile): console scripts on PATH, a writable HOME
IMAGE_BIN = str(Path(sys.executable).parent)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _expand(text: str, env: dict[str, str]) -> str:
    # the kubelet's $(VAR) expansion: defined names are replaced, others left as written
    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                  lambda m: env.get(m.group(1), m.group(0)), text)


class Pod:
    """One rendered container turned into a local process, as a kubelet would start it."""

    def __init__(self, name: str, pod_spec: dict[str, Any], injected: dict[str, str],
                 config_maps: dict[str, dict[str, str]], workdir: Path) -> None:
        (self.container,) = pod_spec["containers"]
        c = self.container
        self.name = name
        self.ports = {p["containerPort"]: _free_port() for p in c.get("ports", [])}
        home = workdir / name
        home.mkdir(parents=True)
        env = {"PATH": f"{IMAGE_BIN}:/usr/bin:/bin", "HOME": str(home)}
        for src in c.get("envFrom", []):
            assert src["secretRef"]["name"] == SECRET_NAME, src
            env.update(SECRET)
        for item in c.get("env", []):
            env[item["name"]] = _expand(item["value"], env)
        for key, value in injected.items():  # the operator adds them unless already set
            env.setdefault(key, value)
        self.env = env
        # ConfigMap volumes: a directory holding the keys, in place of the mountPath
        volumes = {v["name"]: v for v in pod_spec.get("volumes", [])}
        mounts = {}
        for m in c.get("volumeMounts", []):
            cm = volumes[m["name"]]["configMap"]["name"]
            d = workdir / f"{name}-{m['name']}"
            d.mkdir()
            for key, text in config_maps[cm].items():
                (d / key).write_text(text)
            mounts[m["mountPath"]] = str(d)
        # the image has no ENTRYPOINT (tests/test_docker.py): command + args is the process
        argv = [_expand(a, env) for a in [*c.get("command", []), *c.get("args", [])]]
        for path, local in mounts.items():
            argv = [a.replace(path, local) for a in argv]
        # each declared containerPort -> a free loopback port
        for container_port, local_port in self.ports.items():
            argv = [str(local_port) if a == str(container_port)
                    else f":{local_port}" if a == f":{container_port}" else a for a in argv]
        self.argv = argv
        self.log = workdir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Pod:
        assert Path(IMAGE_BIN, self.argv[0]).exists(), f"{self.argv[0]} is not installed"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(self.argv, env=self.env, stdout=out,
                                         stderr=subprocess.STDOUT, cwd=self.env["HOME"])
        return self

    def wait_ready(self, deadline: float = 120.0) -> None:
        """The rendered readinessProbe (httpGet on a named port), polled as the kubelet does."""
        probe = self.container["readinessProbe"]["httpGet"]
        (port,) = [p["containerPort"] for p in self.container["ports"]
                   if p["name"] == probe["port"]]
        url = f"http://127.0.0.1:{self.ports[port]}{probe['path']}"
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            assert self.proc is not None and self.proc.poll() is None, self.output()
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"{self.name} never became ready:\n{self.output()}")

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def _render_for(values: dict[str, Any], tmp_path: Path) -> tuple[dict[str, Any],
                                                                    dict[str, dict[str, str]]]:
    docs = render(values=values, namespace=NAMESPACE, tmp_path=tmp_path)
    (job,) = [d for d in docs if d["kind"] == "DaskJob"]
    validate_dask_job(job)
    config_maps = {d["metadata"]["name"]: d["data"] for d in docs if d["kind"] == "ConfigMap"}
    return job, config_maps


def _operator_env(job: dict[str, Any], scheduler: Pod) -> dict[str, str]:
    """DASK_SCHEDULER_ADDRESS as the operator injects it, host and port made loopback."""
    name = job["metadata"]["name"]
    address = f"tcp://{name}-scheduler.{NAMESPACE}.svc.cluster.local:8786"
    svc = job["spec"]["cluster"]["spec"]["scheduler"]["service"]
    (port,) = [p for p in svc["ports"] if p["port"] == 8786]
    (target,) = [p["containerPort"] for p in scheduler.container["ports"]
                 if p["name"] == port["targetPort"]]
    host_port = address.removeprefix("tcp://")
    return {"DASK_SCHEDULER_ADDRESS": address.replace(host_port,
                                                      f"127.0.0.1:{scheduler.ports[target]}")}


def _pods(job: dict[str, Any], config_maps: dict[str, dict[str, str]], workdir: Path,
          n_workers: int) -> tuple[Pod, list[Pod], Pod]:
    cluster = job["spec"]["cluster"]["spec"]
    scheduler = Pod("scheduler", cluster["scheduler"]["spec"], {}, config_maps, workdir)
    injected = _operator_env(job, scheduler)
    name = job["metadata"]["name"]
    workers = [Pod(f"worker-{i}", cluster["worker"]["spec"],
                   {**injected,
                    "DASK_WORKER_NAME": f"{name}-default-worker-{uuid.uuid4().hex[:10]}"},
                   config_maps, workdir) for i in range(n_workers)]
    runner = Pod("runner", job["spec"]["job"]["spec"], injected, config_maps, workdir)
    return scheduler, workers, runner


def test_rendered_chart_run_lands_one_commit(tmp_path: Path, s3_server: str,
                                             s3_bucket: str) -> None:
    import boto3

    files = write_files(tmp_path / "src", 3)
    s3 = boto3.client("s3", endpoint_url=s3_server, region_name=S3_REGION,
                      aws_access_key_id=S3_ACCESS_KEY_ID,
                      aws_secret_access_key=S3_SECRET_ACCESS_KEY)
    for p in files:
        s3.upload_file(str(p), s3_bucket, f"incoming/2024/{p.name}")
    s3.close()
    values = {
        "storage": {"url": f"s3://{s3_bucket}/repos/era", "endpointUrl": s3_server,
                    "allowHttp": True, "region": S3_REGION, "credentialsSecret": SECRET_NAME},
        "ingest": {"sources": [f"s3://{s3_bucket}/incoming/2024/*.nc"], "concatDim": "time",
                   "message": "rendered-chart run"},
        "worker": {"replicas": 2, "threads": 1},
        "job": {"timeoutSeconds": 120},
    }
    job, config_maps = _render_for(values, tmp_path)
    scheduler, workers, runner = _pods(job, config_maps, tmp_path / "pods", n_workers=2)
    assert scheduler.argv[:2] == ["dask", "scheduler"]
    assert all(w.argv[:2] == ["dask", "worker"] for w in workers)
    assert runner.argv[:2] == ["icechunk-dist", "ingest"]
    assert "AWS_SECRET_ACCESS_KEY" not in scheduler.env  # no credentials where not rendered
    # the reprocessing job of the same release: job.kind=map, rechunk along time
    map_values = {**values, "job": {**values["job"], "kind": "map"},
                  "map": {"toBranch": "rechunked", "rechunk": {"time": 6},
                          "message": "rendered-chart map"}}
    map_job, map_cms = _render_for(map_values, tmp_path)
    # its cluster is the same as the ingestion's: the running one stands in for a fresh one
    assert map_job["spec"]["cluster"] == job["spec"]["cluster"]
    map_runner = Pod("map-runner", map_job["spec"]["job"]["spec"],
                     _operator_env(map_job, scheduler), map_cms, tmp_path / "pods")
    assert map_runner.argv[:2] == ["icechunk-dist", "map"]
    try:
        scheduler.start().wait_ready()
        for w in workers:
            w.start()
        for r in (runner, map_runner):
            print("\n$ " + " ".join(r.argv))
            r.start()
            rc = r.wait(timeout=300)
            out = r.output()
            print(out)
            assert rc == 0, out + "\n--- workers ---\n" + "\n".join(w.output()
                                                                      for w in workers)
    finally:
        for p in (map_runner, runner, *workers, scheduler):
            p.stop()
    # both workers served the job: the runner waited for both (--wait-for-workers 2)
    sched_log = scheduler.output()
    assert sched_log.count("Register worker") >= 2, sched_log
    storage = icd.s3_storage(bucket=s3_bucket, prefix="repos/era", region=S3_REGION,
                             endpoint_url=s3_server, allow_http=True,
                             access_key_id=S3_ACCESS_KEY_ID,
                             secret_access_key=S3_SECRET_ACCESS_KEY)
    repo = icd.Repository.open(storage)
    history = list(repo.ancestry(branch="main"))
    ingest_commits = [s for s in history if s.message == "rendered-chart run"]
    assert len(ingest_commits) == 1, [s.message for s in history]
    assert history[0].id == ingest_commits[0].id  # it is the branch tip
    with xr.open_zarr(repo.readonly_session("main").store, consolidated=False) as ds:
        got = ds.load()
    with xr.open_mfdataset(sorted(files), combine="nested", concat_dim="time",
                           data_vars="minimal", coords="minimal", compat="override",
                           join="exact") as mf:
        want = mf.load()
    xr.testing.assert_identical(got, want)
    print(f"committed {history[0].id} on main: {dict(got.sizes)}; "
          f"history {[s.message for s in history]}")
    # the map job: one more commit, on its own branch, same values, time chunks of 6
    mapped = list(repo.ancestry(branch="rechunked"))
    assert [s.message for s in mapped[:2]] == ["rendered-chart map", "rendered-chart run"]
    assert [s.id for s in repo.ancestry(branch="main")] == [s.id for s in history]
    session = repo.readonly_session("rechunked")
    with xr.open_zarr(session.store, consolidated=False) as ds:
        xr.testing.assert_identical(ds.load(), want)
    import zarr

    assert zarr.open_array(session.store, path="temperature", mode="r").chunks[0] == 6
    print(f"map committed {mapped[0].id} on rechunked")


def test_rendered_runner_fails_clearly_when_no_worker_joins(tmp_path: Path) -> None:
    values = {"storage": {"url": f"file://{tmp_path}/repo"},
              "ingest": {"sources": [str(tmp_path / "none" / "*.nc")]},
              "worker": {"replicas": 2}, "job": {"timeoutSeconds": 3}}
    job, config_maps = _render_for(values, tmp_path)
    scheduler, _, runner = _pods(job, config_maps, tmp_path / "pods", n_workers=0)
    assert runner.argv[-5:] == ["--wait-for-workers", "2", "--timeout", "3", "--no-progress"]
    try:
        scheduler.start().wait_ready()
        runner.start()
        rc = runner.wait(timeout=120)  # a hang fails here, not in CI's global timeout
    finally:
        runner.stop()
        scheduler.stop()
    out = runner.output()
    print(out)
    assert rc == 4, out
    lines = [ln for ln in out.splitlines() if ln.strip()]
    assert lines[-1].startswith("icechunk-dist: error: only 0 of 2 Dask workers joined"), out
    assert "Traceback" not in out


def test_rendered_runner_fails_clearly_without_a_scheduler(tmp_path: Path) -> None:
    # the scheduler pod never came up: the Service has no endpoint (a closed loopback port)
    values = {"storage": {"url": f"file://{tmp_path}/repo"},
              "ingest": {"sources": [str(tmp_path / "none" / "*.nc")]},
              "job": {"timeoutSeconds": 2}}
    job, config_maps = _render_for(values, tmp_path)
    scheduler, _, runner = _pods(job, config_maps, tmp_path / "pods", n_workers=0)
    assert scheduler.proc is None  # never started
    runner.start()
    try:
        rc = runner.wait(timeout=120)
    finally:
        runner.stop()
    out = runner.output()
    assert rc == 4, out
    assert out.strip().splitlines()[-1].startswith(
        "icechunk-dist: error: cannot reach the Dask scheduler at tcp://127.0.0.1:"), out
