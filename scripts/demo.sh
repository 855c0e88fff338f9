#!/usr/bin/env bash
# `make demo`: a throwaway cluster (pg_cron + pg_lifecycle preloaded), the three example
# schemas, and examples/demo.sql. The cluster is stopped and removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/cluster.sh
trap cluster_stop EXIT

cluster_start
echo "demo: cluster on 127.0.0.1:$CLUSTER_PORT ($CLUSTER_DIR), stopped and removed when the demo ends"
# The demo database is pg_cron's database too (cron.database_name), so it can schedule itself.
psql_q -q -d postgres -c "CREATE DATABASE demo"
as_pg_user sh -c "echo \"cron.database_name = 'demo'\" >> '$CLUSTER_DIR/data/postgresql.conf'"
as_pg_user "$PG_BIN/pg_ctl" -D "$CLUSTER_DIR/data" -l "$CLUSTER_DIR/server.log" -w restart >/dev/null
psql_q -q -d demo -c "CREATE EXTENSION pg_cron" -c "CREATE EXTENSION pg_lifecycle CASCADE"
for f in fxa mas mattermost; do psql_q -q -d demo -f "examples/$f.sql"; done
echo "demo: loaded examples/fxa.sql, examples/mas.sql, examples/mattermost.sql"
psql_q -d demo -f examples/demo.sql
echo
echo "demo: the audit line reject_if_expired left in the server log:"
as_pg_user grep -h 'token_rejected_expired' "$CLUSTER_DIR/server.log" | sed 's/^/  /'
echo "demo: done"
