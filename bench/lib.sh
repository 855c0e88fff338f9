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

# compare NAME DB BASELINE_SCRIPT CANDIDATE_SCRIPT TARGET_RATIO
compare() {
    local name=$1 db=$2 base=$3 cand=$4 target=$5 best_base=0 best_cand=0 t
    for _ in $(seq 1 "$ROUNDS"); do
        t=$(tps "$db" "$base"); best_base=$(awk -v a="$best_base" -v b="$t" 'BEGIN {print (b > a ? b : a)}')
        t=$(tps "$db" "$cand"); best_cand=$(awk -v a="$best_cand" -v b="$t" 'BEGIN {print (b > a ? b : a)}')
    done
    local ratio verdict
    ratio=$(awk -v a="$best_cand" -v b="$best_base" 'BEGIN {printf "%.3f", (b > 0 ? a / b : 0)}')
    verdict=$(awk -v r="$ratio" -v t="$target" 'BEGIN {print (r >= t ? "met" : "NOT met")}')
    printf '%-58s %10.0f tps vs %10.0f tps  ratio %s  (target >= %s: %s)\n' \
        "$name" "$best_cand" "$best_base" "$ratio" "$target" "$verdict"
    RESULTS+=("$name|$ratio|$target|$verdict")
}
