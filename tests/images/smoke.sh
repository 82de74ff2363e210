#!/usr/bin/env bash
# tests/images/smoke.sh [CLIENT.toml...]
#
# Deploys rendered bundles on the local images and checks them, one client at a time (default:
# examples/starter.toml, professional.toml and enterprise.toml):
#   1. build.sh builds the images and writes the catalog; the CLI (cargo build, or $STACKBOX_BIN)
#      renders the client with `--images CATALOG` into a temporary root;
#   2. `docker-compose up -d` in the bundle (the external edge network is created if missing);
#   3. every container must report healthy within $SMOKE_TIMEOUT seconds (default 90), without
#      a restart;
#   4. the website answers with the company name at the nginx container's address on the web
#      network;
#   5. each app user of config/mysql/init.sh logs into MariaDB from another container on the data
#      network with its password from .env, and is refused another app's database; the same for
#      the roles of config/postgres/init.sh on PostgreSQL;
#   6. every container stops within $SMOKE_STOP_SECONDS (default 3) of SIGTERM;
#   7. `docker-compose down -v` (anything else attached to the client's networks, such as an edge
#      router, is disconnected first) and nothing of the client may remain.
# Everything it created (containers, networks, volumes, files) is removed, also on failure; the
# images stay. Needs root, docker, docker-compose, cargo (unless STACKBOX_BIN) and python3.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
timeout=${SMOKE_TIMEOUT:-90}
stop_limit=${SMOKE_STOP_SECONDS:-3}
say() { printf 'smoke: %s\n' "$*" >&2; }
fail() { printf 'smoke: FAIL: %s\n' "$*" >&2; exit 1; }

command -v docker-compose >/dev/null || fail "docker-compose is missing (apt-get install docker-compose)"
command -v python3 >/dev/null || fail "python3 is missing"
if [ $# -eq 0 ]; then
    set -- "$repo/examples/starter.toml" "$repo/examples/professional.toml" "$repo/examples/enterprise.toml"
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/stackbox-smoke.XXXXXX")
project=
bundle=
override=
edge_created=
compose() {
    docker-compose -p "$project" --project-directory "$bundle" -f "$bundle/docker-compose.yml" \
        ${override:+-f "$override"} "$@"
}
# `down -v`, then removes whatever of the client is left: everything carries its unique id as a
# label. A container from outside the bundle (an edge router joining the client's edge network)
# is disconnected from the client's networks, or they could not be removed.
remove_client() {
    local filter="label=io.stackbox.client=$project" network container
    compose down -v --remove-orphans >"$work/down.log" 2>&1 || true
    docker ps -aq --filter "$filter" | xargs -r docker rm -f >/dev/null 2>&1 || true
    for network in $(docker network ls -q --filter "$filter"); do
        for container in $(docker network inspect -f '{{range $id, $_ := .Containers}}{{$id}} {{end}}' "$network"); do
            docker network disconnect -f "$network" "$container" >/dev/null 2>&1 || true
        done
        docker network rm "$network" >/dev/null 2>&1 || true
    done
    docker volume ls -q --filter "$filter" | xargs -r docker volume rm >/dev/null 2>&1 || true
}
# What is left of the client (nothing, after remove_client).
leftovers() {
    local filter="label=io.stackbox.client=$project"
    { docker ps -aq --filter "$filter"; docker network ls -q --filter "$filter"; docker volume ls -q --filter "$filter"; } | wc -l
}
cleanup() {
    local status=$?
    if [ -n "$project" ] && [ -n "$bundle" ]; then remove_client; fi
    if [ -n "$edge_created" ]; then docker network rm "$edge_created" >/dev/null 2>&1 || true; fi
    rm -rf "$work"
    exit "$status"
}
trap cleanup EXIT

catalog=$work/images.toml
"$here/build.sh" "$catalog"

if [ -n "${STACKBOX_BIN:-}" ]; then
    bin=$STACKBOX_BIN
else
    say "building the CLI"
    (cd "$repo" && cargo build -q)
    bin=${CARGO_TARGET_DIR:-$repo/target}/debug/stackbox
fi
[ -x "$bin" ] || fail "no stackbox binary at $bin"

json() { python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$@"; }
toml() { python3 -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))[sys.argv[2]])' "$@"; }
envvar() { sed -n "s/^$2=//p" "$1/.env" | head -n 1; }

# Waits until every container of the project is healthy; prints each one's time to healthy.
wait_healthy() {
    local start=$SECONDS ids id name state restarts pending
    declare -A seen=()
    while :; do
        mapfile -t ids < <(docker ps -aq --filter "label=com.docker.compose.project=$project")
        [ ${#ids[@]} -gt 0 ] || fail "$project has no containers"
        pending=0
        for id in "${ids[@]}"; do
            read -r name state restarts < <(docker inspect -f \
                '{{.Name}} {{if .State.Health}}{{.State.Health.Status}}{{else}}no-healthcheck{{end}} {{.RestartCount}}' "$id")
            name=${name#/}
            [ "$restarts" = 0 ] || { docker logs --tail 30 "$id" >&2 || true; fail "$name restarted"; }
            if [ "$state" = healthy ]; then
                [ -n "${seen[$name]:-}" ] || { seen[$name]=1; say "  healthy after $((SECONDS - start))s: $name"; }
            else
                pending=$((pending + 1))
                if [ $((SECONDS - start)) -ge "$timeout" ]; then
                    docker inspect -f '{{range .State.Health.Log}}{{.Output}}{{end}}' "$id" >&2 || true
                    docker logs --tail 30 "$id" >&2 || true
                    fail "$name is $state after ${timeout}s"
                fi
            fi
        done
        [ "$pending" -gt 0 ] || break
        sleep 1
    done
}

# run_on NETWORK IMAGE COMMAND... : a throwaway container on the client's network.
run_on() {
    local network=$1 image=$2
    shift 2
    docker run --rm --network "$network" --entrypoint "" "$image" "$@"
}

check_mariadb_users() {
    local sql=$bundle/config/mysql/init.sh image users user password other
    [ -f "$sql" ] || return 0
    image=$(sed -n 's/^mysql = "\(.*\)"$/\1/p' "$catalog")
    mapfile -t users < <(sed -n "s/^CREATE USER IF NOT EXISTS '\([a-z]*\)'@'%'.*/\1/p" "$sql")
    [ ${#users[@]} -gt 0 ] || fail "no app users in $sql"
    for user in "${users[@]}"; do
        password=$(envvar "$bundle" "${user^^}_DB_PASSWORD")
        [ -n "$password" ] || fail "no ${user^^}_DB_PASSWORD in .env"
        # The script takes the password from the container's environment, never holds it.
        ! grep -qF "$password" "$sql" || fail "init.sh holds the password of $user"
        run_on "${project}_data" "$image" env MYSQL_PWD="$password" mariadb --no-defaults -h mysql \
            -u "$user" -D "$user" -N -B -e 'SELECT CURRENT_USER()' >/dev/null ||
            fail "MariaDB user $user cannot log into $user"
        for other in "${users[@]}"; do
            [ "$other" != "$user" ] || continue
            if run_on "${project}_data" "$image" env MYSQL_PWD="$password" mariadb --no-defaults -h mysql \
                -u "$user" -D "$other" -e 'SELECT 1' >/dev/null 2>&1; then
                fail "MariaDB user $user can open database $other"
            fi
        done
        say "  MariaDB: $user logs in from another container (and only into its database)"
    done
}

check_postgres_roles() {
    local sql=$bundle/config/postgres/init.sh image roles role password other
    [ -f "$sql" ] || return 0
    image=$(sed -n 's/^postgres = "\(.*\)"$/\1/p' "$catalog")
    mapfile -t roles < <(sed -n "s/^ALTER ROLE \([a-z]*\) WITH LOGIN PASSWORD .*/\1/p" "$sql")
    ! grep -qF "PASSWORD '" "$sql" || fail "init.sh holds a literal password"
    [ ${#roles[@]} -gt 0 ] || fail "no app roles in $sql"
    for role in "${roles[@]}"; do
        password=$(envvar "$bundle" "${role^^}_DB_PASSWORD")
        [ -n "$password" ] || fail "no ${role^^}_DB_PASSWORD in .env"
        run_on "${project}_data" "$image" env PGPASSWORD="$password" psql -X -h postgres -U "$role" \
            -d "$role" -tAc 'SELECT current_user' >/dev/null ||
            fail "PostgreSQL role $role cannot log into $role"
        for other in "${roles[@]}"; do
            [ "$other" != "$role" ] || continue
            if run_on "${project}_data" "$image" env PGPASSWORD="$password" psql -X -h postgres \
                -U "$role" -d "$other" -tAc 'SELECT 1' >/dev/null 2>&1; then
                fail "PostgreSQL role $role can open database $other"
            fi
        done
        say "  PostgreSQL: $role logs in from another container (and only into its database)"
    done
}

check_stop_times() {
    local ids id name
    mapfile -t ids < <(docker ps -q --filter "label=com.docker.compose.project=$project")
    for id in "${ids[@]}"; do
        (
            start=$(date +%s%N)
            docker stop -t 10 "$id" >/dev/null
            ms=$((($(date +%s%N) - start) / 1000000))
            name=$(docker inspect -f '{{.Name}}' "$id")
            echo "${name#/} $ms"
        ) &
    done >"$work/stops"
    wait
    while read -r name ms; do
        [ "$ms" -le $((stop_limit * 1000)) ] || fail "$name took ${ms}ms to stop on SIGTERM"
    done <"$work/stops"
    say "  stopped on SIGTERM within ${stop_limit}s: $(sort -k2 -n "$work/stops" | awk '{ printf "%s %sms, ", $1, $2 }' | sed 's/, $//')"
}

# The engine may be unable to raise the open-files limit to what the stack asks for (ClickHouse
# 262144, Plausible 65535): a daemon whose own hard limit is lower and that lacks CAP_SYS_RESOURCE
# (as in some sandboxes) fails such containers with "error setting rlimit type 7". Only then the
# limits are lowered to the engine's hard limit, in a compose override file, and said so.
engine_nofile=
cap_nofile() {
    local wanted base
    wanted=$(python3 - "$bundle/docker-compose.yml" <<'PY'
import sys, yaml
hard = [0]
for s in yaml.safe_load(open(sys.argv[1]))["services"].values():
    n = (s.get("ulimits") or {}).get("nofile")
    hard.append(int(n) if isinstance(n, (int, str)) else int((n or {}).get("hard", 0)))
print(max(hard))
PY
)
    [ "$wanted" -gt 0 ] || return 0
    base=$(sed -n 's/^mysql = "\(.*\)"$/\1/p' "$catalog")
    if docker run --rm --ulimit "nofile=$wanted:$wanted" --entrypoint true "$base" >/dev/null 2>&1; then
        return 0
    fi
    [ -n "$engine_nofile" ] || engine_nofile=$(docker run --rm --entrypoint sh "$base" -c 'ulimit -Hn')
    say "  NOTE: this engine cannot raise nofile to $wanted (its hard limit is $engine_nofile);" \
        "lowering the stack's nofile ulimits to $engine_nofile for this test"
    override=$work/nofile-override.yml
    python3 - "$bundle/docker-compose.yml" "$engine_nofile" >"$override" <<'PY'
import sys, yaml
limit = int(sys.argv[2])
services = {}
for name, s in yaml.safe_load(open(sys.argv[1]))["services"].items():
    nofile = (s.get("ulimits") or {}).get("nofile")
    if isinstance(nofile, (int, str)):
        nofile = {"soft": int(nofile), "hard": int(nofile)}
    if nofile and int(nofile.get("hard", 0)) > limit:
        services[name] = {"ulimits": {"nofile": {"soft": min(int(nofile.get("soft", limit)), limit), "hard": limit}}}
print(yaml.safe_dump({"services": services}))
PY
}

for client in "$@"; do
    say "== $(basename "$client")"
    "$bin" --images "$catalog" render "$client" --out "$work/root" --json >"$work/render.json"
    project=$(json "$work/render.json" client_id)
    bundle=$(json "$work/render.json" path)
    company=$(toml "$bundle/client.toml" company_name)
    edge=$(python3 -c 'import sys, yaml
for n in (yaml.safe_load(open(sys.argv[1])).get("networks") or {}).values():
    if n.get("external"): print(n["name"])' "$bundle/docker-compose.yml") ||
        fail "cannot read the networks of $bundle/docker-compose.yml (python3-yaml?)"
    for network in $edge; do
        if ! docker network inspect "$network" >/dev/null 2>&1; then
            docker network create "$network" >/dev/null
            edge_created=$network
            say "  created the external network $network"
        fi
    done
    cap_nofile
    started=$SECONDS
    compose up -d >"$work/up.log" 2>&1 || { cat "$work/up.log" >&2; fail "docker-compose up failed"; }
    wait_healthy
    say "  all $(docker ps -q --filter "label=com.docker.compose.project=$project" | wc -l) containers healthy $((SECONDS - started))s after up"

    website=$(docker ps -q --filter "label=com.docker.compose.project=$project" \
        --filter label=com.docker.compose.service=website)
    ip=$(docker inspect -f "{{(index .NetworkSettings.Networks \"${project}_web\").IPAddress}}" "$website")
    curl -fsS --max-time 5 "http://$ip/" | grep -qF "$company" || fail "the website at $ip does not show $company"
    say "  website at http://$ip/ shows \"$company\""
    check_mariadb_users
    check_postgres_roles
    check_stop_times
    remove_client
    [ "$(leftovers)" = 0 ] || { cat "$work/down.log" >&2; fail "down -v left containers, networks or volumes"; }
    project='' override=''
    say "  down -v: removed"
done
say "all clients passed"
