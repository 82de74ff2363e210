#!/bin/sh
# Stand-in for EspoCRM's docker-daemon.sh (tests only): waits until the web container installed
# EspoCRM (shared data/ volume), then runs a "job" against the real MariaDB every 30 seconds
# with the installed settings, read again for each job (the real daemon.php starts a new
# `php cron.php` each time, which reads data/config-internal.php again).
set -eu
STANDIN=espocrm-daemon
. /usr/local/lib/standin.sh
under_tini "$@"
cd /var/www/html
retry 300 "EspoCRM installed (data/.standin-db)" test -r data/.standin-db
while :; do
    . ./data/.standin-db
    mysql_query "$DB_HOST" "$DB_PORT" "$DB_USER" "$DB_PASSWORD" "$DB_NAME" \
        "REPLACE INTO stackbox_standin VALUES ('espocrm-daemon', NOW())" || log "job failed"
    sleep 30
done
