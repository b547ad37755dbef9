#!/bin/sh
# `make run BACKEND=postgres`: recordd on a local PostgreSQL 15 cluster of
# its own, kept in ./pgdata between runs (initdb on first use, as the
# `postgres` user when run as root: PostgreSQL refuses root). The cluster
# listens on 127.0.0.1:$PGPORT only [55432] and asks for a password, which
# lives in ./var/pgpass (mode 0600) and reaches recordd through PGPASSFILE,
# never the command line. Then the same as `make run` (tools/run.sh), with
# RECORDD_DB pointing at the cluster and the server's keys and admin key in
# ./var/pg; Ctrl-C stops recordd and the cluster.
set -eu
bin=${1:-build/recordd}
pgbin=${PG_BIN:-/usr/lib/postgresql/15/bin}
port=${PGPORT:-55432}
data=$(pwd)/pgdata
mkdir -p var
chmod 700 var

as_pg() { # PostgreSQL's tools as the postgres user when we are root
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

if [ ! -f var/pgpass ]; then
    umask 077
    pw=$(head -c 24 /dev/urandom | base64 | tr -d '/+=')
    printf '127.0.0.1:%s:*:recordd:%s\n' "$port" "$pw" > var/pgpass
    umask 022
fi
if [ ! -f "$data/PG_VERSION" ]; then
    echo "First run: creating a PostgreSQL cluster in ./pgdata (role recordd, port $port)."
    mkdir -p "$data"
    [ "$(id -u)" = 0 ] && chown postgres: "$data"
    chmod 700 "$data"
    pwfile=$(mktemp)
    cut -d: -f5 var/pgpass > "$pwfile"
    [ "$(id -u)" = 0 ] && chown postgres: "$pwfile"
    as_pg "$pgbin/initdb" -D "$data" -U recordd --pwfile "$pwfile" -A scram-sha-256 \
        -E UTF8 --locale C >/dev/null
    rm -f "$pwfile"
fi
as_pg "$pgbin/pg_ctl" -D "$data" -l "$data/server.log" -w \
    -o "-p $port -k $data -c listen_addresses=127.0.0.1" start >/dev/null
stop_pg() { as_pg "$pgbin/pg_ctl" -D "$data" -m fast stop >/dev/null 2>&1 || true; }
trap stop_pg EXIT INT TERM

export PGPASSFILE=$(pwd)/var/pgpass
uri="postgresql://recordd@127.0.0.1:$port/recordd"
if ! psql "postgresql://recordd@127.0.0.1:$port/postgres" -Atc \
        "SELECT 1 FROM pg_database WHERE datname = 'recordd'" | grep -q 1; then
    psql -q "postgresql://recordd@127.0.0.1:$port/postgres" -c "CREATE DATABASE recordd"
fi
RECORDD_DB=$uri RECORDD_RUN_DIR=var/pg RECORDD_RUN_NOEXEC=1 sh "$(dirname "$0")/run.sh" "$bin"
