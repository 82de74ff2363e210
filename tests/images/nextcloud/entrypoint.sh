#!/bin/sh
# Stand-in for Nextcloud's /entrypoint.sh (tests only). Before the command it checks what the real
# unattended install needs and can be checked here:
#   - MYSQL_HOST/DATABASE/USER/PASSWORD and NEXTCLOUD_ADMIN_USER/PASSWORD are all set (without
#     all of them the real image does not install unattended);
#   - it installs only once, as the real one (`occ maintenance:install` when config.php has no
#     installed version): the real MariaDB must accept MYSQL_USER/MYSQL_PASSWORD on
#     MYSQL_HOST/MYSQL_DATABASE and the user must create and write a table (the installer creates
#     Nextcloud's tables); it then writes config/standin-db (config/config.php in real Nextcloud:
#     the database settings, for occ and the cron container) and records the admin's password
#     hash in config/standin-admin (Nextcloud's user table; `php occ user:resetpassword` changes
#     it);
#   - on an installed volume the MYSQL_* variables are not read again: the database settings are
#     config.php's, except that an `NC_<key>` variable overrides config key <key> (OC\Config reads
#     the environment on every request), so NC_dbpassword is how a new password reaches it. The
#     real MariaDB must accept the effective settings (as every real request would need);
#   - when REDIS_HOST is set, the real Redis answers PONG to REDIS_HOST_PASSWORD;
#   - then it serves a status.php with "installed":true.
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
        if [ -r config/standin-db ]; then
            . ./config/standin-db
            host=$DB_HOST port=$DB_PORT
            # shellcheck disable=SC2154
            user=${NC_dbuser:-$DB_USER} password=${NC_dbpassword:-$DB_PASSWORD} database=${NC_dbname:-$DB_NAME}
            log "installed: config.php's database settings${NC_dbpassword:+ (dbpassword from NC_dbpassword)}"
        else
            host=${MYSQL_HOST%%:*}
            port=3306
            case $MYSQL_HOST in *:*) port=${MYSQL_HOST#*:} ;; esac
            user=$MYSQL_USER password=$MYSQL_PASSWORD database=$MYSQL_DATABASE
        fi
        login() { mysql_query "$host" "$port" "$user" "$password" "$database" "$1" >/dev/null; }
        retry 60 "MariaDB login as $user@$host:$port/$database" login 'SELECT 1'
        login "CREATE TABLE IF NOT EXISTS stackbox_standin (name VARCHAR(64) PRIMARY KEY, at DATETIME);
               REPLACE INTO stackbox_standin VALUES ('nextcloud-installed', NOW())" ||
            die "$user cannot create and write a table in $database"
        if [ -n "${REDIS_HOST:-}" ]; then
            retry 30 "Redis PONG from $REDIS_HOST:${REDIS_HOST_PORT:-6379} with REDIS_HOST_PASSWORD" \
                redis_ping "$REDIS_HOST" "${REDIS_HOST_PORT:-6379}" "${REDIS_HOST_PASSWORD:-}"
        fi
        if [ ! -r config/standin-db ]; then
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
            admin_exists "$STANDIN_ADMIN_FILE" "$NEXTCLOUD_ADMIN_USER" ||
                record_admin "$STANDIN_ADMIN_FILE" "$NEXTCLOUD_ADMIN_USER" "$NEXTCLOUD_ADMIN_PASSWORD"
            log "installed"
        fi
        mkdir -p /run/nextcloud-www
        printf '%s\n' '{"installed":true,"maintenance":false,"needsDbUpgrade":false,"version":"34.0.0.0","versionstring":"34.0.0","edition":"","productname":"Nextcloud (StackBox stand-in)","extendedSupport":false}' >/run/nextcloud-www/status.php
        chown -R www-data:www-data /var/www/html
        log "ready (admin user $NEXTCLOUD_ADMIN_USER, trusted domains ${NEXTCLOUD_TRUSTED_DOMAINS:-none})"
        ;;
esac
exec "$@"
