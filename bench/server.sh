# Sourced by bench/run.sh and bench/soak.sh: starts $build/recordd on free
# ports and a temporary database with a fresh organisation, server keys and
# admin key (recordctl init), and stops it on exit (start_server and
# stop_server restart it with other flags). Needs $build; sets $tmp,
# $pid, $target (gRPC), $http (HTTP gateway) and exports RECORDD_BENCH_TOKEN
# (the admin key unless already set: the token comes from the environment
# only, never argv, which ps shows).
tmp=$(mktemp -d "${TMPDIR:-/tmp}/recordd-bench.XXXXXX")
pid=
cleanup() {
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$build/recordctl" init --dir "$tmp/var" --db "$tmp/recordd.db" >/dev/null

# Starts recordd on the bench database with extra flags ("$@"), sets $pid,
# $target and $http; exits when it does not come up.
start_server() {
    "$build/recordd" --grpc-listen 127.0.0.1:0 --http-listen 127.0.0.1:0 --db "$tmp/recordd.db" \
        --pepper-file "$tmp/var/pepper" --signing-key "$tmp/var/signing.key" \
        --trusted-keys "$tmp/var/trusted-keys" "$@" 2>"$tmp/server.log" &
    pid=$!
    target=
    for _ in $(seq 1 100); do
        target=$(sed -n 's/.*"msg":"listening".*"grpc":"\([^"]*\)".*/\1/p' "$tmp/server.log" | head -n 1)
        [ -n "$target" ] && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if [ -z "$target" ]; then
        echo "bench: recordd did not start:" >&2
        cat "$tmp/server.log" >&2
        exit 1
    fi
    http=$(sed -n 's/.*"msg":"listening".*"http":"\([^"]*\)".*/\1/p' "$tmp/server.log" | head -n 1)
}

# Stops it (SIGTERM) and waits.
stop_server() {
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    pid=
}

start_server

RECORDD_BENCH_TOKEN="${RECORDD_BENCH_TOKEN:-$(cat "$tmp/var/admin.key")}"
export RECORDD_BENCH_TOKEN
bench() {
    "$build/recordd-bench" --target "$target" --server-pid "$pid" --records "$records" --json "$@"
}

# Adds the bench model and its records; exits when the server refuses.
bench_setup() {
    set +e
    bench --scenario update --setup --duration 0 >/dev/null
    rc=$?
    set -e
    if [ "$rc" -eq 3 ]; then
        echo "bench: the server refused the credential (UNAUTHENTICATED)" >&2
        exit 1
    fi
    [ "$rc" -eq 0 ] || { echo "bench: setup failed ($rc)" >&2; exit 1; }
}
