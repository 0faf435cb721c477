# kws-mlops: `make demo` (the whole story on a laptop) and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
KWS := $(BIN)/kws
EXTRAS ?= train,serve,dev,pipeline,s3
export ZENML_ANALYTICS_OPT_IN ?= false

.PHONY: system-deps setup lock lock-kind zenml-stack pipelines serve bench-serve bench-isa test test-fast lint demo bench cv experiments tune dvc-repro dvc-proof clean help

help:  ## list targets
	@grep -E '^[a-z0-9-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

system-deps:  ## Debian packages: espeak-ng, flite (synthetic speakers), prometheus (promtool: rule tests)
	@command -v espeak-ng >/dev/null && command -v flite >/dev/null && command -v promtool >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq espeak-ng flite prometheus; \
	  else echo "install them: sudo apt-get install espeak-ng flite prometheus" >&2; exit 1; fi; }

setup: $(VENV)/.installed  ## create .venv with the locked dependencies

$(VENV)/.installed: pyproject.toml requirements/lock.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c requirements/lock.txt -e ".$(if $(EXTRAS),[$(EXTRAS)])"
	touch $@

lock:  ## re-resolve dependencies and rewrite requirements/lock.txt
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install -q --upgrade pip && .lock-venv/bin/pip install -q -e ".[train,serve,dev,pipeline,s3]"
	.lock-venv/bin/pip freeze --exclude-editable | grep -v '^kws-mlops' > requirements/lock.txt
	rm -rf .lock-venv

test: setup  ## the whole test suite (unit + integration on the FSDD mirror)
	$(BIN)/python -m pytest -q -ra $(PYTEST_ARGS)

test-fast: setup  ## unit tests only
	$(BIN)/python -m pytest -q -m "not slow" tests/unit

lint: setup  ## ruff, mypy and the import-layer contracts (docs/architecture.md)
	$(BIN)/ruff check kws tests benchmarks pipelines docs
	$(BIN)/ruff format --check kws tests benchmarks pipelines docs
	$(BIN)/mypy kws pipelines docs/captures/capture.py docs/proofs/dvc_proof.py \
	  docs/proofs/compose_rollout.py
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

# experiments and tune read the data from $KWS_FSDD_SOURCE (a local FSDD copy) when set;
# their runs go to $MLFLOW_TRACKING_URI, else the project's mlflow.db.
experiments: setup  ## v1 baseline, v2 default (params.yaml) and its variations in one MLflow experiment -> docs/results/experiments.md
	$(KWS) experiments run

tune: setup  ## Optuna study of the default's head and training (resumes while params.yaml is unchanged), then docs/results/comparison.md
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

bench-isa: setup  ## TFLite variants as AVX2 CPUs run them (masked CPUID; needs cc, cpuid_fault)
	$(BIN)/python benchmarks/isa_probe.py

bench-serve: setup  ## serving latency/throughput/memory vs mlflow models serve (needs wrk)
	$(BIN)/python benchmarks/serve.py

# ---------------------------------------------------------------------------------------
# Kubernetes (issue 17): kind + KServe + the chart charts/kws. Proposed targets; the
# commands are those of docs/runbooks/rollout.md. No cluster runs on the build hosts:
# `chart-check` is the part that runs anywhere.
KIND_CLUSTER ?= kws
KWS_NAMESPACE ?= kws
DEPLOY_VALUES ?= manifests/gitops/values-kind.yaml
PREDICTOR_REPOSITORY ?= localhost:5001/kws-predictor
PREDICTOR_TAG ?= 0.1.0
PREDICTOR_IMAGE ?= $(PREDICTOR_REPOSITORY):$(PREDICTOR_TAG)
# PREDICTOR_BUILD=no: PREDICTOR_IMAGE is in the local Docker already (CI pulled it)
PREDICTOR_BUILD ?= yes
# the Gateway as this shell reaches it (CI, kind in docker:dind: http://docker:8000)
GATEWAY_URL ?= http://localhost:8000
PREDICTOR_DOCKERFILE ?= docker/predictor/Dockerfile
CHECKOV_VENV ?= .venv-checkov
CHECKOV_VERSION ?= 3.3.30

.PHONY: kind-up kind-deploy chart-check

kind-up:  ## kind cluster + registry, Gateway API, Envoy Gateway, cert-manager, KServe, Gateway
	KIND_CLUSTER=$(KIND_CLUSTER) manifests/kind/up.sh
	KIND_CLUSTER=$(KIND_CLUSTER) manifests/platform/install.sh

kind-deploy:  ## build + kind load the predictor image, helm upgrade --install --wait, helm test
	if [ "$(PREDICTOR_BUILD)" = yes ]; then docker build -f $(PREDICTOR_DOCKERFILE) -t $(PREDICTOR_IMAGE) .; fi
	kind load docker-image $(PREDICTOR_IMAGE) --name $(KIND_CLUSTER)
	helm upgrade --install kws charts/kws -n $(KWS_NAMESPACE) --create-namespace \
	  -f $(DEPLOY_VALUES) --set image.repository=$(PREDICTOR_REPOSITORY) \
	  --set-string image.tag=$(PREDICTOR_TAG) --wait --timeout 10m
	kubectl -n $(KWS_NAMESPACE) wait --for=condition=Ready inferenceservice \
	  -l app.kubernetes.io/instance=kws --timeout 10m
	helm test kws -n $(KWS_NAMESPACE)
	curl -fsS $(GATEWAY_URL)/v2/health/ready && echo " gateway: ready"

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

.PHONY: images lint-docker test-e2e compose-demo

images:  ## build the kws-{predictor,trainer,mlflow,s3} images (BASE_IMAGE, IMAGE_TAG)
	@set -e; for name in $(IMAGES); do \
	  echo "== kws-$$name:$(IMAGE_TAG)"; \
	  docker build --build-arg BASE_IMAGE=$(BASE_IMAGE) --build-arg GIT_COMMIT=$(GIT_COMMIT) \
	    -t kws-$$name:$(IMAGE_TAG) -f docker/$$name/Dockerfile .; \
	done
	@docker image ls --format '{{.Repository}}:{{.Tag}}  {{.Size}}' | grep '^kws-.*:$(IMAGE_TAG) '

lint-docker: setup  ## hadolint every Dockerfile
	$(BIN)/hadolint docker/*/Dockerfile

test-e2e: setup images  ## real Docker: the images, Compose core/train/serve, rollout under load, DVC via S3
	BASE_IMAGE=$(BASE_IMAGE) IMAGE_TAG=$(IMAGE_TAG) $(BIN)/python -m pytest -q -ra tests/e2e
	@sed -n '1,/^## Commands/p' reports/e2e/compose-rollout.md 2>/dev/null | head -n -1 || true

compose-demo: setup  ## Compose: train v1 + v2, roll out under load, roll back -> docs/proofs/compose-rollout.md
	BASE_IMAGE=$(BASE_IMAGE) IMAGE_TAG=$(IMAGE_TAG) $(BIN)/python docs/proofs/compose_rollout.py

# ---------------------------------------------------------------------------------------
# GitLab CI (issue 18): every job of .gitlab-ci.yml calls these targets (or the ones above)
# and nothing else, so a developer runs exactly what CI runs. docs/ci.md says what runs when.
# ---------------------------------------------------------------------------------------
TOOLS := .tools
TOOLS_BIN := $(CURDIR)/$(TOOLS)/bin
GITLAB_CI_LOCAL_VERSION ?= 4.65.0
GITLAB_CI_LOCAL := $(TOOLS)/node_modules/.bin/gitlab-ci-local
CI_LOCAL_JOBS ?= lint test
CI_LOCAL_PIP_CACHE ?= $(HOME)/.cache/pip
TEST_REPORTS ?= reports/tests
CT_REPORTS ?= reports/ct
# push-images: $(REGISTRY)/<name>:$(IMAGE_TAG) and :<each of EXTRA_TAGS> (CI: the git tag)
REGISTRY ?=
EXTRA_TAGS ?=
DOCKER ?= docker
# kind-rollout: NAME=WEIGHT pairs for `kws deploy set-weights` (the values file lists them)
WEIGHTS ?= v1=90 v2=10
# kind-tools: pinned releases of the cluster tools, installed into .tools/bin
KIND_VERSION ?= v0.27.0
KUBECTL_VERSION ?= v1.32.2
HELM_VERSION ?= v3.17.3
# manifests/kind/up.sh reads these; kind in docker:dind: cluster-dind.yaml and KIND_API_HOST=docker
export KIND_CONFIG ?= manifests/kind/cluster.yaml
export KIND_API_HOST ?=

.PHONY: lint-yaml helm-lint lint-all test-reports push-images pull-images kind-tools \
	kind-seed kind-smoke kind-rollout kind-rollback ct-smoke ci-local

lint-yaml: setup  ## yamllint (.yamllint) on the repository's YAML
	$(BIN)/yamllint --strict .

helm-lint: setup  ## Helm's own linter (helm-python-sdk, strict) on charts/kws with every overlay
	$(BIN)/python -m tests.helm_lint

lint-all: lint lint-docker lint-yaml helm-lint  ## every linter of the CI lint job

test-reports:  ## make test + JUnit and Cobertura coverage reports (reports/tests/)
	$(MAKE) test PYTEST_ARGS="--junitxml=$(TEST_REPORTS)/junit.xml --cov=kws --cov=kws_pipelines \
	  --cov-report=xml:$(TEST_REPORTS)/coverage.xml --cov-report=term:skip-covered"

push-images:  ## tag + push the `make images` images: REGISTRY/<name>:IMAGE_TAG (+ EXTRA_TAGS)
	@test -n "$(REGISTRY)" || { echo "error: set REGISTRY (e.g. registry.example.org/group/kws-mlops)" >&2; exit 2; }
	@set -e; for name in $(IMAGES); do for tag in $(IMAGE_TAG) $(EXTRA_TAGS); do \
	  echo "== $(REGISTRY)/$$name:$$tag"; \
	  $(DOCKER) tag kws-$$name:$(IMAGE_TAG) $(REGISTRY)/$$name:$$tag; \
	  $(DOCKER) push -q $(REGISTRY)/$$name:$$tag; \
	done; done

pull-images:  ## pull REGISTRY/<name>:IMAGE_TAG, tagged kws-<name>:IMAGE_TAG as `make images` does
	@test -n "$(REGISTRY)" || { echo "error: set REGISTRY" >&2; exit 2; }
	@set -e; for name in $(IMAGES); do \
	  $(DOCKER) pull -q $(REGISTRY)/$$name:$(IMAGE_TAG); \
	  $(DOCKER) tag $(REGISTRY)/$$name:$(IMAGE_TAG) kws-$$name:$(IMAGE_TAG); \
	done

kind-tools:  ## kind, kubectl and helm (pinned, checksum-verified) into .tools/bin
	@set -e; mkdir -p $(TOOLS_BIN); cd $(TOOLS_BIN); \
	fetch() { curl -fsSL --retry 3 -o "$$1" "$$2"; }; \
	if [ ! -x kind ]; then \
	  fetch kind https://github.com/kubernetes-sigs/kind/releases/download/$(KIND_VERSION)/kind-linux-amd64; \
	  fetch kind.sha256 https://github.com/kubernetes-sigs/kind/releases/download/$(KIND_VERSION)/kind-linux-amd64.sha256sum; \
	  echo "$$(cut -d' ' -f1 kind.sha256)  kind" | sha256sum -c -; chmod +x kind; rm kind.sha256; fi; \
	if [ ! -x kubectl ]; then \
	  fetch kubectl https://dl.k8s.io/release/$(KUBECTL_VERSION)/bin/linux/amd64/kubectl; \
	  fetch kubectl.sha256 https://dl.k8s.io/release/$(KUBECTL_VERSION)/bin/linux/amd64/kubectl.sha256; \
	  echo "$$(cat kubectl.sha256)  kubectl" | sha256sum -c -; chmod +x kubectl; rm kubectl.sha256; fi; \
	if [ ! -x helm ]; then \
	  fetch helm.tgz https://get.helm.sh/helm-$(HELM_VERSION)-linux-amd64.tar.gz; \
	  fetch helm.sha256 https://get.helm.sh/helm-$(HELM_VERSION)-linux-amd64.tar.gz.sha256sum; \
	  echo "$$(cut -d' ' -f1 helm.sha256)  helm.tgz" | sha256sum -c -; \
	  tar -xzf helm.tgz --strip-components=1 linux-amd64/helm; rm helm.tgz helm.sha256; fi; \
	./kind version; ./kubectl version --client; ./helm version --short; \
	echo "add to PATH: export PATH=$(TOOLS_BIN):\$$PATH"

kind-seed:  ## Compose s3 + MLflow joined to the kind network; the smoke pipeline registers models:/kws/1
	IMAGE_TAG=$(IMAGE_TAG) docker compose --profile core up --no-build -d --wait
	docker network connect --alias mlflow kind kws-mlflow-1 2>/dev/null || true
	IMAGE_TAG=$(IMAGE_TAG) KWS_PIPELINE_CONFIGS=smoke docker compose --profile train run --rm \
	  --no-deps trainer

kind-smoke:  ## POST a generated WAV to /predict through the Gateway (GATEWAY_URL)
	python3 charts/kws/files/predict_test.py $(GATEWAY_URL)/predict

kind-rollout: setup  ## one values step: kws deploy set-weights WEIGHTS, helm upgrade, helm test
	$(KWS) deploy set-weights $(WEIGHTS) --values $(DEPLOY_VALUES)
	helm upgrade kws charts/kws -n $(KWS_NAMESPACE) --reuse-values -f $(DEPLOY_VALUES) \
	  --wait --timeout 10m
	kubectl -n $(KWS_NAMESPACE) wait --for=condition=Ready inferenceservice \
	  -l app.kubernetes.io/instance=kws --timeout 10m
	helm test kws -n $(KWS_NAMESPACE)

kind-rollback:  ## helm rollback kws to the previous revision, helm test
	helm rollback kws -n $(KWS_NAMESPACE) --wait --timeout 10m
	helm history kws -n $(KWS_NAMESPACE) --max 5
	helm test kws -n $(KWS_NAMESPACE)

# Continuous training (issue 19): `kws retrain` trains on the current data (smoke config),
# registers a challenger, runs the promotion gate and promotes only a better model.
ct-smoke: setup  ## continuous-training smoke run: kws retrain --when schedule, tiny config -> reports/ct/
	mkdir -p $(CT_REPORTS)
	$(KWS) retrain --when schedule --overlay pipelines/configs/params/smoke.yaml \
	  --report $(CT_REPORTS)/retrain.json
	$(KWS) registry list > $(CT_REPORTS)/registry.txt

$(GITLAB_CI_LOCAL):
	npm install --prefix $(TOOLS) --no-audit --no-fund gitlab-ci-local@$(GITLAB_CI_LOCAL_VERSION)

# Each job runs in its own copy of the tracked files (.gitlab-ci-local/builds/JOB, a fresh .venv
# there) with the shell executor; pip's cache is this machine's (CI_LOCAL_PIP_CACHE).
ci-local: $(GITLAB_CI_LOCAL)  ## the CI jobs lint and test, here (gitlab-ci-local; CI_LOCAL_JOBS; needs rsync)
	@command -v rsync >/dev/null || { echo "error: gitlab-ci-local needs rsync (Debian: apt-get install rsync)" >&2; exit 1; }
	$(GITLAB_CI_LOCAL) --list
	env -u MAKEFLAGS -u MAKELEVEL -u MFLAGS $(GITLAB_CI_LOCAL) --force-shell-executor --shell-isolation \
	  --concurrency 1 --timestamps \
	  --variable PIP_CACHE_DIR=$(CI_LOCAL_PIP_CACHE) \
	  $(if $(KWS_FSDD_SOURCE),--variable KWS_FSDD_SOURCE=$(KWS_FSDD_SOURCE)) $(CI_LOCAL_JOBS)

# ---------------------------------------------------------------------------------------
# Monitoring and continuous training (issue 19): rules, dashboard, retrain
# ---------------------------------------------------------------------------------------
PROMTOOL ?= promtool
RULES := charts/kws/files/prometheus/kws-rules.yaml

.PHONY: rules-check dashboard

rules-check:  ## promtool: check the alerting rules and run their unit tests (Debian: prometheus)
	@command -v $(PROMTOOL) >/dev/null || { \
	  echo "promtool not found: sudo apt-get install prometheus (or set PROMTOOL=...)" >&2; exit 1; }
	$(PROMTOOL) check rules $(RULES)
	$(PROMTOOL) test rules tests/prometheus/kws-rules.test.yaml

dashboard: setup  ## regenerate docker/grafana/dashboards/kws.json from kws/dashboard.py
	$(KWS) monitor dashboard --out docker/grafana/dashboards/kws.json
