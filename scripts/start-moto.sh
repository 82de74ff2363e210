#!/usr/bin/env bash
# Starts moto's server (PyPI moto[server]) on 127.0.0.1, standing in for AWS in the tests of
# crates/stackbox-aws (ACM, RDS, Secrets Manager, ELBv2, CloudFront, Route53).
# Usage: scripts/start-moto.sh [PORT]   (default 5000)
# Idempotent: a server already answering on the port is left alone. Waits until it answers.
# The tests themselves start a private server per test binary on a free port; this script is
# for running one by hand (AWS_ENDPOINT_URL=http://127.0.0.1:PORT).
set -euo pipefail

port="${1:-5000}"
url="http://127.0.0.1:${port}/moto-api/"

answers() {
  python3 - "$url" <<'PY' >/dev/null 2>&1
import sys, urllib.request
urllib.request.urlopen(sys.argv[1], timeout=1)
PY
}

if answers; then
  exit 0
fi
if ! command -v moto_server >/dev/null; then
  echo "start-moto: moto_server is not installed (python3 -m pip install 'moto[server]>=5,<6')" >&2
  exit 1
fi
log="${STACKBOX_CACHE_DIR:-$HOME/.cache/stackbox}/moto.log"
mkdir -p "$(dirname "$log")"
echo "starting moto_server on 127.0.0.1:${port} (log: $log)" >&2
# ACM certificates move from PENDING_VALIDATION to ISSUED after this many seconds (moto's
# default is 60, which would make every certificate wait a minute).
MOTO_ACM_VALIDATION_WAIT="${MOTO_ACM_VALIDATION_WAIT:-2}" \
  nohup moto_server -H 127.0.0.1 -p "$port" >>"$log" 2>&1 &
for _ in $(seq 1 60); do
  if answers; then
    exit 0
  fi
  sleep 0.5
done
echo "start-moto: moto_server did not answer on port ${port} within 30 s; last log lines:" >&2
tail -n 20 "$log" >&2
exit 1
