#!/bin/sh
# Stand-in for EspoCRM's docker-websocket.sh (tests only): waits until EspoCRM is installed,
# then listens on :8080 (websocket, HTTP here) and :7777 (ZeroMQ submissions, HTTP here).
set -eu
STANDIN=espocrm-websocket
. /usr/local/lib/standin.sh
under_tini "$@"
cd /var/www/html
retry 300 "EspoCRM installed (data/.standin-db)" test -r data/.standin-db
www=/run/espocrm-websocket
page "$www" index.html "EspoCRM websocket stand-in"
serve 8080 "$www"
serve 7777 "$www"
wait
