# jobsched — developer entry points. `make help` lists them.
SHELL := /bin/bash
CARGO ?= cargo
JOBSCHED_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/jobsched
export JOBSCHED_DATABASE_URL

.PHONY: help build release test lint fmt run migrate openapi ci

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

ci: ## What CI runs
	bash .ci/run

include Makefile.packaging
