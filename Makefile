# The README's two commands: `make demo` and `make test`. Everything they need is installed
# by scripts/setup.sh (idempotent; seconds when already done).
SHELL := /bin/bash
export PATH := $(HOME)/.cargo/bin:$(PATH)
# Committed pgrx config: no hand-run `cargo pgrx init` needed.
export PGRX_HOME := $(CURDIR)/pgrx-config
PG_CONFIG := /usr/lib/postgresql/15/bin/pg_config
PG_FEATURES := --no-default-features --features pg15
# initdb refuses root; the throwaway clusters run as this user.
PG_USER ?= postgres

.PHONY: setup install demo test test-unit test-integration bench clean

setup:
	@scripts/setup.sh

# cargo pgrx install writes the current version's script and copies the upgrade scripts
# (sql/pg_lifecycle--A--B.sql); the frozen full scripts of earlier releases are copied here so
# that `CREATE EXTENSION pg_lifecycle VERSION '0.1.0'` (the upgrade test) works.
install: setup
	cargo pgrx install --release --pg-config $(PG_CONFIG) $(PG_FEATURES)
	install -m 644 $(filter-out $(wildcard sql/pg_lifecycle--*--*.sql),$(wildcard sql/pg_lifecycle--*.sql)) \
	    $$($(PG_CONFIG) --sharedir)/extension/

demo: install
	@scripts/demo.sh

# Unit layer first: `cargo pgrx test` installs its own (pg_test) build of the library, so
# the release build is installed again before the integration layer runs against it.
test: setup
	$(MAKE) --no-print-directory test-unit
	$(MAKE) --no-print-directory install
	$(MAKE) --no-print-directory test-integration

test-unit: setup
	@scripts/test-unit.sh

test-integration:
	@scripts/test-integration.sh

bench: install
	@bench/run.sh

clean:
	cargo clean
