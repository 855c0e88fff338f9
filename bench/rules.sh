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

# Lifespans read per realm (Keycloak's shape, 1000 realms) against a plain policy deleting the
# same rows with one older_than (every realm's lifespan is that interval): rows/s of the
# backlog, fresh tables each run, alternating, best of RUNS. Then the steady state, where a
# batch walks all 1000 realms and finds little due: the time of one batch at SPANS_ROWS and
# at SPANS_BIG_ROWS (the walk's probes grow with the index's depth only).
SPANS_ROWS=${SPANS_ROWS:-1000000}
SPANS_BIG_ROWS=${SPANS_BIG_ROWS:-10000000}
SPANS_LIFESPAN="(SELECT make_interval(secs => r.sso_idle_timeout) FROM spans.realm r WHERE r.id = realm_id)"

spans_policy() {
    local way=$1 args
    case $way in
        lifespan) args="lifespan => '$SPANS_LIFESPAN', lifespan_per => '{realm_id, offline_flag}'" ;;
        plain) args="older_than => '1 hour'" ;;
    esac
    psql_q -q -d "$2" -c "SELECT lifecycle.drop_policy(name) FROM lifecycle.policies" \
        -c "SELECT lifecycle.add_policy('s', 'spans.sessions', 'last_session_refresh', time_kind => 'unix_s', $args)" >/dev/null
}

spans_run() {
    local way=$1 before after secs
    # VACUUM: the visibility map of a table in service (the walk's next-realm probes read the index only).
    psql_q -q -d spansbench -c "CALL spans.reset()" -c "VACUUM ANALYZE spans.sessions" -c "CHECKPOINT" >/dev/null
    before=$(psql_q -qtA -d spansbench -c "SELECT count(*) FROM spans.sessions")
    spans_policy "$way" spansbench
    secs=$(seconds spansbench "SET client_min_messages = warning" "CALL lifecycle.reap(100000, '1 hour')")
    after=$(psql_q -qtA -d spansbench -c "SELECT count(*) FROM spans.sessions")
    awk -v n="$((before - after))" -v s="$secs" 'BEGIN {printf "%.0f", n / s}'
}

# spans_steady DB -> milliseconds of one steady-state batch (best of 5 averages of 20)
spans_steady() {
    local db=$1 best="" secs
    psql_q -q -d "$db" -c "CALL spans.reset()" -c "VACUUM ANALYZE spans.sessions" >/dev/null
    spans_policy lifespan "$db"
    psql_q -q -d "$db" -c "SET client_min_messages = warning" -c "CALL lifecycle.reap(100000, '1 hour')" >/dev/null
    psql_q -q -d "$db" -c "VACUUM ANALYZE spans.sessions" >/dev/null
    for _ in 1 2 3 4 5; do
        secs=$(seconds "$db" "SELECT count(lifecycle.reap_expired()) FROM generate_series(1, 20)")
        best=$(min_of "$best" "$secs")
    done
    awk -v s="$best" 'BEGIN {printf "%.2f", s * 1000 / 20}'
}

spans_setup_db() {
    psql_q -q -d postgres -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS $1" -c "CREATE DATABASE $1"
    psql_q -q -d "$1" -c "CREATE EXTENSION pg_lifecycle"
    psql_q -q -d "$1" -v n="$2" -f bench/sql/lifespans_setup.sql >/dev/null
}

lifespans_bench() {
    spans_setup_db spansbench "$SPANS_ROWS"
    echo "== lifespans per realm: $SPANS_ROWS Keycloak sessions over 1000 realms, half due =="
    local lifespan=0 plain=0 small big
    for _ in $(seq 1 "${RUNS:-2}"); do
        lifespan=$(max_of "$lifespan" "$(spans_run lifespan)")
        plain=$(max_of "$plain" "$(spans_run plain)")
    done
    report "lifespan per realm vs one older_than, same rows" "$lifespan" "$plain" 0.8 rows/s
    small=$(spans_steady spansbench)
    spans_setup_db spansbig "$SPANS_BIG_ROWS"
    big=$(spans_steady spansbig)
    psql_q -q -d postgres -c "DROP DATABASE spansbig"
    echo "  steady state, a batch walking 1000 realms: $small ms at $SPANS_ROWS rows, $big ms at $SPANS_BIG_ROWS rows"
    # A ratio of times: the smaller the better, so the report takes 1M over 10M (>= 1/1.2).
    report "lifespan batch time at $SPANS_ROWS over at $SPANS_BIG_ROWS rows" "$small" "$big" 0.83 ms/ms
}
