#!/bin/sh
# Plausible CE's /entrypoint.sh (run, db NAME, or any command), under tini when PID 1: the stack
# runs `sh -c "/entrypoint.sh db createdb && /entrypoint.sh db migrate && /entrypoint.sh run"`,
# and Debian's sh (dash) does not exec the last command of such a list, so the shell stays.
set -eu
STANDIN=plausible
. /usr/local/lib/standin.sh
under_tini "$@"
case "${1:-}" in
    run) exec /app/bin/plausible start ;;
    db) exec "/app/$2.sh" ;;
    *) exec "$@" ;;
esac
