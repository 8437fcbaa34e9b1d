# Thin wrappers over cargo and the project's scripts. `make test` is what CI runs.
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: test test-deps fmt lint bench fixture-full clean

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
FULL_FIXTURE ?= $(CURDIR)/.cache/fixtures/full-f32
fixture-full: $(FULL_FIXTURE)/fixture.json
$(FULL_FIXTURE)/fixture.json:
	@scripts/fetch-vocab.sh || true
	$(CARGO) run --release -p model-cache -- fixture --size full --dtype f32 --out $(FULL_FIXTURE)

bench: fixture-full
	MODEL_BENCH_DIR=$(FULL_FIXTURE) $(CARGO) bench -p model-cache --bench classifier

clean:
	$(CARGO) clean
