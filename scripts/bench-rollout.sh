#!/usr/bin/env bash
# Benchmark: a fleet rollout (`stackbox upgrade --all`, waves with a concurrency limit) against
# the same upgrade done client by client (`stackbox upgrade ID`, one after the other), same
# server, same clients, same run.
#
#   N=20 CONCURRENCY=4 scripts/bench-rollout.sh
#
# N starter clients are created through `stackbox serve`. Two releases are then added, each a
# re-tag of the website's nginx (r2, r3): every client is upgraded to r2 one at a time through
# the server, then the whole fleet is rolled out to r3 in waves (canary 1, growth 2, at most
# CONCURRENCY at once). Each upgrade is the real one: safety backup, health-gated start-first
# replacement of the website. Prints the wall time of both.
# Needs the engine and the local test images (scripts/start-engine.sh, tests/images/build.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/stackbox/target}"
cache="${STACKBOX_CACHE_DIR:-$HOME/.cache/stackbox}"
n="${N:-20}"
concurrency="${CONCURRENCY:-4}"
scripts/start-engine.sh
tests/images/build.sh "$cache/test-images.toml" >&2
cargo build --release --locked -q
bin="$CARGO_TARGET_DIR/release/stackbox"
work=$(mktemp -d)
export STACKBOX_IMAGES="$cache/test-images.toml"
export STACKBOX_OPERATOR_CONFIG="$work/stackbox.toml"
export STACKBOX_DATA_DIR="$work/data"
unset STACKBOX_DATABASE_URL STACKBOX_MASTER_KEY
port=19190
export STACKBOX_SERVER="http://127.0.0.1:$port"
edge=stackbox-bench-rollout-edge
limit=$(ulimit -Hn); [ "$limit" = unlimited ] && limit=1048576
printf '[ingress]\nmode = "edge"\nedge_router = "%s"\nhttp_port = 19191\nhttps_port = 19554\n[host]\nmax_open_files = %s\n' "$edge" "$limit" >"$STACKBOX_OPERATOR_CONFIG"
nginx=$(sed -n 's/^nginx = "\(.*\)"$/\1/p' "$STACKBOX_IMAGES")
docker tag "$nginx" "${nginx%%:*}:bench-rollout-r2"
docker tag "$nginx" "${nginx%%:*}:bench-rollout-r3"

serve_pid=
start_serve() {
  "$bin" serve --listen "127.0.0.1:$port" --max-parallel "$concurrency" >>"$work/serve.log" 2>&1 &
  serve_pid=$!
  for _ in $(seq 100); do curl -fs "$STACKBOX_SERVER/healthz" >/dev/null && return; sleep 0.2; done
  echo "serve did not start" >&2; cat "$work/serve.log" >&2; exit 1
}
stop_serve() { [ -n "$serve_pid" ] && kill "$serve_pid" 2>/dev/null && wait "$serve_pid" 2>/dev/null || true; }
ids=()
cleanup() {
  for id in "${ids[@]}"; do
    curl -fs -X DELETE -H "Authorization: Bearer $STACKBOX_TOKEN" \
      "$STACKBOX_SERVER/v1/clients/$id?confirm=$id&delete_backups=true" >/dev/null 2>&1 || true
  done
  for _ in $(seq 300); do
    [ -z "$(docker ps -aq --filter label=com.docker.compose.project --filter name=benchrollout)" ] && break
    sleep 1
  done
  stop_serve
  docker rm -f "$edge" >/dev/null 2>&1 || true
  docker network rm "$edge" >/dev/null 2>&1 || true
  docker rmi "${nginx%%:*}:bench-rollout-r2" "${nginx%%:*}:bench-rollout-r3" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

export STACKBOX_TOKEN=$("$bin" token create --operator)
start_serve
api() { curl -fsS -H "Authorization: Bearer $STACKBOX_TOKEN" -H 'Content-Type: application/json' "$@"; }
for i in $(seq "$n"); do
  id=$(api -X POST "$STACKBOX_SERVER/v1/clients" -d "{\"company_name\": \"Bench Rollout $i\", \"domain\": \"benchrollout$i.example\", \"plan\": \"starter\", \"admin_email\": \"owner@benchrollout$i.example\"}" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["client_id"])')
  ids+=("$id")
done
echo "waiting for $n clients to run" >&2
for _ in $(seq 1200); do
  running=$(api "$STACKBOX_SERVER/v1/clients?state=running&limit=500" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["items"]))')
  [ "$running" -ge "$n" ] && break
  sleep 1
done
[ "$running" -ge "$n" ] || { echo "only $running of $n clients run" >&2; exit 1; }

stop_serve
printf '\n[[releases]]\nname = "r2"\n[releases.images]\nnginx = "%s"\n\n[[releases]]\nname = "r3"\n[releases.images]\nnginx = "%s"\n' \
  "${nginx%%:*}:bench-rollout-r2" "${nginx%%:*}:bench-rollout-r3" >>"$STACKBOX_OPERATOR_CONFIG"
start_serve

start=$(date +%s.%N)
for id in "${ids[@]}"; do "$bin" upgrade "$id" --to r2 >>"$work/sequential.log" 2>&1; done
sequential=$(echo "$(date +%s.%N) - $start" | bc)

start=$(date +%s.%N)
"$bin" upgrade --all --to r3 --concurrency "$concurrency" --json >"$work/rollout.log" 2>"$work/rollout.err" || { cat "$work/rollout.log" "$work/rollout.err" >&2; exit 1; }
rollout=$(echo "$(date +%s.%N) - $start" | bc)
succeeded=$(tail -n 1 "$work/rollout.log" | python3 -c 'import json,sys; print(json.load(sys.stdin)["rollout"]["counts"]["succeeded"])')

echo "== $n starter clients upgraded (safety backup + start-first website), one serve, same run"
printf '%-60s %7.1f s\n' "stackbox upgrade ID, one client after the other" "$sequential"
printf '%-60s %7.1f s  (%s clients succeeded)\n' "stackbox upgrade --all (canary 1, growth 2, concurrency $concurrency)" "$rollout" "$succeeded"
