# Vigil: one entry point for newcomers and CI (Debian 12 / Ubuntu with Rust,
# Python 3.11 and Node already there).
#
#   make deps    install what is missing: Debian's mosquitto and mosquitto-clients,
#                and a Python venv at .venv with tests/requirements.txt
#   make build   cargo build -p vigil-cli            -> target/debug/vigil
#   make run     vigil serve on its defaults, release build (prints where to look)
#   make lint    cargo fmt --check and clippy -D warnings (part of make test)
#   make test    Rust tests (nextest if installed), then the end-to-end suite
#                (tests/e2e, against target/debug/vigil); reports in artifacts/
#   make bench   vigil bench ingest --vs-mosquitto (release build)

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := build
.DELETE_ON_ERROR:

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
VPY := $(VENV)/bin/python
ARTIFACTS := artifacts
APT_PACKAGES := mosquitto mosquitto-clients
# sudo only when not root (CI runs as root and may have no sudo at all).
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)
CARGO_TARGET_DIR ?= target
# The binary the end-to-end suite runs (override: make test VIGIL_BIN=/path/to/vigil).
VIGIL_BIN ?= $(abspath $(CARGO_TARGET_DIR))/debug/vigil
PYTEST_ARGS ?=

.PHONY: deps apt-deps venv build run test lint test-rust test-e2e fuzz-smoke bench

deps: apt-deps venv

apt-deps:
	@missing=""; \
	for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' "$$p" 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ ! -x "$(VPY)" ] && ! "$(PYTHON)" -c 'import ensurepip, venv' 2>/dev/null; then missing="$$missing python3-venv"; fi; \
	if [ -n "$$missing" ]; then \
	  echo "deps: installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

venv: $(VENV)/.installed

$(VENV)/.installed: tests/requirements.txt tests/requirements-nodeps.txt
	@[ -x "$(VPY)" ] || "$(PYTHON)" -m venv $(VENV)
	$(VPY) -m pip install --disable-pip-version-check --no-input -q -r tests/requirements.txt
	$(VPY) -m pip install --disable-pip-version-check --no-input -q --no-deps -r tests/requirements-nodeps.txt
	@touch $@

build:
	cargo build -p vigil-cli

run: deps
	cargo run --release -p vigil-cli -- serve

# Both suites run even when the first fails; `make test` fails if either did.
test: deps build
	@rc=0; \
	$(MAKE) --no-print-directory lint || rc=1; \
	$(MAKE) --no-print-directory test-rust || rc=1; \
	$(MAKE) --no-print-directory test-e2e || rc=1; \
	$(MAKE) --no-print-directory fuzz-smoke || rc=1; \
	exit $$rc

# Formatting and clippy, warnings as errors.
lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

test-rust:
	@if command -v cargo-nextest >/dev/null 2>&1; then \
	  echo "cargo nextest run --workspace"; cargo nextest run --workspace --no-fail-fast --no-tests=warn; \
	else \
	  echo "cargo test --workspace"; cargo test --workspace --no-fail-fast; \
	fi

test-e2e: venv
	@mkdir -p $(ARTIFACTS)
	VIGIL_BIN="$(VIGIL_BIN)" VIGIL_ARTIFACTS="$(abspath $(ARTIFACTS))" \
	  $(VPY) -m pytest tests/e2e -p no:cacheprovider \
	  --junitxml=$(ARTIFACTS)/e2e-junit.xml $(PYTEST_ARGS)

# Every cargo-fuzz target of the parsers, briefly (FUZZ_SECONDS each): a
# smoke run that the targets build and find nothing quickly. Longer runs:
#   cd crates/vigil-core && RUSTC_BOOTSTRAP=1 cargo fuzz run senml -- -max_total_time=600
# cargo-fuzz needs nightly features; RUSTC_BOOTSTRAP lets the stable
# toolchain (the only one here) provide them.
FUZZ_SECONDS ?= 15
FUZZ_PROJECTS := crates/vigil-core crates/vigil-broker
fuzz-smoke:
	@command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked --version 0.13.2
	@for project in $(FUZZ_PROJECTS); do \
	  for target in $$(cd $$project && RUSTC_BOOTSTRAP=1 cargo fuzz list); do \
	    echo "fuzz $$project $$target ($(FUZZ_SECONDS) s)"; \
	    log=$(abspath $(ARTIFACTS))/fuzz-$$(basename $$project)-$$target.log; mkdir -p $$(dirname $$log); \
	    if ! (cd $$project && RUSTC_BOOTSTRAP=1 cargo fuzz run $$target -- \
	          -max_total_time=$(FUZZ_SECONDS) >$$log 2>&1); then \
	      tail -n 60 $$log; echo "fuzz target $$target of $$project failed: see $$log"; exit 1; \
	    fi; \
	    grep -E "^(#[0-9]+ *DONE|Done)" $$log | tail -n 1 || true; \
	  done; \
	done

bench: deps
	cargo run --release -p vigil-cli -- bench ingest --vs-mosquitto
