#!/bin/sh
# Stand-in for Nextcloud's /entrypoint.sh (tests only). Before the command it checks what the real
# unattended install needs and can be checked here:
#   - MYSQL_HOST/DATABASE/USER/PASSWORD and NEXTCLOUD_ADMIN_USER/PASSWORD are all set (without
#     all of them the real image does not install unattended);
#   - the real MariaDB accepts MYSQL_USER/MYSQL_PASSWORD on MYSQL_HOST/MYSQL_DATABASE and the user
#     can create and write a table (the installer creates Nextcloud's tables);
#   - when REDIS_HOST is set, the real Redis answers PONG to REDIS_HOST_PASSWORD;
#   - it writes config/standin-db (config/config.php in real Nextcloud: the database settings,
#     for the cron container) and a status.php with "installed":true;
#   - on the first install only, it records the admin's password hash in config/standin-admin
#     (Nextcloud's user table); `php occ user:resetpassword` (../nextcloud/php) changes it.
# Then `exec "$@"` (apache2-foreground serves status.php on :80; config/ is not served).
set -eu
STANDIN=nextcloud
. /usr/local/lib/standin.sh
under_tini "$@"

case "${1:-}" in
    apache2* | php-fpm*)
        rm -f /run/nextcloud-www/status.php
        require MYSQL_HOST MYSQL_DATABASE MYSQL_USER MYSQL_PASSWORD NEXTCLOUD_ADMIN_USER \
            NEXTCLOUD_ADMIN_PASSWORD
        host=${MYSQL_HOST%%:*}
        port=3306
        case $MYSQL_HOST in *:*) port=${MYSQL_HOST#*:} ;; esac
        login() { mysql_query "$host" "$port" "$MYSQL_USER" "$MYSQL_PASSWORD" "$MYSQL_DATABASE" "$1" >/dev/null; }
        retry 60 "MariaDB login as $MYSQL_USER@$host:$port/$MYSQL_DATABASE" login 'SELECT 1'
        login "CREATE TABLE IF NOT EXISTS stackbox_standin (name VARCHAR(64) PRIMARY KEY, at DATETIME);
               REPLACE INTO stackbox_standin VALUES ('nextcloud-installed', NOW())" ||
            die "$MYSQL_USER cannot create and write a table in $MYSQL_DATABASE"
        if [ -n "${REDIS_HOST:-}" ]; then
            retry 30 "Redis PONG from $REDIS_HOST:${REDIS_HOST_PORT:-6379} with REDIS_HOST_PASSWORD" \
                redis_ping "$REDIS_HOST" "${REDIS_HOST_PORT:-6379}" "${REDIS_HOST_PASSWORD:-}"
        fi
        umask 027
        mkdir -p config
        {
            echo "DB_HOST=$(shell_quote "$host")"
            echo "DB_PORT=$(shell_quote "$port")"
            echo "DB_NAME=$(shell_quote "$MYSQL_DATABASE")"
            echo "DB_USER=$(shell_quote "$MYSQL_USER")"
            echo "DB_PASSWORD=$(shell_quote "$MYSQL_PASSWORD")"
        } >config/standin-db.tmp
        mv config/standin-db.tmp config/standin-db
        umask 022
        # The installer creates the admin once (an installed volume keeps its password; the
        # variables are not read again): `php occ user:resetpassword` changes it afterwards.
        admin_exists "$STANDIN_ADMIN_FILE" "$NEXTCLOUD_ADMIN_USER" ||
            record_admin "$STANDIN_ADMIN_FILE" "$NEXTCLOUD_ADMIN_USER" "$NEXTCLOUD_ADMIN_PASSWORD"
        mkdir -p /run/nextcloud-www
        printf '%s\n' '{"installed":true,"maintenance":false,"needsDbUpgrade":false,"version":"34.0.0.0","versionstring":"34.0.0","edition":"","productname":"Nextcloud (StackBox stand-in)","extendedSupport":false}' >/run/nextcloud-www/status.php
        chown -R www-data:www-data /var/www/html
        log "installed (admin user $NEXTCLOUD_ADMIN_USER, trusted domains ${NEXTCLOUD_TRUSTED_DOMAINS:-none})"
        ;;
esac
exec "$@"
