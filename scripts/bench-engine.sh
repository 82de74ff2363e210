#!/usr/bin/env bash
# Benchmark: stackbox against Debian's docker-compose, same bundle, same images, same run.
#
#   scripts/bench-engine.sh [CLIENTS_FOR_STATUS_ALL]   (default 50)
#
# 1. deploy until every service is healthy: `stackbox deploy` vs `docker-compose up -d`
#    followed by polling `docker inspect` until every container is healthy;
# 2. status of one client: `stackbox status ID` vs `docker-compose ps` (median of 10);
# 3. `stackbox status --all` with N starter clients on the engine (median of 10).
# Needs the engine and the local test images (scripts/start-engine.sh, tests/images/build.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
clients="${1:-50}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/stackbox/target}"
cache="${STACKBOX_CACHE_DIR:-$HOME/.cache/stackbox}"
scripts/start-engine.sh
tests/images/build.sh "$cache/test-images.toml" >&2
cargo build --release --locked -q
bin="$CARGO_TARGET_DIR/release/stackbox"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export STACKBOX_IMAGES="$cache/test-images.toml"
export STACKBOX_OPERATOR_CONFIG="$work/stackbox.toml"
limit=$(ulimit -Hn); [ "$limit" = unlimited ] && limit=1048576
printf '[ingress]\nmode = "edge"\nedge_router = "stackbox-bench-edge"\nhttp_port = 19080\nhttps_port = 19443\n[host]\nmax_open_files = %s\n' "$limit" >"$STACKBOX_OPERATOR_CONFIG"

now() { date +%s.%N; }
elapsed() { echo "$(now) - $1" | bc; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }

id=$("$bin" render examples/professional.toml --out "$work/root" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["client_id"])')
bundle="$work/root/clients/$id"
# The edge router is shared by every client of a host: start it outside the timed runs.
"$bin" deploy examples/starter.toml --out "$work/warm" >/dev/null 2>&1
warm=$(ls "$work/warm/clients" | grep -v '^\.')
"$bin" destroy "$warm" --yes --out "$work/warm" >/dev/null

all_healthy() {
  local ids
  ids=$(docker ps -aq --filter "label=com.docker.compose.project=$id")
  [ -n "$ids" ] || return 1
  ! docker inspect -f '{{.State.Health.Status}}' $ids | grep -vq '^healthy$'
}

echo "== deploy until healthy: professional plan, $(grep -c '^  [a-z]' <(sed -n '/^services:/,/^networks:/p' "$bundle/docker-compose.yml")) services"
start=$(now)
(cd "$bundle" && docker-compose -p "$id" up -d >/dev/null 2>&1)
until all_healthy; do sleep 0.2; done
compose_deploy=$(elapsed "$start")
(cd "$bundle" && docker-compose -p "$id" ps >/dev/null)
compose_ps=$(for _ in $(seq 10); do s=$(now); (cd "$bundle" && docker-compose -p "$id" ps >/dev/null); elapsed "$s"; done | median)
(cd "$bundle" && docker-compose -p "$id" down -v >/dev/null 2>&1)

start=$(now)
"$bin" deploy "$bundle/client.toml" --out "$work/root" >/dev/null 2>&1
stackbox_deploy=$(elapsed "$start")
stackbox_status=$(for _ in $(seq 10); do s=$(now); "$bin" status "$id" --out "$work/root" >/dev/null; elapsed "$s"; done | median)

printf '%-44s %8.2f s\n' "docker-compose up -d + poll until healthy" "$compose_deploy"
printf '%-44s %8.2f s   (%.2fx docker-compose)\n' "stackbox deploy (returns when healthy)" "$stackbox_deploy" "$(echo "$stackbox_deploy / $compose_deploy" | bc -l)"
printf '%-44s %8.3f s\n' "docker-compose ps (median of 10)" "$compose_ps"
printf '%-44s %8.3f s   (%.2fx docker-compose)\n' "stackbox status (median of 10)" "$stackbox_status" "$(echo "$stackbox_status / $compose_ps" | bc -l)"
"$bin" destroy "$id" --yes --out "$work/root" >/dev/null

echo "== status --all with $clients starter clients on the engine"
for i in $(seq 1 "$clients"); do
  printf 'company_name = "Bench Client %s"\ndomain = "bench%s.example.com"\nplan = "starter"\nadmin_email = "owner@bench%s.example.com"\n' "$i" "$i" "$i" >"$work/bench$i.toml"
done
seq 1 "$clients" | xargs -P 4 -I{} sh -c "'$bin' deploy '$work/bench{}.toml' --out '$work/many' >'$work/deploy{}.log' 2>&1 || { echo 'deploy {} failed:' >&2; tail -n 3 '$work/deploy{}.log' >&2; }"
containers=$(docker ps -q --filter label=io.stackbox.client | wc -l)
status_all=$(for _ in $(seq 10); do s=$(now); "$bin" status --all --out "$work/many" >/dev/null; elapsed "$s"; done | median)
printf '%-44s %8.3f s   (%s containers)\n' "stackbox status --all (median of 10)" "$status_all" "$containers"
for dir in "$work/many/clients"/*/; do
  "$bin" destroy "$(basename "$dir")" --yes --out "$work/many" >/dev/null 2>&1 &
  while [ "$(jobs -r | wc -l)" -ge 4 ]; do sleep 0.2; done
done
wait
docker rm -f stackbox-bench-edge >/dev/null 2>&1 || true
docker network rm stackbox-bench-edge >/dev/null 2>&1 || true
