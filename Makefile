# conveyor developer commands. `make help` lists them.
# Everything runs in a virtualenv ($(VENV)) created and filled on first use from
# setup.py's extras, pinned by constraints.txt; it is refreshed when either changes.

PYTHON   ?= python3
VENV     ?= .venv
REGISTRY ?= ghcr.io/conveyor-ml
BIN      := $(VENV)/bin
STAMP    := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install demo lint test test-fast test-local test-image image compile check-specs bench-ingest bench-validate bench-train bench-serve bench-pipeline bench-quality pin-images images check-image-install freeze clean

help: ## list the developer commands
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-20s %s\n", $$1, $$2}'

$(STAMP): setup.py constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[test]"
	touch $(STAMP)

install: $(STAMP) ## create .venv with conveyor and everything it needs (done by the targets below)

demo: $(STAMP) ## the embedded default: emulators, seed data, the pipeline through kfp.local
	$(BIN)/conveyor demo

lint: $(STAMP) ## ruff on components, tests and bench; mypy on the conveyor package (pyproject.toml)
	$(BIN)/ruff check components tests bench
	$(BIN)/mypy

# The suite runs in $(TEST_WORKERS) processes, a test file per process at a time (pytest-xdist):
# each starts its own emulators on free ports. TEST_WORKERS=0 runs it in this process.
TEST_WORKERS ?= 2
# Tests live by the package they test (tests/<step or room>/). STEP=<folder> narrows test,
# test-fast and test-local to tests/<folder> (`make test STEP=transform`); unset, all of tests/.
STEP ?=
TEST_PATHS = $(if $(STEP),$(if $(wildcard tests/$(STEP)/),tests/$(STEP),$(error STEP=$(STEP): no folder tests/$(STEP))))

test: $(STAMP) ## every test (STEP=transform: tests/transform only); starts the emulators it needs
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile $(TEST_PATHS)

test-fast: $(STAMP) ## the fast tier only: no emulators, no kfp.local, no installs (STEP=...)
	$(BIN)/python -m pytest -m "not local and not slow" $(TEST_PATHS)

test-local: $(STAMP) ## the emulator and kfp.local tier only (STEP=...)
	$(BIN)/python -m pytest -m local -n $(TEST_WORKERS) --dist loadfile $(TEST_PATHS)

# The container tier alone: builds conveyor's image (as `make image`), then runs the reference
# pipelines task by task in it and `conveyor serve` in it (tests/container).
test-image: $(STAMP) ## the container tier only: conveyor's image built here, pipelines run in it
	$(BIN)/python -m pytest -m container -n 0

compile: $(STAMP) ## regenerate every compiled component and pipeline spec (REGISTRY=...)
	$(BIN)/conveyor compile --registry $(REGISTRY)

check-specs: $(STAMP) ## fail if a checked-in compiled spec is stale
	$(BIN)/conveyor compile --check

bench-ingest: $(STAMP) ## ingest throughput and peak RSS, Storage Read vs REST (see bench/RESULTS.md)
	$(BIN)/python bench/ingest.py

bench-validate: $(STAMP) ## validate throughput and peak RSS at 200k and 1M rows (see bench/RESULTS.md)
	$(BIN)/python bench/validate.py

bench-train: $(STAMP) ## transform time, training examples/s (Parquet vs memory), peak RSS
	$(BIN)/python bench/train.py

bench-serve: $(STAMP) ## evaluate time at 1M rows; conveyor serve throughput and p50/p99 under load
	$(BIN)/python bench/serve.py

bench-pipeline: $(STAMP) ## the whole training pipeline vs TFX 1.16 (needs the TFX venv; see bench/pipeline.py)
	$(BIN)/python bench/pipeline.py

# bench/quality.py's baselines and data sets: setup.py's `bench` extra, pinned by constraints.txt
bench-quality: $(STAMP) ## model quality with only table + label vs scikit-learn linear/HGB on 15 public sets, paired 95 % intervals (SETS=a,b)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[bench]"
	$(BIN)/python bench/quality.py $(if $(SETS),--sets $(SETS),)

pin-images: ## record the base images' digests in conveyor/images.py (needs registry access)
	bash images/pin.sh

image: ## build conveyor's CPU image here from Debian's packages and PyPI alone (images/local.sh; VARIANT=gpu)
	bash images/local.sh $(VARIANT)

images: ## build conveyor's images with docker buildx (REGISTRY=..., PUSH=1 to push)
	bash images/build.sh $(REGISTRY) $(if $(PUSH),--push,)

check-image-install: ## run the CPU Dockerfile's install step as a plain pip install in a clean venv
	bash images/check_install.sh

freeze: $(STAMP) ## regenerate constraints.txt from a clean venv of setup.py's [test] and [bench] extras
	rm -rf .venv-freeze && $(PYTHON) -m venv .venv-freeze
	.venv-freeze/bin/python -m pip install --quiet --disable-pip-version-check ".[test,bench]"
	.venv-freeze/bin/python -m pip freeze --exclude conveyor-kfp > constraints.txt
	rm -rf .venv-freeze

clean: ## remove the venv, local outputs and caches (not the emulator data)
	rm -rf $(VENV) local_outputs .pytest_cache .hypothesis bench/out .mypy_cache .ruff_cache
