"""The Dockerfile's install line provides every command the chart runs.

No container runtime is needed: the ``RUN pip install ...`` line is parsed out of the
Dockerfile and run, as written, in a fresh ``python -m venv`` (no system site-packages) with the
checkout as the build context. The chart's containers then exec ``dask scheduler``,
``dask worker`` and ``icechunk-dist ingest`` / ``map``; each must exist there (``--help``
exits 0), and the NetCDF readers the ingestion needs must import.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"


def _dockerfile_install_args() -> list[str]:
    """The arguments of the Dockerfile's one ``RUN pip install`` line (after ``install``)."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    lines = [ln.strip() for ln in text.splitlines()
             if re.match(r"^RUN\s+(python -m )?pip\s+install\b", ln.strip())]
    assert len(lines) == 1, f"expected one RUN pip install line, got {lines}"
    words = shlex.split(lines[0])
    return words[words.index("install") + 1:]


def test_dockerfile_basics() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM python:3\.11-slim", text, re.M)
    # the chart's containers give the whole command line as args: no ENTRYPOINT may prefix it
    assert not re.search(r"^ENTRYPOINT", text, re.M)
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users and users[-1].split(":")[0] not in ("0", "root")
    args = _dockerfile_install_args()
    (target,) = [a for a in args if a.startswith(".")]
    assert {"dask", "xarray", "k8s"} <= set(target[target.index("[") + 1:-1].split(","))
    for secret in ("AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "AWS_SESSION_TOKEN"):
        assert secret not in text
    ignore = (ROOT / ".dockerignore").read_text().split()
    assert "*" in ignore and "!icechunk_dist/" in ignore  # nothing but the package goes in


def test_chart_image_matches_the_package() -> None:
    yaml = pytest.importorskip("yaml")
    import tomllib

    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    chart = yaml.safe_load((ROOT / "helm" / "icechunk-dist" / "Chart.yaml").read_text())
    values = yaml.safe_load((ROOT / "helm" / "icechunk-dist" / "values.yaml").read_text())
    assert chart["appVersion"] == version
    label = re.search(r'org\.opencontainers\.image\.version="([^"]+)"', DOCKERFILE.read_text())
    assert label and label.group(1) == version
    assert values["image"]["repository"] == "ghcr.io/icechunk-dist/icechunk-dist"
    assert values["image"]["tag"] == ""  # defaults to appVersion: the image built from here
    readme = (ROOT / "README.md").read_text()
    assert "docker build" in readme and "docker push" in readme


@pytest.fixture(scope="session")
def image_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv holding exactly what the Dockerfile installs (built once per session)."""
    env_dir = tmp_path_factory.mktemp("image-venv")
    venv.EnvBuilder(with_pip=True, system_site_packages=False, clear=True).create(env_dir)
    py = env_dir / "bin" / "python"
    args = [str(ROOT) + a[1:] if a.startswith(".") else a for a in _dockerfile_install_args()]
    # --no-compile only skips writing .pyc files (the slow part here); what gets installed is
    # exactly what the Dockerfile's line installs
    done = subprocess.run([str(py), "-m", "pip", "install", "--disable-pip-version-check",
                           "--quiet", "--no-compile", *args], capture_output=True, text=True,
                          timeout=1200, check=False, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-4000:]
    return env_dir


@pytest.mark.slow
@pytest.mark.parametrize("command", [
    ["dask", "scheduler", "--help"],
    ["dask", "worker", "--help"],
    ["icechunk-dist", "ingest", "--help"],
    ["icechunk-dist", "map", "--help"],
    ["icechunk-dist", "--help"],
])
def test_install_line_provides_the_chart_commands(image_venv: Path, command: list[str]) -> None:
    exe = image_venv / "bin" / command[0]
    assert exe.is_file(), f"{command[0]} is not installed by the Dockerfile's pip line"
    env = {"PATH": f"{image_venv / 'bin'}:/usr/bin:/bin", "HOME": os.environ.get("HOME", "/tmp")}
    done = subprocess.run([str(exe), *command[1:]], capture_output=True, text=True,
                          timeout=120, check=False, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage" in done.stdout.lower()
    # the venv is isolated: the package comes from the fresh install, not from this checkout's
    assert sys.prefix not in str(exe)


@pytest.mark.slow
def test_install_line_provides_the_netcdf_readers(image_venv: Path) -> None:
    code = "import h5netcdf, scipy.io, xarray, distributed, dask_kubernetes, icechunk_dist.ingest"
    done = subprocess.run([str(image_venv / "bin" / "python"), "-c", code], capture_output=True,
                          text=True, timeout=120, check=False, env={"PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-2000:]
