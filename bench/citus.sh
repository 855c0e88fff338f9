#!/usr/bin/env bash
# `make bench-citus`: pg_lifecycle on a coordinator and two workers (scripts/citus-cluster.sh)
# against the same work on one plain server, measured in the same run on the same machine:
#   - reaping CITUS_ROWS Mattermost-shaped tokens (composite key (userid, id), audited), plain
#     on the coordinator vs distributed on userid: rows/s of each and the ratio;
#   - record_activity, throttled, through the coordinator vs a router SELECT by user id.
# Skips, saying so, without ../shared/vendor (no Citus to build).
set -euo pipefail
cd "$(dirname "$0")/.."
PG_BIN=/usr/lib/postgresql/15/bin
CITUS_ROWS=${CITUS_ROWS:-1000000}
CITUS_SHARDS=${CITUS_SHARDS:-32}
CITUS_BATCH=${CITUS_BATCH:-5000}
source scripts/cluster.sh
source scripts/citus-cluster.sh
source bench/lib.sh
citus_ready bench-citus
citus_start bench-citus
on "$COORD" -c "CREATE EXTENSION pg_lifecycle"
export PGHOST=127.0.0.1 PGPORT=$COORD PGUSER=postgres

# tokens SCHEMA: CITUS_ROWS tokens of 20000 users, all expired (as a backlog is).
tokens() {
    on "$COORD" -c "CREATE SCHEMA $1" \
        -c "CREATE TABLE $1.useraccesstokens (userid text, id text, token text NOT NULL, expiresat bigint NOT NULL, PRIMARY KEY (userid, id))" \
        -c "CREATE INDEX ON $1.useraccesstokens (expiresat)"
    [ "$1" = plain ] || on "$COORD" -c "SET citus.shard_count = $CITUS_SHARDS" -c "SELECT create_distributed_table('$1.useraccesstokens', 'userid')" >/dev/null
    on "$COORD" -c "INSERT INTO $1.useraccesstokens SELECT 'u' || (g % 20000), md5('pat' || g), md5('secret' || g),
                        (extract(epoch FROM now()) * 1000)::bigint - 86400000 + g % 3600000 FROM generate_series(1, $CITUS_ROWS) g" \
                -c "VACUUM ANALYZE $1.useraccesstokens" \
                -c "SELECT lifecycle.add_policy('${1}_pats', '$1.useraccesstokens', 'expiresat', time_kind => 'unix_ms',
                        audit => '{userid,id}', batch_size => $CITUS_BATCH, target_batch_time => NULL)" >/dev/null
}
# reap_rate SCHEMA: rows/s of CALL lifecycle.reap for that schema's policy, to the end.
reap_rate() {
    local start end left
    for port in "${PORTS[@]}"; do on "$port" -c "CHECKPOINT"; done
    start=$(date +%s.%N)
    on "$COORD" -c "SET client_min_messages = warning" -c "CALL lifecycle.reap(100000, '1 hour', policy_name => '${1}_pats')"
    end=$(date +%s.%N)
    left=$(value "$COORD" "SELECT count(*) FROM $1.useraccesstokens")
    [ "$left" = 0 ] || { echo "bench-citus: $left rows of $1 left" >&2; exit 1; }
    awk -v n="$CITUS_ROWS" -v a="$start" -v b="$end" 'BEGIN {printf "%.0f", n / (b - a)}'
}

echo "== reap: $CITUS_ROWS tokens, batch $CITUS_BATCH, audited; $CITUS_SHARDS shards on 2 workers vs one plain server =="
tokens plain
tokens dist
plain=$(reap_rate plain)
dist=$(reap_rate dist)
report "reap, coordinator + 2 workers vs one server" "$dist" "$plain" 1.4 rows/s

echo
echo "== record_activity through the coordinator (throttled) vs a router SELECT by user id =="
on "$COORD" -c "SELECT * FROM lifecycle.distribute()" >/dev/null
on "$COORD" -c "SET client_min_messages = error" -c "SELECT lifecycle.record_activity(g::text, 'c1', '{sync}') FROM generate_series(1, 1000) g" >/dev/null
compare "record_activity (throttled) vs router SELECT" postgres bench/sql/citus_router_select.sql bench/sql/citus_record_activity.sql 1.0
echo "SELECT 1;" > "${NODES[0]}/select1.sql"
echo "  reference: SELECT 1 on the coordinator: $(printf '%.0f' "$(tps postgres "${NODES[0]}/select1.sql")") tps"

echo
echo "bench-citus summary:"
for r in "${RESULTS[@]}"; do IFS='|' read -r n ratio target verdict <<<"$r"; printf '  %-58s %s (target %s) %s\n' "$n" "$ratio" "$target" "$verdict"; done
