# Development entry points. The stack (MariaDB, localstripe, .env) is scripts/stack.sh;
# layout, ports and formats are in docs/dev-stack.md.
#
#   make up            stack + build + migrate, then serve on 127.0.0.1:$(PORT) (Ctrl-C stops the server)
#   make build         components (wasm32-wasip2, release) and native tools (profile native)
#   make test          stack + build, then the native test suites and the API contract check
#   make conformance   scripts/conformance.sh with 2,000 generated cases per operation
#   make fuzz          scripts/fuzz.sh: each cargo-fuzz target for 300 s (FUZZ_SECONDS)
#   make migrate       admin migrate $(MIGRATE_ARGS)   (e.g. make migrate MIGRATE_ARGS=status)
#   make down          stop MariaDB and localstripe
#   make clean-stack   stop them and delete .local/ (databases, venv, logs, stack.env)
#   make bench         scripts/bench.sh, then scripts/load.sh (journeys at concurrency 1 -> 64)

SHELL := bash
.SHELLFLAGS := -euo pipefail -c

PORT ?= 3000
SPIN ?= 0
# Spin's own knob (bytes): keep argon2's 19 MiB resident between login instances
# (docs/operations.md#11-login-latency-keep-argon2s-memory-resident). Honoured by spin and spin-local.
export SPIN_WASMTIME_LINEAR_MEMORY_KEEP_RESIDENT ?= 33554432
MIGRATE_ARGS ?= up
# Panic messages in the components name their crate's source file, which for a dependency lies
# under $CARGO_HOME/registry/src/: with 44 of them in auth.wasm, each character of the builder's
# CARGO_HOME path cost 44 bytes of its 1 MB budget. Cutting that prefix makes the components the
# same size on every machine ("index.crates.io-.../argon2-0.6.0/src/memory.rs" stays). Cargo adds
# these flags to .cargo/config.toml's for the target (simd128); a plain `cargo build` or
# `spin build` works without them, with those paths in full.
export CARGO_TARGET_WASM32_WASIP2_RUSTFLAGS ?= --remap-path-prefix=$(or $(CARGO_HOME),$(HOME)/.cargo)/registry/src/=
# Native test crates; --profile native shares the optimised wasmtime build with `make build`
# instead of compiling it again in the dev profile.
TEST_CARGO_FLAGS ?= --profile native -p admin -p spin-local-host -p integration-tests

NATIVE := target/native
ADMIN := $(NATIVE)/admin
HOST := $(NATIVE)/spin-local
STACK := bash scripts/stack.sh

.PHONY: up serve stack build build-components build-native build-test-fixtures test conformance fuzz migrate down clean-stack bench

# Steps run in order (also under make -j): the stack's .env step builds admin itself.
up:
	$(STACK) up
	@$(MAKE) --no-print-directory build
	$(ADMIN) migrate up
	@$(MAKE) --no-print-directory serve

stack:
	$(STACK) up

serve:
	@mkdir -p .local/logs
	@echo "serving on http://127.0.0.1:$(PORT)"
	@echo "  auth health:     http://127.0.0.1:$(PORT)/api/v3/auth/health"
	@echo "  customer health: http://127.0.0.1:$(PORT)/api/v3/customers/health"
	@echo "logs: server in this terminal and .local/logs/server.log;" \
	      "MariaDB .local/logs/mariadb.log; localstripe .local/logs/localstripe.log"
	@echo "Ctrl-C stops the server; MariaDB and localstripe keep running (make down stops them)"
	@if [ "$(SPIN)" = 1 ] && command -v spin >/dev/null 2>&1; then \
	    spin up --from spin.toml --listen 127.0.0.1:$(PORT) 2>&1 | tee -a .local/logs/server.log; \
	else \
	    if [ "$(SPIN)" = 1 ]; then echo "SPIN=1 but no spin on PATH: using $(HOST)"; fi; \
	    $(HOST) up --from spin.toml --listen 127.0.0.1:$(PORT) 2>&1 | tee -a .local/logs/server.log; \
	fi

build: build-components build-native

build-components:
	cargo build --target wasm32-wasip2 --release -p auth -p customer

# Test-only components (tests/fixtures): the local host's own tests run them.
build-test-fixtures:
	cargo build --target wasm32-wasip2 --release -p probe

build-native:
	cargo build --profile native -p spin-local-host -p admin

test:
	$(STACK) up
	@$(MAKE) --no-print-directory build build-test-fixtures
	set -a; . .local/stack.env; set +a; cargo test $(TEST_CARGO_FLAGS)
	cargo test -p auth -p customer -p telemetry -p tokens -p sealed-email -p rfc3339
	bash scripts/conformance.sh
	FUZZ_SECONDS=$${FUZZ_SECONDS:-10} bash scripts/fuzz.sh

# cargo fuzz over the parsers and validators (fuzz/): make test runs each target 10 s.
fuzz:
	FUZZ_SECONDS=$${FUZZ_SECONDS:-300} bash scripts/fuzz.sh

# schemathesis against both OpenAPI files: make test runs CONFORMANCE_EXAMPLES=300 per operation.
conformance:
	$(STACK) up
	@$(MAKE) --no-print-directory build
	CONFORMANCE_EXAMPLES=$${CONFORMANCE_EXAMPLES:-2000} bash scripts/conformance.sh

migrate:
	cargo build --quiet --profile native -p admin
	$(ADMIN) migrate $(MIGRATE_ARGS)

down:
	$(STACK) down

clean-stack:
	$(STACK) clean

bench:
	bash scripts/bench.sh
	bash scripts/load.sh
