# Compliance benchmark (sourced by bench/run.sh): reaping with an archive or events against
# the same reap with audit only, and dropping a month of audit rows as a partition against
# deleting them. Uses reap.sh's database and helpers.

compliance_bench() {
    psql_q -qtA -d postgres -c "SELECT 1 FROM pg_database WHERE datname = 'reapbench'" | grep -q 1 || {
        psql_q -q -d postgres -c "CREATE DATABASE reapbench"
        psql_q -q -d reapbench -c "CREATE EXTENSION pg_lifecycle"
        psql_q -q -d reapbench -v n="$REAP_ROWS" -f bench/sql/reap_setup.sql >/dev/null
    }
    echo "== compliance: reap of $REAP_ROWS tokens with archive / events vs audit only (adaptive batches) =="
    local audit archive events both
    audit=$(run_reap lifecycle true adaptive)
    archive=$(run_reap lifecycle true adaptive ", archive => 'mm.pats_archive'")
    events=$(run_reap lifecycle true adaptive ", events => true, event_columns => '{userid}'")
    both=$(run_reap lifecycle true adaptive ", archive => 'mm.pats_archive', events => true, event_columns => '{userid}'")
    echo "  audit only $audit rows/s, + archive $archive rows/s, + events $events rows/s, + both $both rows/s"
    report "reap with archive vs audit only" "$archive" "$audit" 0.6 rows/s
    report "reap with events vs audit only" "$events" "$audit" 0.6 rows/s
    report "reap with archive and events vs audit only" "$both" "$audit" 0.6 rows/s
    history_drop_bench
}

# A month of audit rows (HISTORY_ROWS) removed by DELETE, and another as large by retention
# dropping its partition.
history_drop_bench() {
    local rows=${HISTORY_ROWS:-1000000} deleted dropped
    echo "== compliance: removing a month of $rows audit rows: DELETE vs partition drop =="
    psql_q -q -d postgres -c "DROP DATABASE IF EXISTS histbench" -c "CREATE DATABASE histbench"
    psql_q -q -d histbench -c "CREATE EXTENSION pg_lifecycle" \
        -c "SELECT lifecycle.set_retention('audit_log', NULL)" \
        -c "SELECT lifecycle._maintain_history_at(date_trunc('month', now()) - interval '20 months' + interval '1 day')" \
        -c "SELECT lifecycle._maintain_history_at(date_trunc('month', now()) - interval '19 months' + interval '1 day')" \
        -c "INSERT INTO lifecycle.audit_log (at, policy, relation, row_key, action, data)
            SELECT date_trunc('month', now()) - m::interval + g * interval '1 second', 'mm_pats', 'mm.useraccesstokens',
                   't' || g, 'delete', jsonb_build_object('id', 't' || g, 'userid', 'u' || g % 1000)
              FROM generate_series(1, $rows) g, unnest(ARRAY['20 months', '19 months']) m" \
        -c "VACUUM ANALYZE lifecycle.audit_log" -c "CHECKPOINT" >/dev/null
    deleted=$(seconds histbench "DELETE FROM lifecycle.audit_log WHERE at < date_trunc('month', now()) - interval '19 months'")
    # Retention 18 months: the emptied month and the full one go; only the full one costs.
    dropped=$(seconds histbench "SELECT lifecycle.set_retention('audit_log', '18 months')" "SELECT lifecycle._maintain_history()")
    local left
    left=$(psql_q -qtA -d histbench -c "SELECT count(*) FROM lifecycle.audit_log")
    [ "$left" -eq 0 ] || { echo "bench: retention left $left audit rows" >&2; exit 1; }
    echo "  DELETE of a month: ${deleted} s (and its dead rows left for vacuum); partition drop by retention: ${dropped} s"
    report "a month of audit rows: DELETE time / partition drop time [reference]" "$deleted" "$dropped" 0 s
}
