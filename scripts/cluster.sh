# Throwaway PostgreSQL cluster for the demo and the benchmarks (sourced, not run).
# cluster_start creates it in a fresh /tmp directory on a free port, as $PG_USER when we
# are root (initdb refuses root), with pg_cron and pg_lifecycle preloaded; cluster_stop
# stops it and removes the directory. Callers trap cluster_stop on EXIT.
# The major's binaries: the Makefile exports PG_BIN (PG=15|16|18).
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
PG_USER=${PG_USER:-postgres}

as_pg_user() { if [ "$(id -u)" -eq 0 ]; then sudo -n -u "$PG_USER" -- "$@"; else "$@"; fi; }

# A port nothing listens on, below the kernel's ephemeral range: a port in that range can be
# the local end of a client connection, or of one in TIME_WAIT after a test suite, and then
# nothing answers on it but the postmaster's bind fails (EADDRINUSE).
free_port() {
    local low port
    low=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
    # A range that starts low leaves no room below it: then any port from 20000 to 40000.
    [ "$low" -gt 21000 ] || low=40000
    for _ in $(seq 1 200); do
        port=$((20000 + RANDOM % (low - 20000)))
        # Nothing answers on it: free (bash opens the TCP connection itself).
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then echo "$port"; return; fi
    done
    echo "no free port found" >&2; return 1
}

# cluster_start [postgresql.conf line...]
cluster_start() {
    CLUSTER_DIR=$(mktemp -d /tmp/pg_lifecycle-cluster.XXXXXX)
    chmod 755 "$CLUSTER_DIR"
    [ "$(id -u)" -eq 0 ] && chown "$PG_USER" "$CLUSTER_DIR"
    as_pg_user "$PG_BIN/initdb" -D "$CLUSTER_DIR/data" -U postgres --auth=trust -E UTF8 --locale=C >/dev/null
    as_pg_user mkdir "$CLUSTER_DIR/sock"
    {
        echo "listen_addresses = '127.0.0.1'"
        echo "unix_socket_directories = '$CLUSTER_DIR/sock'"
        echo "shared_preload_libraries = 'pg_cron,pg_lifecycle'"
        echo "cron.database_name = 'postgres'"
        echo "cron.use_background_workers = on"
        local line
        for line in "$@"; do echo "$line"; done
    } | as_pg_user tee -a "$CLUSTER_DIR/data/postgresql.conf" >/dev/null
    # Between free_port and the postmaster's bind another process can take the port: then
    # another one is tried. Any other failure shows the server's log.
    local attempt
    for attempt in 1 2 3; do
        CLUSTER_PORT=$(free_port)
        # The last port line wins.
        echo "port = $CLUSTER_PORT" | as_pg_user tee -a "$CLUSTER_DIR/data/postgresql.conf" >/dev/null
        if as_pg_user "$PG_BIN/pg_ctl" -D "$CLUSTER_DIR/data" -l "$CLUSTER_DIR/server.log" -w -t 60 start >/dev/null; then
            export PGHOST=127.0.0.1 PGPORT=$CLUSTER_PORT PGUSER=postgres
            return 0
        fi
        as_pg_user grep -q "could not bind" "$CLUSTER_DIR/server.log" 2>/dev/null || break
        echo "port $CLUSTER_PORT was taken meanwhile (attempt $attempt), trying another" >&2
    done
    echo "--- $CLUSTER_DIR/server.log:" >&2
    as_pg_user tail -n 40 "$CLUSTER_DIR/server.log" >&2 || true
    return 1
}

cluster_stop() {
    [ -n "${CLUSTER_DIR:-}" ] || return 0
    as_pg_user "$PG_BIN/pg_ctl" -D "$CLUSTER_DIR/data" -m fast -w stop >/dev/null 2>&1 || true
    rm -rf "$CLUSTER_DIR"
    CLUSTER_DIR=
}

psql_q() { "$PG_BIN/psql" -X -v ON_ERROR_STOP=1 "$@"; }
