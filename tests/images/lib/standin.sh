# Helpers of the stand-in images, sourced by their scripts (POSIX sh; /bin/sh is dash).
# shellcheck shell=sh
#
# A stand-in starts with the entrypoint and command the stack gives the real image, checks what
# it cheaply can against the real MariaDB, PostgreSQL and Redis (logins with the credentials of
# its environment), and only then serves the ports its health check probes.

STANDIN=${STANDIN:-$(basename "$0")}

log() { printf '%s [stand-in %s] %s\n' "$(date -u +%H:%M:%S)" "$STANDIN" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# As PID 1 a shell ignores SIGTERM. Call `under_tini "$@"` first thing: when this script is PID 1
# it runs again under tini, which forwards SIGTERM to it (the default action then ends it).
under_tini() {
    if [ "$$" = 1 ]; then exec tini -- "$0" "$@"; fi
}

# require VAR... : each variable must be set and non-empty.
require() {
    for var in "$@"; do
        eval "value=\${$var:-}"
        # shellcheck disable=SC2154
        [ -n "$value" ] || die "$var is not set (the real image needs it)"
    done
}

# retry SECONDS WHAT COMMAND... : runs COMMAND every half second until it succeeds; gives up
# (exit 1, so the engine restarts the container) after SECONDS.
retry() {
    limit=$1 what=$2
    shift 2
    start=$(date +%s) tries=0
    until "$@" 2>/tmp/standin-retry.err; do
        if [ $(($(date +%s) - start)) -ge "$limit" ]; then
            cat /tmp/standin-retry.err >&2
            die "$what: still failing after ${limit}s"
        fi
        [ $((tries % 10)) != 0 ] || log "waiting: $what"
        tries=$((tries + 1))
        sleep 0.5
    done
    log "ok: $what"
}

# mysql_query HOST PORT USER PASSWORD DATABASE SQL : SQL through the real mariadb client over TCP.
mysql_query() {
    MYSQL_PWD=$4 mariadb --no-defaults --protocol=tcp --connect-timeout=3 \
        -h "$1" -P "$2" -u "$3" -D "$5" -N -B -e "$6"
}

# redis_ping HOST PORT [PASSWORD] : the real redis-cli must get PONG.
redis_ping() {
    if [ -n "${3:-}" ]; then
        REDISCLI_AUTH=$3 redis-cli -h "$1" -p "$2" ping | grep -qx PONG
    else
        env -u REDISCLI_AUTH redis-cli -h "$1" -p "$2" ping | grep -qx PONG
    fi
}

# tcp_open HOST PORT : a TCP connection succeeds.
tcp_open() {
    timeout 3 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$1" "$2"
}

# serve PORT DIR [CONF] : serves DIR over HTTP on PORT (busybox httpd, foreground, as a child of
# this script). End the script with `wait`.
serve() {
    log "serving $2 on :$1"
    busybox httpd -f -p "0.0.0.0:$1" -h "$2" ${3:+-c "$3"} &
}

# page DIR PATH TEXT : writes TEXT into DIR/PATH, creating directories.
page() {
    mkdir -p "$(dirname "$1/$2")"
    printf '%s\n' "$3" >"$1/$2"
}

# shell_quote VALUE : VALUE quoted for a shell (single quotes).
shell_quote() {
    printf "'%s'" "$(printf '%s' "$1" | sed "s/'/'\\\\''/g")"
}

# The apps' admin accounts. A stand-in records its admin's password as a salted SHA-256 hash
# (`USER:SALT:HEX` in one file, as the real apps keep a hash in their user tables), and
# `standin-login USER` (password on standard input) checks a login against it, so a test can
# see that a new password works and the old one no longer does.

# admin_hash SALT PASSWORD : the hash the stand-ins record (hex).
admin_hash() {
    printf '%s:%s' "$1" "$2" | sha256sum | cut -d' ' -f1
}

# record_admin FILE USER PASSWORD : FILE holds USER's password (replaced atomically, 0640).
record_admin() {
    (
        umask 027
        salt=$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
        printf '%s:%s:%s\n' "$2" "$salt" "$(admin_hash "$salt" "$3")" >"$1.tmp"
        mv "$1.tmp" "$1"
    )
}

# admin_exists FILE USER : FILE records a password for USER.
admin_exists() {
    [ -r "$1" ] && awk -F: -v u="$2" '$1 == u { found = 1 } END { exit !found }' "$1"
}
