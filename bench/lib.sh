# Benchmark helpers (sourced by bench/run.sh). Each comparison runs baseline and candidate
# alternately on the same cluster, ROUNDS times each, and keeps the best TPS of each, so
# drift on a shared 2-core machine hurts both sides alike.
BENCH_SECONDS=${BENCH_SECONDS:-8}
BENCH_CLIENTS=${BENCH_CLIENTS:-2}
ROUNDS=${ROUNDS:-3}
RESULTS=()

# tps DB SCRIPT: transactions per second of one pgbench run.
tps() {
    "$PG_BIN/pgbench" -n -M prepared -c "$BENCH_CLIENTS" -j "$BENCH_CLIENTS" -T "$BENCH_SECONDS" \
        -f "$2" "$1" 2>&1 | awk '/^tps = / {print $3}'
}

# report NAME CANDIDATE BASELINE TARGET [UNIT]: print one ratio line and keep it for the summary.
report() {
    local name=$1 cand=$2 base=$3 target=$4 unit=${5:-tps} ratio verdict
    ratio=$(awk -v a="$cand" -v b="$base" 'BEGIN {printf "%.3f", (b > 0 ? a / b : 0)}')
    verdict=$(awk -v r="$ratio" -v t="$target" 'BEGIN {print (r >= t ? "met" : "NOT met")}')
    printf '%-58s %10s %s vs %10s %s  ratio %s  (target >= %s: %s)\n' \
        "$name" "$cand" "$unit" "$base" "$unit" "$ratio" "$target" "$verdict"
    RESULTS+=("$name|$ratio|$target|$verdict")
}

# compare NAME DB BASELINE_SCRIPT CANDIDATE_SCRIPT TARGET_RATIO
# Leaves the best TPS of each side in BASE_TPS / CAND_TPS for reference lines.
compare() {
    local name=$1 db=$2 base=$3 cand=$4 target=$5 t
    BASE_TPS=0 CAND_TPS=0
    for _ in $(seq 1 "$ROUNDS"); do
        t=$(tps "$db" "$base"); BASE_TPS=$(awk -v a="$BASE_TPS" -v b="$t" 'BEGIN {print (b > a ? b : a)}')
        t=$(tps "$db" "$cand"); CAND_TPS=$(awk -v a="$CAND_TPS" -v b="$t" 'BEGIN {print (b > a ? b : a)}')
    done
    BASE_TPS=$(printf '%.0f' "$BASE_TPS") CAND_TPS=$(printf '%.0f' "$CAND_TPS")
    report "$name" "$CAND_TPS" "$BASE_TPS" "$target"
}

# fresh_statistics DB TABLE: ANALYZE after the table's load is counted in its statistics (they
# are reported within a second, in the background), then CHECKPOINT: statistics as autovacuum
# would have left them, which a new sweep's choice of order reads (src/reap/order.rs).
fresh_statistics() {
    psql_q -q -d "$1" -c "SELECT pg_stat_force_next_flush()" -c "SELECT 1" -c "ANALYZE $2" -c "CHECKPOINT" >/dev/null
}

# pgbench_p99_max DIR -> "p99 max", in ms, of the transactions `pgbench -l` logged in DIR
pgbench_p99_max() {
    # pgbench -l: the third field is the transaction's latency in microseconds.
    cat "$1"/pgbench_log.* | awk '{print $3}' | sort -n \
        | awk '{v[NR] = $1} END {printf "%.2f %.2f\n", v[int(NR * 0.99)] / 1000, v[NR] / 1000}'
}
