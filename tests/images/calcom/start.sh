#!/bin/sh
# Stand-in for Cal.com's scripts/start.sh (tests only):
#   - waits for DATABASE_HOST (host:port), as the real script does;
#   - the real PostgreSQL accepts DATABASE_URL (and DATABASE_DIRECT_URL) with scram-sha-256 over
#     the network, and the role can create and write a table in its database (the real start
#     runs `prisma migrate deploy`);
#   - NEXTAUTH_SECRET is set and CALENDSO_ENCRYPTION_KEY has the 32 bytes AES-256 needs;
# then serves :3000 with /auth/login.
set -eu
STANDIN=calcom
. /usr/local/lib/standin.sh
under_tini "$@"

require DATABASE_URL DATABASE_HOST NEXTAUTH_SECRET CALENDSO_ENCRYPTION_KEY NEXT_PUBLIC_WEBAPP_URL
[ "$(printf '%s' "$CALENDSO_ENCRYPTION_KEY" | wc -c)" -eq 32 ] ||
    die "CALENDSO_ENCRYPTION_KEY must be 32 bytes (AES-256 key)"
retry 60 "database host $DATABASE_HOST" tcp_open "${DATABASE_HOST%:*}" "${DATABASE_HOST##*:}"
pg_login() { psql -X -q -v ON_ERROR_STOP=1 "$1" -c 'SELECT 1' >/dev/null; }
retry 30 "PostgreSQL login with DATABASE_URL" pg_login "$DATABASE_URL"
if [ -n "${DATABASE_DIRECT_URL:-}" ]; then
    pg_login "$DATABASE_DIRECT_URL" || die "DATABASE_DIRECT_URL is refused"
fi
psql -X -q -v ON_ERROR_STOP=1 "$DATABASE_URL" \
    -c 'CREATE TABLE IF NOT EXISTS stackbox_standin (name text PRIMARY KEY, at timestamptz)' \
    -c "INSERT INTO stackbox_standin VALUES ('calcom-migrated', now()) ON CONFLICT (name) DO UPDATE SET at = now()" ||
    die "the database role cannot create and write a table (prisma migrate deploy would fail)"
log "migrations applied"

www=/run/calcom-www
page "$www" index.html "Cal.com stand-in for $NEXT_PUBLIC_WEBAPP_URL"
page "$www" auth/login "Cal.com stand-in: sign in"
serve 3000 "$www"
wait
