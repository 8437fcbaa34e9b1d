# Thin wrappers over cargo and the project's scripts. `make test` is what CI runs.
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: test test-deps fmt lint bench fixture-full clean lambda lambda-local bench-lambda

test: test-deps
	$(CARGO) test --workspace --all-targets

test-deps:
	@scripts/test-deps.sh

fmt:
	$(CARGO) fmt --all

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# Full-size DistilBERT fixture (random weights, real dimensions) used by benchmarks.
fixture-full: .cache/fixtures/full-f32/model.safetensors
.cache/fixtures/full-f32/model.safetensors:
	@scripts/fetch-vocab.sh || true
	$(CARGO) run --release -p model-cache -- fixture --size full --dtype f32 --out .cache/fixtures/full-f32

bench: fixture-full
	MODEL_BENCH_DIR=$(CURDIR)/.cache/fixtures/full-f32 $(CARGO) bench -p model-cache

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
	$(CARGO) build --release -p sentiment-lambda --bins
	@[ -f $(LAMBDA_LOCAL_MODEL)/model.safetensors ] || $(CARGO) run --release -p model-cache -- fixture --size tiny --out $(LAMBDA_LOCAL_MODEL)
	$(LAMBDA_BIN_DIR)/lambda-emulator -e MODEL_DIR=$(abspath $(LAMBDA_LOCAL_MODEL))

bench-lambda:
	@scripts/bench-lambda.sh

clean:
	$(CARGO) clean
