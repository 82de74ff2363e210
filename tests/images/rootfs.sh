#!/usr/bin/env bash
# rootfs.sh OUT [DEB_CACHE_DIR]
#
# Makes the base root file system of the test images: Debian bookworm, debootstrap minbase plus
# the packages of packages.txt, trimmed (no data directories, caches, documentation, JIT
# compiler or unused MariaDB tools), packed as a zstd-compressed tar at OUT for `docker import`.
# DEB_CACHE_DIR keeps downloaded .deb files between runs (debootstrap --cache-dir).
# Called by build.sh; its content and packages.txt make the base image's tag.
set -euo pipefail

die() { echo "rootfs.sh: error: $*" >&2; exit 1; }
[ $# -ge 1 ] || die "usage: rootfs.sh OUT [DEB_CACHE_DIR]"
out=$1
debs=${2:-}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
suite=bookworm
mirror=${STACKBOX_DEBIAN_MIRROR:-http://deb.debian.org/debian}

[ "$(id -u)" = 0 ] || die "debootstrap needs root"
command -v debootstrap >/dev/null || die "debootstrap is missing (apt-get install debootstrap)"
command -v zstd >/dev/null || die "zstd is missing (apt-get install zstd)"

packages=$(sed -e 's/#.*//' "$here/packages.txt" | tr -s ' \t\n' '\n' | grep . | paste -sd, -)

work=$(mktemp -d "${TMPDIR:-/tmp}/stackbox-rootfs.XXXXXX")
root=$work/root
cleanup() {
    local status=$? m
    # debootstrap mounts /proc and /sys in the target; never let rm reach into a mount.
    for m in $(findmnt -rn -o TARGET | grep -F "$root" | sort -r || true); do
        umount -l "$m" 2>/dev/null || true
    done
    rm -rf --one-file-system "$work" || true
    exit "$status"
}
trap cleanup EXIT

if [ -n "$debs" ]; then mkdir -p "$debs"; fi
echo "rootfs.sh: debootstrap $suite (minbase + $(tr ',' ' ' <<<"$packages")) from $mirror" >&2
if ! debootstrap --variant=minbase --include="$packages" ${debs:+--cache-dir="$debs"} \
    "$suite" "$root" "$mirror" >"$work/debootstrap.log" 2>&1; then
    tail -n 40 "$work/debootstrap.log" >&2
    die "debootstrap failed (full log above, last 40 lines)"
fi

# Data directories: the entrypoints initialise them on first start, as the official images do.
rm -rf "$root"/var/lib/mysql/* "$root"/var/lib/postgresql/* "$root"/etc/postgresql/*
# Caches, package lists, documentation, translations.
rm -rf "$root"/var/cache/apt/* "$root"/var/lib/apt/lists/* "$root"/var/cache/debconf/*-old \
    "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* \
    "$root"/usr/share/locale/* "$root"/usr/share/i18n/* "$root"/var/log/*.log
# PostgreSQL's LLVM JIT (~130 MB, loaded only for JIT; the postgres image turns jit off).
rm -rf "$root"/usr/lib/x86_64-linux-gnu/libLLVM-*.so* "$root"/usr/lib/x86_64-linux-gnu/libz3.so* \
    "$root"/usr/lib/postgresql/*/lib/llvmjit* "$root"/usr/lib/postgresql/*/lib/bitcode
# MariaDB tools nothing here runs (5 MB each).
for tool in aria_chk aria_dump_log aria_ftdump aria_pack aria_read_log myisam_ftdump myisamchk \
    myisamlog myisampack mariadb-binlog mysqlbinlog mariadb-conv mariadb-import mysqlimport \
    mariadb-plugin mysql_plugin mariadb-show mysqlshow mariadb-slap mysqlslap \
    mariadb-tzinfo-to-sql mysql_tzinfo_to_sql innochecksum perror; do
    rm -f "$root/usr/bin/$tool"
done
# Host-specific files (the engine provides them) and the package's generated TLS key.
rm -f "$root"/etc/hostname "$root"/etc/resolv.conf "$root"/etc/ssl/private/ssl-cert-snakeoil.key \
    "$root"/etc/ssl/certs/ssl-cert-snakeoil.pem

mkdir -p "$(dirname "$out")"
tar -C "$root" --numeric-owner --xattrs --exclude='./dev/*' --exclude='./proc/*' \
    --exclude='./sys/*' --exclude='./run/*' -cf - . | zstd -q -T0 -3 -f -o "$out.partial"
mv -f "$out.partial" "$out"
echo "rootfs.sh: wrote $out ($(du -h "$out" | cut -f1))" >&2
