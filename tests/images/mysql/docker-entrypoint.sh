#!/bin/bash
# The mariadb image's entrypoint contract, for Debian's MariaDB (real server, tests only).
#
# - Arguments starting with '-' are options of mariadbd (the stack's command is such options).
# - First start (no /var/lib/mysql/mysql): needs MARIADB_ROOT_PASSWORD (or _FILE, or
#   MARIADB_ALLOW_EMPTY_ROOT_PASSWORD / MARIADB_RANDOM_ROOT_PASSWORD); MARIADB_ROOT_HOST
#   (default %), MARIADB_DATABASE, MARIADB_USER, MARIADB_PASSWORD as upstream (MYSQL_* accepted).
#   Installs the system tables, starts a temporary server without networking, sets the root
#   password, creates the `healthcheck` user whose password goes into
#   /var/lib/mysql/.my-healthcheck.cnf, then processes /docker-entrypoint-initdb.d/* once, as
#   upstream's docker_process_init_files does: *.sql (.sql.gz, .sql.xz, .sql.zst) through
#   docker_process_sql (root over the socket, MYSQL_DATABASE as default database); *.sh run when
#   executable, else *sourced* into this shell, where docker_process_sql
#   ([--dont-use-mysql-root-password] [mariadb options], SQL on stdin) and the MARIADB_*/MYSQL_*
#   variables are available, as upstream. A failed first start (an init file's error or `exit`
#   included) leaves no half-initialised data directory behind (the next start initialises
#   again). Time zone tables are not loaded.
# - Later starts: MARIADB_AUTO_UPGRADE=1 runs mariadb-upgrade when the server version differs
#   from the one recorded in mysql_upgrade_info.
# - Finally `exec mariadbd --user=mysql OPTIONS`: PID 1 is the server, which shuts down on SIGTERM.
set -eo pipefail
shopt -s nullglob

DATADIR=/var/lib/mysql
SOCKET=/run/mysqld/mysqld.sock

log() { printf '%s 0 [Note] [Entrypoint]: %s\n' "$(date -u +'%F %T')" "$*" >&2; }
die() { printf '%s 0 [ERROR] [Entrypoint]: %s\n' "$(date -u +'%F %T')" "$*" >&2; exit 1; }

# file_env VAR [DEFAULT]: VAR, or the content of the file named by VAR_FILE.
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

# MARIADB_X, else MYSQL_X, else DEFAULT; both exported with that value, as upstream, so init
# scripts can use either.
mariadb_env() {
    local name=$1 def=${2:-}
    file_env "MARIADB_$name"
    file_env "MYSQL_$name"
    local m="MARIADB_$name" y="MYSQL_$name"
    export "MARIADB_$name"="${!m:-${!y:-$def}}"
    export "MYSQL_$name"="${!m}"
}

sql_escape() {
    local s=${1//\\/\\\\}
    printf '%s' "${s//\'/\\\'}"
}

server_version() { mariadbd --version | awk '{ print $3 }'; }

temp_server_start() {
    log "Starting temporary server"
    mariadbd --user=mysql --skip-networking --socket="$SOCKET" --skip-log-bin \
        --default-time-zone=SYSTEM --wsrep_on=OFF --expire-logs-days=0 \
        --loose-innodb_buffer_pool_load_at_startup=0 \
        --loose-innodb_buffer_pool_dump_at_shutdown=0 "$@" &
    TEMP_PID=$!
    for _ in $(seq 1 120); do
        if mariadb --protocol=socket --socket="$SOCKET" -uroot "${ROOT_AUTH[@]}" \
            -e 'SELECT 1' >/dev/null 2>&1; then
            log "Temporary server started."
            return 0
        fi
        kill -0 "$TEMP_PID" 2>/dev/null || die "the temporary server exited during start"
        sleep 0.25
    done
    die "the temporary server did not start within 30 seconds"
}

temp_server_stop() {
    log "Stopping temporary server"
    kill -TERM "$TEMP_PID"
    wait "$TEMP_PID" || die "the temporary server did not stop cleanly"
    log "Temporary server stopped"
}

# Runs SQL (stdin or -e) as root over the socket.
root_sql() {
    mariadb --protocol=socket --socket="$SOCKET" -uroot "${ROOT_AUTH[@]}" --binary-mode "$@"
}

# Upstream's client for init files: root over the socket, MYSQL_DATABASE first so that the
# caller's --database wins.
docker_exec_client() {
    if [ -n "${MYSQL_DATABASE:-}" ]; then
        set -- --database="$MYSQL_DATABASE" "$@"
    fi
    mariadb --protocol=socket -uroot -hlocalhost --socket="$SOCKET" "$@"
}

# Upstream's docker_process_sql: SQL on stdin, as root with MARIADB_ROOT_PASSWORD (through
# MYSQL_PWD, never on a command line) unless --dont-use-mysql-root-password comes first.
# Sourced init scripts pass it options.
# shellcheck disable=SC2120
docker_process_sql() {
    if [ '--dont-use-mysql-root-password' = "${1:-}" ]; then
        shift
        MYSQL_PWD='' docker_exec_client "$@"
    else
        MYSQL_PWD=$MARIADB_ROOT_PASSWORD docker_exec_client "$@"
    fi
}

# Upstream's docker_process_init_files, one file at a time.
process_init_file() {
    # Upstream keeps this array for older scripts that call "${mysql[@]}".
    # shellcheck disable=SC2034
    mysql=(docker_process_sql)
    local f=$1
    # shellcheck disable=SC2119
    case "$f" in
        *.sh)
            if [ -x "$f" ]; then
                log "$0: running $f"
                "$f"
            else
                log "$0: sourcing $f"
                # shellcheck disable=SC1090
                . "$f"
            fi
            ;;
        *.sql) log "$0: running $f" && docker_process_sql <"$f" ;;
        *.sql.gz) log "$0: running $f" && gunzip -c "$f" | docker_process_sql ;;
        *.sql.xz) log "$0: running $f" && xzcat "$f" | docker_process_sql ;;
        *.sql.zst) log "$0: running $f" && zstd -dc "$f" | docker_process_sql ;;
        *) log "$0: ignoring $f" ;;
    esac
}

initialise() {
    mariadb_env ROOT_PASSWORD
    mariadb_env ALLOW_EMPTY_ROOT_PASSWORD
    mariadb_env RANDOM_ROOT_PASSWORD
    mariadb_env ROOT_HOST %
    mariadb_env DATABASE
    mariadb_env USER
    mariadb_env PASSWORD
    if [ -z "$MARIADB_ROOT_PASSWORD" ] && [ -z "$MARIADB_ALLOW_EMPTY_ROOT_PASSWORD" ] &&
        [ -z "$MARIADB_RANDOM_ROOT_PASSWORD" ]; then
        die "Database is uninitialized and password option is not specified
	You need to specify one of MARIADB_ROOT_PASSWORD, MARIADB_ROOT_PASSWORD_HASH, MARIADB_ALLOW_EMPTY_ROOT_PASSWORD and MARIADB_RANDOM_ROOT_PASSWORD"
    fi
    if [ -n "$MARIADB_RANDOM_ROOT_PASSWORD" ]; then
        MARIADB_ROOT_PASSWORD=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
        log "GENERATED ROOT PASSWORD: $MARIADB_ROOT_PASSWORD"
    fi

    # A failed first start must not leave a data directory that later starts take as initialised.
    trap 'rc=$?; if [ $rc != 0 ]; then
            [ -z "${TEMP_PID:-}" ] || kill -KILL "$TEMP_PID" 2>/dev/null || true
            find "$DATADIR" -mindepth 1 -delete 2>/dev/null || true
            printf "%s\n" "[Entrypoint]: initialisation failed; removed the partial data directory" >&2
          fi' EXIT

    log "Initializing database files"
    mariadb-install-db --user=mysql --datadir="$DATADIR" --rpm --auth-root-authentication-method=normal \
        --skip-test-db --skip-log-bin --default-time-zone=SYSTEM --enforce-storage-engine= \
        --expire-logs-days=0 --loose-innodb_buffer_pool_load_at_startup=0 \
        --loose-innodb_buffer_pool_dump_at_shutdown=0 "$@" >/dev/null ||
        die "mariadb-install-db failed"
    log "Database files initialized"

    ROOT_AUTH=()
    temp_server_start "$@"

    local hc_password root_password
    hc_password=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
    root_password=$(sql_escape "$MARIADB_ROOT_PASSWORD")
    local root_host
    root_host=$(sql_escape "$MARIADB_ROOT_HOST")
    log "Securing system users (root, healthcheck)"
    {
        echo "SET @@SESSION.SQL_LOG_BIN=0;"
        echo "SET @@SESSION.SQL_MODE=REPLACE(@@SESSION.SQL_MODE, 'NO_BACKSLASH_ESCAPES', '');"
        echo "DROP USER IF EXISTS root@'127.0.0.1', root@'::1';"
        echo "EXECUTE IMMEDIATE CONCAT('DROP USER IF EXISTS root@\'', @@hostname,'\'');"
        echo "DELETE FROM mysql.global_priv WHERE User = '';"
        echo "SET PASSWORD FOR 'root'@'localhost' = PASSWORD('$root_password');"
        if [ "$MARIADB_ROOT_HOST" != localhost ]; then
            echo "CREATE USER 'root'@'$root_host' IDENTIFIED BY '$root_password';"
            echo "GRANT ALL ON *.* TO 'root'@'$root_host' WITH GRANT OPTION;"
            echo "GRANT PROXY ON ''@'%' TO 'root'@'$root_host' WITH GRANT OPTION;"
        fi
        for h in 127.0.0.1 ::1 localhost; do
            echo "CREATE USER 'healthcheck'@'$h' IDENTIFIED BY '$hc_password';"
            echo "GRANT USAGE ON *.* TO 'healthcheck'@'$h';"
        done
        echo "DROP DATABASE IF EXISTS test;"
        if [ -n "$MARIADB_DATABASE" ]; then
            echo "CREATE DATABASE IF NOT EXISTS \`$MARIADB_DATABASE\`;"
        fi
        if [ -n "$MARIADB_USER" ] && [ -n "$MARIADB_PASSWORD" ]; then
            echo "CREATE USER '$(sql_escape "$MARIADB_USER")'@'%' IDENTIFIED BY '$(sql_escape "$MARIADB_PASSWORD")';"
            if [ -n "$MARIADB_DATABASE" ]; then
                echo "GRANT ALL ON \`${MARIADB_DATABASE//_/\\_}\`.* TO '$(sql_escape "$MARIADB_USER")'@'%';"
            fi
        fi
        echo "FLUSH PRIVILEGES;"
    } | root_sql
    ROOT_AUTH=(--password="$MARIADB_ROOT_PASSWORD")
    printf '[client]\nport=3306\nsocket=%s\nuser=healthcheck\npassword=%s\n' \
        "$SOCKET" "$hc_password" >"$DATADIR/.my-healthcheck.cnf"
    chown mysql:mysql "$DATADIR/.my-healthcheck.cnf"
    chmod 0600 "$DATADIR/.my-healthcheck.cnf"

    local f
    for f in /docker-entrypoint-initdb.d/*; do
        process_init_file "$f"
    done

    root_sql -N -B -e 'SELECT VERSION()' >"$DATADIR/mysql_upgrade_info"
    chown mysql:mysql "$DATADIR/mysql_upgrade_info"
    temp_server_stop
    trap - EXIT
    log "MariaDB init process done. Ready for start up."
}

upgrade_if_needed() {
    local recorded current
    recorded=$(cat "$DATADIR/mysql_upgrade_info" 2>/dev/null || true)
    current=$(server_version)
    if [ "$recorded" = "$current" ]; then
        log "MariaDB upgrade not required"
        return 0
    fi
    mariadb_env ROOT_PASSWORD
    log "MariaDB upgrade ($recorded -> $current) required"
    ROOT_AUTH=(--password="$MARIADB_ROOT_PASSWORD")
    temp_server_start "$@"
    mariadb-upgrade --protocol=socket --socket="$SOCKET" -uroot "${ROOT_AUTH[@]}" \
        --upgrade-system-tables >&2 || die "mariadb-upgrade failed"
    root_sql -N -B -e 'SELECT VERSION()' >"$DATADIR/mysql_upgrade_info"
    temp_server_stop
}

if [ "${1:0:1}" = - ]; then
    set -- mariadbd "$@"
fi

if [ "$1" = mariadbd ] || [ "$1" = mysqld ]; then
    [ "$(id -u)" = 0 ] || die "the stand-in entrypoint runs as root (mariadbd drops to mysql itself)"
    mkdir -p /run/mysqld
    chown mysql:mysql /run/mysqld
    find "$DATADIR" \! -user mysql -exec chown mysql:mysql '{}' +
    if [ ! -d "$DATADIR/mysql" ]; then
        initialise "${@:2}"
    elif [ -n "${MARIADB_AUTO_UPGRADE:-}" ]; then
        upgrade_if_needed "${@:2}"
    fi
    set -- "$1" --user=mysql "${@:2}"
    log "Starting $* (MariaDB $(server_version))"
fi

exec "$@"
