#!/usr/bin/env bash
# `make test-citus`: pg_lifecycle on a real Citus cluster (a coordinator and two workers, each a
# throwaway PostgreSQL 15 of its own, removed afterwards). Builds Citus from ../shared/vendor
# once (scripts/setup-citus.sh); without ../shared/vendor it says that it skips and exits 0.
#
# What runs here today (docs/scaling.md): CREATE EXTENSION and ALTER EXTENSION UPDATE from the
# coordinator reach every node (Citus's two-phase commit); the activity tables distributed as
# the docs say; record_activity routed to the worker that owns the user; a multi-shard delete of
# activity rows (two-phase on every worker) invalidates the workers' caches. Reaping distributed
# tables (issue 16) is not built yet.
set -euo pipefail
cd "$(dirname "$0")/.."
PG_BIN=/usr/lib/postgresql/15/bin
source scripts/cluster.sh

set +e
scripts/setup-citus.sh
rc=$?
set -e
if [ "$rc" -eq 3 ]; then
    echo "test-citus: skipped (no ../shared/vendor to build Citus from)"
    exit 0
elif [ "$rc" -ne 0 ]; then
    exit "$rc"
fi

NODES=()
PORTS=()
stop_all() {
    local dir
    for dir in "${NODES[@]}"; do
        as_pg_user "$PG_BIN/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
        rm -rf "$dir"
    done
}
[ -n "${KEEP_CITUS:-}" ] || trap stop_all EXIT

for _ in coordinator worker1 worker2; do
    # Citus first; two-phase commit needs prepared transactions.
    cluster_start "shared_preload_libraries = 'citus,pg_cron,pg_lifecycle'" \
        "max_prepared_transactions = 20" "lifecycle.activity_cache_entries = 10000"
    NODES+=("$CLUSTER_DIR")
    PORTS+=("$CLUSTER_PORT")
    CLUSTER_DIR=
done
on() { local port=$1; shift; psql_q -q -h 127.0.0.1 -p "$port" -U postgres -d postgres "$@"; }
value() { local port=$1; shift; psql_q -qtA -h 127.0.0.1 -p "$port" -U postgres -d postgres -c "$1"; }
COORD=${PORTS[0]}
for port in "${PORTS[@]}"; do on "$port" -c "CREATE EXTENSION citus"; done
on "$COORD" -c "SELECT citus_set_coordinator_host('127.0.0.1', $COORD)" >/dev/null
for port in "${PORTS[@]:1}"; do on "$COORD" -c "SELECT citus_add_node('127.0.0.1', $port)" >/dev/null; done
echo "test-citus: coordinator on $COORD, workers on ${PORTS[1]} and ${PORTS[2]}"

fail() { echo "test-citus: FAILED: $*" >&2; exit 1; }
versions() { local port; for port in "${PORTS[@]}"; do value "$port" "SELECT extversion FROM pg_extension WHERE extname = 'pg_lifecycle'"; done | sort -u | tr '\n' ' '; }

# 1. Install an earlier version from the coordinator, then update: every node follows.
on "$COORD" -c "CREATE EXTENSION pg_lifecycle VERSION '0.2.0'"
[ "$(versions)" = "0.2.0 " ] || fail "CREATE EXTENSION from the coordinator left versions: $(versions)"
on "$COORD" -c "ALTER EXTENSION pg_lifecycle UPDATE"
want=$(grep -m1 '^version' Cargo.toml | cut -d'"' -f2)
[ "$(versions)" = "$want " ] || fail "ALTER EXTENSION UPDATE from the coordinator left versions: $(versions)"
echo "test-citus: ok: CREATE EXTENSION (0.2.0) and ALTER EXTENSION UPDATE ($want) from the coordinator reached every node"

# 2. The docs/scaling.md recipe, as written; a second call does nothing.
sed -n '/^```sql$/,/^```$/p' docs/scaling.md | grep -v '^```' | grep -v '^--' > "${NODES[0]}/scaling.sql"
on "$COORD" -f "${NODES[0]}/scaling.sql" >/dev/null
[ "$(value "$COORD" "SELECT count(*) FROM pg_dist_partition WHERE logicalrelid::text LIKE 'lifecycle.%'")" = 3 ] \
    || fail "docs/scaling.md did not distribute the activity tables"
[ "$(value "$COORD" "SELECT count(*) FROM pg_dist_object WHERE distribution_argument_index IS NOT NULL AND objid IN ('lifecycle.record_activity(text,text,text[],timestamptz)'::regprocedure, 'lifecycle.forget_user(text)'::regprocedure)")" = 2 ] \
    || fail "record_activity and forget_user are not distributed by their user"
[ "$(value "$COORD" "SELECT count(*) FROM lifecycle.distribute()")" = 0 ] || fail "a second distribute() did something"
echo "test-citus: ok: docs/scaling.md's lifecycle.distribute() distributes the activity tables, the scope map and the two calls, once"

# 3. record_activity through the coordinator lands on the worker that owns the user.
on "$COORD" -c "SELECT lifecycle.record_activity('u' || g, 'c1', '{sync}') FROM generate_series(1, 20) g" >/dev/null
# Rows of the activity shards on the worker at `port`.
rows_on() { value "$COORD" "SELECT coalesce(sum(result::int), 0) FROM run_command_on_placements('lifecycle.activity', 'SELECT count(*) FROM %s') WHERE nodeport = $1"; }
w1=$(rows_on "${PORTS[1]}"); w2=$(rows_on "${PORTS[2]}")
[ "$((w1 + w2))" = 20 ] && [ "$w1" -gt 0 ] && [ "$w2" -gt 0 ] || fail "activity rows per worker: $w1 and $w2 (want 20 in all, on both)"
echo "test-citus: ok: 20 users' activity written through the coordinator: $w1 rows on one worker, $w2 on the other"

# 4. A delete of many users' activity through the coordinator commits in two phases on both
#    workers; the throttle cache there must not answer for the deleted rows afterwards.
[ "$(value "$COORD" "SELECT lifecycle.record_activity('u1', 'c1', '{sync}')")" = f ] || fail "a second call within the throttle wrote"
on "$COORD" -c "DELETE FROM lifecycle.activity WHERE user_id LIKE 'u%'" >/dev/null \
    || fail "a multi-shard delete of activity rows was refused"
[ "$(value "$COORD" "SELECT lifecycle.record_activity('u1', 'c1', '{sync}')")" = t ] \
    || fail "after the two-phase delete, a call was throttled by a row that is gone"
echo "test-citus: ok: a multi-shard (two-phase) delete of activity rows goes through, and the next call writes again"
# 5. A shard move: the user's calls follow their shard, and the old worker forgets what it
#    cached, so that after the rows are deleted elsewhere and the shard moves back, a due write
#    is not skipped on the old worker's word.
shard_of() { value "$COORD" "SELECT get_shard_id_for_distribution_column('lifecycle.activity', '$1')"; }
port_of() { value "$COORD" "SELECT nodeport FROM pg_dist_placement p JOIN pg_dist_node n USING (groupid) WHERE p.shardid = $1"; }
move() { on "$COORD" -c "SELECT citus_move_shard_placement($1, '127.0.0.1', $2, '127.0.0.1', $3, shard_transfer_mode => 'block_writes')" >/dev/null
         on "$COORD" -c "CALL citus_cleanup_orphaned_resources()" >/dev/null; }
shard=$(shard_of m1); home=$(port_of "$shard")
other=${PORTS[1]}; [ "$home" = "$other" ] && other=${PORTS[2]}
[ "$(value "$COORD" "SELECT lifecycle.record_activity('m1', 'c1', '{sync}')")" = t ] || fail "first call did not write"
[ "$(value "$COORD" "SELECT lifecycle.record_activity('m1', 'c1', '{sync}')")" = f ] || fail "second call wrote"
move "$shard" "$home" "$other"
[ "$(port_of "$shard")" = "$other" ] || fail "the shard did not move"
[ "$(value "$COORD" "SELECT lifecycle.record_activity('m1', 'c1', '{sync}')")" = f ] || fail "after the move, a call within the throttle wrote"
[ "$(value "$COORD" "SELECT lifecycle.forget_user('m1')")" = 2 ] || fail "forget_user on the new worker"
move "$shard" "$other" "$home"
[ "$(value "$COORD" "SELECT lifecycle.record_activity('m1', 'c1', '{sync}')")" = t ] \
    || fail "after moving back, the old worker's cache skipped a due write for a deleted row"
echo "test-citus: ok: a shard moved away and back: calls follow it, and the old worker's cache did not outlive its rows"
echo "test-citus: passed"
