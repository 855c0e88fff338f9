# The two batch orders (src/reap/order.rs; sourced by bench/run.sh): on Ory Hydra's access-token
# shape (bench/sql/orders_setup.sql) with 1 to 84 % of the rows due (ORDERS_POINTS), rows
# deleted per second by CALL lifecycle.reap as it chooses (auto), held to time order (0.3.0's
# only order) and to physical order (where those two cross is the switch), and by one DELETE
# statement; at 84 % also with audit, against one statement that writes the same audit rows
# into lifecycle.audit_log; then narrow rows (twice as many, ~157 a page) at ORDERS_NARROW_POINTS;
# then an app writer's latency while reap sweeps the backlog in each order.
# Alternating, best of RUNS, each run from a fresh table.
ORDERS_ROWS=${ORDERS_ROWS:-500000}
ORDERS_DUE="requested_at < (now() AT TIME ZONE 'UTC') - interval '1 hour' AND nid = (SELECT id FROM o.networks ORDER BY created_at LIMIT 1)"

# orders_rate TABLE STATEMENT... -> rows/s: the rows TABLE lost while the statements ran
orders_rate() {
    local table=$1 before after secs
    shift
    before=$(psql_q -qtA -d orderbench -c "SELECT count(*) FROM $table")
    secs=$(seconds orderbench "$@")
    after=$(psql_q -qtA -d orderbench -c "SELECT count(*) FROM $table")
    awk -v n="$((before - after))" -v s="$secs" 'BEGIN {printf "%.0f", n / s}'
}

# orders_reap WAY: CALL lifecycle.reap in that batch order (auto, time, physical)
orders_reap() {
    echo "SET client_min_messages = warning"; echo "SET lifecycle.reap_batch_order = $1"; echo "CALL lifecycle.reap(100000, '1 hour')"
}

# orders_run PERCENT WAY [AUDIT] -> rows/s of one run (WAY: auto, time, physical or one; AUDIT: with audit)
orders_run() {
    local percent=$1 way=$2 audit=${3:-} audit_arg="" statements
    psql_q -q -d orderbench -c "CALL o.reset($percent)" >/dev/null
    fresh_statistics orderbench o.access
    [ -n "$audit" ] && audit_arg=", audit => '{subject}'"
    case $way in
        one)
            if [ -n "$audit" ]; then
                orders_rate o.access "WITH d AS (DELETE FROM o.access WHERE $ORDERS_DUE RETURNING signature, subject)
                    INSERT INTO lifecycle.audit_log (policy, relation, row_key, action, data)
                    SELECT 'access', 'o.access', signature, 'delete', jsonb_build_object('subject', subject) FROM d"
            else
                orders_rate o.access "DELETE FROM o.access WHERE $ORDERS_DUE"
            fi ;;
        *)
            psql_q -q -d orderbench -c "SELECT lifecycle.drop_policy(name) FROM lifecycle.policies" \
                -c "SELECT lifecycle.add_policy('access', 'o.access', 'requested_at', older_than => '1 hour', time_zone => 'UTC',
                        filter => 'nid = (SELECT n.id FROM o.networks n ORDER BY n.created_at LIMIT 1)'$audit_arg)" >/dev/null
            mapfile -t statements < <(orders_reap "$way")
            orders_rate o.access "${statements[@]}" ;;
    esac
}

# orders_point PERCENT: the four ways at one share due, alternating, best of RUNS.
orders_point() {
    local percent=$1 auto=0 time=0 one=0 physical=0
    for _ in $(seq 1 "${RUNS:-2}"); do
        one=$(max_of "$one" "$(orders_run "$percent" one)")
        time=$(max_of "$time" "$(orders_run "$percent" time)")
        physical=$(max_of "$physical" "$(orders_run "$percent" physical)")
        auto=$(max_of "$auto" "$(orders_run "$percent" auto)")
    done
    echo "   $percent % due: one statement $one rows/s; reap in time order $time, in physical order $physical, as it chooses (auto) $auto"
    # At 1 % auto takes time order, the same code: the target allows the runs' noise.
    report "orders: reap (auto) vs reap in time order, $percent % due" "$auto" "$time" 0.95 rows/s
    [ "$percent" = 84 ] && report "orders: reap (auto) vs one DELETE statement, 84 % due" "$auto" "$one" 0.8 rows/s
    return 0
}

# orders_narrow_run PERCENT WAY -> rows/s of reap on the narrow table (WAY: auto, time, physical)
orders_narrow_run() {
    local statements
    psql_q -q -d orderbench -c "CALL o.reset_narrow($1)" >/dev/null
    fresh_statistics orderbench o.narrow
    psql_q -q -d orderbench -c "SELECT lifecycle.drop_policy(name) FROM lifecycle.policies" \
        -c "SELECT lifecycle.add_policy('narrow', 'o.narrow', 'expires_at')" >/dev/null
    mapfile -t statements < <(orders_reap "$2")
    orders_rate o.narrow "${statements[@]}"
}

# orders_narrow_point PERCENT: time, physical and auto on narrow rows, alternating, best of RUNS.
orders_narrow_point() {
    local percent=$1 auto=0 time=0 physical=0
    for _ in $(seq 1 "${RUNS:-2}"); do
        time=$(max_of "$time" "$(orders_narrow_run "$percent" time)")
        physical=$(max_of "$physical" "$(orders_narrow_run "$percent" physical)")
        auto=$(max_of "$auto" "$(orders_narrow_run "$percent" auto)")
    done
    echo "   narrow rows, $percent % due: reap in time order $time rows/s, in physical order $physical, as it chooses (auto) $auto"
    report "orders: reap (auto) vs time order, narrow rows, $percent % due" "$auto" "$time" 0.95 rows/s
}

# orders_latency: a pgbench writer updating random Hydra tokens (due and live) while reap (adaptive
# batches) sweeps the 84 % backlog in each order: the writer's p99 and max latency.
orders_latency() {
    local way log p99 max
    echo "\\set k random(1, $ORDERS_ROWS)
UPDATE o.access SET scope = scope WHERE signature = 'sig-' || md5(:k::text);" > "$CLUSTER_DIR/orders_writer.sql"
    for way in time physical; do
        psql_q -q -d orderbench -c "CALL o.reset(84)" >/dev/null
        fresh_statistics orderbench o.access
        psql_q -q -d orderbench -c "SELECT lifecycle.drop_policy(name) FROM lifecycle.policies" \
            -c "SELECT lifecycle.add_policy('access', 'o.access', 'requested_at', older_than => '1 hour', time_zone => 'UTC')" >/dev/null
        rm -f "$CLUSTER_DIR"/pgbench_log.*
        (cd "$CLUSTER_DIR" && "$PG_BIN/pgbench" -n -c 1 -T 12 -l -f orders_writer.sql orderbench >/dev/null 2>&1) &
        local writer=$!
        sleep 1
        psql_q -q -d orderbench -c "SET client_min_messages = warning" -c "SET lifecycle.reap_batch_order = $way" \
            -c "CALL lifecycle.reap(100000, '10 seconds')" >/dev/null
        wait "$writer"
        read -r p99 max < <(pgbench_p99_max "$CLUSTER_DIR")
        echo "   writer while reap sweeps in $way order: p99 ${p99} ms, max ${max} ms"
        [ "$way" = physical ] && report "orders: writer max latency, physical order: 100 ms / max" 100 "$max" 1.0 ms
    done
    return 0
}

orders_bench() {
    psql_q -q -d postgres -c "CREATE DATABASE orderbench"
    psql_q -q -d orderbench -c "CREATE EXTENSION pg_lifecycle"
    psql_q -q -d orderbench -v n="$ORDERS_ROWS" -f bench/sql/orders_setup.sql >/dev/null
    echo "== orders: time order and physical order, $ORDERS_ROWS Hydra access tokens, 1 to 84 % due =="
    for percent in ${ORDERS_POINTS:-1 10 40 84}; do orders_point "$percent"; done
    local audited=0 one=0
    for _ in $(seq 1 "${RUNS:-2}"); do
        one=$(max_of "$one" "$(orders_run 84 one audit)")
        audited=$(max_of "$audited" "$(orders_run 84 auto audit)")
    done
    report "orders: reap (auto) with audit vs one statement with audit, 84 %" "$audited" "$one" 0.8 rows/s
    echo "   $((2 * ORDERS_ROWS)) narrow rows:"
    for percent in ${ORDERS_NARROW_POINTS:-1 2 5 20}; do orders_narrow_point "$percent"; done
    orders_latency
    psql_q -q -d postgres -c "DROP DATABASE orderbench"
}
