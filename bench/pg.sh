#!/bin/sh
# `make bench BACKEND=postgres`: the update scenario on SQLite and on
# PostgreSQL in one run, so the two can be compared. Starts a throw-away,
# durable PostgreSQL 15 cluster (fsync, synchronous_commit and
# full_page_writes on, as durable as SQLite's synchronous=FULL; listening on
# 127.0.0.1 only, password authentication, its socket in its own temp dir),
# creates a database in it, and starts two recordd servers, each with its
# own `recordctl init` (organisation, server keys, admin key): one on a
# SQLite file in a temp dir next to the cluster's (same disk), one on the
# PostgreSQL database. After `recordd-bench --setup` on each, update runs at
# 64, 16 and 1 clients, the two backends alternating scenario by scenario,
# BENCH_ROUNDS times (the order of the pair swapped each round); for each
# backend and client count the round with the higher rate counts (this
# machine is shared and noisy). Prints a table of rate and p99 per backend,
# the ratios against their targets and the writer's commit groups at 64
# clients (from /metrics), then stops everything, the cluster too (also on
# failure or Ctrl-C). Raw results (one JSON object a line) go to
# $BUILD/bench-pg-results.jsonl.
#
# With REPLICAS=N, the same cluster serves bench/pg_replicas.sh instead:
# update@64 spread over 1, 2, ... N recordd processes on one PostgreSQL
# database (no SQLite server).
#
# Usage: sh bench/pg.sh [BUILD_DIR]
# Environment:
#   REPLICAS        run bench/pg_replicas.sh with that many processes [unset]
#   BENCH_DURATION  measured seconds per scenario [8]
#   BENCH_RECORDS   record ids the update scenario spreads over [10000]
#   BENCH_ROUNDS    rounds of every scenario on both backends [2]
#   PG_BIN          PostgreSQL's programs [/usr/lib/postgresql/15/bin]
#   BENCH_PG_OPTS   more postmaster options, e.g. "-c shared_buffers=256MB"
#                   (fsync, synchronous_commit and full_page_writes must stay on)
#   PYTHON          interpreter for the summary [/usr/bin/python3]
# Both servers are new, so record calls carry each one's own admin key
# (through the environment, never argv); RECORDD_BENCH_TOKEN is not used.
set -eu

build=${1:-build}
dur=${BENCH_DURATION:-8}
records=${BENCH_RECORDS:-10000}
rounds=${BENCH_ROUNDS:-2}
python=${PYTHON:-/usr/bin/python3}
pg_bin=${PG_BIN:-/usr/lib/postgresql/15/bin}
results="$build/bench-pg-results.jsonl"

for b in recordd recordctl recordd-bench; do
    [ -x "$build/$b" ] || { echo "bench: $build/$b is missing (run make bench BACKEND=postgres)" >&2; exit 1; }
done
for b in initdb pg_ctl psql; do
    [ -x "$pg_bin/$b" ] || { echo "bench: $pg_bin/$b is missing (Debian: postgresql; or set PG_BIN)" >&2; exit 1; }
done
case ${REPLICAS:-} in
'' | [1-9] | 1[0-6]) ;;
*)
    echo "bench: REPLICAS must be a number from 1 to 16, not '$REPLICAS'" >&2
    exit 1
    ;;
esac

# Two temp dirs side by side (so on one disk): $work is ours (recordd's
# keys, the SQLite database, logs, the pgpass file), $pgdir belongs to the
# cluster (data directory, socket, server log).
parent=${TMPDIR:-/tmp}
work=$(mktemp -d "$parent/recordd-bench.XXXXXX")
pgdir=
pids= # every recordd we started
cleanup() {
    set +e
    for p in $pids; do
        if kill -0 "$p" 2>/dev/null; then
            kill -TERM "$p" 2>/dev/null
            wait "$p" 2>/dev/null
        fi
    done
    if [ -n "$pgdir" ] && [ -f "$pgdir/data/postmaster.pid" ]; then
        as_pg "$pg_bin/pg_ctl" -D "$pgdir/data" -m fast -w -t 30 stop >/dev/null 2>&1 ||
            as_pg "$pg_bin/pg_ctl" -D "$pgdir/data" -m immediate -w -t 30 stop >/dev/null 2>&1
    fi
    rm -rf "$work"
    [ -z "$pgdir" ] || rm -rf "$pgdir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# PostgreSQL refuses to run as root: then its programs run as "postgres"
# (runuser), from a directory that user can enter.
as_pg() {
    if [ "$(id -u)" = 0 ]; then
        (cd "$pgdir" && runuser -u postgres -- "$@")
    else
        (cd "$pgdir" && "$@")
    fi
}

# --- the cluster ------------------------------------------------------------
pgdir=$(mktemp -d "$parent/recordd-bench-pg.XXXXXX")
[ "$(id -u)" != 0 ] || chown postgres:postgres "$pgdir"
password=$("$python" -c 'import secrets; print(secrets.token_urlsafe(24))')
(umask 077 && printf '%s\n' "$password" >"$pgdir/pwfile")
[ "$(id -u)" != 0 ] || chown postgres:postgres "$pgdir/pwfile"
echo "bench: initdb (durable cluster in $pgdir) ..." >&2
if ! as_pg "$pg_bin/initdb" -D "$pgdir/data" -U recordd --pwfile="$pgdir/pwfile" \
    --auth-host=scram-sha-256 --auth-local=scram-sha-256 --encoding=UTF8 --locale=C \
    --no-instructions >"$work/initdb.log" 2>&1; then
    echo "bench: initdb failed:" >&2
    cat "$work/initdb.log" >&2
    exit 1
fi
rm -f "$pgdir/pwfile"

# A free port (the kernel's pick); another one when something took it
# before the postmaster bound it.
pg_port=
for _ in 1 2 3 4 5; do
    port=$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    rm -f "$pgdir/postgres.log"
    if as_pg "$pg_bin/pg_ctl" -D "$pgdir/data" -l "$pgdir/postgres.log" -w -t 60 -o \
        "-p $port -k $pgdir -c listen_addresses=127.0.0.1 -c max_connections=300 -c fsync=on -c synchronous_commit=on -c full_page_writes=on ${BENCH_PG_OPTS:-}" \
        start >/dev/null 2>&1; then
        pg_port=$port
        break
    fi
    grep -qE 'could not bind|Address already in use' "$pgdir/postgres.log" 2>/dev/null || break
    as_pg "$pg_bin/pg_ctl" -D "$pgdir/data" -m immediate -w -t 30 stop >/dev/null 2>&1 || true
done
if [ -z "$pg_port" ]; then
    echo "bench: PostgreSQL did not start:" >&2
    tail -n 30 "$pgdir/postgres.log" >&2 2>/dev/null || true
    exit 1
fi
(umask 077 && printf '127.0.0.1:%s:*:recordd:%s\n' "$pg_port" "$password" >"$work/pgpass")
PGPASSFILE="$work/pgpass"
export PGPASSFILE
pg_uri="postgresql://recordd@127.0.0.1:$pg_port"
psql_pg() {
    "$pg_bin/psql" -X -q -A -t -v ON_ERROR_STOP=1 -d "$pg_uri/postgres" "$@" </dev/null
}
psql_pg -c 'CREATE DATABASE bench'
# The settings in force, checked: a cluster that does not sync would make
# the comparison meaningless.
pg_settings=$(psql_pg -F ' ' -c "SELECT name, current_setting(name) FROM pg_settings WHERE name IN
    ('fsync', 'synchronous_commit', 'full_page_writes', 'wal_sync_method', 'shared_buffers',
     'wal_buffers', 'commit_delay', 'max_wal_size') ORDER BY name" |
    "$python" -c 'import json, sys; print(json.dumps({l.split(" ")[0]: " ".join(l.split(" ")[1:]).strip()
                                                    for l in sys.stdin if l.strip()}))')
pg_version=$(psql_pg -c 'SHOW server_version')
for s in fsync synchronous_commit full_page_writes; do
    printf '%s' "$pg_settings" | grep -q "\"$s\": \"on\"" ||
        { echo "bench: PostgreSQL has $s off: $pg_settings" >&2; exit 1; }
done

# --- the two servers ----------------------------------------------------------
# start_recordd NAME DB [FROM]: recordctl init into $work/var-NAME (or, with
# FROM, a copy of $work/var-FROM: the same organisation and keys, for
# another process on FROM's database), then recordd on free ports; sets
# ${NAME}_pid, _target and _http.
start_recordd() {
    if [ -n "${3:-}" ]; then
        cp -Rp "$work/var-$3" "$work/var-$1"
    else
        "$build/recordctl" init --dir "$work/var-$1" --db "$2" >/dev/null 2>"$work/init-$1.log" ||
            { echo "bench: recordctl init on $1 failed:" >&2; cat "$work/init-$1.log" >&2; exit 1; }
    fi
    "$build/recordd" --grpc-listen 127.0.0.1:0 --http-listen 127.0.0.1:0 --db "$2" \
        --pepper-file "$work/var-$1/pepper" --signing-key "$work/var-$1/signing.key" \
        --trusted-keys "$work/var-$1/trusted-keys" 2>"$work/$1.log" &
    eval "${1}_pid=\$!"
    pids="$pids $!"
    t=
    for _ in $(seq 1 100); do
        t=$(sed -n 's/.*"msg":"listening".*"grpc":"\([^"]*\)".*/\1/p' "$work/$1.log" | head -n 1)
        [ -n "$t" ] && break
        eval "kill -0 \$${1}_pid" 2>/dev/null || break
        sleep 0.1
    done
    if [ -z "$t" ]; then
        echo "bench: recordd on $1 did not start:" >&2
        cat "$work/$1.log" >&2
        exit 1
    fi
    eval "${1}_target=\$t"
    h=$(sed -n 's/.*"msg":"listening".*"http":"\([^"]*\)".*/\1/p' "$work/$1.log" | head -n 1)
    eval "${1}_http=\$h"
}

# bench BACKEND ARGS...: recordd-bench against that backend's server.
bench() {
    be=$1
    shift
    eval "t=\$${be}_target p=\$${be}_pid"
    RECORDD_BENCH_TOKEN=$(cat "$work/var-$be/admin.key") \
        "$build/recordd-bench" --target "$t" --server-pid "$p" --records "$records" --json "$@"
}

# The writer's side, from /metrics: commit groups, the writes they carried
# and the time their COMMITs took (cumulative counters), as bench/run.sh;
# on PostgreSQL also how long batches held their organisations' counter
# rows and how many did (lock_s, lock_batches), and when it was read (at).
writer_stats() { # BACKEND
    eval "h=\$${1}_http"
    [ -n "$h" ] || { echo '{}'; return; }
    "$python" - "$h" <<'PY'
import json, sys, time, urllib.request
text = urllib.request.urlopen("http://%s/metrics" % sys.argv[1], timeout=5).read().decode()
want = {"recordd_commit_batch_size_count": "batches", "recordd_commit_batch_size_sum": "writes",
        "recordd_commit_duration_seconds_sum": "commit_s",
        "recordd_org_lock_hold_seconds_sum": "lock_s",
        "recordd_org_lock_hold_seconds_count": "lock_batches"}
got = {want[k]: float(v) for k, v in (l.split() for l in text.splitlines()
       if l.split()[:1] and l.split()[0] in want)}
got["at"] = time.time()
print(json.dumps(got))
PY
}

if [ -n "${REPLICAS:-}" ]; then
    # shellcheck source=bench/pg_replicas.sh
    . "$(dirname "$0")/pg_replicas.sh"
    exit 0
fi

: >"$results"
printf '{"run":"pg-settings","version":"%s","settings":%s}\n' "$pg_version" "$pg_settings" >>"$results"
load_start=$(cut -d' ' -f1-3 /proc/loadavg)

start_recordd sqlite "$work/recordd.db"
start_recordd postgres "$pg_uri/bench"
echo "bench: recordd on sqlite $sqlite_target (pid $sqlite_pid), on postgres $postgres_target" \
    "(pid $postgres_pid), PostgreSQL $pg_version; ${dur}s per scenario, $rounds rounds;" \
    "disk $(df -P "$work" | awk 'NR == 2 {print $1}') / $(df -P "$pgdir" | awk 'NR == 2 {print $1}')" >&2

for b in sqlite postgres; do
    echo "bench: setup on $b (bench model, $records records) ..." >&2
    set +e
    bench "$b" --scenario update --setup --duration 0 --clients 64 >/dev/null
    rc=$?
    set -e
    [ "$rc" -ne 3 ] || { echo "bench: $b: the server refused the credential (UNAUTHENTICATED)" >&2; exit 1; }
    [ "$rc" -eq 0 ] || { echo "bench: $b: setup failed ($rc)" >&2; exit 1; }
done

run() { # round backend clients
    echo "bench: round $1: $2 update @ $3 clients ..." >&2
    w0=$(writer_stats "$2")
    out=$(bench "$2" --scenario update --clients "$3" --duration "$dur") ||
        echo "bench: recordd-bench on $2 exited $?" >&2
    [ -n "$out" ] || { echo "bench: no result from recordd-bench on $2" >&2; exit 1; }
    w1=$(writer_stats "$2")
    printf '%s\n' "$out" | sed "s/^{/{\"run\":\"grpc\",\"backend\":\"$2\",\"round\":$1,/" >>"$results"
    printf '{"run":"writer","backend":"%s","round":%s,"clients":%s,"before":%s,"after":%s}\n' \
        "$2" "$1" "$3" "$w0" "$w1" >>"$results"
}
r=1
while [ "$r" -le "$rounds" ]; do
    if [ $((r % 2)) -eq 1 ]; then pair="sqlite postgres"; else pair="postgres sqlite"; fi
    for c in 64 16 1; do
        for b in $pair; do
            run "$r" "$b" "$c"
        done
    done
    r=$((r + 1))
done
load_end=$(cut -d' ' -f1-3 /proc/loadavg)

"$python" - "$results" "$load_start" "$load_end" <<'PY'
import json, os, sys

rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
pg = next(r for r in rows if r["run"] == "pg-settings")
runs = [r for r in rows if r["run"] == "grpc"]
writers = {(r["backend"], r["round"], r["clients"]): r for r in rows if r["run"] == "writer"}
best = {}
for r in runs:
    k = (r["backend"], r["clients"])
    if k not in best or r["rate"] > best[k]["rate"]:
        best[k] = r

print("\nrecordd bench, SQLite vs PostgreSQL %s: %d vCPU, load average %s at start, %s at end" % (
    pg["version"], os.cpu_count(), sys.argv[2], sys.argv[3]))
print("PostgreSQL: " + ", ".join("%s=%s" % kv for kv in sorted(pg["settings"].items())))
print("(update calls per second and p99 latency; of %d rounds per row, the one with the higher rate)"
      % max(r["round"] for r in runs))
print("%-16s %10s %10s %9s %14s %12s" % ("scenario", "sqlite /s", "pg /s", "pg/sqlite",
                                          "sqlite p99 ms", "pg p99 ms"))
for c in (1, 16, 64):
    s, p = best[("sqlite", c)], best[("postgres", c)]
    print("%-16s %10.0f %10.0f %9.2f %14.1f %12.1f" % (
        "update @ %d" % c, s["rate"], p["rate"], p["rate"] / s["rate"], s["p99_us"] / 1000.0,
        p["p99_us"] / 1000.0))
print("(each round's rates, sqlite | pg: %s)" % "; ".join(
    "@%d %s | %s" % (c, "/".join("%.0f" % r["rate"] for r in runs if (r["backend"], r["clients"]) == ("sqlite", c)),
                     "/".join("%.0f" % r["rate"] for r in runs if (r["backend"], r["clients"]) == ("postgres", c)))
    for c in (1, 16, 64)))
for b in ("postgres", "sqlite"):
    r = best[(b, 64)]
    w = writers.get((b, r["round"], 64))
    if not w or not w["before"] or not w["after"]:
        continue
    d = {k: w["after"][k] - w["before"][k] for k in ("batches", "writes", "commit_s")}
    if d["batches"] > 0:
        print("update @ 64 on the %s writer: %.1f writes per commit group, COMMIT %.0f us on average,"
              " server %.1f CPU us per call, machine %.0f %% idle" % (
                  b, d["writes"] / d["batches"], d["commit_s"] / d["batches"] * 1e6,
                  r["server_cpu_us_per_call"], r.get("machine_idle_pct", -1)))
print()
ratio = best[("postgres", 64)]["rate"] / best[("sqlite", 64)]["rate"]
p99 = best[("postgres", 16)]["p99_us"] / 1000.0
print("%-28s %6.2f    target >= 0.50   %s" % ("update@64 pg / sqlite", ratio,
                                             "met" if ratio >= 0.5 else "MISSED"))
print("%-28s %6.1f ms target < 20 ms   %s" % ("p99 @ 16 clients on pg", p99,
                                             "met" if p99 < 20 else "MISSED"))
errors = sum(r["failed"] for r in runs)
if errors:
    print("\nwarning: %d calls failed; see %s" % (errors, sys.argv[1]))
PY
