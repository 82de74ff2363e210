#!/bin/bash
# healthcheck.sh of the mariadb image, for the tests' MariaDB (the options the stack uses).
#
#   --connect              a TCP connection to 127.0.0.1:3306 logs in as the `healthcheck` user
#                          (stricter than upstream, which accepts "access denied" as connected).
#                          The temporary server of the first start has no networking, so this
#                          fails until initialisation, init scripts included, is over.
#   --innodb_initialized   InnoDB is available (information_schema.ENGINES).
#   --defaults-extra-file=F, --defaults-file=F   credentials (default
#                          /var/lib/mysql/.my-healthcheck.cnf, written at first start)
#   --su-mysql, --su=USER, --no-defaults, --verbose   accepted.
# Exit status 0 only when every requested test passes.
set -uo pipefail

defaults=/var/lib/mysql/.my-healthcheck.cnf
verbose=
tests=()
for arg in "$@"; do
    case $arg in
        --connect) tests+=(connect) ;;
        --innodb_initialized | --innodb-initialized) tests+=(innodb_initialized) ;;
        --defaults-extra-file=* | --defaults-file=*) defaults=${arg#*=} ;;
        --su-mysql | --su=* | --no-defaults | --datadir=*) ;;
        --verbose) verbose=1 ;;
        *) echo "healthcheck.sh: unknown or unsupported option $arg" >&2; exit 2 ;;
    esac
done
[ ${#tests[@]} -gt 0 ] || { echo "healthcheck.sh: no test given (--connect, --innodb_initialized)" >&2; exit 2; }
[ -r "$defaults" ] || { echo "healthcheck.sh: $defaults missing: not initialised yet" >&2; exit 1; }

query() {
    mariadb --defaults-extra-file="$defaults" --protocol=tcp -h 127.0.0.1 -P 3306 \
        --connect-timeout=3 -N -B -e "$1"
}

for test in "${tests[@]}"; do
    case $test in
        connect) out=$(query 'SELECT 1' 2>&1) ;;
        innodb_initialized)
            out=$(query "SELECT 1 FROM information_schema.ENGINES WHERE engine = 'innodb' AND support IN ('YES', 'DEFAULT', 'ENABLED')" 2>&1)
            ;;
    esac
    if [ "$out" != 1 ]; then
        echo "healthcheck $test failed: $out" >&2
        exit 1
    fi
    [ -z "$verbose" ] || echo "healthcheck $test successful"
done
exit 0
