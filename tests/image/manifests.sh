#!/usr/bin/env bash
# The Kubernetes manifests (docker/k8s): `kubectl kustomize` renders them,
# every rendered object type-checks against the kubernetes-models typings
# (tsc --noEmit: a misspelled field is an excess property), the deployment
# rules hold (tests/image/k8s_ts.py --policy), and a deliberately misspelled
# field is caught (so the check cannot pass vacuously).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
NODE="$REPO/build/node"
PYTHON=${PYTHON:-/usr/bin/python3}
WORK=$(mktemp -d "$NODE.k8s.XXXXXX" 2>/dev/null || mktemp -d)
trap 'rm -rf "$WORK"' EXIT
fail() { echo "manifests: FAIL: $*"; exit 1; }

command -v kubectl >/dev/null || fail "kubectl is missing (make image-deps installs kubernetes-client)"
if [ ! -x "$NODE/node_modules/.bin/tsc" ] || [ ! -d "$NODE/node_modules/kubernetes-models" ] ||
    [ ! -d "$NODE/node_modules/@kubernetes-models/cert-manager" ]; then
    mkdir -p "$NODE"
    npm install --no-audit --no-fund --prefix "$NODE" kubernetes-models@4 @kubernetes-models/cert-manager@4 \
        typescript@5 >"$WORK/npm.log" 2>&1 ||
        { tail -n 20 "$WORK/npm.log"; fail "npm install kubernetes-models typescript failed"; }
fi

tsc() { # file.ts: type-checks it where node_modules resolves
    cp "$1" "$NODE/k8s-check.ts"
    (cd "$NODE" && node_modules/.bin/tsc --noEmit --strict --skipLibCheck --module esnext \
        --moduleResolution bundler --target es2020 k8s-check.ts)
}

# the base, and the TLS and mutual-TLS examples (base + components + a
# cert-manager Certificate)
for dir in docker/k8s docker/k8s-examples/tls docker/k8s-examples/mtls; do
    out="$WORK/$(echo "$dir" | tr / -).yaml"
    kubectl kustomize "$REPO/$dir" >"$out" || fail "kubectl kustomize $dir failed"
    echo "manifests: $dir rendered $(grep -c '^kind:' "$out") objects"
    "$PYTHON" "$REPO/tests/image/k8s_ts.py" --policy "$out" || fail "policy check of $dir"
    "$PYTHON" "$REPO/tests/image/k8s_ts.py" "$out" "$WORK/good.ts"
    tsc "$WORK/good.ts" || fail "$dir does not match the Kubernetes API types"
done
cp "$WORK/docker-k8s.yaml" "$WORK/rendered.yaml"
echo "manifests: schema ok"

# a typo must not pass: the same objects with one field misspelled
sed 's/terminationGracePeriodSeconds:/terminationGracePeriodSecond:/' "$WORK/rendered.yaml" >"$WORK/typo.yaml"
grep -q terminationGracePeriodSecond: "$WORK/typo.yaml" || fail "could not plant the typo"
"$PYTHON" "$REPO/tests/image/k8s_ts.py" "$WORK/typo.yaml" "$WORK/typo.ts"
if tsc "$WORK/typo.ts" >"$WORK/typo.out" 2>&1; then
    fail "a misspelled field (terminationGracePeriodSecond) passed the schema check"
fi
grep -q terminationGracePeriodSecond "$WORK/typo.out" || { cat "$WORK/typo.out"; fail "tsc failed for another reason"; }
echo "manifests: a misspelled field is rejected"

# and in the cert-manager Certificate (typed by @kubernetes-models/cert-manager)
sed 's/renewBefore:/renewBefor:/' "$WORK/docker-k8s-examples-tls.yaml" >"$WORK/typo-cert.yaml"
grep -q renewBefor: "$WORK/typo-cert.yaml" || fail "could not plant the Certificate typo"
"$PYTHON" "$REPO/tests/image/k8s_ts.py" "$WORK/typo-cert.yaml" "$WORK/typo-cert.ts"
if tsc "$WORK/typo-cert.ts" >"$WORK/typo-cert.out" 2>&1; then
    fail "a misspelled Certificate field (renewBefor) passed the schema check"
fi
grep -q renewBefor "$WORK/typo-cert.out" || { cat "$WORK/typo-cert.out"; fail "tsc failed for another reason"; }
echo "manifests: a misspelled Certificate field is rejected"
rm -f "$NODE/k8s-check.ts"
echo "3 passed, 0 failed"
