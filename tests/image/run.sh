#!/usr/bin/env bash
# `make image-test`: builds docker/Dockerfile with buildah and runs the image
# with podman the way README "Deploy" says, then checks it from outside:
#
#   1. a local debian:bookworm-slim base, made with debootstrap (minbase) from
#      the Debian archive this machine's apt uses and `podman import`ed
#      (cached: the image in podman's store, the tarball under $CACHE);
#   2. buildah bud --pull=never --layers docker/Dockerfile;
#   3. podman run --read-only --cap-drop=ALL --security-opt no-new-privileges
#      with a data volume and loopback-published ports; gRPC health
#      (readiness, liveness) and one write through the published port
#      (tests/image/client.py);
#   4. buf curl --protocol grpc --http2-prior-knowledge, schema from
#      reflection only: UpdateRecord with a JSON body and an auth header;
#      then the HTTP/JSON gateway: /readyz and a PATCH with If-Match;
#   5. podman stop (SIGTERM): exit code 0 and the "stopped" log line;
#   6. a new container on the same volume reads the write back;
#   7. the StatefulSet's pod as podman can mimic it: the ConfigMap's variables
#      and uid/gid (from `kubectl kustomize docker/k8s`), the pepper and
#      signing key made by `recordctl init --dir keys` mounted read-only where
#      the Secret goes (root-owned, group fsGroup, its defaultMode), a fresh
#      volume owned by the fsGroup: ready, a write, podman stop exits 0;
#   8. TLS as docker/k8s/components/tls sets it up (docker/k8s-examples/tls):
#      its variables, a kubernetes.io/tls-like mount of openssl-made files,
#      its exec readiness probe (recordctl health over TLS) inside the
#      container; gRPC and HTTPS from outside trusting the CA; plaintext
#      refused; podman stop exits 0.
#   9. replicas on one PostgreSQL, as docker/k8s-examples/postgres runs them:
#      a PostgreSQL 15 image built from the same base (tests/image/postgres,
#      cached like the base) runs as the postgres user with password
#      authentication on a podman network of the test's own; `recordctl init`
#      against it makes the keys and the admin key; two recordd containers A
#      and B run as the Deployment's pod (its ConfigMap variables, uid/gid,
#      the keys Secret with the trusted public key, RECORDD_DB from the
#      "Secret" — B with the password in a pgpass file instead — a read-only
#      root and no /data volume). A write through A is read through B, B's
#      WatchChanges sees A's writes live, `podman stop` of A under 4 writers
#      exits 0 and every write A confirmed is read through B and was in B's
#      feed, gap-free; PostgreSQL stopped turns B's readiness NOT_SERVING
#      (liveness stays SERVING) and started again SERVING; B stops with 0.
#
# Needs root, buildah, podman, runc and debootstrap (make image-deps). Uses a
# test-owned containers.conf (CONTAINERS_CONF) instead of /etc. Environment:
#   RECORDD_IMAGE_CACHE  base tarball cache [/var/cache/recordd-image-test]
#   RECORDD_IMAGE_KEEP=1 keep the work directory and containers for debugging
set -euo pipefail

REPO=$(cd "$(dirname "$0")/../.." && pwd)
CACHE=${RECORDD_IMAGE_CACHE:-/var/cache/recordd-image-test}
BASE=docker.io/library/debian:bookworm-slim
IMAGE=localhost/recordd:image-test
PYTHON=${PYTHON:-/usr/bin/python3}
WORK=$(mktemp -d /tmp/recordd-image-test.XXXXXX)
NAME=recordd-image-test-$$
T0=$(date +%s)

log() { printf '[image-test %3ds] %s\n' "$(($(date +%s) - T0))" "$*"; }
fail() { log "FAIL: $*"; exit 1; }

[ "$(id -u)" = 0 ] || fail "needs root (podman/buildah with the system store)"
for cmd in podman buildah runc debootstrap; do
    command -v "$cmd" >/dev/null || fail "$cmd is missing: run make image-deps"
done

# podman/buildah settings owned by this test, not /etc.
# Containers may not raise limits above this process's hard limits, which
# podman's defaults (nofile 1048576) exceed here: nofile up to our hard
# limit (at most 65536), nproc 4096 (higher values are refused by runc here).
HARD_NOFILE=$(ulimit -Hn)
{ [ "$HARD_NOFILE" = unlimited ] || [ "$HARD_NOFILE" -gt 65536 ]; } && HARD_NOFILE=65536
NOFILE="$HARD_NOFILE:$HARD_NOFILE"
NPROC="4096:4096"
export CONTAINERS_CONF="$WORK/containers.conf"
cat >"$CONTAINERS_CONF" <<CONF
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"

[containers]
default_ulimits = ["nofile=$NOFILE", "nproc=$NPROC"]
CONF

cleanup() {
    rc=$?
    if [ "${RECORDD_IMAGE_KEEP:-0}" = 1 ]; then
        log "kept $WORK, containers $NAME-* and network $NAME-net"
    else
        # --ignore: without it this podman removes nothing when one name is
        # missing (a run that failed before creating them all)
        podman rm -f --ignore -t 0 "$NAME-1" "$NAME-2" "$NAME-k8s" "$NAME-tls" "$NAME-init" "$NAME-a" \
            "$NAME-b" "$NAME-pg" >/dev/null 2>&1 || true
        podman network rm -f "$NAME-net" >/dev/null 2>&1 || true
        rm -rf "$WORK"
    fi
    exit $rc
}
trap cleanup EXIT

# ---- 1. the base image ---------------------------------------------------------
# The archive this machine's apt uses: first deb.debian.org-style URI of a
# "bookworm" source (deb822 or one-line format).
mirror() {
    local m
    m=$(grep -hs -A3 '^Types:.*deb' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null |
        awk '/^URIs:/ {print $2}' | grep -v security | head -n1 || true)
    [ -n "$m" ] || m=$(grep -hs '^deb .* bookworm ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list |
        awk '{print $2}' | grep -v security | head -n1 || true)
    echo "${m:-http://deb.debian.org/debian}"
}

if podman image exists "$BASE"; then
    log "base $BASE: cached in podman's store"
else
    mkdir -p "$CACHE"
    TARBALL="$CACHE/debian-bookworm-minbase.tar"
    if [ ! -s "$TARBALL" ]; then
        MIRROR=$(mirror)
        log "debootstrap --variant=minbase bookworm from $MIRROR (once; cached in $CACHE)"
        ROOT="$WORK/rootfs"
        debootstrap --variant=minbase bookworm "$ROOT" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 ||
            { tail -n 30 "$WORK/debootstrap.log"; fail "debootstrap failed"; }
        # what debian:bookworm-slim drops too: apt lists, caches, docs
        rm -rf "$ROOT"/var/lib/apt/lists/* "$ROOT"/var/cache/apt/*.bin "$ROOT"/var/cache/apt/archives/*.deb \
            "$ROOT"/usr/share/doc/* "$ROOT"/usr/share/man/* "$ROOT"/usr/share/info/*
        echo "deb $MIRROR bookworm main" >"$ROOT/etc/apt/sources.list"
        tar --numeric-owner -C "$ROOT" -cf "$TARBALL.tmp" .
        mv "$TARBALL.tmp" "$TARBALL"
        rm -rf "$ROOT"
    fi
    log "podman import $TARBALL as $BASE"
    podman import --change 'CMD ["bash"]' "$TARBALL" "$BASE" >/dev/null
fi

# ---- 2. the image ----------------------------------------------------------------
log "buildah bud --pull=never -f docker/Dockerfile"
buildah bud --pull=never --layers --network=host --ulimit "nofile=$NOFILE" --ulimit "nproc=$NPROC" -f "$REPO/docker/Dockerfile" -t "$IMAGE" "$REPO" \
    >"$WORK/build.log" 2>&1 || { tail -n 40 "$WORK/build.log"; fail "buildah bud failed"; }
USER_OF=$(podman image inspect -f '{{.Config.User}}' "$IMAGE")
[ "$USER_OF" = "10001:10001" ] || fail "image USER is '$USER_OF', want 10001:10001"
STOPSIG=$(podman image inspect -f '{{.Config.StopSignal}}' "$IMAGE")
[ "$STOPSIG" = "SIGTERM" ] || fail "image STOPSIGNAL is '$STOPSIG'"
podman run --rm --entrypoint /bin/sh "$IMAGE" -c 'command -v sleep >/dev/null' ||
    fail "the image has no sleep binary for the preStop hook"
# --version prints and exits: it creates no keys or database on the volume
mkdir -p "$WORK/version-data" && chown 10001:10001 "$WORK/version-data"
podman run --rm --read-only -v "$WORK/version-data:/data" "$IMAGE" --version | grep '^recordd ' >/dev/null ||
    fail "recordd --version through the entrypoint failed"
[ -z "$(ls -A "$WORK/version-data")" ] || fail "--version initialised the volume: $(ls -A "$WORK/version-data")"

# ---- 3. run it --------------------------------------------------------------------
free_port() { "$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
GRPC_PORT=$(free_port)
HTTP_PORT=$(free_port)
DATA="$WORK/data"
mkdir -p "$DATA"
chown 10001:10001 "$DATA"
chmod 0750 "$DATA"

run_container() { # name
    podman run -d --name "$1" --read-only --cap-drop=ALL --security-opt no-new-privileges \
        -v "$DATA:/data" -p "127.0.0.1:$GRPC_PORT:50051" -p "127.0.0.1:$HTTP_PORT:8080" \
        "$IMAGE" >/dev/null
}

log "podman run (read-only, no capabilities) on 127.0.0.1:$GRPC_PORT"
run_container "$NAME-1"
CLIENT=("$PYTHON" "$REPO/tests/image/client.py" --addr "127.0.0.1:$GRPC_PORT" --key-file "$DATA/keys/admin.key")
"${CLIENT[@]}" wait || { podman logs "$NAME-1" | tail -n 20; fail "the container never became ready"; }
"${CLIENT[@]}" write || { podman logs "$NAME-1" | tail -n 20; fail "the write failed"; }

# ---- 4. buf curl through reflection ------------------------------------------------
BUF="$REPO/build/node/node_modules/.bin/buf"
if [ ! -x "$BUF" ]; then
    log "npm install @bufbuild/buf into build/node"
    npm install --no-audit --no-fund --prefix "$REPO/build/node" @bufbuild/buf >"$WORK/npm.log" 2>&1 ||
        { tail -n 20 "$WORK/npm.log"; fail "npm install @bufbuild/buf failed"; }
fi
export BUF_CACHE_DIR="$WORK/buf-cache" NO_COLOR=1
log "buf curl UpdateRecord (reflection, JSON body, auth header)"
OUT=$("$BUF" curl --protocol grpc --http2-prior-knowledge --timeout 60s \
    -H "authorization: Bearer $(cat "$DATA/keys/admin.key")" \
    -d '{"model":"notes","id":"n1","data":{"text":"updated by buf"},"expectedVersion":"1"}' \
    "http://127.0.0.1:$GRPC_PORT/recordd.v1.Records/UpdateRecord") || fail "buf curl failed: $OUT"
"$PYTHON" -c 'import json,sys; r=json.loads(sys.argv[1]); assert r["status"]=="CONFIRMED" and r["success"], r' \
    "$OUT" || fail "unexpected UpdateRecord answer: $OUT"
"$BUF" curl --protocol grpc --http2-prior-knowledge --timeout 60s -d '{"service":"readiness"}' \
    "http://127.0.0.1:$GRPC_PORT/grpc.health.v1.Health/Check" | grep SERVING >/dev/null ||
    fail "buf curl health check failed"

# ---- 4b. the HTTP/JSON gateway through the published port ---------------------------
log "HTTP: /readyz and a PATCH with If-Match on 127.0.0.1:$HTTP_PORT"
"$PYTHON" - "http://127.0.0.1:$HTTP_PORT" "$DATA/keys/admin.key" <<'PY' || fail "the HTTP gateway check failed"
import sys, requests
url, key = sys.argv[1], open(sys.argv[2]).read().strip()
assert requests.get(url + "/readyz", timeout=30).status_code == 200
r = requests.patch(url + "/v1/models/notes/n1", json={"text": "updated over http"}, timeout=30,
                   headers={"Authorization": "Bearer " + key, "If-Match": '"2"'})
assert r.status_code == 200 and r.json()["status"] == "CONFIRMED", r.text
PY

# ---- 5. stop with SIGTERM ----------------------------------------------------------
log "podman stop (SIGTERM)"
podman stop -t 30 "$NAME-1" >/dev/null
CODE=$(podman inspect -f '{{.State.ExitCode}}' "$NAME-1")
podman logs "$NAME-1" >"$WORK/container-1.log" 2>&1 || true
[ "$CODE" = 0 ] || { tail -n 20 "$WORK/container-1.log"; fail "the container exited $CODE after SIGTERM"; }
grep -q '"msg":"stopped"' "$WORK/container-1.log" || fail "no 'stopped' log line"
"$PYTHON" -c 'import json, sys; [json.loads(l) for l in open(sys.argv[1]) if l.strip()]' "$WORK/container-1.log" ||
    fail "a log line of the first start is not JSON"
grep -q '"method":"/recordd.v1.Records/UpdateRecord"' "$WORK/container-1.log" ||
    fail "no request log line for UpdateRecord"
if grep -q "$(cat "$DATA/keys/admin.key")" "$WORK/container-1.log"; then fail "the admin key is in the log"; fi

# ---- 6. a new container on the same volume ------------------------------------------
log "a second container on the same volume"
run_container "$NAME-2"
"${CLIENT[@]}" wait || { podman logs "$NAME-2" | tail -n 20; fail "the second container never became ready"; }
"${CLIENT[@]}" read --expect-text "updated over http" || fail "the write did not survive the restart"
podman stop -t 30 "$NAME-2" >/dev/null
CODE=$(podman inspect -f '{{.State.ExitCode}}' "$NAME-2")
[ "$CODE" = 0 ] || fail "the second container exited $CODE after SIGTERM"

# ---- 7. the Kubernetes pod's settings ------------------------------------------------
log "the StatefulSet's settings: ConfigMap variables, the keys as a read-only Secret"
command -v kubectl >/dev/null || fail "kubectl is missing (make image-deps installs kubernetes-client)"
kubectl kustomize "$REPO/docker/k8s" >"$WORK/rendered.yaml" || fail "kubectl kustomize docker/k8s failed"
"$PYTHON" "$REPO/tests/image/k8s_ts.py" --pod "$WORK/rendered.yaml" "$WORK" || fail "cannot read the pod's settings"
# shellcheck disable=SC1091
. "$WORK/pod.sh"
KEYS="$WORK/keys" SECRET="$WORK/secret" PODDATA="$WORK/pod-data"
mkdir -p "$KEYS" "$SECRET" "$PODDATA"
chown 10001:10001 "$KEYS"
podman run --rm --read-only --cap-drop=ALL --security-opt no-new-privileges -v "$KEYS:/keys" \
    --entrypoint /usr/local/bin/recordctl "$IMAGE" init --dir /keys --db /keys/recordd.db \
    >/dev/null 2>"$WORK/init.log" ||
    { cat "$WORK/init.log"; fail "recordctl init --dir keys failed"; }
for item in $SECRET_ITEMS; do # key:path, as kubectl create secret --from-file=key=keys/key
    install -o 0 -g "$POD_FSGROUP" -m "$SECRET_MODE" "$KEYS/${item%%:*}" "$SECRET/${item#*:}"
done
chown "0:$POD_FSGROUP" "$PODDATA"
chmod 2775 "$PODDATA"
podman run -d --name "$NAME-k8s" --read-only --cap-drop=ALL --security-opt no-new-privileges \
    --user "$POD_UID:$POD_GID" --group-add "$POD_FSGROUP" --env-file "$WORK/env" \
    -v "$PODDATA:/data" -v "$SECRET:$SECRET_MOUNT:ro" -p "127.0.0.1:$GRPC_PORT:50051" "$IMAGE" >/dev/null
POD_CLIENT=("$PYTHON" "$REPO/tests/image/client.py" --addr "127.0.0.1:$GRPC_PORT" --key-file "$PODDATA/keys/admin.key")
"${POD_CLIENT[@]}" wait || { podman logs "$NAME-k8s" | tail -n 20; fail "the pod-like container never became ready"; }
"${POD_CLIENT[@]}" write || { podman logs "$NAME-k8s" | tail -n 20; fail "the write in the pod-like container failed"; }
[ ! -e "$PODDATA/keys/pepper" ] && [ ! -e "$PODDATA/keys/signing.key" ] ||
    fail "init wrote keys to the volume instead of using the Secret's"
podman stop -t 30 "$NAME-k8s" >/dev/null
CODE=$(podman inspect -f '{{.State.ExitCode}}' "$NAME-k8s")
[ "$CODE" = 0 ] || { podman logs "$NAME-k8s" | tail -n 20; fail "the pod-like container exited $CODE after SIGTERM"; }

# ---- 8. TLS, as docker/k8s/components/tls configures it --------------------------------
log "TLS: the tls component's settings and probe, certificates made with openssl"
kubectl kustomize "$REPO/docker/k8s-examples/tls" >"$WORK/rendered-tls.yaml" ||
    fail "kubectl kustomize docker/k8s-examples/tls failed"
TLS_SRC="$WORK/tls-src" TLS="$WORK/tls" TLSDATA="$WORK/tls-data"
mkdir -p "$TLS_SRC" "$TLS" "$TLSDATA"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=image-test-ca \
    -keyout "$TLS_SRC/ca.key" -out "$TLS_SRC/ca.crt" 2>/dev/null || fail "openssl: CA"
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=recordd \
    -keyout "$TLS_SRC/tls.key" -out "$TLS_SRC/tls.csr" 2>/dev/null || fail "openssl: CSR"
printf 'subjectAltName=DNS:recordd,DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n' \
    >"$TLS_SRC/ext"
openssl x509 -req -in "$TLS_SRC/tls.csr" -CA "$TLS_SRC/ca.crt" -CAkey "$TLS_SRC/ca.key" -CAcreateserial \
    -days 1 -extfile "$TLS_SRC/ext" -out "$TLS_SRC/tls.crt" 2>/dev/null || fail "openssl: certificate"
"$PYTHON" - "$WORK/rendered-tls.yaml" "$WORK" <<'PY' || fail "cannot read the tls component's settings"
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
(sts,) = [d for d in docs if d["kind"] == "StatefulSet"]
pod = sts["spec"]["template"]["spec"]
(c,) = pod["containers"]
(vol,) = [v for v in pod["volumes"] if v.get("secret", {}).get("secretName") == "recordd-tls"]
(mount,) = [m for m in c["volumeMounts"] if m["name"] == vol["name"]]
with open(sys.argv[2] + "/tls-env", "w") as f:
    f.writelines(f"{e['name']}={e['value']}\n" for e in c["env"])
with open(sys.argv[2] + "/tls.sh", "w") as f:
    f.write(f"TLS_MOUNT={mount['mountPath']}\nTLS_MODE={vol['secret']['defaultMode']:o}\n")
    f.write("READY_PROBE=(" + " ".join(f"'{a}'" for a in c["readinessProbe"]["exec"]["command"]) + ")\n")
PY
# shellcheck disable=SC1091
. "$WORK/tls.sh"
for f in tls.crt tls.key ca.crt; do # as the kubelet mounts a kubernetes.io/tls Secret
    install -o 0 -g 10001 -m "$TLS_MODE" "$TLS_SRC/$f" "$TLS/$f"
done
chown 10001:10001 "$TLSDATA"
podman run -d --name "$NAME-tls" --read-only --cap-drop=ALL --security-opt no-new-privileges \
    --env-file "$WORK/tls-env" -v "$TLSDATA:/data" -v "$TLS:$TLS_MOUNT:ro" \
    -p "127.0.0.1:$GRPC_PORT:50051" -p "127.0.0.1:$HTTP_PORT:8080" "$IMAGE" >/dev/null
ready=0
for _ in $(seq 1 150); do
    if podman exec "$NAME-tls" "${READY_PROBE[@]}" >/dev/null 2>&1; then ready=1; break; fi
    sleep 0.2
done
[ "$ready" = 1 ] || { podman logs "$NAME-tls" | tail -n 20; fail "the tls component's readiness probe never passed"; }
"$PYTHON" - "127.0.0.1:$GRPC_PORT" "https://127.0.0.1:$HTTP_PORT" "$TLS_SRC/ca.crt" "$TLSDATA/keys/admin.key" <<'PY' ||
import sys, grpc, requests
addr, url, ca, key_file = sys.argv[1:]
key = open(key_file).read().strip()
ch = grpc.secure_channel(addr, grpc.ssl_channel_credentials(root_certificates=open(ca, "rb").read()))
check = ch.unary_unary("/grpc.health.v1.Health/Check", request_serializer=lambda b: b,
                       response_deserializer=lambda b: b)
assert check(b"", timeout=30) == b"\x08\x01", "gRPC over TLS: not SERVING"
schema = ch.unary_unary("/recordd.v1.Schemas/GetSchema", request_serializer=lambda b: b,
                        response_deserializer=lambda b: b)
schema(b"", timeout=30, metadata=[("authorization", "Bearer " + key)])
assert requests.get(url + "/readyz", verify=ca, timeout=30).status_code == 200
r = requests.get(url + "/v1/schema", verify=ca, timeout=30, headers={"Authorization": "Bearer " + key})
assert r.status_code == 200, r.text
try:
    requests.get(url.replace("https:", "http:") + "/readyz", timeout=10)
    raise SystemExit("the HTTP listener answered plaintext")
except requests.exceptions.ConnectionError:
    pass
PY
    { podman logs "$NAME-tls" | tail -n 20; fail "TLS calls from outside the container failed"; }
podman logs "$NAME-tls" 2>&1 | grep '"tls":"on"' >/dev/null || fail "no \"tls\":\"on\" in the listening line"
podman stop -t 30 "$NAME-tls" >/dev/null
CODE=$(podman inspect -f '{{.State.ExitCode}}' "$NAME-tls")
[ "$CODE" = 0 ] || { podman logs "$NAME-tls" | tail -n 20; fail "the TLS container exited $CODE after SIGTERM"; }

# ---- 9. replicas on one PostgreSQL ------------------------------------------------------
log "PostgreSQL: docker/k8s-examples/postgres's pod twice, on one PostgreSQL container"
PGW="$WORK/pg"
mkdir -p "$PGW"
kubectl kustomize "$REPO/docker/k8s-examples/postgres" >"$PGW/rendered.yaml" ||
    fail "kubectl kustomize docker/k8s-examples/postgres failed"
"$PYTHON" "$REPO/tests/image/k8s_ts.py" --pod "$PGW/rendered.yaml" "$PGW" || fail "cannot read the Deployment's settings"
# shellcheck disable=SC1091
. "$PGW/pod.sh"
[ "$POD_KIND" = Deployment ] && [ "$SECRET_ENV" = "RECORDD_DB:recordd-db:uri" ] ||
    fail "docker/k8s-examples/postgres: want a Deployment with RECORDD_DB from recordd-db/uri"

# the PostgreSQL image: tagged with a hash of its directory, cached in podman's
# store and as a tarball beside the base's
PG_SRC="$REPO/tests/image/postgres"
PG_TAG=$(cat "$PG_SRC/Containerfile" "$PG_SRC/entrypoint.sh" | sha256sum | cut -c1-12)
PG_IMAGE="localhost/recordd-image-test-postgres:$PG_TAG"
PG_TARBALL="$CACHE/postgres-$PG_TAG.tar"
if podman image exists "$PG_IMAGE"; then
    log "$PG_IMAGE: cached in podman's store"
elif [ -s "$PG_TARBALL" ]; then
    log "podman load $PG_TARBALL"
    podman load -i "$PG_TARBALL" >"$PGW/load.log" 2>&1 || { cat "$PGW/load.log"; fail "podman load $PG_TARBALL failed"; }
else
    log "buildah bud tests/image/postgres (apt-get install postgresql-15; once, cached in $CACHE)"
    buildah bud --pull=never --layers --network=host --ulimit "nofile=$NOFILE" --ulimit "nproc=$NPROC" \
        -f "$PG_SRC/Containerfile" -t "$PG_IMAGE" "$PG_SRC" >"$PGW/build.log" 2>&1 ||
        { tail -n 40 "$PGW/build.log"; fail "buildah bud tests/image/postgres failed"; }
    mkdir -p "$CACHE"
    rm -f "$CACHE"/postgres-*.tar
    podman save -o "$PG_TARBALL.tmp" "$PG_IMAGE" >"$PGW/save.log" 2>&1 && mv "$PG_TARBALL.tmp" "$PG_TARBALL" ||
        log "could not cache $PG_IMAGE in $CACHE (continuing)"
fi

NET="$NAME-net"
podman network create "$NET" >/dev/null || fail "podman network create $NET failed"
PG_PASSWORD=$(openssl rand -hex 16)
(umask 077 && printf 'PG_PASSWORD=%s\n' "$PG_PASSWORD" >"$PGW/postgres.env")
# (the network's DNS server, started with the first container, logs to stderr)
podman run -d --name "$NAME-pg" --network "$NET" --env-file "$PGW/postgres.env" "$PG_IMAGE" \
    >/dev/null 2>"$PGW/pg-run.log" || { cat "$PGW/pg-run.log"; fail "the PostgreSQL container did not start"; }
ready=0
for _ in $(seq 1 150); do
    if podman exec "$NAME-pg" pg_isready -q -h 127.0.0.1 2>/dev/null; then ready=1; break; fi
    sleep 0.2
done
[ "$ready" = 1 ] || { podman logs "$NAME-pg" | tail -n 20; fail "PostgreSQL never became ready"; }
PG_USER_OF=$(podman exec "$NAME-pg" id -un 2>/dev/null)
[ "$PG_USER_OF" = postgres ] || fail "PostgreSQL runs as $PG_USER_OF, not postgres"
# the Secret's value: the URI with the password (the container name resolves on $NET)
(umask 077 && printf 'RECORDD_DB=postgresql://recordd:%s@%s:5432/recordd\n' "$PG_PASSWORD" "$NAME-pg" \
    >"$PGW/db-secret.env")

# README: `recordctl init --dir ./keys --db URI` once, against the database; its
# files become the keys Secret (pepper, signing.key, signing.pub)
PGKEYS="$PGW/keys" PGSECRET="$PGW/secret"
mkdir -p "$PGKEYS" "$PGSECRET"
chown 10001:10001 "$PGKEYS"
podman run --rm --name "$NAME-init" --network "$NET" --read-only --cap-drop=ALL --security-opt no-new-privileges \
    --env-file "$PGW/db-secret.env" -v "$PGKEYS:/keys" --entrypoint /usr/local/bin/recordctl "$IMAGE" \
    init --dir /keys >/dev/null 2>"$PGW/init.log" || { cat "$PGW/init.log"; fail "recordctl init against PostgreSQL failed"; }
pubs=("$PGKEYS"/trusted-keys/*.pub)
[ "${#pubs[@]}" = 1 ] && [ -s "${pubs[0]}" ] || fail "recordctl init made no single trusted public key"
for item in $SECRET_ITEMS; do # key:path; signing.pub is keys/trusted-keys/<kid>.pub
    key=${item%%:*}
    src="$PGKEYS/$key"
    [ "$key" = signing.pub ] && src=${pubs[0]}
    install -D -o 0 -g "$POD_FSGROUP" -m "$SECRET_MODE" "$src" "$PGSECRET/${item#*:}"
done
# B: the URI without the password, which a pgpass file gives libpq (PGPASSFILE):
# mode 0600 and owned by the pod's user, or libpq ignores it
(umask 077 && printf 'RECORDD_DB=postgresql://recordd@%s:5432/recordd\nPGPASSFILE=/run/pgpass/pgpass\n' \
    "$NAME-pg" >"$PGW/db-pgpass.env")
mkdir -p "$PGW/pgpass"
printf '%s:5432:recordd:recordd:%s\n' "$NAME-pg" "$PG_PASSWORD" >"$PGW/pgpass/pgpass"
chown "$POD_UID:$POD_GID" "$PGW/pgpass/pgpass"
chmod 0600 "$PGW/pgpass/pgpass"

PG_GRPC_A=$(free_port) PG_HTTP_A=$(free_port) PG_GRPC_B=$(free_port) PG_HTTP_B=$(free_port)
run_replica() { # name grpc-port http-port db-env-file [podman options]
    local name=$1 grpc=$2 http=$3 dbenv=$4
    shift 4
    # as the kubelet runs the pod: no volume for the image's /data (nothing
    # but /tmp is writable), the ConfigMap's variables, the Secret read-only
    podman run -d --name "$NAME-$name" --network "$NET" --read-only --image-volume ignore \
        --cap-drop=ALL --security-opt no-new-privileges \
        --user "$POD_UID:$POD_GID" --group-add "$POD_FSGROUP" --env-file "$PGW/env" --env-file "$dbenv" \
        -v "$PGSECRET:$SECRET_MOUNT:ro" "$@" -p "127.0.0.1:$grpc:50051" -p "127.0.0.1:$http:8080" \
        "$IMAGE" >/dev/null
}
run_replica a "$PG_GRPC_A" "$PG_HTTP_A" "$PGW/db-secret.env" || fail "replica A did not start"
run_replica b "$PG_GRPC_B" "$PG_HTTP_B" "$PGW/db-pgpass.env" -v "$PGW/pgpass:/run/pgpass:ro" ||
    fail "replica B did not start"
PG_A=("$PYTHON" "$REPO/tests/image/client.py" --addr "127.0.0.1:$PG_GRPC_A" --key-file "$PGKEYS/admin.key")
PG_B=("$PYTHON" "$REPO/tests/image/client.py" --addr "127.0.0.1:$PG_GRPC_B" --key-file "$PGKEYS/admin.key")
"${PG_A[@]}" wait || { podman logs "$NAME-a" | tail -n 20; fail "replica A never became ready"; }
"${PG_B[@]}" wait || { podman logs "$NAME-b" | tail -n 20; fail "replica B never became ready"; }
"$PYTHON" - "http://127.0.0.1:$PG_HTTP_A" "http://127.0.0.1:$PG_HTTP_B" <<'PY' || fail "/readyz of a replica is not 200"
import sys, requests
for url in sys.argv[1:]:
    assert requests.get(url + "/readyz", timeout=30).status_code == 200, url
PY

log "PostgreSQL: a write through A read through B, B's change feed, podman stop of A under writes"
"${PG_A[@]}" replicas --other "127.0.0.1:$PG_GRPC_B" --stop "podman stop -t 30 $NAME-a" ||
    { podman logs "$NAME-a" 2>&1 | tail -n 20; podman logs "$NAME-b" 2>&1 | tail -n 10; fail "the replicas check failed"; }
CODE=$(podman inspect -f '{{.State.ExitCode}}' "$NAME-a")
podman logs "$NAME-a" >"$PGW/a.log" 2>&1 || true
[ "$CODE" = 0 ] || { tail -n 20 "$PGW/a.log"; fail "replica A exited $CODE after SIGTERM"; }
grep -q '"msg":"stopped"' "$PGW/a.log" || fail "no 'stopped' log line from replica A"
"$PYTHON" -c 'import json, sys; [json.loads(l) for l in open(sys.argv[1]) if l.strip()]' "$PGW/a.log" ||
    fail "a log line of replica A is not JSON"
if grep -q "$PG_PASSWORD" "$PGW/a.log"; then fail "the database password is in replica A's log"; fi

log "PostgreSQL stopped: B's readiness NOT_SERVING, liveness SERVING; started again: ready"
podman stop -t 30 "$NAME-pg" >/dev/null
"${PG_B[@]}" health --service readiness --want NOT_SERVING --within 30 ||
    fail "B stayed ready without its database"
"${PG_B[@]}" health --service liveness --want SERVING --within 5 || fail "B's liveness failed with the database down"
podman start "$NAME-pg" >/dev/null
"${PG_B[@]}" health --service readiness --want SERVING --within 60 ||
    { podman logs "$NAME-b" 2>&1 | tail -n 20; fail "B did not become ready again after PostgreSQL came back"; }
"${PG_B[@]}" read --id r1 --expect-text "written through A" || fail "B cannot read after PostgreSQL came back"
podman stop -t 30 "$NAME-b" >/dev/null
CODE=$(podman inspect -f '{{.State.ExitCode}}' "$NAME-b")
podman logs "$NAME-b" >"$PGW/b.log" 2>&1 || true
[ "$CODE" = 0 ] || { tail -n 20 "$PGW/b.log"; fail "replica B exited $CODE after SIGTERM"; }
if grep -q "$PG_PASSWORD" "$PGW/b.log"; then fail "the database password is in replica B's log"; fi

log "image test passed"
echo "1 passed, 0 failed"
