#!/bin/sh
# Stand-in for Mailtrain v2's docker-entrypoint.sh (tests only). Before serving it checks:
#   - URL_BASE_TRUSTED/PUBLIC/SANDBOX, WWW_SECRET, ADMIN_PASSWORD and the MYSQL_* variables;
#   - the real MariaDB accepts MYSQL_USER/MYSQL_PASSWORD on MYSQL_HOST:MYSQL_PORT/MYSQL_DATABASE
#     and the user can create and write a table;
#   - with WITH_REDIS=true, the real Redis at REDIS_HOST answers PONG without a password
#     (Mailtrain v2 cannot send one);
#   - MongoDB at MONGO_HOST:27017 answers (its HTTP reply on the driver port, which real mongod
#     sends too);
#   - /app/server/files is writable.
# Then, as the real one on every start, it sets the admin's password to ADMIN_PASSWORD (the hash
# in /app/server/files/.standin-admin here, the users table there) and serves 3000 (trusted),
# 3003 (sandbox) and 3004 (public).
set -eu
STANDIN=mailtrain
. /usr/local/lib/standin.sh
under_tini "$@"

require URL_BASE_TRUSTED URL_BASE_PUBLIC URL_BASE_SANDBOX WWW_SECRET ADMIN_PASSWORD \
    MYSQL_HOST MYSQL_DATABASE MYSQL_USER MYSQL_PASSWORD
port=${MYSQL_PORT:-3306}
login() { mysql_query "$MYSQL_HOST" "$port" "$MYSQL_USER" "$MYSQL_PASSWORD" "$MYSQL_DATABASE" "$1" >/dev/null; }
retry 60 "MariaDB login as $MYSQL_USER@$MYSQL_HOST:$port/$MYSQL_DATABASE" login 'SELECT 1'
login "CREATE TABLE IF NOT EXISTS stackbox_standin (name VARCHAR(64) PRIMARY KEY, at DATETIME);
       REPLACE INTO stackbox_standin VALUES ('mailtrain-installed', NOW())" ||
    die "$MYSQL_USER cannot create and write a table in $MYSQL_DATABASE"
if [ "${WITH_REDIS:-false}" = true ]; then
    require REDIS_HOST
    retry 30 "Redis PONG from $REDIS_HOST:${REDIS_PORT:-6379} without a password" \
        redis_ping "$REDIS_HOST" "${REDIS_PORT:-6379}"
fi
mongo_up() { curl -s --max-time 3 "http://$1:27017/" | grep -q MongoDB; }
retry 30 "MongoDB at ${MONGO_HOST:-mongo}:27017" mongo_up "${MONGO_HOST:-mongo}"
touch /app/server/files/.standin || die "/app/server/files is not writable"
# setup/docker-entrypoint-db-setup.js: the admin's password is ADMIN_PASSWORD on every start.
record_admin "$STANDIN_ADMIN_FILE" admin "$ADMIN_PASSWORD"
log "admin password set from ADMIN_PASSWORD"

www=/run/mailtrain-www
page "$www/trusted" index.html "Mailtrain stand-in (trusted) for $URL_BASE_TRUSTED"
page "$www/sandbox" index.html "Mailtrain stand-in (sandbox) for $URL_BASE_SANDBOX"
page "$www/public" index.html "Mailtrain stand-in (public) for $URL_BASE_PUBLIC"
serve 3000 "$www/trusted"
serve 3003 "$www/sandbox"
serve 3004 "$www/public"
wait
