#!/bin/sh
# `make bench`: one run of every figure DESIGN.md §10 compares, on this
# machine, so the ratios are fair. Starts build/recordd on a free port and a
# temporary database, runs sqlite-limit (modes A and B) on the same disk, the
# health scenario at 64 clients and the update scenario at 1, 16 and 64
# clients, the bulk scenario (BulkMutate of 100 updates per call) at 1 and 16
# clients, reads with and without expanded relations at 16 clients (get,
# get_expand, list, list_expand), update at 64 clients once more over TLS (the server restarted with
# an openssl-made certificate), prints a summary with the ratios against their targets, stops the
# server. Raw results (one JSON object a line) go to $BUILD/bench-results.jsonl.
#
# Usage: sh bench/run.sh [BUILD_DIR]
# Environment:
#   BENCH_DURATION        measured seconds per scenario [8]
#   BENCH_RECORDS         record ids the update scenario spreads over [10000]
#   RECORDD_BENCH_TOKEN   credential for record/schema calls (sent as
#                         `authorization: Bearer …`); by default the admin key
#                         that `recordctl init` makes for the bench database
#   PYTHON                interpreter for the summary [/usr/bin/python3]
set -eu

build=${1:-build}
dur=${BENCH_DURATION:-8}
records=${BENCH_RECORDS:-10000}
python=${PYTHON:-/usr/bin/python3}
results="$build/bench-results.jsonl"

for b in recordd recordctl recordd-bench sqlite-limit; do
    [ -x "$build/$b" ] || { echo "bench: $build/$b is missing (run make bench)" >&2; exit 1; }
done

. "$(dirname "$0")/server.sh"

: >"$results"
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
echo "bench: recordd $target (pid $pid), ${dur}s per scenario, database on $(df -P "$tmp" | awk 'NR == 2 {print $1}')" >&2

echo "bench: sqlite-limit A and B ..." >&2
"$build/sqlite-limit" --dir "$tmp" --duration 4 --records "$records" --json |
    sed 's/^{/{"run":"sqlite",/' >>"$results"

# How long one fdatasync takes on this disk, idle and with every CPU busy:
# the server's writer syncs while the gRPC threads and this load generator
# keep the CPUs busy, sqlite-limit syncs on an idle machine.
echo "bench: fsync probe ..." >&2
"$python" "$(dirname "$0")/fsync_probe.py" --dir "$tmp" --json | sed 's/^{/{"run":"fsync",/' >>"$results"

echo "bench: setup (bench model, $records records) ..." >&2
bench_setup

run() { # scenario clients
    echo "bench: $1 @ $2 clients ..." >&2
    bench --scenario "$1" --clients "$2" --duration "$dur" | sed 's/^{/{"run":"grpc",/' >>"$results"
}
# The writer's side of a scenario, from /metrics: commit groups, the writes
# they carried and the time their COMMITs took (cumulative counters).
writer_stats() {
    [ -n "$http" ] && [ "$http" != off ] || { echo '{}'; return; }
    "$python" - "$http" <<'PY'
import json, sys, urllib.request
text = urllib.request.urlopen("http://%s/metrics" % sys.argv[1], timeout=5).read().decode()
want = {"recordd_commit_batch_size_count": "batches", "recordd_commit_batch_size_sum": "writes",
        "recordd_commit_duration_seconds_sum": "commit_s"}
print(json.dumps({want[k]: float(v) for k, v in (l.split() for l in text.splitlines()
                  if l.split()[:1] and l.split()[0] in want)}))
PY
}
run health 64
run update 1
run update 16
w0=$(writer_stats)
run update 64
w1=$(writer_stats)
echo "{\"run\":\"writer\",\"scenario\":\"update\",\"clients\":64,\"before\":$w0,\"after\":$w1}" >>"$results"
# The HTTP/JSON gateway: the same patch as `update` through wrk (Debian's
# wrk, keep-alive), 64 connections, right after the gRPC update@64 run.
if command -v wrk >/dev/null 2>&1 && [ -n "$http" ] && [ "$http" != off ]; then
    echo "bench: http patch @ 64 connections ..." >&2
    BENCH_RECORDS=$records wrk -t 2 -c 64 -d "${dur}s" --latency -s bench/http_patch.lua \
        "http://$http" 2>&1 | sed -n 's/^WRKJSON //p' | sed 's/{/{"clients":64,/' >>"$results"
else
    echo "bench: wrk or the HTTP listener is missing: no HTTP scenario" >&2
fi
run bulk 1
run bulk 16

# Relations: GetRecord of a student with three relations expanded (city,
# city.country, school) against the plain GetRecord, and a ListRecords page
# of 100 students with their cities expanded against the plain page.
echo "bench: setup (relation models, $records students) ..." >&2
bench --scenario get --setup --duration 0 >/dev/null
run get 16
run get_expand 16
run list 16
run list_expand 16

# The same update@64 over TLS: the server restarted on the same database
# with an openssl-made certificate (EC P-256), the clients verifying it.
if command -v openssl >/dev/null 2>&1; then
    echo "bench: update @ 64 clients over TLS ..." >&2
    tls="$tmp/tls"
    mkdir -p "$tls"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=bench-ca \
        -keyout "$tls/ca.key" -out "$tls/ca.pem" 2>/dev/null
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=bench \
        -keyout "$tls/server.key" -out "$tls/server.csr" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1\n' >"$tls/ext"
    openssl x509 -req -in "$tls/server.csr" -CA "$tls/ca.pem" -CAkey "$tls/ca.key" -CAcreateserial \
        -days 1 -extfile "$tls/ext" -out "$tls/server.pem" 2>/dev/null
    stop_server
    start_server --tls-cert "$tls/server.pem" --tls-key "$tls/server.key"
    bench --scenario update --clients 64 --duration "$dur" --cacert "$tls/ca.pem" |
        sed 's/^{/{"run":"grpc-tls",/' >>"$results"
else
    echo "bench: openssl is missing: no TLS scenario" >&2
fi
load_end=$(cut -d' ' -f1-3 /proc/loadavg)

"$python" - "$results" "$load_start" "$load_end" <<'PY'
import json, os, sys

rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
sq = next(r for r in rows if r["run"] == "sqlite")
fs = next((r for r in rows if r["run"] == "fsync"), None)
grpc = {(r["scenario"], r["clients"]): r for r in rows if r["run"] == "grpc"}
http = next((r for r in rows if r["run"] == "http"), None)
tls = next((r for r in rows if r["run"] == "grpc-tls"), None)

print("\nrecordd bench: %d vCPU, load average %s at start, %s at end (this run's own"
      " processes add about 2)" % (os.cpu_count(), sys.argv[2], sys.argv[3]))
print("%-24s %10s %9s %9s %9s %12s %12s %8s %7s" % (
    "run", "per s", "p50 us", "p99 us", "p999 us", "srv us/call", "srv HWM MB", "errors",
    "idle %"))
print("%-24s %10.0f %9s %9s %9s %12.1f %12s %8s" % (
    "sqlite A (1 commit/tx)", sq["a_commits_per_s"], "-", "-", "-", sq["a_cpu_us_per_commit"], "-", "-"))
print("%-24s %10.0f %9s %9s %9s %12.1f %12s %8s" % (
    "sqlite B (%d commits/tx)" % sq["batch"], sq["b_commits_per_s"], "-", "-", "-",
    sq["b_cpu_us_per_commit"], "-", "-"))
for key in [("health", 64), ("update", 1), ("update", 16), ("update", 64), ("bulk", 1), ("bulk", 16),
            ("get", 16), ("get_expand", 16), ("list", 16), ("list_expand", 16)]:
    r = grpc[key]
    print("%-24s %10.0f %9.0f %9.0f %9.0f %12.1f %12.1f %8d %7.0f" % (
        "%s @ %d clients" % key, r["rate"], r["p50_us"], r["p99_us"], r["p999_us"],
        r["server_cpu_us_per_call"], r["server_vmhwm_kb"] / 1024.0, r["failed"],
        r.get("machine_idle_pct", -1)))
if tls is not None:
    print("%-24s %10.0f %9.0f %9.0f %9.0f %12.1f %12.1f %8d %7.0f" % (
        "update @ 64 over TLS", tls["rate"], tls["p50_us"], tls["p99_us"], tls["p999_us"],
        tls["server_cpu_us_per_call"], tls["server_vmhwm_kb"] / 1024.0, tls["failed"],
        tls.get("machine_idle_pct", -1)))
if http is not None:
    print("%-24s %10.0f %9.0f %9.0f %9.0f %12s %12s %8d" % (
        "http patch @ 64 conns", http["rate"], http["p50_us"], http["p99_us"], http["p999_us"],
        "-", "-", http["failed"] + http["socket_errors"]))
print("(bulk: calls of 100 updates; records written per second below)")
for key in [("bulk", 1), ("bulk", 16)]:
    print("%-24s %10.0f rows/s" % ("bulk @ %d clients" % key[1], grpc[key]["rows_rate"]))
print("%-24s %10.0f rows/s" % ("sqlite B (%d rows/tx)" % sq["batch"], sq["b_commits_per_s"]))
print("(sqlite us/call is the benchmark's own CPU per commit; client peak RSS %.1f MB)" %
      (max(r["client_vmhwm_kb"] for r in grpc.values()) / 1024.0))

u64 = grpc[("update", 64)]["rate"]
checks = [
    ("update@64 / sqlite-B", u64 / sq["b_commits_per_s"], 0.5),
    ("update@64 / health@64", u64 / grpc[("health", 64)]["rate"], 0.5),
]
if http is not None:
    checks.append(("http patch@64 / update@64", http["rate"] / u64, 0.6))
if tls is not None:
    checks.append(("update@64 TLS / plain", tls["rate"] / u64, 0.85))
# expansion's cost: calls per second of the plain read over the expanding
# one, at the same concurrency (and the server's CPU per call alike)
for plain, exp, limit, what in [("get", "get_expand", 2.0, "GetRecord, 3 relations expanded"),
                                ("list", "list_expand", 1.5, "page of 100, 1 relation expanded")]:
    a, b = grpc[(plain, 16)], grpc[(exp, 16)]
    cost = a["rate"] / b["rate"] if b["rate"] > 0 else float("inf")
    cpu = b["server_cpu_us_per_call"] / a["server_cpu_us_per_call"] if a["server_cpu_us_per_call"] > 0 else -1
    print("%-24s %6.2f x the time of %s (server CPU per call %.2f x): %s" % (
        exp + " / " + plain, cost, plain, cpu, what))
    checks.append(("%s@16 / %s@16" % (exp, plain), 1 / cost if cost > 0 else 0, 1 / limit))
bulk16 = grpc[("bulk", 16)]["rows_rate"]
print("%-24s %6.2f   (bulk rows/s over SQLite's batched rows/s; no target)" % (
    "bulk@16 / sqlite-B", bulk16 / sq["b_commits_per_s"]))
wr = next((r for r in rows if r["run"] == "writer"), None)
if wr is not None and wr["before"] and wr["after"]:
    d = {k: wr["after"][k] - wr["before"][k] for k in ("batches", "writes", "commit_s")}
    if d["batches"] > 0:
        print("update @ 64 on the writer: %.1f writes per commit group, COMMIT (WAL write + fsync)"
              " %.0f us on average, machine %.0f %% idle" % (
                  d["writes"] / d["batches"], d["commit_s"] / d["batches"] * 1e6,
                  grpc[("update", 64)].get("machine_idle_pct", -1)))
if fs is not None:
    busy = "busy_%d" % max(int(k[5:]) for k in fs if k.startswith("busy_"))
    print("fdatasync of %d pages: mean %.0f us with the CPUs idle, %.0f us with %s"
          " (p90 %.0f / %.0f us)" % (fs["pages"], fs["idle"]["mean_us"], fs[busy]["mean_us"],
                                      busy.replace("_", " ") + " CPUs", fs["idle"]["p90_us"],
                                      fs[busy]["p90_us"]))
print()
for name, ratio, target in checks:
    print("%-24s %6.2f   target >= %.2f   %s" % (name, ratio, target,
                                              "met" if ratio >= target else "MISSED"))
errors = sum(r["failed"] for r in grpc.values()) + (http["failed"] if http else 0) + (
    tls["failed"] if tls else 0)
if errors:
    print("\nwarning: %d calls failed; see %s" % (errors, sys.argv[1]))
PY
