# prepis — the two commands: `make run` (set up and serve on port 7071) and `make test`.

MODEL ?= base
PORT ?= 7071
CARGO ?= cargo
TARGET_DIR := $(or $(CARGO_TARGET_DIR),target)
HANDLER := $(TARGET_DIR)/release/handler
export HANDLER
# The test build whose workers abort on a marker tone (crash-containment tests only).
PREPIS_CRASH_HANDLER := $(abspath $(TARGET_DIR)/release/handler-crash-marker)
export PREPIS_CRASH_HANDLER

# whisper.cpp's bindings are pre-generated in whisper-rs-sys; skip libclang.
export WHISPER_DONT_GENERATE_BINDINGS := 1

.PHONY: run test test-browser model build crash-handler deps test-deps lint audit bench handler package clean

## Fetch the model if needed, then serve on $(PORT).
run: build model
	PORT=$(PORT) PREPIS_MODEL=$(MODEL) $(HANDLER)

## Run the whole test suite (unit + black-box against the real binary and model, and the
## release package: tests/package.rs unpacks dist/prepis-functions.zip and runs it).
test: test-deps crash-handler build package
	scripts/fetch-model.sh base
	scripts/fetch-model.sh tiny.en
	scripts/fetch-speaker.sh
	$(CARGO) test --release --all-targets --no-fail-fast
	$(MAKE) test-browser

## The live-captions page in headless Chromium against the real handler (screenshots in
## target/browser-artifacts).
test-browser: build
	@[ -x $(PREPIS_CRASH_HANDLER) ] || $(MAKE) crash-handler
	npm ci --prefix tests/browser --no-audit --no-fund --silent
	HANDLER=$(abspath $(HANDLER)) PREPIS_ARTIFACTS=$(abspath target/browser-artifacts) \
	  node --test --test-concurrency=1 --test-reporter=spec tests/browser/e2e.test.mjs

## Fetch and convert the model named by MODEL (base or tiny.en).
model: build
	HANDLER=$(HANDLER) scripts/fetch-model.sh $(MODEL)
	scripts/fetch-speaker.sh

build: deps
	$(CARGO) build --release --bin handler

## The handler with --features crash-marker, for the crash-containment tests (never shipped:
## `make package` and `make run` build without it); the plain build is restored after it.
crash-handler: deps
	$(CARGO) build --release --bin handler --features crash-marker
	cp $(HANDLER) $(PREPIS_CRASH_HANDLER)
	$(CARGO) build --release --bin handler

deps:
	scripts/install-deps.sh

test-deps:
	scripts/install-deps.sh --test

lint: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --all-targets -- -D warnings

## Dependency policy with cargo-deny (deny.toml): licences, bans, sources; and RustSec
## advisories where github.com/rustsec/advisory-db can be fetched (not in our CI: offline).
DENY_VERSION := 0.20.2
DENY := $(or $(PREPIS_CACHE),$(HOME)/.cache/prepis)/tools/bin/cargo-deny
audit:
	@[ -x $(DENY) ] && $(DENY) --version | grep -q $(DENY_VERSION) || \
	  $(CARGO) install cargo-deny --locked --version $(DENY_VERSION) --root $(dir $(patsubst %/,%,$(dir $(DENY))))
	$(DENY) --offline --log-level error check licenses bans sources
	@if timeout 20 git ls-remote https://github.com/rustsec/advisory-db HEAD >/dev/null 2>&1; then \
	  $(DENY) check advisories; \
	else echo "audit: RustSec advisory database unreachable from here; advisories not checked"; fi

## Latency/RTF/RSS against faster-whisper on the same audio and machine (see bench/README.md).
bench: build
	HANDLER=$(HANDLER) scripts/fetch-model.sh base
	HANDLER=$(HANDLER) bench/run.sh

## The release: a static x86_64-unknown-linux-musl handler (dist/handler) and the Functions
## app folder with it and the model, zipped (dist/prepis-functions.zip); MODEL=none leaves
## the model out. See scripts/package.sh and the README's deployment sections.
package:
	MODEL=$(MODEL) scripts/package.sh

## Copy the binary to the app root, where `func start` looks for it.
handler: build
	cp $(HANDLER) ./handler

clean:
	$(CARGO) clean
	rm -rf ./handler dist
