# Thin wrappers over cargo and the project's scripts. `make test` is what CI runs.
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: build-local up-artifacts test e2e status test-deps fmt lint bench bench-model check metrics fixture-full clean up down diff moto registry bench-stack serve bench-server lambda lambda-local bench-lambda

test: test-deps
	$(CARGO) test --workspace --all-targets
	$(MAKE) e2e

# The local default end to end through `make up` / `make down`, on its own ports
# (scripts/e2e-local.py says what it checks).
e2e: test-deps
	scripts/e2e-local.py

test-deps:
	@scripts/test-deps.sh

fmt:
	$(CARGO) fmt --all

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# Full-size DistilBERT fixture (random weights, real dimensions) used by benchmarks.
FULL_FIXTURE ?= $(CURDIR)/.cache/fixtures/full-f32
fixture-full: $(FULL_FIXTURE)/fixture.json
$(FULL_FIXTURE)/fixture.json:
	@scripts/fetch-vocab.sh || true
	$(CARGO) run --release -p model-cache -- fixture --size full --dtype f32 --out $(FULL_FIXTURE)

bench-model: fixture-full
	MODEL_BENCH_DIR=$(FULL_FIXTURE) $(CARGO) bench -p model-cache --bench classifier

# The Lambda deployment zip: bootstrap + model/ when it fits the 250 MB unzipped limit.
# LAMBDA_MODEL=none packages bootstrap alone (S3 or container-image model delivery).
LAMBDA_MODEL ?= .cache/fixtures/full-f16
lambda:
	@scripts/package-lambda.sh $(LAMBDA_MODEL)

# The function under the local Lambda emulator: curl -X POST -H 'content-type: application/json' \
#   -d '{"text":"great"}' localhost:9000/predict
LAMBDA_LOCAL_MODEL ?= .cache/fixtures/tiny
LAMBDA_BIN_DIR = $${CARGO_TARGET_DIR:-target}/release
lambda-local:
	$(CARGO) build --release -p sentiment-lambda -p lambda-emulator --bins
	@[ -f $(LAMBDA_LOCAL_MODEL)/model.safetensors ] || $(CARGO) run --release -p model-cache -- fixture --size tiny --out $(LAMBDA_LOCAL_MODEL)
	$(LAMBDA_BIN_DIR)/lambda-emulator -e MODEL_DIR=$(abspath $(LAMBDA_LOCAL_MODEL))

bench-lambda:
	@scripts/bench-lambda.sh

clean:
	$(CARGO) clean

# --- stack: deploy (see README "## stack: deploying") -------------------------------
# STACK_TARGET=local (default) talks to a moto server on loopback, started if needed;
# STACK_TARGET=aws uses the default AWS credential chain.
STACK_TARGET ?= local
MOTO_PORT ?= 5000
# Every binary the stack commands need is built once, in one cargo invocation (so
# features unify and no crate is compiled twice), in the dev profile: the model crates
# are optimized there (see Cargo.toml's [profile.dev.package.*]), nothing pays for LTO,
# and `make test` reuses the same artifacts. The binaries then run directly.
BIN_DIR = $${CARGO_TARGET_DIR:-target}/debug
build-local:
	$(CARGO) build -q -p model-cache -p sentiment-server -p sentiment-lambda -p sentiment-router -p stack --bins
STACK := $(BIN_DIR)/stack --target $(STACK_TARGET)
# The local default always pushes the server image, to a registry `make up` starts.
REGISTRY_PORT ?= 5001
STACK_REGISTRY ?= 127.0.0.1:$(REGISTRY_PORT)
STACK_ENV := $(if $(filter local,$(STACK_TARGET)),AWS_ENDPOINT_URL=$${AWS_ENDPOINT_URL:-http://127.0.0.1:$(MOTO_PORT)} STACK_REGISTRY=$(STACK_REGISTRY),)

moto:
	@if [ "$(STACK_TARGET)" = local ]; then MOTO_PORT=$(MOTO_PORT) scripts/moto-up.sh; fi

registry:
	@if [ "$(STACK_TARGET)" = local ]; then REGISTRY_PORT=$(REGISTRY_PORT) scripts/registry-up.sh; fi

# `stack diff` exits 2 when there are changes; that is not a failure for make. It
# plans with the artifacts `make up` would deploy, so it builds them first.
diff: moto registry up-artifacts
	@$(UP_ENV) $(STACK) diff; rc=$$?; [ $$rc -eq 2 ] && exit 0 || exit $$rc

# What `make up` deploys: the Lambda zip (bootstrap + model), the server binary the
# image carries, and a model for both (a tiny fixture; UP_MODEL=<checkpoint dir> serves
# another, e.g. make fixture-full's). On AWS the zip is built by cargo lambda in the
# release profile (LTO: there speed and size are measured); locally from the one build.
UP_MODEL ?= .cache/fixtures/tiny
up-artifacts: build-local
	@[ -f $(UP_MODEL)/model.safetensors ] || $(BIN_DIR)/model-cache fixture --size tiny --out $(UP_MODEL)
ifeq ($(STACK_TARGET),local)
	LAMBDA_BUILD=none LAMBDA_BOOTSTRAP=$(BIN_DIR)/bootstrap scripts/package-lambda.sh $(UP_MODEL)
else
	$(CARGO) build --release -p sentiment-server
	scripts/package-lambda.sh $(UP_MODEL)
endif

UP_SERVER_BIN := $(if $(filter local,$(STACK_TARGET)),$(BIN_DIR)/sentiment-server,target/release/sentiment-server)
UP_ENV = STACK_MODEL_DIR=$(abspath $(UP_MODEL)) STACK_SERVER_BIN=$(UP_SERVER_BIN) $(STACK_ENV)
up: moto registry up-artifacts
	$(UP_ENV) $(STACK) up --yes
	@echo; echo "Try them:"
	@for out in api_url service_url router_url; do \
	  url=$$($(STACK_ENV) $(STACK) outputs $$out 2>/dev/null) && \
	  printf "  curl -s -X POST -H 'content-type: application/json' -d '{\"text\":\"a wonderful film\"}' %s   # %s\n" "$${url%/}/predict" $$out; \
	done; true

# What the model server is doing: the Deployment, the HPA's utilization and scaling, the
# pods. WATCH=1 prints a line at every change (Ctrl-C stops).
status: build-local
	@$(STACK_ENV) $(STACK) status $(if $(WATCH),--watch,)

# Deletes what the state owns and stops what the stack ran for it (fronts, servers),
# then the registry and moto that `make up` started.
down: moto build-local
	$(STACK_ENV) $(STACK) down --yes
	@if [ "$(STACK_TARGET)" = local ]; then MOTO_PORT=$(MOTO_PORT) REGISTRY_PORT=$(REGISTRY_PORT) scripts/local-down.sh; fi

# The integration suite against what `make up` deployed (bench check): the expected
# answers are the deployed checkpoint's, from `model-cache predict`.
CHECK_EXPECTED = .stack/check-expected.jsonl
check: build-local
	$(CARGO) build -q -p bench --bins
	@mkdir -p .stack
	$(BIN_DIR)/model-cache predict --model-dir $(UP_MODEL) < bench/check/texts.txt > $(CHECK_EXPECTED)
	$(STACK_ENV) BENCH_STACK_BIN=$(BIN_DIR)/stack $(BIN_DIR)/bench check --expect $(CHECK_EXPECTED)

# What the platforms recorded: the Lambda's REPORT lines, each server's /metrics.
metrics: build-local
	$(CARGO) build -q -p bench --bins
	$(STACK_ENV) BENCH_STACK_BIN=$(BIN_DIR)/stack $(BIN_DIR)/bench metrics

# Lambda vs Kubernetes on the full-size fixture: `make up` with it (a no-op when it is
# already deployed), then the steady, step and spike profiles, each with its report.
BENCH_MODEL ?= .cache/fixtures/full-f16
BENCH_RATE ?= 2
BENCH_DURATION ?= 60s
bench:
	@[ -f $(BENCH_MODEL)/model.safetensors ] || { $(MAKE) build-local && $(BIN_DIR)/model-cache fixture --size full --dtype f16 --out $(BENCH_MODEL); }
	$(MAKE) up UP_MODEL=$(BENCH_MODEL)
	$(CARGO) build -q -p bench --bins
	$(STACK_ENV) BENCH_STACK_BIN=$(BIN_DIR)/stack BENCH_BIN=$(BIN_DIR)/bench \
	  BENCH_RATE=$(BENCH_RATE) BENCH_DURATION=$(BENCH_DURATION) scripts/bench-suite.sh

bench-stack:
	$(CARGO) bench -p stack --bench stack_cli
# sentiment-server (cluster/) on the tiny fixture: http://127.0.0.1:8080/predict
SERVE_FIXTURE ?= .cache/fixtures/tiny
serve:
	@test -f $(SERVE_FIXTURE)/model.safetensors || $(CARGO) run -p model-cache -- fixture --size tiny --out $(SERVE_FIXTURE)
	$(CARGO) run -p sentiment-server -- --model-dir $(SERVE_FIXTURE) --bind 127.0.0.1:8080

# sentiment-server vs the Python reference on the full-size fixture; see README.
bench-server:
	cluster/bench/run.sh
