#!/bin/sh
# Stand-in for ClickHouse's entrypoint and server (tests only):
#   - CLICKHOUSE_DB, CLICKHOUSE_USER and CLICKHOUSE_PASSWORD as the official image takes them;
#   - every mounted config.d/users.d file is an XML document with a <clickhouse> root;
#   - /var/lib/clickhouse is writable (the database directory is created there);
#   - HTTP on :8123: GET /ping answers "Ok." to anyone (as ClickHouse does); the path
#     /CLICKHOUSE_DB/ needs HTTP basic auth as CLICKHOUSE_USER:CLICKHOUSE_PASSWORD, so a client
#     configured with http://USER:PASSWORD@host:8123/DB (Plausible's CLICKHOUSE_DATABASE_URL)
#     gets 200 only if user, password and database all match;
#   - /usr/bin/clickhouse-client (the backup's dumps through `docker exec`) works on the files
#     in /var/lib/clickhouse/data/ and logs in with the user and password hash written to
#     /run/clickhouse-standin/auth here.
set -eu
STANDIN=clickhouse
. /usr/local/lib/standin.sh
under_tini "$@"

db=${CLICKHOUSE_DB:-default}
user=${CLICKHOUSE_USER:-default}
password=${CLICKHOUSE_PASSWORD:-}
for f in /etc/clickhouse-server/config.d/*.xml /etc/clickhouse-server/users.d/*.xml; do
    [ -e "$f" ] || continue
    grep -q '<clickhouse>' "$f" && grep -q '</clickhouse>' "$f" || die "$f is not a <clickhouse> document"
    log "configuration $f"
done
mkdir -p "/var/lib/clickhouse/data/$db" /var/lib/clickhouse/data/default
mkdir -p /run/clickhouse-standin
printf '%s\n%s\n' "$user" "$(printf '%s' "$password" | sha256sum | cut -c1-64)" >/run/clickhouse-standin/auth.tmp
mv -f /run/clickhouse-standin/auth.tmp /run/clickhouse-standin/auth
www=/run/clickhouse-www
page "$www" ping "Ok."
page "$www" "$db/index.html" "Ok."
umask 077
conf=/run/clickhouse-httpd.conf
if [ -n "$password" ]; then
    printf '/%s:%s:%s\n' "$db" "$user" "$password" >"$conf"
else
    : >"$conf"
fi
log "database $db, user $user"
serve 8123 "$www" "$conf"
wait
