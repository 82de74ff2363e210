#!/usr/bin/env bash
# Benchmark: availability of a stateless service while it is replaced: stackbox against a
# stop-first restart of the same container by the engine, same client, same run.
#
#   scripts/bench-availability.sh
#
# A starter client is deployed; a loop inside its network requests the website under its service
# alias every 50 ms. The client's brand colour changes (the website's page changes, so its
# container is replaced) and `stackbox deploy` applies it (start-first: the new container healthy
# before the old one leaves); then the same website is restarted by the engine, the floor of any
# stop-first replacement. Prints requests made and failed during each.
# Needs the engine and the local test images (scripts/start-engine.sh, tests/images/build.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
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
printf '[ingress]\nmode = "edge"\nedge_router = "stackbox-bench-availability-edge"\nhttp_port = 19180\nhttps_port = 19543\n[host]\nmax_open_files = %s\n' "$limit" >"$STACKBOX_OPERATOR_CONFIG"
client() {
  printf 'company_name = "Availability Bakery"\ndomain = "availability.example.com"\nplan = "starter"\nadmin_email = "owner@availability.example.com"\nbrand_color = "%s"\n' "$1" >"$work/client.toml"
}
client "#112233"
id=$("$bin" deploy "$work/client.toml" --out "$work/root" --json | python3 -c 'import json,sys; print([json.loads(l) for l in sys.stdin if l.startswith("{")][-1]["client_id"])')
bundle="$work/root/clients/$id"
router="$id-traefik-1"
cleanup() {
  "$bin" destroy "$id" --yes --out "$work/root" >/dev/null 2>&1 || true
  docker rm -f stackbox-bench-availability-edge >/dev/null 2>&1 || true
  docker network rm stackbox-bench-availability-edge >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

# Runs "$@" while polling; prints "requests failed seconds".
measure() {
  docker exec "$router" rm -f /tmp/stop-polling
  docker exec "$router" sh -c 'while [ ! -e /tmp/stop-polling ]; do
      if wget -q -O /dev/null -T 2 http://website/; then echo ok; else echo fail; fi; sleep 0.05; done' >"$work/poll" &
  local poller=$!
  sleep 1
  local start end
  start=$(date +%s.%N)
  "$@" >"$work/change.log" 2>&1 || { cat "$work/change.log" >&2; return 1; }
  end=$(date +%s.%N)
  sleep 1
  docker exec "$router" touch /tmp/stop-polling
  wait "$poller"
  echo "$(grep -c . "$work/poll") $(grep -c '^fail$' "$work/poll" || true) $(echo "$end - $start" | bc)"
}

client "#aa3300"
read -r s_total s_failed s_seconds < <(measure "$bin" deploy "$work/client.toml" --out "$work/root")
# The peer: what any stop-first replacement costs at least, the same container restarted by
# the engine (`docker restart`; Debian's docker-compose 1.x cannot manage the containers, as it
# needs its own version label, and would stop first too).
read -r c_total c_failed c_seconds < <(measure docker restart "$id-website-1")

echo "== website replaced while requested every 50 ms (starter client)"
printf '%-52s %5s requests, %3s failed, change took %5.2f s\n' "stackbox deploy (start-first)" "$s_total" "$s_failed" "$s_seconds"
printf '%-52s %5s requests, %3s failed, change took %5.2f s\n' "docker restart of the website (stop-first floor)" "$c_total" "$c_failed" "$c_seconds"
