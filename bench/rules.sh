# Rules benchmark (sourced by bench/run.sh): a condition on related rows (MAS's consumed
# refresh tokens: a token goes only when the token that replaced it is consumed too, or gone)
# against a plain policy deleting the same rows without that probe, and against MAS's own
# 1000-row loop. Rows deleted per second, best of RUNS, alternating, fresh tables each run.
RULES_ROWS=${RULES_ROWS:-1000000}
RULES_FILTER="next_oauth2_refresh_token_id IS NULL OR EXISTS (SELECT 1 FROM rules.oauth2_refresh_tokens n
              WHERE n.oauth2_refresh_token_id = t.next_oauth2_refresh_token_id AND n.consumed_at IS NOT NULL)"

# rules_run WAY -> rows/s of one run from a fresh table
rules_run() {
    local way=$1 before after secs
    psql_q -q -d rulesbench -c "CALL rules.reset()" -c "CHECKPOINT" >/dev/null
    before=$(psql_q -qtA -d rulesbench -c "SELECT count(*) FROM rules.oauth2_refresh_tokens")
    case $way in
        mas) secs=$(seconds rulesbench "CALL rules.mas_loop()") ;;
        related|plain)
            local filter=$RULES_FILTER
            [ "$way" = plain ] && filter="deletable"
            psql_q -q -d rulesbench -c "SELECT lifecycle.drop_policy(name) FROM lifecycle.policies" \
                -c "SELECT lifecycle.add_policy('consumed', 'rules.oauth2_refresh_tokens', 'consumed_at', older_than => '1 hour', filter => \$f\$$filter\$f\$)" >/dev/null
            secs=$(seconds rulesbench "SET client_min_messages = warning" "CALL lifecycle.reap(100000, '1 hour')") ;;
    esac
    after=$(psql_q -qtA -d rulesbench -c "SELECT count(*) FROM rules.oauth2_refresh_tokens")
    awk -v n="$((before - after))" -v s="$secs" 'BEGIN {printf "%.0f", n / s}'
}

rules_bench() {
    psql_q -q -d postgres -c "CREATE DATABASE rulesbench"
    psql_q -q -d rulesbench -c "CREATE EXTENSION pg_lifecycle"
    psql_q -q -d rulesbench -v n="$RULES_ROWS" -f bench/sql/rules_setup.sql >/dev/null
    # What the rule deletes in one sweep (the plain policy's `deletable`), from one run of MAS's loop.
    psql_q -q -d rulesbench -c "CALL rules.reset()" -c "CALL rules.mas_loop()" \
        -c "INSERT INTO rules.deleted SELECT oauth2_refresh_token_id FROM rules.template EXCEPT SELECT oauth2_refresh_token_id FROM rules.oauth2_refresh_tokens" >/dev/null
    echo "== rules: $RULES_ROWS MAS refresh tokens, $(psql_q -qtA -d rulesbench -c "SELECT count(*) FROM rules.deleted") due under the consumed-token rule =="
    local related=0 plain=0 mas=0
    for _ in $(seq 1 "${RUNS:-2}"); do
        related=$(max_of "$related" "$(rules_run related)")
        plain=$(max_of "$plain" "$(rules_run plain)")
        mas=$(max_of "$mas" "$(rules_run mas)")
    done
    echo "  related-row policy $related rows/s, plain policy on the same rows $plain rows/s, MAS's 1000-row loop $mas rows/s"
    report "related-row filter vs plain policy, same rows" "$related" "$plain" 0.8 rows/s
    report "related-row policy vs MAS's own cleanup loop" "$related" "$mas" 2.0 rows/s
}

# Computed times and keep-newest against plain policies deleting the same rows (fresh tables
# each run, alternating, best of RUNS): a computed time read from its expression index against
# the same time stored in a column; keep_newest's per-row lookup of the group's 10 newer rows
# against a plain policy whose filter is a stored flag.
times_run() {
    local way=$1 before after secs args
    # VACUUM: a table in service has its visibility map set, so the group lookups of
    # keep_newest read the (user_id, created_at, id) index only.
    psql_q -q -d rulesbench -c "CALL times.reset()" -c "VACUUM ANALYZE times.tokens" -c "CHECKPOINT" >/dev/null
    case $way in
        computed) args="NULL, time_expression => 'lifecycle.add_seconds(created_at, expires_in)'" ;;
        stored) args="'expires_at'" ;;
        keep) args="'created_at', keep_newest => 10, keep_per => '{user_id}'" ;;
        flagged) args="'created_at', filter => 'deletable_keep'" ;;
    esac
    before=$(psql_q -qtA -d rulesbench -c "SELECT count(*) FROM times.tokens")
    psql_q -q -d rulesbench -c "SELECT lifecycle.drop_policy(name) FROM lifecycle.policies" \
        -c "SELECT lifecycle.add_policy('t', 'times.tokens', $args)" >/dev/null
    secs=$(seconds rulesbench "SET client_min_messages = warning" "CALL lifecycle.reap(100000, '1 hour')")
    after=$(psql_q -qtA -d rulesbench -c "SELECT count(*) FROM times.tokens")
    awk -v n="$((before - after))" -v s="$secs" 'BEGIN {printf "%.0f", n / s}'
}

times_bench() {
    if [ -z "$(psql_q -qtA -d postgres -c "SELECT 1 FROM pg_database WHERE datname = 'rulesbench'")" ]; then
        psql_q -q -d postgres -c "CREATE DATABASE rulesbench"
        psql_q -q -d rulesbench -c "CREATE EXTENSION pg_lifecycle"
    fi
    psql_q -q -d rulesbench -v n="$RULES_ROWS" -f bench/sql/times_setup.sql >/dev/null
    echo "== computed times and keep-newest: $RULES_ROWS tokens, 20 per user, half due under each rule =="
    local computed=0 stored=0 keep=0 flagged=0
    for _ in $(seq 1 "${RUNS:-2}"); do
        computed=$(max_of "$computed" "$(times_run computed)")
        stored=$(max_of "$stored" "$(times_run stored)")
        keep=$(max_of "$keep" "$(times_run keep)")
        flagged=$(max_of "$flagged" "$(times_run flagged)")
    done
    report "computed time vs the same time stored in a column" "$computed" "$stored" 0.8 rows/s
    report "keep_newest 10 per user vs a plain policy, same rows" "$keep" "$flagged" 0.8 rows/s
}
