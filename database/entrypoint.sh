#!/bin/sh
# The db image's entrypoint. The first start (no PG_VERSION in $PGDATA) runs initdb: TCP
# clients from any address with scram-sha-256, the socket for the postgres user alone. Every
# start then makes the role POSTGRES_USER and its database POSTGRES_DB where they are missing
# and sets the role's password from POSTGRES_PASSWORD_FILE (the secret file stays the truth,
# also when it is made anew), and execs postgres in the foreground as PID 1.
set -eu

PGDATA=${PGDATA:-/var/lib/postgresql/data}
user=${POSTGRES_USER:-tagger}
db=${POSTGRES_DB:-tagger}
file=${POSTGRES_PASSWORD_FILE:-}

fail() { echo "tagger-db: $*" >&2; exit 1; }

[ -n "$file" ] || fail "POSTGRES_PASSWORD_FILE is not set: name a file holding the password (make secrets writes secrets/postgres-password)"
[ -r "$file" ] || fail "POSTGRES_PASSWORD_FILE=$file cannot be read (make secrets writes secrets/postgres-password)"
password=$(cat "$file")
[ -n "$password" ] || fail "POSTGRES_PASSWORD_FILE=$file is empty (make secrets writes a random password)"
[ -w "$PGDATA" ] || fail "$PGDATA is not writable by $(id -un) (uid $(id -u)): mount a volume it owns"

setup_failed=false
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  echo "tagger-db: initialising a cluster in $PGDATA (role $user, database $db)"
  initdb -D "$PGDATA" --username=postgres --encoding=UTF8 --locale=C.UTF-8 \
    --auth-local=peer --auth-host=scram-sha-256 >/dev/null
  cat >> "$PGDATA/postgresql.conf" <<CONF

# tagger-db: reachable from the other containers; logs to stderr (docker logs)
listen_addresses = '0.0.0.0'
password_encryption = scram-sha-256
CONF
  echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
fi

# A server on the socket only (no TCP: the healthcheck says unhealthy until the real one
# listens) makes the role and the database where they are missing and sets the password (read
# by psql itself: never on a command line). After a crash, this start is the one that recovers.
pg_ctl -D "$PGDATA" -w -t 120 -o "-c listen_addresses=''" -l /tmp/tagger-db-setup.log start \
  >/dev/null || { cat /tmp/tagger-db-setup.log >&2; fail "the setup server did not start"; }
psql -X -q -v ON_ERROR_STOP=1 -h /run/postgresql -U postgres -d postgres \
  -v role="$user" -v dbname="$db" >/dev/null <<'SQL' || setup_failed=true
\set password `cat "$POSTGRES_PASSWORD_FILE"`
SELECT format('CREATE ROLE %I LOGIN', :'role')
  WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'role') \gexec
SELECT format('CREATE DATABASE %I OWNER %I', :'dbname', :'role')
  WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'dbname') \gexec
ALTER ROLE :"role" PASSWORD :'password';
SQL
pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
cat /tmp/tagger-db-setup.log >&2
rm -f /tmp/tagger-db-setup.log
! $setup_failed || fail "setting up role $user and database $db failed (see above)"

exec postgres -D "$PGDATA" "$@"
