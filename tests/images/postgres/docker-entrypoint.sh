#!/bin/bash
# The postgres image's entrypoint contract, for Debian's PostgreSQL 15 (real server, tests only).
#
# - Arguments starting with '-' are options of postgres.
# - Started as root, it prepares PGDATA (/var/lib/postgresql/data) and the socket directory and
#   runs again as the postgres user.
# - First start (no PGDATA/PG_VERSION): needs POSTGRES_PASSWORD (or _FILE) unless
#   POSTGRES_HOST_AUTH_METHOD=trust; POSTGRES_USER (default postgres), POSTGRES_DB (default
#   POSTGRES_USER), POSTGRES_INITDB_ARGS as upstream. initdb, then listen_addresses='*' and
#   `host all all all scram-sha-256` (POSTGRES_HOST_AUTH_METHOD) for network clients; a
#   temporary server that listens on no TCP port processes /docker-entrypoint-initdb.d/* once,
#   as upstream's docker_process_init_files: *.sql (.sql.gz, .sql.xz, .sql.zst) through
#   docker_process_sql (psql -v ON_ERROR_STOP=1 as POSTGRES_USER on POSTGRES_DB); *.sh run when
#   executable, else *sourced* into this shell, where docker_process_sql ([psql options], SQL
#   on stdin or -f) and the POSTGRES_* variables are available, as upstream. So
#   `pg_isready -h 127.0.0.1` only passes once they ran. A failed first start (an init file's
#   error or `exit` included) leaves an empty PGDATA (the next start initialises again).
# - Finally exec postgres: PID 1 is the server (the image's stop signal is SIGINT, a fast shutdown).
set -Eeo pipefail
shopt -s nullglob

log() { printf '%s [entrypoint] %s\n' "$(date -u +'%F %T')" "$*" >&2; }
die() { log "error: $*"; exit 1; }

file_env() {
    local var=$1 file_var="${1}_FILE" def=${2:-}
    if [ -n "${!var:-}" ] && [ -n "${!file_var:-}" ]; then
        die "both $var and $file_var are set (but are exclusive)"
    fi
    local val=$def
    if [ -n "${!var:-}" ]; then
        val=${!var}
    elif [ -n "${!file_var:-}" ]; then
        val=$(<"${!file_var}")
    fi
    export "$var"="$val"
    unset "$file_var"
}

: "${PGDATA:=/var/lib/postgresql/data}"
export PGDATA

if [ "${1:0:1}" = - ]; then
    set -- postgres "$@"
fi

if [ "$1" = postgres ] && [ "$(id -u)" = 0 ]; then
    mkdir -p "$PGDATA" /var/run/postgresql
    chown postgres:postgres "$PGDATA" /var/run/postgresql
    chmod 00700 "$PGDATA"
    chmod 03775 /var/run/postgresql
    find "$PGDATA" \! -user postgres -exec chown postgres:postgres '{}' +
    exec setpriv --reuid=postgres --regid=postgres --init-groups "${BASH_SOURCE[0]}" "$@"
fi

# Upstream's docker_process_sql: SQL on stdin (or -f FILE), over the local socket (PGHOST and
# PGHOSTADDR cleared) as POSTGRES_USER on POSTGRES_DB; later --dbname options win.
docker_process_sql() {
    local query_runner=(psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --no-password --no-psqlrc)
    if [ -n "$POSTGRES_DB" ]; then
        query_runner+=(--dbname "$POSTGRES_DB")
    fi
    PGHOST='' PGHOSTADDR='' "${query_runner[@]}" "$@"
}

# Upstream's docker_process_init_files, one file at a time.
process_init_file() {
    # Upstream keeps this array for older scripts that call "${psql[@]}".
    # shellcheck disable=SC2034
    psql=(docker_process_sql)
    local f=$1
    case "$f" in
        *.sh)
            if [ -x "$f" ]; then
                log "running $f"
                "$f"
            else
                log "sourcing $f"
                # shellcheck disable=SC1090
                . "$f"
            fi
            ;;
        *.sql) log "running $f" && docker_process_sql -f "$f" ;;
        *.sql.gz) log "running $f" && gunzip -c "$f" | docker_process_sql ;;
        *.sql.xz) log "running $f" && xzcat "$f" | docker_process_sql ;;
        *.sql.zst) log "running $f" && zstd -dc "$f" | docker_process_sql ;;
        *) log "ignoring $f" ;;
    esac
}

initialise() {
    file_env POSTGRES_PASSWORD
    file_env POSTGRES_USER postgres
    file_env POSTGRES_DB "$POSTGRES_USER"
    file_env POSTGRES_INITDB_ARGS
    : "${POSTGRES_HOST_AUTH_METHOD:=scram-sha-256}"
    if [ -z "$POSTGRES_PASSWORD" ] && [ "$POSTGRES_HOST_AUTH_METHOD" != trust ]; then
        die "Database is uninitialized and superuser password is not specified.
       You must specify POSTGRES_PASSWORD to a non-empty value for the
       superuser. For example, \"-e POSTGRES_PASSWORD=password\" on \"docker run\"."
    fi

    trap 'rc=$?; if [ $rc != 0 ]; then
            pg_ctl -D "$PGDATA" -m immediate -w stop >/dev/null 2>&1 || true
            find "$PGDATA" -mindepth 1 -delete 2>/dev/null || true
            echo "[entrypoint] initialisation failed; emptied $PGDATA" >&2
          fi' EXIT

    log "initdb (superuser $POSTGRES_USER)"
    # shellcheck disable=SC2086
    initdb --username="$POSTGRES_USER" --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") \
        --encoding=UTF8 --locale=C.UTF-8 $POSTGRES_INITDB_ARGS -D "$PGDATA" >/dev/null ||
        die "initdb failed"
    {
        echo
        echo "# Added by the stand-in entrypoint, as the postgres image's sample configuration."
        echo "listen_addresses = '*'"
        echo "jit = off"
    } >>"$PGDATA/postgresql.conf"
    printf '\nhost all all all %s\n' "$POSTGRES_HOST_AUTH_METHOD" >>"$PGDATA/pg_hba.conf"

    log "starting the temporary server (unix socket only)"
    PGUSER=$POSTGRES_USER pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -p 5432" -w -t 60 start \
        >/dev/null || die "the temporary server did not start"
    if [ "$POSTGRES_DB" != postgres ]; then
        psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --no-password --no-psqlrc \
            --dbname postgres --set db="$POSTGRES_DB" <<<'CREATE DATABASE :"db";'
    fi
    local f
    for f in /docker-entrypoint-initdb.d/*; do
        process_init_file "$f"
    done
    pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null || die "the temporary server did not stop"
    trap - EXIT
    log "PostgreSQL init process complete; ready for start up."
}

if [ "$1" = postgres ]; then
    if [ ! -s "$PGDATA/PG_VERSION" ]; then
        initialise
    else
        log "PostgreSQL Database directory appears to contain a database; Skipping initialization"
    fi
fi

exec "$@"
