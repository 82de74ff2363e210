#!/bin/sh
# Stand-in for EspoCRM's docker-entrypoint.sh (tests only). Before the command it does what the
# real one's unattended install needs and can be checked here:
#   - every ESPOCRM_DATABASE_* and admin variable is set, and ESPOCRM_SITE_URL is the siteUrl of
#     data/config-override.php (which the stack's entrypoint wrapper installs);
#   - as the real one, it installs only once: when `bin/command config:get isInstalled` is not
#     true, the real MariaDB must accept ESPOCRM_DATABASE_USER/PASSWORD on HOST:PORT/NAME and the
#     user must create a table and write to it (the installer creates EspoCRM's tables); the
#     settings are then recorded in data/.standin-db (data/config-internal.php in real EspoCRM)
#     and the admin's password hash in data/.standin-admin (EspoCRM's user table);
#   - an installed volume is "migrated" instead: the ESPOCRM_DATABASE_* variables are not read
#     again (a new password in them changes nothing), `bin/command db:check` must say OK with the
#     recorded settings within 20 attempts, else it exits 1, as the real actionMigrate does.
#     `bin/command config:set database.password …` is how the recorded settings change.
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
    if [ "$(bin/command config:get isInstalled)" = true ]; then
        log "running the \"migrate\" action (installed; the ESPOCRM_DATABASE_* variables are not read)"
        attempt=1
        until [ "$(bin/command db:check 2>/dev/null)" = OK ]; do
            [ "$attempt" -lt 20 ] || die "Migration failed: database is not ready (the recorded settings in data/ are refused)"
            log "Waiting for database connection (attempt $attempt/20)..."
            attempt=$((attempt + 1))
            sleep 1
        done
    else
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
        # ESPOCRM_ADMIN_PASSWORD); `bin/command set-password` changes it afterwards.
        admin_exists "$STANDIN_ADMIN_FILE" "$ESPOCRM_ADMIN_USERNAME" ||
            record_admin "$STANDIN_ADMIN_FILE" "$ESPOCRM_ADMIN_USERNAME" "$ESPOCRM_ADMIN_PASSWORD"
        log "installed (admin user $ESPOCRM_ADMIN_USERNAME)"
    fi
    # setPermissions, after both actions.
    chown -R www-data:www-data data custom client/custom
    chmod 0640 data/.standin-db
fi
exec "$@"
