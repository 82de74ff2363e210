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
# Each client uses 3-4 bridge networks; Docker's default address pools hold about 30 networks.
# A /10 cut into /24s holds 16,384 (the README says the same for operators' daemon.json).
# Its own session: an engine started from a job (a CI step, a shell that is closed) must not
# be stopped with it.
setsid nohup dockerd --default-address-pool base=10.64.0.0/10,size=24 >"$log" 2>&1 &
for _ in $(seq 1 60); do
  if docker info >/dev/null 2>&1; then
    exit 0
  fi
  sleep 0.5
done
echo "start-engine: dockerd did not answer within 30 s; last log lines:" >&2
tail -n 20 "$log" >&2
exit 1
