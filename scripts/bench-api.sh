#!/usr/bin/env bash
# Benchmark: `GET /v1/clients` of `stackbox serve` with 10,000 clients in the SQLite store,
# 64 concurrent connections (wrk), against nginx serving the same response body as a static
# file in the same run; and the server's resident memory when idle.
#
#   scripts/bench-api.sh [CLIENTS]   (default 10000)
set -euo pipefail
cd "$(dirname "$0")/.."
clients="${1:-10000}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/stackbox/target}"
command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
command -v nginx >/dev/null || { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null; }
cargo build --release --locked -q -p stackbox --bin stackbox --example seed_clients
bin="$CARGO_TARGET_DIR/release/stackbox"
work=$(mktemp -d)
cleanup() { kill "${server:-}" "${nginx_pid:-}" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
export STACKBOX_DATA_DIR="$work/data"
"$CARGO_TARGET_DIR/release/examples/seed_clients" "$STACKBOX_DATA_DIR" "$clients" >/dev/null
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$bin" serve --listen "127.0.0.1:$port" 2>"$work/serve.log" &
server=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
token=$("$bin" token create --operator 2>/dev/null)
sleep 2
rss() { awk '/VmRSS/ {printf "%.1f MB", $2 / 1024}' "/proc/$1/status"; }
idle_before=$(rss "$server")

url="http://127.0.0.1:$port/v1/clients"
curl -sf -H "Authorization: Bearer $token" "$url" >"$work/page.json"
items=$(python3 -c "import json,sys; print(len(json.load(open('$work/page.json'))['items']))")

# The peer: nginx serving the very same bytes from a file.
mkdir -p "$work/nginx"
cp "$work/page.json" "$work/nginx/clients.json"
nport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$work/nginx.conf" <<CONF
worker_processes 2;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
events { worker_connections 1024; }
http {
  access_log off;
  server { listen 127.0.0.1:$nport; root $work/nginx; location / { default_type application/json; } }
}
CONF
nginx -c "$work/nginx.conf" -g 'daemon off;' &
nginx_pid=$!
sleep 0.5

run() { wrk -t2 -c64 -d"${DURATION:-15s}" --latency "$@" 2>&1; }
p99() { awk '$1 == "99%" {print $2}'; }
rps() { awk '/^Requests\/sec/ {print $2}'; }
warm=$(run -H "Authorization: Bearer $token" "$url")   # warm-up, not reported
api=$(run -H "Authorization: Bearer $token" "$url")
peer=$(run "http://127.0.0.1:$nport/clients.json")
sleep 3
idle_after=$(rss "$server")

echo "== GET /v1/clients, $clients clients in SQLite, page of $items, 64 connections, wrk -t2 ${DURATION:-15s}"
printf '%-40s p99 %-10s %10s req/s\n' "stackbox serve" "$(echo "$api" | p99)" "$(echo "$api" | rps)"
printf '%-40s p99 %-10s %10s req/s\n' "nginx, same body as a static file" "$(echo "$peer" | p99)" "$(echo "$peer" | rps)"
echo "non-2xx responses (stackbox): $(echo "$api" | awk '/Non-2xx/ {print $4}' | grep . || echo 0)"
echo "== resident memory of stackbox serve"
echo "idle after start: $idle_before; idle after the load: $idle_after"
