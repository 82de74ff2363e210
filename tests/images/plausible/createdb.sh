#!/bin/sh
# Stand-in for Plausible's createdb (Ecto's storage_up): the database role of DATABASE_URL logs
# into the maintenance database `postgres` on the real PostgreSQL and finds its database (it has
# no CREATEDB right, so the database must exist); ClickHouse must know the events database.
set -eu
STANDIN=plausible-createdb
. /usr/local/lib/standin.sh
require DATABASE_URL CLICKHOUSE_DATABASE_URL
maintenance=${DATABASE_URL%/*}/postgres
database=${DATABASE_URL##*/}
exists() {
    [ "$(psql -X -A -t -v ON_ERROR_STOP=1 "$maintenance" \
        -c "SELECT 1 FROM pg_database WHERE datname = '$database'")" = 1 ]
}
retry 60 "PostgreSQL: database $database exists (as the role of DATABASE_URL, via db postgres)" exists
clickhouse() { curl -fsS -o /dev/null --max-time 3 "$CLICKHOUSE_DATABASE_URL/"; }
retry 60 "ClickHouse: events database of CLICKHOUSE_DATABASE_URL with its credentials" clickhouse
echo "Creation of Db successful!"
