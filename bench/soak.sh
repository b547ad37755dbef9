#!/bin/sh
# `make soak`: DESIGN.md §10's "RSS flat over a 10-minute soak". Starts
# build/recordd like `make bench`, fills the bench model, then runs update
# at 64 clients for SOAK_SECONDS (600) while sampling the server's VmRSS
# every SOAK_EVERY (10) seconds. Prints the samples, the throughput and
# latency of the whole run, and whether RSS stayed flat: the largest sample
# of the last third at most SOAK_GROWTH_PCT (10) % above the largest of the
# first third. Exits 1 when it did not.
#
# Usage: sh bench/soak.sh [BUILD_DIR]
set -eu

build=${1:-build}
secs=${SOAK_SECONDS:-600}
every=${SOAK_EVERY:-10}
growth=${SOAK_GROWTH_PCT:-10}
records=${BENCH_RECORDS:-10000}
python=${PYTHON:-/usr/bin/python3}

for b in recordd recordctl recordd-bench; do
    [ -x "$build/$b" ] || { echo "soak: $build/$b is missing (run make soak)" >&2; exit 1; }
done
. "$(dirname "$0")/server.sh"

echo "soak: recordd $target (pid $pid), update @ 64 clients for ${secs}s" >&2
bench_setup
bench --scenario update --clients 64 --warmup 0 --duration "$secs" >"$tmp/run.json" &
load=$!
: >"$tmp/rss"
t=0
while kill -0 "$load" 2>/dev/null; do
    echo "$t $(awk '/^VmRSS/ {print $2}' "/proc/$pid/status")" >>"$tmp/rss"
    sleep "$every"
    t=$((t + every))
done
wait "$load"

"$python" - "$tmp/rss" "$tmp/run.json" "$growth" <<'PY'
import json, sys
samples = [tuple(map(int, l.split())) for l in open(sys.argv[1]) if len(l.split()) == 2]
run = json.loads(open(sys.argv[2]).read())
growth = float(sys.argv[3])
print("t s    VmRSS MB")
for t, kb in samples:
    print("%5d  %8.1f" % (t, kb / 1024.0))
third = max(1, len(samples) // 3)
first = max(kb for _, kb in samples[:third])
last = max(kb for _, kb in samples[-third:])
print("update @ 64: %.0f commits/s over %.0f s, p50/p99/p999 %.0f/%.0f/%.0f us, %d failed,"
      " server peak RSS %.1f MB" % (run["rate"], run["seconds"], run["p50_us"], run["p99_us"],
                                    run["p999_us"], run["failed"], run["server_vmhwm_kb"] / 1024.0))
flat = last <= first * (1 + growth / 100.0)
print("RSS: %.1f MB at most in the first third, %.1f MB in the last (%+.1f %%): %s" % (
    first / 1024.0, last / 1024.0, 100.0 * (last - first) / first,
    "flat" if flat else "GROWING (limit +%g %%)" % growth))
sys.exit(0 if flat and run["failed"] == 0 else 1)
PY
