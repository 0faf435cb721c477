# kws-mlops: `make demo` (the whole story on a laptop) and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
KWS := $(BIN)/kws
EXTRAS ?= train,serve,dev,pipeline,s3
export ZENML_ANALYTICS_OPT_IN ?= false

.PHONY: system-deps setup lock lock-kind zenml-stack pipelines serve bench-serve test test-fast lint demo bench cv experiments tune dvc-repro dvc-proof clean help

help:  ## list targets
	@grep -E '^[a-z0-9-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

system-deps:  ## Debian packages: espeak-ng and flite (synthetic speakers)
	@command -v espeak-ng >/dev/null && command -v flite >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq espeak-ng flite; \
	  else echo "install them: sudo apt-get install espeak-ng flite" >&2; exit 1; fi; }

setup: $(VENV)/.installed  ## create .venv with the locked dependencies

$(VENV)/.installed: pyproject.toml requirements/lock.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c requirements/lock.txt -e ".[$(EXTRAS)]"
	touch $@

lock:  ## re-resolve dependencies and rewrite requirements/lock.txt
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install -q --upgrade pip && .lock-venv/bin/pip install -q -e ".[train,serve,dev,pipeline,s3]"
	.lock-venv/bin/pip freeze --exclude-editable | grep -v '^kws-mlops' > requirements/lock.txt
	rm -rf .lock-venv

test: setup  ## the whole test suite (unit + integration on the FSDD mirror)
	$(BIN)/python -m pytest -q -ra

test-fast: setup  ## unit tests only
	$(BIN)/python -m pytest -q -m "not slow" tests/unit

lint: setup  ## ruff + mypy
	$(BIN)/ruff check kws tests benchmarks pipelines
	$(BIN)/ruff format --check kws tests benchmarks pipelines
	$(BIN)/mypy kws

demo: setup  ## data -> features -> train -> evaluate -> export -> predict
	$(KWS) data fetch
	$(KWS) data prepare
	$(KWS) featurize
	$(KWS) train
	$(KWS) evaluate
	$(KWS) export
	@sample=$$(awk -F, '$$4=="test" {print $$1; exit}' data/prepared/manifest.csv); \
	  echo "kws predict $$sample"; $(KWS) predict "$$sample"
	$(KWS) registry list

dvc-repro: setup  ## run the DVC pipeline (dvc.yaml) on the full dataset
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro

dvc-proof: setup  ## repro, push, clone, pull, reproduce; writes docs/proofs/dvc-push-pull.md
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m kws.dvc_proof --out docs/proofs/dvc-push-pull.md

bench: setup  ## v1 baseline benchmark on the whole FSDD mirror
	$(BIN)/python benchmarks/train_baseline.py --overlay pipelines/configs/params/baseline.yaml

cv: setup  ## leave-one-speaker-out CV + training time, size, latency of params.yaml
	$(BIN)/python benchmarks/speaker_cv.py

experiments: setup  ## baseline + variations in one MLflow experiment -> docs/results/
	$(KWS) experiments run

tune: setup  ## Optuna study (resumable) and the comparison report -> docs/results/
	$(KWS) tune --trials 8
	$(KWS) report compare

clean:  ## remove generated data, models and reports (not the venv)
	rm -rf data models reports .cache

zenml-stack: setup  ## ZenML stack `local` (local orchestrator, MLflow tracker + registry); idempotent
	$(KWS) pipeline stack

pipelines: zenml-stack  ## ZenML pipeline: baseline (v1) then variant (v2), registered in MLflow
	$(KWS) pipeline run --config baseline
	$(KWS) pipeline run --config variant
	$(BIN)/zenml pipeline runs list --columns run_name,status,stack,pipeline

lock-kind:  ## re-resolve requirements/lock-kind.txt (kind pipeline image: train,pipeline,kind)
	grep -v '^kubernetes==' requirements/lock.txt > .lock-kind-constraints.txt
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install -q --upgrade pip
	.lock-venv/bin/pip install -q -c .lock-kind-constraints.txt -e ".[train,pipeline,kind]"
	{ sed -n '1,4p' requirements/lock-kind.txt; .lock-venv/bin/pip freeze --exclude-editable | grep -v '^kws-mlops'; } > .lock-kind.new
	mv .lock-kind.new requirements/lock-kind.txt && rm -rf .lock-venv .lock-kind-constraints.txt

serve: setup  ## KServe ModelServer on :8080 with the registry champion (POST a WAV to /predict)
	$(KWS) serve --model models:/kws@champion

bench-serve: setup  ## serving latency/throughput/memory vs mlflow models serve (needs wrk)
	$(BIN)/python benchmarks/serve.py

# ---------------------------------------------------------------------------------------
# Container images and the Compose stack (docker/, docker-compose.yml, tests/e2e)
# ---------------------------------------------------------------------------------------
# Hosts that cannot pull images build on kws-base:bookworm (../shared/tools/offline-docker.sh):
#   make images BASE_IMAGE=kws-base:bookworm
BASE_IMAGE ?= python:3.11-slim
IMAGE_TAG ?= dev
IMAGES := predictor trainer mlflow s3
GIT_COMMIT := $(shell git rev-parse HEAD 2>/dev/null || echo unknown)

.PHONY: images lint-docker test-e2e

images:  ## build the kws-{predictor,trainer,mlflow,s3} images (BASE_IMAGE, IMAGE_TAG)
	@set -e; for name in $(IMAGES); do \
	  echo "== kws-$$name:$(IMAGE_TAG)"; \
	  docker build --build-arg BASE_IMAGE=$(BASE_IMAGE) --build-arg GIT_COMMIT=$(GIT_COMMIT) \
	    -t kws-$$name:$(IMAGE_TAG) -f docker/$$name/Dockerfile .; \
	done
	@docker image ls --format '{{.Repository}}:{{.Tag}}  {{.Size}}' | grep '^kws-.*:$(IMAGE_TAG) '

lint-docker: setup  ## hadolint every Dockerfile
	$(BIN)/hadolint docker/*/Dockerfile

test-e2e: setup  ## real Docker: images, Compose core (MLflow + S3), dvc push/pull via S3
	BASE_IMAGE=$(BASE_IMAGE) IMAGE_TAG=$(IMAGE_TAG) $(BIN)/python -m pytest -q -ra tests/e2e
