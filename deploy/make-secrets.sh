#!/bin/sh
# Writes the secrets of the Swarm stack's edge and API keys under secrets/ (gitignored), each
# only when it is not there (delete a file to make a new one):
#   edge.pem             the edge's TLS certificate and key (self-signed, CN localhost, SAN
#                        DNS:localhost and IP:127.0.0.1, 825 days): HAProxy's `crt`
#   edge.crt             the certificate alone: a client's CA (`curl --cacert secrets/edge.crt`)
#   api-keys             the API keys file, hashes only: `default:SHA256HEX` (api/keys.py's format)
#   api-key              the key `default` in plain text, for the operator to hand out
#   edge-stats-password  the password of HAProxy's stats page (user `admin`)
# Every file is 0600 and the folder 0700: the Swarm stack reads them as root at deploy time and
# mounts them into the containers itself. Needs openssl and sha256sum only (no virtual
# environment). Run by `make secrets` and tests/swarm/run.sh, after database/make-secret.sh.
set -eu
cd "$(dirname "$0")/.."
umask 077
mkdir -p -m 0700 secrets

written() { chmod 0600 "$1.tmp" && mv "$1.tmp" "$1" && echo "wrote $1"; }

if [ ! -s secrets/edge.pem ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 825 \
    -subj /CN=localhost \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,digitalSignature,keyCertSign" \
    -addext "extendedKeyUsage=serverAuth" \
    -keyout secrets/edge.key.tmp -out secrets/edge.crt.tmp 2>/dev/null
  cat secrets/edge.crt.tmp secrets/edge.key.tmp > secrets/edge.pem.tmp
  rm -f secrets/edge.key.tmp secrets/edge.crt.tmp
  written secrets/edge.pem
  rm -f secrets/edge.crt  # the old certificate is no longer the edge's
fi
if [ ! -s secrets/edge.crt ]; then
  openssl x509 -in secrets/edge.pem -out secrets/edge.crt.tmp
  written secrets/edge.crt
fi

if [ ! -s secrets/api-keys ]; then
  key="tgr_$(openssl rand -hex 32)"
  printf '%s\n' "$key" > secrets/api-key.tmp
  {
    echo "# API keys: NAME:SHA256HEX of the key, one a line (python -m api.keys add NAME adds one)"
    printf 'default:%s\n' "$(printf %s "$key" | sha256sum | cut -d' ' -f1)"
  } > secrets/api-keys.tmp
  written secrets/api-key
  written secrets/api-keys
elif [ ! -s secrets/api-key ]; then
  echo "secrets/api-keys is there but secrets/api-key is not: the plain key of 'default' is" \
    "shown once; delete secrets/api-keys to make a new pair" >&2
fi

if [ ! -s secrets/edge-stats-password ]; then
  openssl rand -hex 24 > secrets/edge-stats-password.tmp
  written secrets/edge-stats-password
fi
