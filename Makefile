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

lint: setup  ## ruff, mypy and the import-layer contracts (docs/architecture.md)
	$(BIN)/ruff check kws tests benchmarks pipelines docs
	$(BIN)/ruff format --check kws tests benchmarks pipelines docs
	$(BIN)/mypy kws pipelines docs/captures/capture.py docs/proofs/dvc_proof.py
	$(BIN)/lint-imports

demo: setup  ## the whole story: data, ZenML pipeline v1 + v2, serve, gate, hot swap, rollback
	$(KWS) demo

dvc-repro: setup  ## run the DVC pipeline (dvc.yaml) on the full dataset
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro

dvc-proof: setup  ## repro, push, clone, pull, reproduce; writes docs/proofs/dvc-push-pull.md
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python docs/proofs/dvc_proof.py --out docs/proofs/dvc-push-pull.md

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
# Kubernetes (issue 17): kind + KServe + the chart charts/kws. Proposed targets; the
# commands are those of docs/runbooks/rollout.md. No cluster runs on the build hosts:
# `chart-check` is the part that runs anywhere.
KIND_CLUSTER ?= kws
KWS_NAMESPACE ?= kws
DEPLOY_VALUES ?= manifests/gitops/values-kind.yaml
PREDICTOR_IMAGE ?= localhost:5001/kws-predictor:0.1.0
PREDICTOR_DOCKERFILE ?= docker/predictor/Dockerfile
CHECKOV_VENV ?= .venv-checkov
CHECKOV_VERSION ?= 3.3.30

.PHONY: kind-up kind-deploy chart-check

kind-up:  ## kind cluster + registry, Gateway API, Envoy Gateway, cert-manager, KServe, Gateway
	KIND_CLUSTER=$(KIND_CLUSTER) manifests/kind/up.sh
	KIND_CLUSTER=$(KIND_CLUSTER) manifests/platform/install.sh

kind-deploy:  ## build + kind load the predictor image, helm upgrade --install --wait, helm test
	docker build -f $(PREDICTOR_DOCKERFILE) -t $(PREDICTOR_IMAGE) .
	kind load docker-image $(PREDICTOR_IMAGE) --name $(KIND_CLUSTER)
	helm upgrade --install kws charts/kws -n $(KWS_NAMESPACE) --create-namespace \
	  -f $(DEPLOY_VALUES) --wait --timeout 10m
	kubectl -n $(KWS_NAMESPACE) wait --for=condition=Ready inferenceservice \
	  -l app.kubernetes.io/instance=kws --timeout 10m
	helm test kws -n $(KWS_NAMESPACE)
	curl -fsS http://localhost:8000/v2/health/ready && echo " gateway: ready"

$(CHECKOV_VENV)/bin/checkov:  # checkov's pins clash with the project's: a venv of its own
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install -q checkov==$(CHECKOV_VERSION)

chart-check: setup $(CHECKOV_VENV)/bin/checkov  ## render the chart for every overlay, checkov on the manifests
	$(BIN)/python -m tests.chart_check --checkov $(CHECKOV_VENV)/bin/checkov

.PHONY: captures
CHROMIUM ?= /usr/bin/chromium
captures: setup  ## screenshots of the demo's MLflow UI and ZenML dashboard -> docs/captures/
	@test -x "$(CHROMIUM)" || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && apt-get install -y -qq chromium; \
	  else echo "install Chromium (Debian: sudo apt-get install chromium) or set CHROMIUM=..." >&2; \
	    exit 1; fi; }
	CHROMIUM="$(CHROMIUM)" $(BIN)/python docs/captures/capture.py .

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

# ---------------------------------------------------------------------------------------
# Monitoring and continuous training (issue 19): rules, dashboard, retrain
# ---------------------------------------------------------------------------------------
PROMTOOL ?= promtool
RULES := charts/kws/files/prometheus/kws-rules.yaml

.PHONY: rules-check dashboard ct-smoke

rules-check:  ## promtool: check the alerting rules and run their unit tests (Debian: prometheus)
	@command -v $(PROMTOOL) >/dev/null || { \
	  echo "promtool not found: sudo apt-get install prometheus (or set PROMTOOL=...)" >&2; exit 1; }
	$(PROMTOOL) check rules $(RULES)
	$(PROMTOOL) test rules tests/prometheus/kws-rules.test.yaml

dashboard: setup  ## regenerate docker/grafana/dashboards/kws.json from kws/dashboard.py
	$(KWS) monitor dashboard --out docker/grafana/dashboards/kws.json

ct-smoke: setup  ## continuous-training smoke run: kws retrain --when schedule, tiny config
	mkdir -p reports/ct
	$(KWS) retrain --when schedule --overlay pipelines/configs/params/smoke.yaml \
	  --report reports/ct/retrain.json
