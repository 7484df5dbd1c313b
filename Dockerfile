# The image the helm/icechunk-dist chart runs in every container (job runner, Dask scheduler,
# Dask workers). Build it from the repository root:
#
#   docker build -t registry.example.com/icechunk-dist:0.1.0 .
#   docker push registry.example.com/icechunk-dist:0.1.0
#
# It holds no credentials: pods get storage keys from a Kubernetes Secret (envFrom), from the
# node's instance role or from workload identity.
FROM python:3.11-slim

# The version is the package's (pyproject.toml) and the chart's appVersion, which is the
# chart's default image tag: ghcr.io/icechunk-dist/icechunk-dist:0.1.0 (tests/test_docker.py).
LABEL org.opencontainers.image.title="icechunk-dist" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.description="icechunk_dist with dask, xarray (NetCDF/HDF5 readers) and dask-kubernetes: the image of the helm/icechunk-dist chart"

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# A fixed, non-root uid/gid: the chart's securityContext runs as 1000:1000 (restricted Pod
# Security profile); Dask writes its scratch space under $HOME.
RUN groupadd --system --gid 1000 icechunk \
    && useradd --system --uid 1000 --gid 1000 --create-home --home-dir /home/icechunk icechunk

WORKDIR /src
COPY pyproject.toml README.md ./
COPY icechunk_dist ./icechunk_dist
# The one install line (tests/test_docker.py runs exactly this line in a fresh venv and checks
# that `dask scheduler`, `dask worker` and `icechunk-dist ingest` exist).
RUN pip install ".[dask,xarray,k8s]"

USER 1000:1000
WORKDIR /home/icechunk
ENV HOME=/home/icechunk
# `icechunk-dist`, `dask` (scheduler / worker) are console scripts in /usr/local/bin.
# No ENTRYPOINT: the chart gives each container its whole command line as `args`
# (`dask scheduler ...`, `dask worker ...`, `icechunk-dist ingest ...`), which replaces CMD.
CMD ["icechunk-dist", "--help"]
