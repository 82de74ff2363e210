#!/usr/bin/env bash
# Starts a Docker engine (Debian's docker.io) when none answers, and waits until it does.
# Idempotent: an engine that already runs (systemd, a previous call) is left alone.
set -euo pipefail

if docker info >/dev/null 2>&1; then
  exit 0
fi
if ! command -v dockerd >/dev/null; then
  echo "start-engine: dockerd is not installed (apt-get install docker.io)" >&2
  exit 1
fi
log="${STACKBOX_CACHE_DIR:-$HOME/.cache/stackbox}/dockerd.log"
mkdir -p "$(dirname "$log")"
echo "starting dockerd (log: $log)" >&2
nohup dockerd >"$log" 2>&1 &
for _ in $(seq 1 60); do
  if docker info >/dev/null 2>&1; then
    exit 0
  fi
  sleep 0.5
done
echo "start-engine: dockerd did not answer within 30 s; last log lines:" >&2
tail -n 20 "$log" >&2
exit 1
