#!/usr/bin/env bash
# Integration layer: tests/*.rs, each test binary with its own throwaway cluster (see
# tests/common/mod.rs). Runs against the installed release build (`make install`).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p target
# PG_BIN (the server's binaries) and PG_FEATURES come from the Makefile (PG=15|16|18).
# shellcheck disable=SC2086
cargo test --no-fail-fast ${PG_FEATURES:---no-default-features --features pg15} --test '*' "$@" -- --test-threads="${TEST_THREADS:-2}" --show-output 2>&1 \
    | tee target/integration-tests.log
passed=$(grep -oE 'test result: ok\. [0-9]+ passed' target/integration-tests.log | awk '{s += $4} END {print s + 0}')
echo "integration layer (own cluster): $passed passed"
# The reliability suite's counts (tests/sweep.rs, tests/faults.rs, the backfill timing).
grep -E '^(bad-input sweep|soak|backfill of)' target/integration-tests.log || true
# Tests that need what this machine lacks (pg_cron for 16 or 18 without ../shared/vendor) say so.
grep -E '^skipped: ' target/integration-tests.log | sort -u || true
[ "$passed" -gt 0 ] || { echo "integration layer ran no test" >&2; exit 1; }
