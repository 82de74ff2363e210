#!/bin/sh
# Stand-in for EspoCRM's docker-entrypoint.sh (tests only). Before the command it does what the
# real one's unattended install needs and can be checked here:
#   - every ESPOCRM_DATABASE_* and admin variable is set, and ESPOCRM_SITE_URL is the siteUrl of
#     data/config-override.php (which the stack's entrypoint wrapper installs);
#   - the real MariaDB accepts ESPOCRM_DATABASE_USER/PASSWORD on HOST:PORT/NAME, and the user can
#     create a table and write to it (the installer creates EspoCRM's tables);
#   - it records the database settings in data/ (data/config-internal.php in real EspoCRM) for
#     app-check, the daemon and the websocket server, and chowns data/ to www-data;
#   - on the first install only, it records the admin's password hash in data/.standin-admin
#     (EspoCRM's user table); `bin/command set-password` changes it.
# Then `exec "$@"` (apache2-foreground serves :80).
set -eu
STANDIN=espocrm
. /usr/local/lib/standin.sh
under_tini "$@"

if [ "${1:-}" = apache2-foreground ]; then
    require ESPOCRM_DATABASE_PLATFORM ESPOCRM_DATABASE_HOST ESPOCRM_DATABASE_NAME \
        ESPOCRM_DATABASE_USER ESPOCRM_DATABASE_PASSWORD ESPOCRM_ADMIN_USERNAME \
        ESPOCRM_ADMIN_PASSWORD ESPOCRM_SITE_URL
    [ "$ESPOCRM_DATABASE_PLATFORM" = Mysql ] || die "ESPOCRM_DATABASE_PLATFORM must be Mysql here"
    port=${ESPOCRM_DATABASE_PORT:-3306}
    override=data/config-override.php
    if [ -f "$override" ]; then
        head -n 1 "$override" | grep -q '^<?php' || die "$override does not start with <?php"
        grep -qF "'siteUrl' => '$ESPOCRM_SITE_URL'" "$override" ||
            die "$override has no 'siteUrl' => '$ESPOCRM_SITE_URL'"
        log "ok: $override sets siteUrl $ESPOCRM_SITE_URL"
    fi
    login() {
        mysql_query "$ESPOCRM_DATABASE_HOST" "$port" "$ESPOCRM_DATABASE_USER" \
            "$ESPOCRM_DATABASE_PASSWORD" "$ESPOCRM_DATABASE_NAME" "$1" >/dev/null
    }
    retry 60 "MariaDB login as $ESPOCRM_DATABASE_USER@$ESPOCRM_DATABASE_HOST:$port/$ESPOCRM_DATABASE_NAME" \
        login 'SELECT 1'
    login "CREATE TABLE IF NOT EXISTS stackbox_standin (name VARCHAR(64) PRIMARY KEY, at DATETIME);
           REPLACE INTO stackbox_standin VALUES ('espocrm-installed', NOW())" ||
        die "$ESPOCRM_DATABASE_USER cannot create and write a table in $ESPOCRM_DATABASE_NAME"
    umask 027
    {
        echo "DB_HOST=$(shell_quote "$ESPOCRM_DATABASE_HOST")"
        echo "DB_PORT=$(shell_quote "$port")"
        echo "DB_NAME=$(shell_quote "$ESPOCRM_DATABASE_NAME")"
        echo "DB_USER=$(shell_quote "$ESPOCRM_DATABASE_USER")"
        echo "DB_PASSWORD=$(shell_quote "$ESPOCRM_DATABASE_PASSWORD")"
    } >data/.standin-db.tmp
    mv data/.standin-db.tmp data/.standin-db
    # The installer creates the admin once (`create-admin-user`, then `set-password` from
    # ESPOCRM_ADMIN_PASSWORD); an installed volume keeps its password, and `bin/command
    # set-password` changes it afterwards.
    admin_exists "$STANDIN_ADMIN_FILE" "$ESPOCRM_ADMIN_USERNAME" ||
        record_admin "$STANDIN_ADMIN_FILE" "$ESPOCRM_ADMIN_USERNAME" "$ESPOCRM_ADMIN_PASSWORD"
    chown -R www-data:www-data data custom client/custom
    chmod 0640 data/.standin-db
    log "installed (admin user $ESPOCRM_ADMIN_USERNAME)"
fi
exec "$@"
