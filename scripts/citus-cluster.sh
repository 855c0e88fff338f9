# A throwaway Citus cluster: a coordinator and two workers, each a PostgreSQL 15 of its own
# (sourced by scripts/test-citus.sh and bench/citus.sh, after scripts/cluster.sh).
#   citus_ready NAME      builds Citus once (scripts/setup-citus.sh); exits 0 saying NAME is
#                         skipped where ../shared/vendor is absent
#   citus_start NAME      starts the nodes, joins them (COORD, PORTS, NODES); removed on exit
#                         unless KEEP_CITUS is set
#   on PORT psql-args     psql on a node;  value PORT SQL: one value from a node
citus_ready() {
    local rc
    set +e
    scripts/setup-citus.sh
    rc=$?
    set -e
    if [ "$rc" -eq 3 ]; then
        echo "$1: skipped (no ../shared/vendor to build Citus from)"
        exit 0
    elif [ "$rc" -ne 0 ]; then
        exit "$rc"
    fi
}

NODES=()
PORTS=()
citus_stop() {
    local dir
    for dir in "${NODES[@]}"; do
        as_pg_user "$PG_BIN/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
        rm -rf "$dir"
    done
}

on() { local port=$1; shift; psql_q -q -h 127.0.0.1 -p "$port" -U postgres -d postgres "$@"; }
value() { local port=$1; shift; psql_q -qtA -h 127.0.0.1 -p "$port" -U postgres -d postgres -c "$1"; }

citus_start() {
    [ -n "${KEEP_CITUS:-}" ] || trap citus_stop EXIT
    local port
    for _ in coordinator worker1 worker2; do
        # Citus first; two-phase commit needs prepared transactions.
        cluster_start "shared_preload_libraries = 'citus,pg_cron,pg_lifecycle'" \
            "max_prepared_transactions = 20" "lifecycle.activity_cache_entries = 10000"
        NODES+=("$CLUSTER_DIR")
        PORTS+=("$CLUSTER_PORT")
        CLUSTER_DIR=
    done
    COORD=${PORTS[0]}
    for port in "${PORTS[@]}"; do on "$port" -c "CREATE EXTENSION citus"; done
    on "$COORD" -c "SELECT citus_set_coordinator_host('127.0.0.1', $COORD)" >/dev/null
    for port in "${PORTS[@]:1}"; do on "$COORD" -c "SELECT citus_add_node('127.0.0.1', $port)" >/dev/null; done
    echo "$1: coordinator on $COORD, workers on ${PORTS[1]} and ${PORTS[2]}"
}
