#!/bin/sh
# PostgreSQL for tests/image/run.sh, as the postgres user. On the first start
# it makes a cluster in $PGDATA with password (scram-sha-256) authentication
# for TCP connections from anywhere (the test's podman network) and a role
# and database $PG_USER (default recordd) owned by it, the password from
# $PG_PASSWORD (the superuser's too); then, and on every later start, it runs
# postgres listening on all addresses, port 5432.
set -eu
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    : "${PG_PASSWORD:?PG_PASSWORD is not set}"
    user=${PG_USER:-recordd}
    pwfile=$(mktemp)
    printf '%s\n' "$PG_PASSWORD" >"$pwfile"
    initdb -D "$PGDATA" -U postgres --auth-local=peer --auth-host=scram-sha-256 --pwfile="$pwfile" \
        >/tmp/initdb.log 2>&1 || { cat /tmp/initdb.log >&2; exit 1; }
    rm -f "$pwfile"
    printf 'host all all 0.0.0.0/0 scram-sha-256\nhost all all ::/0 scram-sha-256\n' >>"$PGDATA/pg_hba.conf"
    # single-user mode: one statement a line, no server listening yet
    printf "CREATE ROLE \"%s\" LOGIN PASSWORD '%s';\nCREATE DATABASE \"%s\" OWNER \"%s\";\n" \
        "$user" "$PG_PASSWORD" "$user" "$user" |
        postgres --single -D "$PGDATA" postgres >/tmp/single.log 2>&1 ||
        { cat /tmp/single.log >&2; exit 1; }
fi
exec postgres -D "$PGDATA" -c listen_addresses='*' -c port=5432 -c unix_socket_directories=/tmp
