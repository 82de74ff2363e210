#!/bin/sh
# The official image's entrypoint, reduced: check the configuration when nginx is started, then
# exec the command (nginx as PID 1 handles SIGQUIT and SIGTERM itself).
set -e
if [ "${1:-}" = nginx ] || [ "${1:-}" = nginx-debug ]; then
    nginx -t -q || { echo "$0: the nginx configuration is invalid" >&2; exit 1; }
fi
exec "$@"
