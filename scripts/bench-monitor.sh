#!/usr/bin/env bash
# Benchmark: the resource collector's own cost. N starter clients (9 containers each) run on
# the engine; `stackbox serve` runs for SECONDS_EACH seconds with the collector off, then on
# at the default interval (60 s), then on at 10 s, same clients, same run. For each: serve's
# CPU time as a share of one core, its resident memory at the end and at its peak, and the
# CPU the engine spent meanwhile (dockerd, containerd and every containerd-shim: the stats
# requests cost the engine too).
#
#   N=50 SECONDS_EACH=240 scripts/bench-monitor.sh
#
# Needs the engine and the local test images (scripts/start-engine.sh, tests/images/build.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
clients="${N:-50}"
each="${SECONDS_EACH:-240}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/stackbox/target}"
cache="${STACKBOX_CACHE_DIR:-$HOME/.cache/stackbox}"
scripts/start-engine.sh
tests/images/build.sh "$cache/test-images.toml" >&2
cargo build --release --locked -q
bin="$CARGO_TARGET_DIR/release/stackbox"
work=$(mktemp -d)
export STACKBOX_IMAGES="$cache/test-images.toml"
export STACKBOX_OPERATOR_CONFIG="$work/stackbox.toml"
limit=$(ulimit -Hn); [ "$limit" = unlimited ] && limit=1048576
base=$(printf 'bundles_root = "%s"\n[ingress]\nmode = "edge"\nedge_router = "stackbox-bench-monitor-edge"\nhttp_port = 19180\nhttps_port = 19543\n[host]\nmax_open_files = %s\n[probes]\nenabled = false\n' "$work/root" "$limit")
printf '%s\n' "$base" >"$STACKBOX_OPERATOR_CONFIG"
export STACKBOX_DATA_DIR="$work/data"
# The backup schedule would start 50 backups in the window: keep it out of the comparison.
export STACKBOX_BACKUP_TICK_SECONDS=1000000
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
url="http://127.0.0.1:$port"
serve_pid=
start_serve() {
  "$bin" serve --listen "127.0.0.1:$port" --max-parallel 4 >>"$work/serve.log" 2>&1 &
  serve_pid=$!
  until curl -sf "$url/healthz" >/dev/null; do sleep 0.1; done
}
stop_serve() { kill "$serve_pid"; wait "$serve_pid" 2>/dev/null || true; serve_pid=; }
cleanup() {
  [ -n "$serve_pid" ] && stop_serve
  for dir in "$work/root/clients"/*/; do
    [ -d "$dir" ] || continue
    "$bin" destroy "$(basename "$dir")" --yes --out "$work/root" >/dev/null 2>&1 &
    while [ "$(jobs -r | wc -l)" -ge 4 ]; do sleep 0.2; done
  done
  wait
  # The clients `serve` made keep their bundles in its data directory: remove what is left
  # of them by name (only this benchmark's clients are called monitorbench*).
  docker ps -aq --filter name=^monitorbench | xargs -r docker rm -f >/dev/null 2>&1 || true
  docker network ls -q --filter name=^monitorbench | xargs -r docker network rm >/dev/null 2>&1 || true
  docker volume ls -q --filter name=^monitorbench | xargs -r docker volume rm >/dev/null 2>&1 || true
  docker rm -f stackbox-bench-monitor-edge >/dev/null 2>&1 || true
  docker network rm stackbox-bench-monitor-edge >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

echo "== creating $clients starter clients through the API"
token=$("$bin" token create --operator)
start_serve
for i in $(seq 1 "$clients"); do
  curl -sf -X POST -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
    -d "{\"company_name\": \"Monitor Bench $i\", \"domain\": \"monbench$i.example.com\", \"plan\": \"starter\", \"admin_email\": \"owner@monbench$i.example.com\"}" \
    "$url/v1/clients" >/dev/null
done
running() { curl -sf -H "Authorization: Bearer $token" "$url/v1/clients?limit=500" | python3 -c 'import json,sys; print(sum(c["state"] == "running" for c in json.load(sys.stdin)["items"]))'; }
# Every client settled (running, or failed: on a small host some may not fit), at most 40 min;
# the figures are of what runs, and the line below says how many containers that is.
# Settled: the create finished, whatever it left (a client the host could not start stays
# `starting` or `absent` until the monitor looks again; waiting for it would wait for nothing).
settled() { curl -sf -H "Authorization: Bearer $token" "$url/v1/clients?limit=500" | python3 -c 'import json,sys; print(sum(c["state"] != "provisioning" for c in json.load(sys.stdin)["items"]))'; }
deadline=$(( $(date +%s) + 2400 ))
until [ "$(settled)" -ge "$clients" ] || [ "$(date +%s)" -ge "$deadline" ]; do sleep 5; done
echo "   $(running) of $clients clients running"
stop_serve
containers=$(docker ps -q --filter label=io.stackbox.client | wc -l)
echo "   $containers containers running"

ticks=$(getconf CLK_TCK)
# utime + stime of the given pids, in clock ticks.
cpu_ticks() { local t=0 pid; for pid in "$@"; do [ -r "/proc/$pid/stat" ] && t=$((t + $(awk '{print $14 + $15}' "/proc/$pid/stat"))); done; echo "$t"; }
engine_pids() { pgrep -x dockerd; pgrep -x containerd; pgrep -f containerd-shim; }
kib() { awk -v k="$1" '$1 == k":" {print $2}' "/proc/$serve_pid/status"; }

measure() { # name, [monitor] lines
  local name=$1 monitor=$2
  printf '%s\n%s\n' "$base" "$monitor" >"$STACKBOX_OPERATOR_CONFIG"
  start_serve
  sleep 2 # start-up settles before the window opens
  local engine; engine=$(engine_pids | tr '\n' ' ')
  local s0 e0 t0 s1 e1 t1 end
  s0=$(cpu_ticks "$serve_pid"); e0=$(cpu_ticks $engine); t0=$(date +%s.%N)
  # Prometheus's default: a scrape every 15 s, in every mode alike.
  end=$(( $(date +%s) + each ))
  while [ "$(date +%s)" -lt "$end" ]; do
    curl -sf -H "Authorization: Bearer $token" "$url/metrics" >"$work/metrics-${name// /_}" || true
    sleep 15
  done
  s1=$(cpu_ticks "$serve_pid"); e1=$(cpu_ticks $engine); t1=$(date +%s.%N)
  local rss hwm series
  rss=$(kib VmRSS); hwm=$(kib VmHWM)
  series=$(grep -c '^container_cpu_usage_seconds_total{' "$work/metrics-${name// /_}" || true)
  stop_serve
  python3 - "$name" "$s0" "$s1" "$e0" "$e1" "$t0" "$t1" "$ticks" "$rss" "$hwm" "$series" <<'EOF'
import sys
name, s0, s1, e0, e1, t0, t1, hz, rss, hwm, series = sys.argv[1:]
wall = float(t1) - float(t0)
serve = (int(s1) - int(s0)) / int(hz) / wall * 100
engine = (int(e1) - int(e0)) / int(hz) / wall * 100
print(f"{name:<26} serve CPU {serve:5.2f} % of a core   RSS {int(rss)/1024:5.1f} MiB (peak {int(hwm)/1024:5.1f})   engine CPU {engine:5.2f} %   {series} CPU series   over {wall:.0f} s")
EOF
}

echo "== $each s each, $containers containers"
measure "collector off" $'[monitor]\ncollect = false'
measure "collector on, every 60 s" $'[monitor]\ncollect = true'
measure "collector on, every 10 s" $'[monitor]\nusage_interval = "10s"'
