# Thin wrappers over cargo and the project's scripts. `make test` is what CI runs.
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: test test-deps fmt lint bench fixture-full clean serve bench-server

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

clean:
	$(CARGO) clean

# sentiment-server (cluster/) on the tiny fixture: http://127.0.0.1:8080/predict
SERVE_FIXTURE ?= .cache/fixtures/tiny
serve:
	@test -f $(SERVE_FIXTURE)/model.safetensors || $(CARGO) run -p model-cache -- fixture --size tiny --out $(SERVE_FIXTURE)
	$(CARGO) run -p sentiment-server -- --model-dir $(SERVE_FIXTURE) --bind 127.0.0.1:8080

# sentiment-server vs the Python reference on the full-size fixture; see README.
bench-server:
	cluster/bench/run.sh
