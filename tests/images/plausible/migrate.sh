#!/bin/sh
# Stand-in for Plausible's migrate: the role of DATABASE_URL creates and writes a table in its
# database on the real PostgreSQL.
set -eu
STANDIN=plausible-migrate
. /usr/local/lib/standin.sh
require DATABASE_URL
psql -X -q -v ON_ERROR_STOP=1 "$DATABASE_URL" \
    -c 'CREATE TABLE IF NOT EXISTS stackbox_standin (name text PRIMARY KEY, at timestamptz)' \
    -c "INSERT INTO stackbox_standin VALUES ('plausible-migrated', now()) ON CONFLICT (name) DO UPDATE SET at = now()" ||
    die "the database role cannot create and write a table"
echo "Migrations successful!"
