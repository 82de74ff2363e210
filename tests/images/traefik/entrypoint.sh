#!/bin/sh
# The official image's entrypoint: options and subcommands go to traefik, anything else runs.
set -e
case "${1:-}" in
    -*) set -- traefik "$@" ;;
    healthcheck | version) set -- traefik "$@" ;;
esac
exec "$@"
