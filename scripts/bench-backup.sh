#!/usr/bin/env bash
# Benchmark: `stackbox backup` against what peers' backup scripts do (Coolify/Dokploy style:
# `mariadb-dump | gzip` + `tar czf` of every data volume) and against restic alone on the same
# files; same client, same data, same run.
#
#   scripts/bench-backup.sh [DB_MB] [FILES_MB] [STARTER_MB]   (default 400 600 100)
#
# 1. A professional client (examples/professional.toml under its own domain) with DB_MB of rows
#    in a MariaDB table of the `nextcloud` database (text, numbers and random bytes, built by the
#    server) and FILES_MB of files in its Nextcloud volume (random media, text documents, many
#    small files).
# 2. Each method twice, the second time with nothing changed: wall time and bytes on disk
#    (`du -sb` of the repository or output folder; for the restic repositories also the
#    `data_added` restic reports).
#    - stackbox: `stackbox backup create ID --json` (dumps, volumes, upload, `restic check`);
#    - peers: `mariadb-dump --single-transaction --all-databases | gzip`, `pg_dumpall | gzip`
#      and `tar czf` of each data volume's mountpoint, into a new folder per run;
#    - restic alone: the same two dumps as plain files, then `restic backup` of them and of the
#      same volume mountpoints into a separate repository (no check).
# 3. A starter client with STARTER_MB of data: `stackbox backup create`, then a full
#    `stackbox backup restore ID --yes` and a `stackbox backup verify ID`, timed.
# Prints a Markdown table on stdout, progress on stderr. Needs the engine, the local test images
# (scripts/start-engine.sh, tests/images/build.sh), restic and python3. Removes everything it
# made, also what a killed earlier run left behind.
set -euo pipefail
cd "$(dirname "$0")/.."
db_mb="${1:-400}"
files_mb="${2:-600}"
starter_mb="${3:-100}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/stackbox/target}"
cache="${STACKBOX_CACHE_DIR:-$HOME/.cache/stackbox}"
edge=stackbox-bench-backup-edge
prefix=benchbackup # the slug of both clients' company names
work="${TMPDIR:-/tmp}/stackbox-bench-backup"
root="$work/root"

log() { printf '[bench-backup %s] %s\n' "$(date +%T)" "$*" >&2; }
now() { date +%s.%N; }
elapsed() { echo "$(now) - $1" | bc; }
bytes() { du -sb "$1" | cut -f1; }
mb() { awk -v b="$1" 'BEGIN { printf "%.1f MB", b / 1e6 }'; }
secs() { awk -v s="$1" 'BEGIN { printf "%.1f s", s }'; }
pct() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f %%", 100 * a / b }'; }
# The last JSON object of a command's output (its result), one field of it.
field() { python3 -c 'import json,sys
lines=[l for l in open(sys.argv[1]) if l.lstrip("0123456789. ").startswith("{")]
v=json.loads(lines[-1].split(" ",1)[1] if lines[-1][0].isdigit() else lines[-1])
for k in sys.argv[2].split("."): v=v[k]
print(v)' "$@"; }

cleanup() {
  local id
  if [ -d "$root/clients" ]; then
    for id in $(ls "$root/clients" | grep -v '^\.'); do
      "$bin" destroy "$id" --yes --delete-backups --out "$root" >/dev/null 2>&1 || true
    done
  fi
  # What a killed run left on the engine: its clients' containers, networks, volumes.
  for id in $(docker ps -a --format '{{.Label "io.stackbox.client"}}' | grep "^$prefix" | sort -u); do
    docker ps -aq --filter "label=io.stackbox.client=$id" | xargs -r docker rm -f >/dev/null
  done
  docker rm -f "$edge" >/dev/null 2>&1 || true
  docker network rm "$edge" >/dev/null 2>&1 || true
  # A client's edge link network can still have another edge router attached (seen with a
  # concurrent test's router): detached first, so the network goes.
  for kind in network volume; do
    docker "$kind" ls -q --filter label=io.stackbox.client |
      while read -r obj; do
        owner=$(docker "$kind" inspect -f '{{index .Labels "io.stackbox.client"}}' "$obj" 2>/dev/null || true)
        case "$owner" in "$prefix"*) ;; *) continue ;; esac
        if [ "$kind" = network ]; then
          for c in $(docker network inspect -f '{{range $id, $_ := .Containers}}{{$id}} {{end}}' "$obj" 2>/dev/null); do
            docker network disconnect -f "$obj" "$c" >/dev/null 2>&1 || true
          done
        fi
        docker "$kind" rm "$obj" >/dev/null 2>&1 || true
      done
  done
  rm -rf "$work"
}

command -v restic >/dev/null || { echo "bench-backup: restic is not installed (apt-get install restic)" >&2; exit 1; }
scripts/start-engine.sh
tests/images/build.sh "$cache/test-images.toml" >&2
log "release build"
cargo build --release --locked -q -p stackbox
bin="$CARGO_TARGET_DIR/release/stackbox"
cleanup
trap cleanup EXIT
mkdir -p "$work"
export STACKBOX_IMAGES="$cache/test-images.toml"
export STACKBOX_OPERATOR_CONFIG="$work/stackbox.toml"
export STACKBOX_DATA_DIR="$work/data"
unset STACKBOX_MASTER_KEY STACKBOX_DATABASE_URL
limit=$(ulimit -Hn); [ "$limit" = unlimited ] && limit=1048576
printf '[ingress]\nmode = "edge"\nedge_router = "%s"\nhttp_port = 19180\nhttps_port = 19543\n[host]\nmax_open_files = %s\n' "$edge" "$limit" >"$STACKBOX_OPERATOR_CONFIG"

# A copy of an example under its own name and domain; deployed, its id.
deploy() { # EXAMPLE NAME SLUG
  sed -e "s/^company_name = .*/company_name = \"$2\"/" -e "s/^domain = .*/domain = \"$3.example.com\"/" \
    -e "s/^admin_email = .*/admin_email = \"owner@$3.example.com\"/" "examples/$1.toml" >"$work/$3.toml"
  "$bin" deploy "$work/$3.toml" --out "$root" --json >"$work/deploy-$3.jsonl" 2>"$work/deploy-$3.err" ||
    { tail -n 20 "$work/deploy-$3.err" >&2; exit 1; }
  field "$work/deploy-$3.jsonl" client_id
}
container() { docker ps -q --filter "label=io.stackbox.client=$1" --filter "label=io.stackbox.service=$2"; }
mariadb_in() { docker exec -i "$(container "$1" mysql)" sh -c 'MYSQL_PWD="$MARIADB_ROOT_PASSWORD" exec mariadb -uroot -N -B nextcloud'; }
mountpoint() { docker volume inspect -f '{{.Mountpoint}}' "$1"; }

# ~MB of rows in nextcloud.bench_activity, made by the server: dates, addresses, amounts, a note
# of 60 words drawn at random per row (compressible) and 256 random bytes (not).
seed_database() { # CLIENT MB
  local words
  words="'invoice','customer','delivery','payment','order','pending','shipped','refund','account','contract','meeting','proposal','quote','warehouse','Paris','London','Berlin','Madrid','sent','received','approved','signed','follow-up','call','email','discount','renewal','support','ticket','priority','estimate','viewing'"
  local note i batch=20000 done_rows=0 target=$(($2 * 1000000)) size=0
  note="CONCAT_WS(' ', 'Order', seq, $(for i in $(seq 60); do printf "ELT(1 + FLOOR(RAND() * 32), %s)," "$words"; done | sed 's/,$//'))"
  mariadb_in "$1" <<'SQL'
DROP TABLE IF EXISTS bench_activity;
CREATE TABLE bench_activity (
  id INT UNSIGNED NOT NULL PRIMARY KEY,
  created_at DATETIME NOT NULL,
  account VARCHAR(80) NOT NULL,
  status VARCHAR(12) NOT NULL,
  amount DECIMAL(12,2) NOT NULL,
  note TEXT NOT NULL,
  attachment VARBINARY(1024) NOT NULL,
  KEY (account)
) ENGINE=InnoDB;
SQL
  while [ "$size" -lt "$target" ]; do
    mariadb_in "$1" <<SQL
INSERT INTO bench_activity
SELECT seq, TIMESTAMP('2024-01-01') + INTERVAL FLOOR(RAND() * 63072000) SECOND,
       CONCAT('customer', FLOOR(RAND() * 20000), '@', ELT(1 + FLOOR(RAND() * 4), 'example.com', 'mail.example', 'agency.example', 'corp.example')),
       ELT(1 + FLOOR(RAND() * 5), 'open', 'paid', 'shipped', 'refunded', 'cancelled'),
       ROUND(RAND() * 5000, 2), $note, RANDOM_BYTES(256)
FROM seq_$((done_rows + 1))_to_$((done_rows + batch));
SQL
    done_rows=$((done_rows + batch))
    size=$(echo "SELECT SUM(LENGTH(account) + LENGTH(status) + LENGTH(note) + LENGTH(attachment) + 19) FROM bench_activity WHERE id > $((done_rows - batch));" | mariadb_in "$1" | awk -v s="$size" '{ printf "%d", s + $1 }')
  done
  echo "$size $done_rows"
}

# ~MB of files in the Nextcloud volume, as a user's data folder: 54 % random media (large and
# medium files), 33 % text documents (log and CSV lines), 13 % small files (1-25 KB, two
# thirds text) that are many; written at the volume's mountpoint, owned by www-data.
seed_files() { # CLIENT MB
  local dir
  dir="$(mountpoint "$1_nextcloud-html")/data/benchuser/files"
  mkdir -p "$dir"
  python3 - "$dir" "$2" <<'PY'
import os, random, sys
root, scale = sys.argv[1], float(sys.argv[2]) / 600
rnd = random.Random(1)
words = ("invoice customer delivery payment order pending shipped refund account contract meeting "
         "proposal quote warehouse Paris London Berlin Madrid sent received approved signed follow-up "
         "call email discount renewal support ticket priority estimate viewing").split()
def text(size, csv):
    out, n = [], 0
    while n < size:
        if csv:
            line = "%d,%s,2025-%02d-%02d,%.2f,%s\n" % (rnd.randrange(10**6), rnd.choice(words),
                   rnd.randint(1, 12), rnd.randint(1, 28), rnd.random() * 5000, " ".join(rnd.choices(words, k=6)))
        else:
            line = "2025-%02d-%02d %02d:%02d:%02d INFO user%d %s id=%08x\n" % (rnd.randint(1, 12),
                   rnd.randint(1, 28), rnd.randrange(24), rnd.randrange(60), rnd.randrange(60),
                   rnd.randrange(5000), " ".join(rnd.choices(words, k=9)), rnd.getrandbits(32))
        out.append(line)
        n += len(line)
    return "".join(out).encode()[:size]
def put(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
for i in range(6):
    put("%s/Videos/site-visit-%d.mp4" % (root, i), os.urandom(int(40e6 * scale)))
for i in range(20):
    put("%s/Photos/2025/IMG_%04d.jpg" % (root, i), os.urandom(int(4e6 * scale)))
for i in range(24):
    put("%s/Documents/%s-%02d.%s" % (root, "export" if i % 2 else "server", i, "csv" if i % 2 else "log"),
        text(int(8e6 * scale), i % 2))
for i in range(int(6000 * scale)):
    size = rnd.randint(1000, 25000)
    data = os.urandom(size) if i % 3 == 0 else text(size, i % 2)
    put("%s/Notes/%02d/note-%05d.%s" % (root, i % 60, i, "bin" if i % 3 == 0 else "txt"), data)
PY
  chown -R 33:33 "$(dirname "$dir")"
  bytes "$dir"
}

# Volumes of a client that hold files (not the databases' data directories, which are dumped,
# nor Redis' cache and ClickHouse's own logs): the same set stackbox copies, plus ClickHouse's
# data directory, which the peers' scripts cannot dump and tar instead.
file_volumes() {
  docker volume ls -q --filter "label=io.stackbox.client=$1" |
    grep -Ev '_(mysql-data|postgres-data|redis-data|plausible-events-logs)$' | sort
}

peers_backup() { # CLIENT OUT_DIR
  local out=$2 volume
  mkdir -p "$out"
  docker exec "$(container "$1" mysql)" sh -c 'MYSQL_PWD="$MARIADB_ROOT_PASSWORD" exec mariadb-dump -uroot --single-transaction --all-databases' |
    gzip >"$out/mariadb-all-databases.sql.gz"
  docker exec "$(container "$1" postgres)" sh -c 'PGPASSWORD="$POSTGRES_PASSWORD" exec pg_dumpall -U postgres' |
    gzip >"$out/postgres-all.sql.gz"
  for volume in $(file_volumes "$1"); do
    tar czf "$out/$volume.tar.gz" -C "$(mountpoint "$volume")" .
  done
}

restic_backup() { # CLIENT DUMP_DIR SUMMARY_FILE
  local volume paths=()
  mkdir -p "$2"
  docker exec "$(container "$1" mysql)" sh -c 'MYSQL_PWD="$MARIADB_ROOT_PASSWORD" exec mariadb-dump -uroot --single-transaction --all-databases' \
    >"$2/mariadb-all-databases.sql"
  docker exec "$(container "$1" postgres)" sh -c 'PGPASSWORD="$POSTGRES_PASSWORD" exec pg_dumpall -U postgres' \
    >"$2/postgres-all.sql"
  for volume in $(file_volumes "$1"); do paths+=("$(mountpoint "$volume")"); done
  restic backup --json --quiet "$2" "${paths[@]}" >"$3"
}

# `stackbox backup create`, its JSON lines stamped with the time they arrived.
stackbox_backup() { # CLIENT OUT
  "$bin" backup create "$1" --out "$root" --json 2>"$2.err" |
    python3 -u -c 'import sys, time
for line in sys.stdin: sys.stdout.write("%.3f %s" % (time.time(), line))' >"$2" ||
    { tail -n 20 "$2.err" "$2" >&2; exit 1; }
}
# Where a stamped backup's time went: "dump 12.3 s, upload 4.5 s, check + retention 1.2 s".
phases() { # STAMPED_FILE START
  python3 - "$@" <<'PY'
import json, sys
start, marks = float(sys.argv[2]), []
for line in open(sys.argv[1]):
    t, text = line.split(" ", 1)
    e = json.loads(text)
    if e.get("event") == "phase" or e.get("event") == "result":
        marks.append((e.get("phase", "end"), float(t)))
names = {"dump": "dumps", "upload": "upload", "check": "check + retention"}
parts = ["start %.1f s" % (marks[0][1] - start)]
for (name, t), (_, t2) in zip(marks, marks[1:]):
    parts.append("%s %.1f s" % (names.get(name, name), t2 - t))
print(", ".join(parts))
PY
}

# --- 1. the professional client and its data -------------------------------------------------
log "deploy a professional client"
pro=$(deploy professional "Bench Backup Pro" bench-backup-pro)
log "client $pro is healthy; seeding ${db_mb} MB of rows"
start=$(now)
read -r db_bytes db_rows < <(seed_database "$pro" "$db_mb")
log "$db_rows rows, $(mb "$db_bytes") of column data, in $(secs "$(elapsed "$start")"); seeding ${files_mb} MB of files"
start=$(now)
file_bytes=$(seed_files "$pro" "$files_mb")
file_count=$(find "$(mountpoint "${pro}_nextcloud-html")/data/benchuser" -type f | wc -l)
sync
log "$file_count files, $(mb "$file_bytes"), in $(secs "$(elapsed "$start")")"
innodb_bytes=$(bytes "$(mountpoint "${pro}_mysql-data")")
volumes=$(file_volumes "$pro" | sed "s/^${pro}_//" | paste -sd, | sed 's/,/, /g')

# --- 2. each method twice ----------------------------------------------------------------------
repo="$STACKBOX_DATA_DIR/backups/$pro"
for run in 1 2; do
  log "stackbox backup create, run $run"
  start=$(now)
  stackbox_backup "$pro" "$work/stackbox-$run.jsonl"
  declare "sb_time_$run=$(elapsed "$start")"
  declare "sb_du_$run=$(bytes "$repo")"
  declare "sb_added_$run=$(field "$work/stackbox-$run.jsonl" bytes_added)"
  declare "sb_phases_$run=$(phases "$work/stackbox-$run.jsonl" "$start")"
  v="sb_phases_$run"; log "  ${!v}"
done
sb_processed=$(field "$work/stackbox-1.jsonl" bytes_processed)
sb_files=$(field "$work/stackbox-1.jsonl" files)

for run in 1 2; do
  log "peers: mariadb-dump | gzip, pg_dumpall | gzip, tar czf of each volume, run $run"
  start=$(now)
  peers_backup "$pro" "$work/peers/run-$run"
  declare "peer_time_$run=$(elapsed "$start")"
  declare "peer_du_$run=$(bytes "$work/peers/run-$run")"
done
peer_du_total=$(bytes "$work/peers")

export RESTIC_REPOSITORY="$work/restic-alone" RESTIC_PASSWORD="throwaway-bench-password" RESTIC_CACHE_DIR="$work/restic-alone-cache"
restic init --quiet >/dev/null
for run in 1 2; do
  log "restic alone: dumps to files + restic backup, run $run"
  start=$(now)
  restic_backup "$pro" "$work/restic-dumps" "$work/restic-$run.json"
  declare "restic_time_$run=$(elapsed "$start")"
  declare "restic_du_$run=$(bytes "$RESTIC_REPOSITORY")"
  declare "restic_added_$run=$(python3 -c 'import json,sys; print([json.loads(l) for l in open(sys.argv[1]) if "summary" in l][-1]["data_added"])' "$work/restic-$run.json")"
done
unset RESTIC_REPOSITORY RESTIC_PASSWORD RESTIC_CACHE_DIR
log "destroy $pro"
"$bin" destroy "$pro" --yes --delete-backups --out "$root" >/dev/null 2>&1

# --- 3. restore and verify of a starter client -------------------------------------------------
log "deploy a starter client; seeding ${starter_mb} MB"
starter=$(deploy starter "Bench Backup Starter" bench-backup-starter)
read -r s_db_bytes s_rows < <(seed_database "$starter" $((starter_mb * 4 / 10)))
s_file_bytes=$(seed_files "$starter" $((starter_mb * 6 / 10)))
sync
log "$s_rows rows ($(mb "$s_db_bytes")), $(mb "$s_file_bytes") of files; stackbox backup create"
start=$(now)
stackbox_backup "$starter" "$work/starter-backup.jsonl"
s_backup_time=$(elapsed "$start")
# Something to undo: the restore must bring back these rows and files.
echo "DELETE FROM bench_activity WHERE id <= 10000;" | mariadb_in "$starter"
rm -rf "$(mountpoint "${starter}_nextcloud-html")/data/benchuser/files/Notes"
log "stackbox backup restore --yes"
start=$(now)
"$bin" backup restore "$starter" --yes --out "$root" --json >"$work/restore.jsonl" 2>"$work/restore.err" ||
  { tail -n 20 "$work/restore.err" >&2; exit 1; }
s_restore_time=$(elapsed "$start")
rows_after=$(echo "SELECT COUNT(*) FROM bench_activity;" | mariadb_in "$starter")
files_after=$(bytes "$(mountpoint "${starter}_nextcloud-html")/data/benchuser/files")
[ "$rows_after" = "$s_rows" ] && [ "$files_after" = "$s_file_bytes" ] ||
  { echo "bench-backup: after the restore: $rows_after rows (expected $s_rows), $files_after bytes of files (expected $s_file_bytes)" >&2; exit 1; }
log "restored: $rows_after rows, $(mb "$files_after") of files; stackbox backup verify"
start=$(now)
"$bin" backup verify "$starter" --out "$root" --json >"$work/verify.jsonl" 2>"$work/verify.err" ||
  { tail -n 20 "$work/verify.err" >&2; exit 1; }
s_verify_time=$(elapsed "$start")
s_total=$(echo "$s_restore_time + $s_verify_time" | bc)

# --- the figures ---------------------------------------------------------------------------------
if [ "$(echo "$sb_added_2 * 10 < $sb_added_1" | bc)" = 1 ]; then bytes_goal=met; else bytes_goal="NOT met"; fi
if [ "$(echo "$sb_time_2 * 10 < $sb_time_1" | bc)" = 1 ]; then time_goal=met; else time_goal="NOT met"; fi
if [ "$(echo "$s_total < 120" | bc)" = 1 ]; then restore_goal=met; else restore_goal="NOT met"; fi
cat <<EOF

Professional client: $db_rows rows ($(mb "$db_bytes") of column data, InnoDB directory $(mb "$innodb_bytes")) in \`nextcloud.bench_activity\`; $file_count files ($(mb "$file_bytes")) in the Nextcloud volume. Volumes read as files: $volumes. stackbox read $(mb "$sb_processed") in $sb_files files.

| measurement | peers: \`mariadb-dump \| gzip\` + \`pg_dumpall \| gzip\` + \`tar czf\` | restic alone (dumps + volumes) | \`stackbox backup create\` | goal |
|---|---:|---:|---:|---|
| first backup: wall time | $(secs "$peer_time_1") | $(secs "$restic_time_1") | $(secs "$sb_time_1") | |
| first backup: bytes on disk | $(mb "$peer_du_1") | $(mb "$restic_du_1") | $(mb "$sb_du_1") | |
| second backup, nothing changed: wall time | $(secs "$peer_time_2") | $(secs "$restic_time_2") | $(secs "$sb_time_2") | |
| second backup: bytes added on disk (\`du\`) | $(mb "$peer_du_2") | $(mb "$((restic_du_2 - restic_du_1))") | $(mb "$((sb_du_2 - sb_du_1))") | |
| second backup: \`data_added\` reported by restic | — | $(mb "$restic_added_2") | $(mb "$sb_added_2") (\`bytes_added\`) | |
| second / first, bytes | $(pct "$peer_du_2" "$peer_du_1") | $(pct "$((restic_du_2 - restic_du_1))" "$restic_du_1") | $(pct "$sb_added_2" "$sb_added_1") (\`bytes_added\`), $(pct "$((sb_du_2 - sb_du_1))" "$sb_du_1") (\`du\`) | < 10 %: $bytes_goal |
| second / first, wall time | $(pct "$peer_time_2" "$peer_time_1") | $(pct "$restic_time_2" "$restic_time_1") | $(pct "$sb_time_2" "$sb_time_1") | < 10 %: $time_goal |
| both runs on disk | $(mb "$peer_du_total") | $(mb "$restic_du_2") | $(mb "$sb_du_2") | |

stackbox, where the time went: run 1: $sb_phases_1; run 2: $sb_phases_2.

Starter client: $s_rows rows ($(mb "$s_db_bytes")) and $(mb "$s_file_bytes") of files.

| starter client | wall time | goal |
|---|---:|---|
| \`stackbox backup create\` | $(secs "$s_backup_time") | |
| \`stackbox backup restore ID --yes\` (safety backup, restore, healthy) | $(secs "$s_restore_time") | |
| \`stackbox backup verify ID\` (check --read-data, throwaway copy, healthy, compared) | $(secs "$s_verify_time") | |
| restore + verify | $(secs "$s_total") | < 2 min: $restore_goal |
EOF
