#!/bin/sh
# Nextcloud's /cron.sh runs `busybox crond -f` as PID 1 (the stack's health check greps crond in
# /proc/1/cmdline). Here tini is PID 1 with crond on its command line (a shell or crond as PID 1
# would ignore SIGTERM): "tini -- busybox crond -f ..." still contains "crond".
set -eu
exec tini -- busybox crond -f -L /dev/stdout
