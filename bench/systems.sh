# The systems' own cleanup loops against their policies (sourced by bench/run.sh): Ory Hydra's
# janitor at its default batch 100 and at 1000, Supabase Auth's `LIMIT 100 FOR UPDATE SKIP
# LOCKED` statement, Keycloak's 512-row find-then-delete, each on its own table shape and
# indexes (bench/sql/systems_setup.sql), against the docs/recipes.md policy for the same rule
# under CALL lifecycle.reap. MAS's 1000-row cursor loop is in the rules bench. Rows deleted per
# second from the same fresh table, alternating, best of RUNS.
SYSTEMS_ROWS=${SYSTEMS_ROWS:-500000}
NETWORK="(SELECT n.id FROM sys.networks n ORDER BY n.created_at LIMIT 1)"
KC_LIFESPAN="(SELECT make_interval(secs => 180 + CASE WHEN t.offline_flag = '1' THEN r.offline_session_idle_timeout
              ELSE greatest(r.sso_idle_timeout, r.sso_idle_timeout_remember_me) END) FROM sys.realm r WHERE r.id = t.realm_id)"

# systems_policy SYSTEM: the recipe's policy for the rule the system's loop runs.
systems_policy() {
    local args
    case $1 in
        hydra) args="'sys.hydra_oauth2_access', 'requested_at', older_than => '1 hour', time_zone => 'UTC', filter => 'nid = $NETWORK'" ;;
        supabase) args="'sys.refresh_tokens', 'updated_at', older_than => '24 hours', filter => 'revoked IS true'" ;;
        keycloak) args="'sys.offline_user_session', 'last_session_refresh', time_kind => 'unix_s', lifespan_per => '{realm_id, offline_flag}',
                        lifespan => \$l\$$KC_LIFESPAN\$l\$, delete_from => '{sys.offline_client_session(user_session_id, offline_flag)}'" ;;
    esac
    psql_q -q -d sysbench -c "SELECT lifecycle.drop_policy(name) FROM lifecycle.policies" \
        -c "SELECT lifecycle.add_policy('$1', $args)" >/dev/null
}

# systems_table SYSTEM -> the table its rule deletes from
systems_table() {
    case $1 in hydra) echo sys.hydra_oauth2_access ;; supabase) echo sys.refresh_tokens ;; keycloak) echo sys.offline_user_session ;; esac
}

# systems_run SYSTEM WAY -> rows/s of one run from a fresh table (WAY: policy, or the loop's CALL)
systems_run() {
    local system=$1 way=$2 table before after secs
    table=$(systems_table "$system")
    psql_q -q -d sysbench -c "CALL sys.reset('$system')" -c "VACUUM $table" >/dev/null
    fresh_statistics sysbench "$table"
    before=$(psql_q -qtA -d sysbench -c "SELECT count(*) FROM $table")
    if [ "$way" = policy ]; then
        systems_policy "$system"
        secs=$(seconds sysbench "SET client_min_messages = warning" "CALL lifecycle.reap(100000, '1 hour')")
    else
        secs=$(seconds sysbench "$way")
    fi
    after=$(psql_q -qtA -d sysbench -c "SELECT count(*) FROM $table")
    awk -v n="$((before - after))" -v s="$secs" 'BEGIN {printf "%.0f", n / s}'
}

# systems_compare SYSTEM LOOP_CALL NAME: the loop against the policy, alternately, best of RUNS.
systems_compare() {
    local system=$1 call=$2 name=$3 policy=0 loop=0
    for _ in $(seq 1 "${RUNS:-2}"); do
        loop=$(max_of "$loop" "$(systems_run "$system" "$call")")
        policy=$(max_of "$policy" "$(systems_run "$system" policy)")
    done
    report "$system policy vs $name" "$policy" "$loop" 2.0 rows/s
}

systems_bench() {
    psql_q -q -d postgres -c "CREATE DATABASE sysbench"
    psql_q -q -d sysbench -c "CREATE EXTENSION pg_lifecycle"
    psql_q -q -d sysbench -v n="$SYSTEMS_ROWS" -f bench/sql/systems_setup.sql >/dev/null
    echo "== systems: their own cleanup loops vs their recipes' policies, $SYSTEMS_ROWS Hydra access tokens (84 % due),"
    echo "   $SYSTEMS_ROWS Supabase refresh tokens (half due), $((SYSTEMS_ROWS / 3)) Keycloak sessions over 20 realms (half due) =="
    systems_compare hydra "CALL sys.hydra_janitor(100)" "Hydra's janitor, batch 100"
    systems_compare hydra "CALL sys.hydra_janitor(1000)" "Hydra's janitor, batch 1000"
    systems_compare supabase "CALL sys.supabase_cleanup()" "Supabase's LIMIT 100 SKIP LOCKED"
    systems_compare keycloak "CALL sys.keycloak_expire()" "Keycloak's 512-row find-then-delete"
    psql_q -q -d postgres -c "DROP DATABASE sysbench"
}
