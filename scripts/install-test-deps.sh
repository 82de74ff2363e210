#!/usr/bin/env bash
# Installs what the test suite uses, from Debian and PyPI, on a fresh machine (idempotent).
# The tests judge rendered files with real tools: docker-compose, nginx, php, MariaDB,
# PostgreSQL, and the published JSON schemas through Python's jsonschema; the lifecycle
# tests run a real Docker engine (docker.io) on images built with debootstrap; the README's
# quickstart test runs its curl and jq commands.
set -euo pipefail

packages=(docker.io docker-compose debootstrap zstd nginx openssl iproute2 php-cli mariadb-server mariadb-client postgresql restic curl jq prometheus)
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# moto's server stands in for AWS (issue 5: ACM, RDS, Secrets Manager, ELBv2, CloudFront,
# Route53) and aiosmtpd is a real SMTP server for the e-mail tests; both run on loopback.
if ! python3 -c 'import jsonschema, yaml, moto, aiosmtpd, flask_cors' 2>/dev/null; then
  python3 -m pip install --quiet jsonschema pyyaml 'moto[server]>=5,<6' 'aiosmtpd>=1.4,<2'
fi
