#!/bin/sh
# The official redis image's entrypoint: options go to redis-server; redis-server started by the
# entrypoint runs as the redis user. Anything else (the stack's `sh -c "exec redis-server ..."`)
# runs as given; `exec` makes redis-server PID 1, which shuts down on SIGTERM.
set -e
if [ "${1#-}" != "$1" ] || [ "${1%.conf}" != "$1" ]; then
    set -- redis-server "$@"
fi
if [ "$1" = redis-server ] && [ "$(id -u)" = 0 ]; then
    find . \! -user redis -exec chown redis '{}' +
    exec setpriv --reuid=redis --regid=redis --init-groups "$0" "$@"
fi
umask 0077
exec "$@"
