#!/bin/sh
# The mongo image's entrypoint, reduced: options go to mongod.
set -eu
case "${1:-}" in -*) set -- mongod "$@" ;; esac
exec "$@"
