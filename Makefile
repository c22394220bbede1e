# jobsched — developer entry points. `make help` lists them.
SHELL := /bin/bash
CARGO ?= cargo
JOBSCHED_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/jobsched
export JOBSCHED_DATABASE_URL

.PHONY: help build release test lint fmt run migrate openapi ci chaos fuzz

help: ## List the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

build: ## Debug build of the whole workspace
	$(CARGO) build --workspace --all-targets

release: ## Optimised build of the jobsched binary
	$(CARGO) build --release -p jobsched

test: ## Run the whole test suite (needs Postgres on 127.0.0.1:5432 and Redis on 127.0.0.1:6379)
	$(CARGO) test --workspace --no-fail-fast

lint: ## rustfmt check + clippy with warnings as errors
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt: ## Format the code
	$(CARGO) fmt --all

run: ## Build and start `jobsched dev` (API + engine + workers on embedded SQLite, no services)
	$(CARGO) run --release -p jobsched -- dev

migrate: ## Apply migrations to $JOBSCHED_DATABASE_URL
	$(CARGO) run -p jobsched -- migrate

openapi: ## Regenerate docs/openapi.json from the code
	UPDATE_OPENAPI=1 $(CARGO) test -p jobsched-api openapi

chaos: ## Fault tests (Postgres crash/cut, Redis kill/cut, SIGSTOP/SIGTERM/kill -9 of processes, the controller under faults), 3 runs in a row, printing the RELIABILITY.md rows; then a 10-minute soak and a long fuzz
	@set -o pipefail; for run in 1 2 3; do \
	  echo "== chaos run $$run"; \
	  $(CARGO) test -p jobsched --test chaos --test controller_process -- --nocapture --test-threads 1 2>&1 \
	    | tee /tmp/jobsched-chaos-$$run.log | grep -oE '(RELIABILITY \|.*|test result.*)' || exit 1; \
	done
	@set -o pipefail; echo "== soak ($${SOAK_SECONDS:-600} s)"; \
	  SOAK_SECONDS=$${SOAK_SECONDS:-600} $(CARGO) test -p jobsched --test chaos soak_ -- --nocapture 2>&1 \
	    | tee /tmp/jobsched-soak.log | grep -oE '(RELIABILITY \|.*|test result.*)'
	FUZZ_EXAMPLES=500 JOBSCHED_BIN=target/debug/jobsched tests/fuzz/run.sh

fuzz: ## Schemathesis over docs/openapi.json against `jobsched dev` and `jobsched api` (JOBSCHED_BIN, default target/debug/jobsched)
	tests/fuzz/run.sh

ci: ## What CI runs
	bash .ci/run

include Makefile.packaging
