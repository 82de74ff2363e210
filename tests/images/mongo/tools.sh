# Helpers of the mongo, mongodump and mongorestore stand-ins (bash; sourced, tests only).
# shellcheck shell=bash
#
# Data layout of the stand-in mongod: database d, collection c is /data/db/d/c.jsonl, one
# document per line (the JSON text as inserted). A database exists while it has a collection.
# Files are owned like /data/db (mongod runs as root here), readable by everyone, written to a
# temporary file and renamed into place. /run/mongo-standin/lock: one writer at a time, readers
# (dump, inventory) see every collection whole.

data=/data/db
system_dbs=' admin local config '
db_re='^[A-Za-z0-9_]+$'
coll_re='^[A-Za-z0-9_][A-Za-z0-9_.-]*$'

tool_fail() { # exit 1 with a message on stderr
    printf '%s\n' "$*" >&2
    exit 1
}
tool_unsupported() { # exit 2: not implemented by the stand-in
    printf '%s stand-in: %s (see tests/images/README.md for what is implemented)\n' \
        "$(basename "$0")" "$*" >&2
    exit 2
}

# server_answers HOST PORT : mongod answers there (what it answers to HTTP on its driver port).
server_answers() {
    curl -s --max-time 3 "http://$1:$2/" 2>/dev/null | grep -q MongoDB
}

# local_server HOST : the data of HOST is this container's (the tools read /data/db directly).
local_server() {
    case $1 in 127.0.0.1 | localhost | "$(hostname)") return 0 ;; esac
    local a
    for a in $(hostname -I 2>/dev/null); do [ "$1" != "$a" ] || return 0; done
    return 1
}

# log_line TEXT : mongodump/mongorestore's log format, on stderr.
log_line() { printf '%s\t%s\n' "$(date -u +%Y-%m-%dT%H:%M:%S.%3N+0000)" "$*" >&2; }

lock_open() {
    mkdir -p /run/mongo-standin
    exec 9>>/run/mongo-standin/lock
}
lock_shared() { lock_open && flock -s 9; }
lock_exclusive() { lock_open && flock -x 9; }

# install_file TEMPORARY TARGET : into place, readable, owned like /data/db.
install_file() {
    chmod 644 "$1"
    if [ "$(id -u)" = 0 ]; then chown "$(stat -c %u:%g "$data")" "$1"; fi
    mv -f "$1" "$2"
}
make_db_dir() {
    [ -d "$data/$1" ] && return 0
    mkdir -p "$data/$1"
    chmod 755 "$data/$1"
    if [ "$(id -u)" = 0 ]; then chown "$(stat -c %u:%g "$data")" "$data/$1"; fi
}

# collections : "db<TAB>collection" of every collection outside admin/local/config, sorted.
collections() {
    local dir file d c
    for dir in "$data"/*/; do
        d=${dir%/}
        d=${d##*/}
        [[ $d =~ $db_re ]] || continue
        case $system_dbs in *" $d "*) continue ;; esac
        for file in "$dir"*.jsonl; do
            [ -f "$file" ] || continue
            c=${file##*/}
            c=${c%.jsonl}
            printf '%s\t%s\n' "$d" "$c"
        done
    done | LC_ALL=C sort
}

# count FILE : documents in a collection file.
count() { wc -l <"$1"; }
