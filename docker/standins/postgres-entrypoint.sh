#!/bin/sh
# First start: create the cluster in $PGDATA with the official image's variables (superuser
# POSTGRES_USER with POSTGRES_PASSWORD, database POSTGRES_DB); then run the server on all addresses,
# password (scram-sha-256) required over TCP.
set -eu
: "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD}"
user=${POSTGRES_USER:-postgres}
database=${POSTGRES_DB:-$user}

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  password_file=$(mktemp)
  printf '%s\n' "$POSTGRES_PASSWORD" > "$password_file"
  initdb --username="$user" --pwfile="$password_file" --encoding=UTF8 --locale=C.UTF-8 \
    --auth-local=trust --auth-host=scram-sha-256 >/dev/null
  rm -f "$password_file"
  echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
  if [ "$database" != "postgres" ]; then
    # Local socket only while the database is created: nothing reaches it half-made.
    pg_ctl --pgdata="$PGDATA" --options="-c listen_addresses=''" --wait --silent start
    createdb --username="$user" "$database"
    pg_ctl --pgdata="$PGDATA" --mode=fast --wait --silent stop
  fi
  echo "postgres stand-in: cluster created for user $user, database $database"
fi
exec postgres -D "$PGDATA" -c listen_addresses='*'
