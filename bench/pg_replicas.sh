# `make bench BACKEND=postgres REPLICAS=N`: sourced by bench/pg.sh, which
# has started the throw-away durable cluster, created the database "bench"
# and defined the helpers (start_recordd, writer_stats) and the cleanup
# that stops every recordd started and the cluster, also on failure or
# Ctrl-C.
#
# Starts N recordd processes on that one database: the first with its own
# `recordctl init`, the others with a copy of its --dir (the same
# organisation, server keys and admin key), each on its own ports. After
# one `recordd-bench --setup` (through the first), update runs at 64 clients
# spread over the first 1, 2, ... N processes (client i calls process
# i % k), BENCH_ROUNDS times, the configurations in turn (ascending in odd
# rounds, descending in even ones); for each configuration the round with
# the higher rate counts. Every process's /metrics is read before and after
# each run, so the commit groups, the writes they carried and the time they
# held their organisation's sync-id counter row (recordd_org_lock_hold_*)
# are that run's alone. Prints a table, the ratios against 1 process and
# the 0.8 target; raw results (one JSON object a line) go to
# $BUILD/bench-pg-replicas-results.jsonl.
# shellcheck shell=sh disable=SC2154 # build, work, pg_uri, ...: set by pg.sh

n=$REPLICAS # 1 to 16, checked by pg.sh
clients=64
results="$build/bench-pg-replicas-results.jsonl"

: >"$results"
printf '{"run":"pg-settings","version":"%s","settings":%s}\n' "$pg_version" "$pg_settings" >>"$results"
load_start=$(cut -d' ' -f1-3 /proc/loadavg)

start_recordd r1 "$pg_uri/bench"
i=2
while [ "$i" -le "$n" ]; do
    start_recordd "r$i" "$pg_uri/bench" r1
    i=$((i + 1))
done
i=1
while [ "$i" -le "$n" ]; do
    eval "echo \"bench: recordd r$i on postgres \$r${i}_target (pid \$r${i}_pid)\"" >&2
    i=$((i + 1))
done
echo "bench: $n processes on one PostgreSQL $pg_version database; update @ $clients clients," \
    "${dur}s per scenario, $rounds rounds" >&2

# replicas K ARGS...: recordd-bench with its clients spread over r1..rK.
replicas() {
    k=$1
    shift
    targets=
    spids=
    j=1
    while [ "$j" -le "$k" ]; do
        eval "targets=\"\$targets\${targets:+,}\$r${j}_target\" spids=\"\$spids\${spids:+,}\$r${j}_pid\""
        j=$((j + 1))
    done
    RECORDD_BENCH_TOKEN=$(cat "$work/var-r1/admin.key") \
        "$build/recordd-bench" --target "$targets" --server-pid "$spids" --records "$records" \
        --json "$@"
}

# All N processes' writer figures as one JSON object {"r1": {...}, ...}.
all_stats() {
    out='{'
    j=1
    while [ "$j" -le "$n" ]; do
        out="$out$([ "$j" -eq 1 ] || printf ,)\"r$j\":$(writer_stats "r$j")"
        j=$((j + 1))
    done
    printf '%s}' "$out"
}

echo "bench: setup through r1 (bench model, $records records) ..." >&2
set +e
replicas 1 --scenario update --setup --duration 0 --clients "$clients" >/dev/null
rc=$?
set -e
[ "$rc" -ne 3 ] || { echo "bench: the server refused the credential (UNAUTHENTICATED)" >&2; exit 1; }
[ "$rc" -eq 0 ] || { echo "bench: setup failed ($rc)" >&2; exit 1; }

run_replicas() { # round processes
    echo "bench: round $1: update @ $clients clients over $2 process(es) ..." >&2
    w0=$(all_stats)
    out=$(replicas "$2" --scenario update --clients "$clients" --duration "$dur") ||
        echo "bench: recordd-bench over $2 process(es) exited $?" >&2
    [ -n "$out" ] || { echo "bench: no result from recordd-bench over $2 process(es)" >&2; exit 1; }
    w1=$(all_stats)
    printf '%s\n' "$out" | sed "s/^{/{\"run\":\"grpc\",\"processes\":$2,\"round\":$1,/" >>"$results"
    printf '{"run":"writers","processes":%s,"round":%s,"before":%s,"after":%s}\n' \
        "$2" "$1" "$w0" "$w1" >>"$results"
}
r=1
while [ "$r" -le "$rounds" ]; do
    if [ $((r % 2)) -eq 1 ]; then order=$(seq 1 "$n"); else order=$(seq "$n" -1 1); fi
    for k in $order; do
        run_replicas "$r" "$k"
    done
    r=$((r + 1))
done
load_end=$(cut -d' ' -f1-3 /proc/loadavg)

"$python" - "$results" "$load_start" "$load_end" "$n" <<'PY'
import json, os, sys

rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
n = int(sys.argv[4])
pg = next(r for r in rows if r["run"] == "pg-settings")
runs = [r for r in rows if r["run"] == "grpc"]
writers = {(r["processes"], r["round"]): r for r in rows if r["run"] == "writers"}
best = {}
for r in runs:
    if r["processes"] not in best or r["rate"] > best[r["processes"]]["rate"]:
        best[r["processes"]] = r


def delta(w, names):
    """The writer figures of processes `names` between the two scrapes,
    summed; wall: the mean time between each process's two scrapes."""
    d = dict.fromkeys(("batches", "writes", "commit_s", "lock_s", "lock_batches"), 0.0)
    walls = []
    for p in names:
        a, b = w["after"].get(p) or {}, w["before"].get(p) or {}
        for key in d:
            d[key] += a.get(key, 0.0) - b.get(key, 0.0)
        if "at" in a and "at" in b:
            walls.append(a["at"] - b["at"])
    d["wall"] = sum(walls) / len(walls) if walls else 0.0
    return d


print("\nrecordd bench, %d recordd processes on one PostgreSQL %s database: %d vCPU,"
      " load average %s at start, %s at end" % (n, pg["version"], os.cpu_count(), sys.argv[2],
                                                sys.argv[3]))
print("PostgreSQL: " + ", ".join("%s=%s" % kv for kv in sorted(pg["settings"].items())))
print("(update @ %d clients spread over the processes; of %d rounds per row, the one with the"
      " higher rate; writer figures from /metrics, summed over the processes in use)"
      % (best[1]["clients"], max(r["round"] for r in runs)))
print("%-9s %9s %6s %8s %8s %8s %9s %8s %10s %9s %8s %12s" % (
    "processes", "update/s", "vs 1", "p99 ms", "CPU us", "batches", "batches/s", "writes/",
    "lock hold", "COMMIT", "lock", "1-org limit"))
print("%-9s %9s %6s %8s %8s %8s %9s %8s %10s %9s %8s %12s" % (
    "", "", "", "", "per call", "", "", "batch", "ms/batch", "ms/batch", "held %", "writes/s"))
for k in sorted(best):
    r = best[k]
    d = delta(writers[(k, r["round"])], ["r%d" % i for i in range(1, k + 1)])
    nb, lb = d["batches"], d["lock_batches"]
    hold = d["lock_s"] / lb if lb else float("nan")
    wpb = d["writes"] / nb if nb else float("nan")
    print("%-9d %9.0f %6.2f %8.1f %8.1f %8d %9.0f %8.1f %10.3f %9.3f %8.0f %12.0f" % (
        k, r["rate"], r["rate"] / best[1]["rate"], r["p99_us"] / 1000.0,
        r["server_cpu_us_per_call"], nb, nb / d["wall"] if d["wall"] else 0, wpb, hold * 1e3,
        d["commit_s"] / nb * 1e3 if nb else float("nan"),
        100.0 * d["lock_s"] / d["wall"] if d["wall"] else 0, wpb / hold if hold else 0))
    idle = delta(writers[(k, r["round"])], ["r%d" % i for i in range(k + 1, n + 1)])
    if idle["batches"]:
        print("          (the %d idle processes committed %d batches meanwhile)" % (n - k,
                                                                                  idle["batches"]))
print("(each round's rates: %s)" % "; ".join(
    "%d: %s" % (k, "/".join("%.0f" % r["rate"] for r in runs if r["processes"] == k))
    for k in sorted(best)))
k = max(best)
if k > 1:
    w = writers[(k, best[k]["round"])]
    print("(over %d processes, per process: %s)" % (k, ", ".join(
        "r%d %.0f batches %.1f writes/batch %.3f ms hold" % (
            i, d["batches"], d["writes"] / d["batches"] if d["batches"] else 0,
            d["lock_s"] / d["lock_batches"] * 1e3 if d["lock_batches"] else 0)
        for i, d in ((i, delta(w, ["r%d" % i])) for i in range(1, k + 1)))))
print("(lock hold: from the lock on the organisation's counter row to the end of COMMIT;"
      " lock held %: its share of the time between the scrapes; 1-org limit: writes/batch / hold)")
print()
for k in sorted(best):
    if k == 1:
        continue
    ratio = best[k]["rate"] / best[1]["rate"]
    print("%-34s %6.2f    target >= 0.80   %s" % ("update@64 over %d / over 1 process" % k, ratio,
                                                 "met" if ratio >= 0.8 else "MISSED"))
errors = sum(r["failed"] for r in runs)
if errors:
    print("\nwarning: %d calls failed; see %s" % (errors, sys.argv[1]))
PY
