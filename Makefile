# vardbio: `make run` runs the default campaign (protein_stability), `make test` runs the tests.
# Everything is installed into .venv; GPU users override TORCH, e.g.
#   make test TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
# The core needs only torch, accelerate, numpy, hydra-core, omegaconf, tqdm and matplotlib;
# each domain is an extra (chem, docking, protein, image, diffusers, dask; `all` is every one).
# EXTRAS=test (the default) installs `all` plus the test-only packages; e.g. EXTRAS=protein is
# enough for `make run`. `make wheel` builds dist/vardbio-*.whl with the shipped weights and data.
PYTHON ?= python3
TORCH ?= torch==2.13.0
VENV ?= .venv
PY := $(VENV)/bin/python
# no wheel cache: a CI machine's disk can be nearly full, and the installed venv is 2.8 GB already
PIP_INSTALL := $(PY) -m pip install --quiet --no-cache-dir
STAMP := $(VENV)/.installed
EXTRAS ?= test

.PHONY: install run test test-slow bench wheel clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# torch first, pinned, so that nothing below pulls a different (CUDA) build.
# The tests also use an external plugin package, installed as a user would install one.
# guacamol, the reference for the PMO oracles' tests, goes in with --no-deps: it requires rdkit-pypi and FCD.
# evodiff (and the two packages its network module needs) too: it pins numpy < 2.
PLUGIN := tests/plugin_pkg
$(STAMP): pyproject.toml $(PLUGIN)/pyproject.toml | $(PY)
	$(PIP_INSTALL) $(TORCH)
	$(PIP_INSTALL) -e ".[$(EXTRAS)]"
	$(PIP_INSTALL) --no-deps molsets==0.3.1
	$(PIP_INSTALL) --no-deps guacamol==0.5.5
	$(PIP_INSTALL) --no-deps evodiff==1.1.2 sequence-models==1.8.0 fair-esm==2.0.0
	$(PIP_INSTALL) --no-deps ./$(PLUGIN)
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/vardbio run campaign=protein_stability algorithm=vard out_dir=runs/protein_stability

test: $(STAMP)
	$(PY) -m pytest -q

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

bench: $(STAMP)
	$(VENV)/bin/vardbio bench campaign=toy_linear out_dir=runs/bench_toy_linear

wheel: $(STAMP)
	$(PY) -m pip wheel --quiet --no-deps --no-build-isolation . -w dist

clean:
	rm -rf $(VENV) runs build dist *.egg-info
