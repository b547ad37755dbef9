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
        log "kept $WORK and containers $NAME-*"
    else
        podman rm -f -t 0 "$NAME-1" "$NAME-2" "$NAME-k8s" "$NAME-tls" >/dev/null 2>&1 || true
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

log "image test passed"
echo "1 passed, 0 failed"
