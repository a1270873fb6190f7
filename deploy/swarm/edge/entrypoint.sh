#!/bin/sh
# Starts HAProxy with what haproxy.cfg reads from the environment: the stats password (the
# Swarm secret edge-stats-password), the certificate's path, the per-source limits, the https
# port the redirect names, and where the api replicas are. Fails in one line when a secret is
# missing (run `make secrets` before `docker stack deploy`).
set -eu
secrets=${EDGE_SECRETS:-/run/secrets}
config=${EDGE_CONFIG:-/usr/local/etc/haproxy/haproxy.cfg}
for name in edge.pem edge-stats-password; do
  [ -s "$secrets/$name" ] || { echo "edge: no secret $secrets/$name (make secrets, then deploy again)" >&2; exit 2; }
done
STATS_PASSWORD=$(cat "$secrets/edge-stats-password")
EDGE_CERT=$secrets/edge.pem
EDGE_SOURCE_MAX_CONNS=${EDGE_SOURCE_MAX_CONNS:-200}
EDGE_SOURCE_DROP_CONNS=$((EDGE_SOURCE_MAX_CONNS * 2))
EDGE_SOURCE_MAX_REQUESTS_10S=${EDGE_SOURCE_MAX_REQUESTS_10S:-500}
EDGE_TLS_PORT=${EDGE_TLS_PORT:-8443}
if [ "$EDGE_TLS_PORT" = 443 ]; then EDGE_TLS_SUFFIX=; else EDGE_TLS_SUFFIX=":$EDGE_TLS_PORT"; fi
EDGE_API_ADDRESS=${EDGE_API_ADDRESS:-tasks.api:8000}
export STATS_PASSWORD EDGE_CERT EDGE_SOURCE_MAX_CONNS EDGE_SOURCE_DROP_CONNS \
  EDGE_SOURCE_MAX_REQUESTS_10S EDGE_TLS_SUFFIX EDGE_API_ADDRESS
haproxy -c -q -f "$config" || { echo "edge: $config does not check (haproxy -c above)" >&2; exit 2; }
exec haproxy -W -db -f "$config" "$@"
