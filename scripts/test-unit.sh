#!/usr/bin/env bash
# Unit layer: #[pg_test] functions run inside a pgrx-managed throwaway cluster.
# initdb refuses root, so the cluster runs as $PG_USER; its PGDATA lives under a fresh
# directory that is removed afterwards (pgrx picks a free port itself).
set -euo pipefail
cd "$(dirname "$0")/.."
PG_USER=${PG_USER:-postgres}
mkdir -p target
pgdata=$(mktemp -u /tmp/pg_lifecycle-unit.XXXXXX)
trap 'rm -rf "$pgdata"' EXIT
runas=()
[ "$(id -u)" -eq 0 ] && runas=(--runas "$PG_USER")
cargo pgrx test "pg${PG:-15}" "${runas[@]}" --pgdata "$pgdata" 2>&1 | tee target/unit-tests.log
passed=$(grep -oE 'test result: ok\. [0-9]+ passed' target/unit-tests.log | awk '{s += $4} END {print s + 0}')
echo "unit layer (#[pg_test]): $passed passed"
[ "$passed" -gt 0 ] || { echo "unit layer ran no test" >&2; exit 1; }
