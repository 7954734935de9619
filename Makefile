# Vigil: one entry point for newcomers and CI (Debian 12 / Ubuntu with Rust,
# Python 3.11 and Node already there).
#
#   make deps    install what is missing: Debian's mosquitto, mosquitto-clients, openssl,
#                libcoap3-bin, chromium, WebKitGTK (the desktop window) with its WebDriver and Xvfb, a
#                Python venv at .venv with tests/requirements.txt, ui/node_modules (npm ci)
#                and tauri-driver (cargo install)
#   make ui      build the web UI into ui/dist (vigil embeds it when built after)
#   make build   the UI, then target/debug/vigil and target/debug/vigil-desktop
#   make run     the desktop app when there is a display, else vigil serve (open the URL
#                it logs); release builds
#   make package a .deb of the desktop app (Tauri's bundler) in target/dist/bundle/deb
#   make check-package  that .deb installed and started in a clean Debian 12 (root)
#   make types   regenerate ui/src/lib/api/generated from the Rust types (ts-rs)
#   make lint    cargo fmt --check, clippy -D warnings, svelte-check, and that the
#                generated TypeScript types match the Rust ones (part of make test)
#   make test    Rust tests (nextest if installed), the end-to-end suite (tests/e2e,
#                against target/debug/vigil), the UI's unit tests (Vitest) and its
#                browser suite (Playwright + chromium), the desktop window under Xvfb
#                (tauri-driver + WebKitWebDriver); reports in artifacts/
#   make bench   vigil bench ingest --vs-mosquitto (release build)

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := build
.DELETE_ON_ERROR:

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
VPY := $(VENV)/bin/python
ARTIFACTS := artifacts
APT_PACKAGES := mosquitto mosquitto-clients libcoap3-bin chromium openssl \
  libwebkit2gtk-4.1-dev libayatana-appindicator3-dev xvfb xauth webkit2gtk-driver \
  dunst dbus-daemon
# sudo only when not root (CI runs as root and may have no sudo at all).
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)
CARGO_TARGET_DIR ?= target
# The binary the end-to-end suite runs (override: make test VIGIL_BIN=/path/to/vigil).
VIGIL_BIN ?= $(abspath $(CARGO_TARGET_DIR))/debug/vigil
VIGIL_DESKTOP_BIN ?= $(abspath $(CARGO_TARGET_DIR))/debug/vigil-desktop
TAURI_DRIVER := $(HOME)/.cargo/bin/tauri-driver
PYTEST_ARGS ?=

.PHONY: deps apt-deps venv ui-deps tauri-driver ui types check-types build run package check-package test lint test-rust test-e2e test-ui test-desktop fuzz-smoke bench

deps: apt-deps venv ui-deps tauri-driver

# Tauri's WebDriver server, in front of Debian's WebKitWebDriver (1-2 min to build).
tauri-driver: $(TAURI_DRIVER)
$(TAURI_DRIVER):
	cargo install tauri-driver --version 2.1.0 --locked

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

ui-deps: ui/node_modules/.installed

ui/node_modules/.installed: ui/package.json ui/package-lock.json
	cd ui && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

# Vite builds in about a second; vigil's build script embeds ui/dist.
ui: ui-deps
	cd ui && npm run --silent build -- --logLevel warn

build: ui
	cargo build -p vigil-cli -p vigil-desktop

run: deps ui
	@if [ -n "$${DISPLAY:-}$${WAYLAND_DISPLAY:-}" ]; then \
	  cargo run --release -p vigil-desktop; \
	else \
	  echo "no display: starting vigil serve; open the URL it logs"; \
	  cargo run --release -p vigil-cli -- serve; \
	fi

# Tauri's bundler (npm's @tauri-apps/cli, pinned at 2.12.3 in ui/: the registry
# lacks some platform packages of later ones, which breaks npm ci) builds the
# release app with ui/dist embedded and packs it with the icons in icons/.
package: deps ui
	ui/node_modules/.bin/tauri build --bundles deb -- --profile dist

# The .deb as a new user gets it: apt installs it into a clean Debian 12
# (debootstrap, made once in /var/tmp), and it starts under Xvfb in a network
# namespace of its own with a device publishing to it. Root; not in `make test`
# (apt fetches WebKitGTK and its dependencies, ~100 MB).
check-package:
	tests/package/check_deb.sh

# The UI's TypeScript types are generated from the Rust types the API sends
# (ts-rs, feature `ts`; .cargo/config.toml says where and how).
TS_CRATES := -p vigil-core -p vigil-store -p vigil-pki -p vigil-engine --features vigil-engine/ts
types:
	rm -rf ui/src/lib/api/generated
	cargo test -q $(TS_CRATES) export_bindings >/dev/null

# Fails when the committed types differ from what the Rust code generates.
check-types: types
	@git diff --exit-code --stat -- ui/src/lib/api/generated || \
	  { echo "the UI's generated types are out of date: run 'make types' and commit"; exit 1; }
	@untracked=$$(git ls-files --others --exclude-standard -- ui/src/lib/api/generated); \
	  if [ -n "$$untracked" ]; then echo "new generated types not committed: $$untracked"; exit 1; fi

# Both suites run even when the first fails; `make test` fails if either did.
test: deps build
	@rc=0; \
	$(MAKE) --no-print-directory lint || rc=1; \
	$(MAKE) --no-print-directory test-rust || rc=1; \
	$(MAKE) --no-print-directory test-e2e || rc=1; \
	$(MAKE) --no-print-directory test-ui || rc=1; \
	$(MAKE) --no-print-directory test-desktop || rc=1; \
	$(MAKE) --no-print-directory fuzz-smoke || rc=1; \
	exit $$rc

# Formatting and clippy, warnings as errors.
lint: ui-deps
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	cd ui && npm run --silent check
	$(MAKE) --no-print-directory check-types

test-rust: ui
	@if command -v cargo-nextest >/dev/null 2>&1; then \
	  echo "cargo nextest run --workspace"; cargo nextest run --workspace --no-fail-fast --no-tests=warn; \
	else \
	  echo "cargo test --workspace"; cargo test --workspace --no-fail-fast; \
	fi

test-e2e: venv ui-deps
	@mkdir -p $(ARTIFACTS)
	VIGIL_BIN="$(VIGIL_BIN)" VIGIL_ARTIFACTS="$(abspath $(ARTIFACTS))" \
	  $(VPY) -m pytest tests/e2e -p no:cacheprovider \
	  --junitxml=$(ARTIFACTS)/e2e-junit.xml $(PYTEST_ARGS)

# The UI: Vitest for its logic, then the browser suite: Debian's chromium driven
# by playwright-core against a real `vigil serve` (the binary built above, with
# the UI embedded) fed by mosquitto_pub. Screenshots go to artifacts/browser/.
test-ui: ui-deps venv
	cd ui && npx vitest run --reporter=default
	cd ui && VIGIL_BIN="$(VIGIL_BIN)" ARTIFACTS="$(abspath $(ARTIFACTS))/browser" \
	  npx vitest run --config vitest.browser.config.ts --reporter=default

# The desktop app: the built vigil-desktop in a real window under Xvfb, driven
# by tauri-driver and Debian's WebKitWebDriver (Selenium). Its command and
# capability tests (no display) run with the Rust tests. Screenshot in
# artifacts/desktop/.
test-desktop: venv tauri-driver
	@mkdir -p $(ARTIFACTS)
	VIGIL_DESKTOP_BIN="$(VIGIL_DESKTOP_BIN)" VIGIL_ARTIFACTS="$(abspath $(ARTIFACTS))" PATH="$(HOME)/.cargo/bin:$$PATH" \
	  xvfb-run -a -s "-screen 0 1440x900x24" $(VPY) -m pytest tests/desktop -p no:cacheprovider \
	  -c tests/desktop/pytest.ini --junitxml=$(ARTIFACTS)/desktop-junit.xml $(PYTEST_ARGS)

# Every cargo-fuzz target of the parsers, briefly (FUZZ_SECONDS each): a
# smoke run that the targets build and find nothing quickly. Longer runs:
#   cd crates/vigil-core && RUSTC_BOOTSTRAP=1 cargo fuzz run senml -- -max_total_time=600
# cargo-fuzz needs nightly features; RUSTC_BOOTSTRAP lets the stable
# toolchain (the only one here) provide them.
FUZZ_SECONDS ?= 15
FUZZ_PROJECTS := crates/vigil-core crates/vigil-broker crates/vigil-coap
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
