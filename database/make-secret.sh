#!/bin/sh
# Writes secrets/postgres-password, a random password, unless it is there: the PostgreSQL
# role's password, which compose.yaml and deploy/swarm/stack.yaml hand to the db, api and
# trainer services as the secret postgres-password. Run by `make secrets` and the e2e scripts;
# needs python3 only.
# The file is 0644: Compose mounts a file secret as a bind mount with the host file's owner
# and mode (uid/gid/mode are Swarm-only options), and the api and trainer containers run as a
# non-root user that does not own it. The folder is 0700, so other users of this machine
# cannot reach the file; Docker's daemon, which makes the mount, can.
set -eu
cd "$(dirname "$0")/.."
file=secrets/postgres-password
[ -s "$file" ] && exit 0
mkdir -p -m 0700 secrets
python3 -c 'import secrets; print(secrets.token_urlsafe(24))' > "$file.tmp"
chmod 0644 "$file.tmp"
mv "$file.tmp" "$file"
echo "wrote $file"
