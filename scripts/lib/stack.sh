# shellcheck shell=bash
# The local database stack, for scripts/test and scripts/dev: a private PostgreSQL cluster and,
# in front of it, a PgBouncer in transaction mode that runs DISCARD ALL after every transaction
# (like Neon's pooler, only stricter), so nothing that needs session state can pass here.
#
#   stack_install          install PostgreSQL and PgBouncer with apt when they are missing
#   stack_start [pool]     start both on free ports; exports STACK_* and the URLs below
#   stack_replica          a streaming replica behind a PgBouncer of its own (after stack_start)
#   stack_neon_bouncer     a PgBouncer like Neon's pooler (no reset query), for the benchmark
#   stack_stop             stop everything and remove the data
#
# Exports: STACK_DIR, STACK_PG_PORT, STACK_BOUNCER_PORT,
#          STACK_DIRECT_BASE  postgres://postgres@127.0.0.1:<pg port>        (append /dbname)
#          STACK_POOLED_BASE  postgres://postgres@127.0.0.1:<bouncer port>   (append /dbname)
#          STACK_BOUNCER_ADMIN_URL  the PgBouncer admin console

stack_pg_bin() {
    local dir
    dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    if [ -n "$dir" ] && [ -x "$dir/initdb" ]; then echo "$dir"; return; fi
    dirname "$(command -v initdb 2>/dev/null || echo /nonexistent/initdb)"
}

# PgBouncer: on PATH, or where Debian puts it (/usr/sbin is not on every user's PATH).
stack_pgbouncer_bin() {
    command -v pgbouncer 2>/dev/null || echo /usr/sbin/pgbouncer
}

stack_install() {
    local missing=()
    [ -x "$(stack_pg_bin)/initdb" ] || missing+=(postgresql)
    [ -x "$(stack_pgbouncer_bin)" ] || missing+=(pgbouncer)
    if [ ${#missing[@]} -gt 0 ]; then
        if [ "$(id -u)" != 0 ]; then
            echo "stack: please install ${missing[*]} (Debian/Ubuntu: sudo apt-get install ${missing[*]})" >&2
            return 1
        fi
        echo "stack: installing ${missing[*]} with apt" >&2
        apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
    fi
}

# Runs a command as the cluster's owner: PostgreSQL and PgBouncer refuse to run as root.
stack_as_owner() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

stack_free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

stack_start() {
    local pool_size=${1:-4}
    local bin
    bin=$(stack_pg_bin)
    STACK_DIR=$(mktemp -d "${TMPDIR:-/tmp}/iot-stack.XXXXXX")
    chmod 755 "$STACK_DIR"
    [ "$(id -u)" = 0 ] && chown postgres: "$STACK_DIR"
    STACK_PG_PORT=$(stack_free_port)
    STACK_BOUNCER_PORT=$(stack_free_port)
    export STACK_DIR STACK_PG_PORT STACK_BOUNCER_PORT

    stack_as_owner "$bin/initdb" -D "$STACK_DIR/pg" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >"$STACK_DIR/initdb.log" 2>&1 ||
        { cat "$STACK_DIR/initdb.log" >&2; return 1; }
    # Durability off: this cluster is thrown away. pg_stat_statements counts round trips.
    cat >>"$STACK_DIR/pg/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $STACK_PG_PORT
unix_socket_directories = '$STACK_DIR'
max_connections = 300
shared_buffers = 256MB
fsync = off
synchronous_commit = off
full_page_writes = off
shared_preload_libraries = 'pg_stat_statements'
pg_stat_statements.track = all
log_min_messages = warning
# As migrations/V3__no_jit.sql sets for the app's database (copies of the template do not
# inherit database-level settings).
jit = off
CONF
    stack_as_owner "$bin/pg_ctl" -D "$STACK_DIR/pg" -l "$STACK_DIR/postgres.log" -w -t 60 start >/dev/null ||
        { cat "$STACK_DIR/postgres.log" >&2; return 1; }

    echo '"postgres" ""' >"$STACK_DIR/userlist.txt"
    cat >"$STACK_DIR/pgbouncer.ini" <<CONF
[databases]
* = host=127.0.0.1 port=$STACK_PG_PORT

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $STACK_BOUNCER_PORT
unix_socket_dir = $STACK_DIR
auth_type = trust
auth_file = $STACK_DIR/userlist.txt
admin_users = postgres
stats_users = postgres
pool_mode = transaction
server_reset_query = DISCARD ALL
server_reset_query_always = 1
default_pool_size = $pool_size
max_client_conn = 2000
ignore_startup_parameters = extra_float_digits
# After a failed server login (the database restarting), try again after 1 s, not 15.
server_login_retry = 1
# Every test has a database of its own: close a finished test's idle server connections after
# 10 s (default 600) so that a long suite never runs into PostgreSQL's max_connections.
server_idle_timeout = 10
logfile = $STACK_DIR/pgbouncer.log
pidfile = $STACK_DIR/pgbouncer.pid
CONF
    [ "$(id -u)" = 0 ] && chown postgres: "$STACK_DIR"/*.ini "$STACK_DIR"/*.txt
    stack_as_owner "$(stack_pgbouncer_bin)" -d "$STACK_DIR/pgbouncer.ini" ||
        { cat "$STACK_DIR/pgbouncer.log" >&2; return 1; }
    stack_wait_ready "$STACK_BOUNCER_PORT" "$STACK_DIR/pgbouncer.log"

    STACK_DIRECT_BASE="postgres://postgres@127.0.0.1:$STACK_PG_PORT"
    STACK_POOLED_BASE="postgres://postgres@127.0.0.1:$STACK_BOUNCER_PORT"
    STACK_BOUNCER_ADMIN_URL="$STACK_POOLED_BASE/pgbouncer?sslmode=disable"
    export STACK_DIRECT_BASE STACK_POOLED_BASE STACK_BOUNCER_ADMIN_URL
}

# The tests' and the benchmark's view of the stack: a template database migrated with the real
# `migrate` command (each test copies it), pg_stat_statements, and the TEST_* variables the
# harness in tests/src/lib.rs reads. $1: the migrate binary (already built with the workspace,
# e.g. target/debug/migrate; building it alone would compile the dependencies a second time
# with other features).
stack_test_env() {
    stack_psql -d postgres -c 'CREATE DATABASE app_template' -c 'CREATE EXTENSION pg_stat_statements'
    DATABASE_URL="$STACK_DIRECT_BASE/app_template?sslmode=disable" "$1"
    # The suite's fixed dates lie in 2026 and later (tests/src/lib.rs, FIXED_DATES_FROM).
    stack_psql -d app_template -c "SELECT create_reading_partitions('2026-01-01', now())" >/dev/null
    export TEST_DIRECT_BASE="$STACK_DIRECT_BASE"
    export TEST_POOLED_BASE="$STACK_POOLED_BASE"
    export TEST_BOUNCER_ADMIN_URL="$STACK_BOUNCER_ADMIN_URL"
    export TEST_TEMPLATE_DB=app_template
    export TEST_STACK_DIR="$STACK_DIR"
}

# Another PgBouncer configured like the main one: named $1, pool size $2, in front of the
# PostgreSQL on port $3, server_reset_query_always $4 (default 1, as the main one). Prints its
# port.
stack_another_bouncer() {
    local name=$1 size=$2 server=$3 reset_always=${4:-1} port
    port=$(stack_free_port)
    sed -e "s/^\* = host=127.0.0.1 port=.*/* = host=127.0.0.1 port=$server/" \
        -e "s/^listen_port = .*/listen_port = $port/" \
        -e "s/^default_pool_size = .*/default_pool_size = $size/" \
        -e "s/^server_reset_query_always = .*/server_reset_query_always = $reset_always/" \
        -e "s|^logfile = .*|logfile = $STACK_DIR/pgbouncer-$name.log|" \
        -e "s|^pidfile = .*|pidfile = $STACK_DIR/pgbouncer-$name.pid|" \
        -e "s|^unix_socket_dir = .*|unix_socket_dir =|" \
        "$STACK_DIR/pgbouncer.ini" >"$STACK_DIR/pgbouncer-$name.ini"
    [ "$(id -u)" = 0 ] && chown postgres: "$STACK_DIR/pgbouncer-$name.ini"
    stack_as_owner "$(stack_pgbouncer_bin)" -d "$STACK_DIR/pgbouncer-$name.ini" ||
        { cat "$STACK_DIR/pgbouncer-$name.log" >&2; return 1; }
    stack_wait_ready "$port" "$STACK_DIR/pgbouncer-$name.log" >&2 || return 1
    echo "$port"
}

# A second PgBouncer on the same cluster with another pool size (the connection-ceiling test
# uses one with 10 server connections). Exports STACK_POOL<size>_BASE.
stack_extra_bouncer() {
    local size=$1 port
    port=$(stack_another_bouncer "$size" "$size" "$STACK_PG_PORT")
    export "STACK_POOL${size}_BASE=postgres://postgres@127.0.0.1:$port"
}

# A PgBouncer configured like Neon's pooler: transaction mode, pool size $1 (default 4), and no
# reset query between transactions (server_reset_query_always = 0), so what PostgreSQL keeps on a
# server connection (PL/pgSQL's plans) outlives a transaction. The benchmark measures through it
# beside the main one; the tests never use it. Exports STACK_NEON_POOLED_BASE.
stack_neon_bouncer() {
    local port
    port=$(stack_another_bouncer neon "${1:-4}" "$STACK_PG_PORT" 0)
    export STACK_NEON_POOLED_BASE="postgres://postgres@127.0.0.1:$port"
}

# A streaming replica of the cluster (pg_basebackup -R: a hot standby that replays the primary's
# WAL as it comes), behind a PgBouncer of its own configured like the main one. Databases created
# on the primary later (each test's copy of the template) appear on it too. Exports
# STACK_REPLICA_PORT and STACK_REPLICA_POOLED_BASE.
stack_replica() {
    local bin port bouncer
    bin=$(stack_pg_bin)
    port=$(stack_free_port)
    stack_as_owner "$bin/pg_basebackup" -h 127.0.0.1 -p "$STACK_PG_PORT" -U postgres \
        -D "$STACK_DIR/replica" -R -X stream -c fast >"$STACK_DIR/basebackup.log" 2>&1 ||
        { cat "$STACK_DIR/basebackup.log" >&2; return 1; }
    # The copied configuration names the primary's port and socket directory: later lines win.
    cat >>"$STACK_DIR/replica/postgresql.conf" <<CONF
port = $port
hot_standby = on
CONF
    stack_as_owner "$bin/pg_ctl" -D "$STACK_DIR/replica" -l "$STACK_DIR/replica.log" -w -t 60 start >/dev/null ||
        { cat "$STACK_DIR/replica.log" >&2; return 1; }
    bouncer=$(stack_another_bouncer replica \
        "$(sed -n 's/^default_pool_size = //p' "$STACK_DIR/pgbouncer.ini")" "$port")
    export STACK_REPLICA_PORT=$port
    export STACK_REPLICA_POOLED_BASE="postgres://postgres@127.0.0.1:$bouncer"
}

# Waits up to 5 s for a PgBouncer on port $1 to answer; if it never does, prints its log ($2)
# and fails, rather than letting every test fail later with "connection refused".
stack_wait_ready() {
    local port=$1 log=$2 i
    for i in $(seq 1 50); do
        "$(stack_pg_bin)/pg_isready" -q -h 127.0.0.1 -p "$port" -d postgres && return 0
        sleep 0.1
    done
    echo "stack: PgBouncer on port $port did not answer within 5 s; its log:" >&2
    cat "$log" >&2 2>/dev/null || true
    return 1
}

# psql on the direct port, as postgres.
stack_psql() {
    "$(stack_pg_bin)/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$STACK_PG_PORT" -U postgres "$@"
}

stack_stop() {
    [ -n "${STACK_DIR:-}" ] && [ -d "$STACK_DIR" ] || return 0
    local pidfile
    for pidfile in "$STACK_DIR"/pgbouncer*.pid; do
        [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null || true
    done
    if [ -d "$STACK_DIR/replica" ]; then
        stack_as_owner "$(stack_pg_bin)/pg_ctl" -D "$STACK_DIR/replica" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    stack_as_owner "$(stack_pg_bin)/pg_ctl" -D "$STACK_DIR/pg" -m immediate -w stop >/dev/null 2>&1 || true
    rm -rf "$STACK_DIR"
}
