#!/usr/bin/env bash
# tests/images/build.sh CATALOG_OUT
#
# Builds local images that stand in for StackBox's image catalog and writes an image catalog
# override to CATALOG_OUT for `stackbox --images CATALOG_OUT` (an [images] table, one tagged
# reference per catalog key). nginx, MariaDB, Redis and PostgreSQL are the real servers from
# Debian bookworm; Traefik, EspoCRM, Nextcloud, Cal.com, Plausible, ClickHouse, Mailtrain and
# MongoDB are small stand-ins that honour the stack's entrypoints and health checks
# (README.md beside this file says what each one checks).
#
# Works offline except for Debian's package mirror: the base image is a debootstrap root file
# system (packages.txt) imported with `docker import`; every other image is built FROM it.
# Caching by content:
#   - the debootstrap root file system is kept as a tarball in
#     ${STACKBOX_CACHE_DIR:-$HOME/.cache/stackbox}/images/rootfs-HASH.tar.zst, HASH covering
#     packages.txt and rootfs.sh, so a fresh engine only needs `docker import` (debootstrap, and
#     the mirror, are needed only without the tarball); the imported base image is tagged
#     stackbox-test/base:HASH2 (HASH2 also covers this script, which sets its ENV);
#   - every image is tagged stackbox-test/KEY:HASH, HASH covering all build inputs (this script,
#     rootfs.sh, packages.txt, the Dockerfiles and scripts), and is built only when the engine
#     lacks that tag.
# Environment: STACKBOX_CACHE_DIR, STACKBOX_DEBIAN_MIRROR (default http://deb.debian.org/debian).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
started=$SECONDS
say() { printf 'images: %s\n' "$*" >&2; }
die() { printf 'images: error: %s\n' "$*" >&2; exit 1; }

[ $# -eq 1 ] && [ -n "$1" ] || die "usage: tests/images/build.sh CATALOG_OUT"
out=$1
[ "$(id -u)" = 0 ] || die "run as root (debootstrap and the Docker socket need it)"
command -v docker >/dev/null || die "docker is missing (apt-get install docker.io)"
docker info >/dev/null 2>&1 ||
    die "the Docker engine does not answer (start it: nohup dockerd >/tmp/dockerd.log 2>&1 &)"
command -v zstd >/dev/null || die "zstd is missing (apt-get install zstd)"

# The catalog keys (ImageKey::key in crates/stackbox-core/src/plan.rs), one image directory each.
keys=(traefik nginx mysql redis postgres espocrm nextcloud calcom plausible clickhouse mailtrain mongo)

cache=${STACKBOX_CACHE_DIR:-$HOME/.cache/stackbox}/images
mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9 # one build at a time on this machine

# hash FILE... : a short hash of the files' names, modes and contents (paths relative to here).
hash_files() {
    (
        cd "$here"
        for f in "$@"; do
            printf '%s %s %s\n' "$f" "$(stat -c %a "$f")" "$(sha256sum <"$f" | cut -c1-64)"
        done
    ) | sha256sum | cut -c1-12
}
mapfile -t inputs < <(cd "$here" && find . -type f ! -name '*.md' ! -name smoke.sh | LC_ALL=C sort)
[ ${#inputs[@]} -gt 0 ] || die "no build inputs in $here"
# The images copy scripts with their mode; a checkout that lost the executable bit would give
# images whose entrypoints cannot start.
for f in "${inputs[@]}"; do
    if [ "$(head -c 2 "$here/$f")" = '#!' ] && [ ! -x "$here/$f" ]; then
        die "$here/${f#./} is a script but not executable (chmod +x it)"
    fi
done
rootfs_key=$(hash_files ./packages.txt ./rootfs.sh)   # the debootstrap tarball
base_key=$(hash_files ./packages.txt ./rootfs.sh ./build.sh) # + how this script imports it
tag=$(hash_files "${inputs[@]}")
base=stackbox-test/base:$base_key

# The base image: cached tarball, else debootstrap.
if docker image inspect "$base" >/dev/null 2>&1; then
    say "base $base: present"
else
    tarball=$cache/rootfs-$rootfs_key.tar.zst
    if [ -f "$tarball" ]; then
        say "base: cached root file system $tarball"
    else
        command -v debootstrap >/dev/null ||
            die "debootstrap is missing (apt-get install debootstrap); it makes the base root file system"
        say "base: debootstrap (a minute or two; .debs cached in $cache/debs)"
        t=$SECONDS
        "$here/rootfs.sh" "$tarball" "$cache/debs"
        say "base: root file system ready in $((SECONDS - t))s"
        # Tarballs of older inputs are of no use any more.
        find "$cache" -maxdepth 1 -name 'rootfs-*.tar.zst' ! -name "rootfs-$rootfs_key.tar.zst" -delete
    fi
    t=$SECONDS
    zstd -dc "$tarball" | docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'CMD ["bash"]' \
        --message "StackBox test base: Debian bookworm minbase + packages.txt" \
        - "$base" >/dev/null || die "docker import of $tarball failed"
    say "base $base: imported in $((SECONDS - t))s"
fi

# The images, built in parallel (two at a time per core is plenty; each is a few COPY steps).
logs=$(mktemp -d "${TMPDIR:-/tmp}/stackbox-images.XXXXXX")
trap 'rm -rf "$logs"' EXIT
built=()
pids=()
for key in "${keys[@]}"; do
    [ -f "$here/$key/Dockerfile" ] || die "missing $here/$key/Dockerfile"
    image=stackbox-test/$key:$tag
    if docker image inspect "$image" >/dev/null 2>&1; then
        continue
    fi
    # The classic builder: no BuildKit or buildx needed, and FROM a local image never pulls.
    DOCKER_BUILDKIT=0 docker build --quiet --build-arg BASE="$base" \
        --label "io.stackbox.test-inputs=$tag" -t "$image" -f "$here/$key/Dockerfile" "$here" \
        >"$logs/$key.log" 2>&1 &
    pids+=($!)
    built+=("$key")
done
if [ ${#built[@]} -gt 0 ]; then
    say "building ${built[*]} (tag $tag)"
    failed=()
    for i in "${!pids[@]}"; do
        wait "${pids[$i]}" || failed+=("${built[$i]}")
    done
    for key in "${failed[@]}"; do
        say "docker build of $key failed:"
        sed 's/^/  /' "$logs/$key.log" >&2
    done
    [ ${#failed[@]} -eq 0 ] || die "could not build ${failed[*]}"
fi

mkdir -p "$(dirname "$out")"
{
    echo "# Generated by tests/images/build.sh: local test images (inputs $tag), not for production."
    echo "[images]"
    for key in "${keys[@]}"; do
        echo "$key = \"stackbox-test/$key:$tag\""
    done
} >"$out.tmp.$$"
mv -f "$out.tmp.$$" "$out"
say "catalog $out: ${#keys[@]} images tagged $tag (${#built[@]} built) in $((SECONDS - started))s"
