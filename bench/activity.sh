# Activity benchmark (sourced by bench/run.sh): record_activity's throttled (hot) path against
# the SELECT 1 floor and the FxA-style throttled upsert, and its new-row path against a plain
# upsert of the same three rows (parent + 2 scopes). Same cluster, same run, alternating.
activity_bench() {
    echo "== activity =="
    psql_q -q -d bench -f bench/sql/activity_setup.sql >/dev/null
    compare "record_activity hot path vs SELECT 1" bench bench/sql/select_1.sql bench/sql/record_activity_hot.sql 0.8
    local select_1=$BASE_TPS
    compare "record_activity hot path vs FxA-style throttled upsert" bench bench/sql/fxa_upsert_hot.sql bench/sql/record_activity_hot.sql 25
    # The ceiling of the line above: the FxA upsert waits on WAL flushes, SELECT 1 on the round
    # trip, so on a machine with slow system calls and a fast disk no function call reaches 25x.
    report "SELECT 1 floor vs FxA-style throttled upsert [ceiling]" "$select_1" "$BASE_TPS" 0
    # For the record, not a target: the throttled upsert as one statement (one round trip).
    compare "record_activity hot path vs one-statement upsert (info)" bench bench/sql/one_statement_upsert_hot.sql bench/sql/record_activity_hot.sql 1
    compare "record_activity new row vs plain upsert (3 rows)" bench bench/sql/plain_upsert_new.sql bench/sql/record_activity_new.sql 0.9
    psql_q -qtA -d bench -c "SELECT format('  activity_stats: recorded %s, throttled %s (cache hits %s), write_failed %s',
                                   recorded, throttled, cache_hits, write_failed) FROM lifecycle.activity_stats"
}
