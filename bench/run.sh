#!/usr/bin/env bash
# `make bench`: pgbench against a throwaway cluster; every figure is a ratio against a
# baseline measured in the same run on the same cluster. BENCH_SECONDS / ROUNDS / BENCH_CLIENTS
# tune the length.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/cluster.sh
source bench/lib.sh
source bench/reap.sh
source bench/activity.sh
source bench/compliance.sh
source bench/rules.sh
source bench/systems.sh
source bench/orders.sh
trap cluster_stop EXIT

# The reap benchmark's tables (1M tokens: ~200 MB with their indexes) fit in shared buffers,
# as a production server's working set would: with the default 128 MB, whether a batch finds
# its pages there varied its time by half from one stretch of the backlog to the next.
cluster_start "shared_buffers = 1GB"
psql_q -q -d postgres -c "CREATE DATABASE bench"
psql_q -q -d bench -c "CREATE EXTENSION pg_lifecycle"
echo "bench: cluster on port $CLUSTER_PORT; pgbench -M prepared -c $BENCH_CLIENTS, ${BENCH_SECONDS}s x $ROUNDS rounds each"

case "${BENCH_ONLY:-all}" in all|expiry) ;; *) SKIP_EXPIRY=1 ;; esac
if [ -z "${SKIP_EXPIRY:-}" ]; then
echo "== expiry =="
compare "token_is_expired(timestamptz) vs x <= now()" bench bench/sql/now_compare.sql bench/sql/token_is_expired.sql 0.9
compare "token_is_expired(bigint ms) vs ms <= now() in ms" bench bench/sql/ms_compare.sql bench/sql/token_is_expired_ms.sql 0.9
fi

echo
case "${BENCH_ONLY:-all}" in all|activity) activity_bench; echo ;; esac
case "${BENCH_ONLY:-all}" in all|reap) reap_bench ;; reap_scale) reap_scale_bench ;; reap_blocked) per_batch_setup reap1x "$REAP_ROWS"; blocked_bench ;; esac
case "${BENCH_ONLY:-all}" in all|compliance) echo; compliance_bench ;; esac
case "${BENCH_ONLY:-all}" in all|rules) echo; rules_bench; times_bench; lifespans_bench ;; times) times_bench ;; lifespans) lifespans_bench ;; esac
case "${BENCH_ONLY:-all}" in all|systems) echo; systems_bench ;; esac
case "${BENCH_ONLY:-all}" in all|orders) echo; orders_bench ;; esac

echo
echo "bench summary:"
for r in "${RESULTS[@]}"; do IFS='|' read -r n ratio target verdict <<<"$r"; printf '  %-58s %s (target %s) %s\n' "$n" "$ratio" "$target" "$verdict"; done
