#!/usr/bin/env bash
# The Kubernetes manifests (docker/k8s): `kubectl kustomize` renders them,
# every rendered object type-checks against the kubernetes-models typings
# (tsc --noEmit: a misspelled field is an excess property), the deployment
# rules hold (tests/image/k8s_ts.py --policy), and deliberately misspelled
# fields and broken rules are caught (so the checks cannot pass vacuously).
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

# the base, the TLS and mutual-TLS examples (base + components + a
# cert-manager Certificate), and the PostgreSQL replicas without and with TLS
# (the postgres component: a Deployment and a PodDisruptionBudget)
for dir in docker/k8s docker/k8s-examples/tls docker/k8s-examples/mtls docker/k8s-examples/postgres \
    docker/k8s-examples/postgres-tls; do
    out="$WORK/$(echo "$dir" | tr / -).yaml"
    kubectl kustomize "$REPO/$dir" >"$out" || fail "kubectl kustomize $dir failed"
    echo "manifests: $dir rendered $(grep -c '^kind:' "$out") objects"
    "$PYTHON" "$REPO/tests/image/k8s_ts.py" --policy "$out" || fail "policy check of $dir"
    "$PYTHON" "$REPO/tests/image/k8s_ts.py" "$out" "$WORK/good.ts"
    tsc "$WORK/good.ts" || fail "$dir does not match the Kubernetes API types"
done
grep -q '^kind: Deployment' "$WORK/docker-k8s-examples-postgres.yaml" &&
    grep -q '^kind: PodDisruptionBudget' "$WORK/docker-k8s-examples-postgres.yaml" &&
    ! grep -q '^kind: StatefulSet' "$WORK/docker-k8s-examples-postgres.yaml" ||
    fail "docker/k8s-examples/postgres: want a Deployment and a PodDisruptionBudget, no StatefulSet"
echo "manifests: schema ok"

# a typo must not pass: the same objects with one field misspelled
typo() { # rendered.yaml field misspelled what
    sed "s/\b$2:/$3:/" "$1" >"$WORK/typo.yaml"
    grep -q "$3:" "$WORK/typo.yaml" || fail "could not plant the $4 typo"
    "$PYTHON" "$REPO/tests/image/k8s_ts.py" "$WORK/typo.yaml" "$WORK/typo.ts"
    if tsc "$WORK/typo.ts" >"$WORK/typo.out" 2>&1; then
        fail "a misspelled $4 field ($3) passed the schema check"
    fi
    grep -q "$3" "$WORK/typo.out" || { cat "$WORK/typo.out"; fail "tsc failed for another reason"; }
    echo "manifests: a misspelled $4 field ($3) is rejected"
}
typo "$WORK/docker-k8s.yaml" terminationGracePeriodSeconds terminationGracePeriodSecond StatefulSet
# in the cert-manager Certificate (typed by @kubernetes-models/cert-manager)
typo "$WORK/docker-k8s-examples-tls.yaml" renewBefore renewBefor Certificate
# in the Deployment and the PodDisruptionBudget
typo "$WORK/docker-k8s-examples-postgres.yaml" maxSurge maxSurg Deployment
typo "$WORK/docker-k8s-examples-postgres.yaml" topologySpreadConstraints topologySpreadConstraint Deployment
typo "$WORK/docker-k8s-examples-postgres.yaml" unhealthyPodEvictionPolicy unhealthyPodEvictionPolicie \
    PodDisruptionBudget

# and the Deployment's rules must not pass vacuously: each edit breaks one
violates() { # sed-expression what
    sed "$1" "$WORK/docker-k8s-examples-postgres.yaml" >"$WORK/bad.yaml"
    ! cmp -s "$WORK/bad.yaml" "$WORK/docker-k8s-examples-postgres.yaml" || fail "could not plant: $2"
    if "$PYTHON" "$REPO/tests/image/k8s_ts.py" --policy "$WORK/bad.yaml" >"$WORK/bad.out" 2>&1; then
        fail "the policy check passed a Deployment with $2"
    fi
    grep -q AssertionError "$WORK/bad.out" || { cat "$WORK/bad.out"; fail "the policy check failed for another reason"; }
}
violates 's/^  replicas: 3/  replicas: 1/' "one replica"
violates 's/maxUnavailable: 0/maxUnavailable: 1/' "maxUnavailable 1 in its rolling updates"
violates 's/maxSurge: 1/maxSurge: 0/' "maxSurge 0"
violates 's/^kind: PodDisruptionBudget/kind: PodDisruptionBudgetX/' "no PodDisruptionBudget"
violates 's/^  maxUnavailable: 1/  maxUnavailable: 0/' "a PodDisruptionBudget that lets no pod go"
violates 's/topologyKey: kubernetes.io\/hostname/topologyKey: example.com\/rack/' "no spread over nodes"
violates 's/whenUnsatisfiable: ScheduleAnyway/whenUnsatisfiable: DoNotSchedule/' "a hard zone spread"
violates 's/RECORDD_INIT: never/RECORDD_INIT: auto/' "recordctl init in every pod"
violates 's/publishNotReadyAddresses: false/publishNotReadyAddresses: true/' "unready pods in the headless Service"
violates 's/^  RECORDD_LOG_LEVEL: info/  RECORDD_DB: postgresql:\/\/u:pw@db\/r\n&/' "the database URI in the ConfigMap"
violates 's/- emptyDir:/- persistentVolumeClaim: {claimName: data}\n        emptyDir:/' "a volume claim"
echo "manifests: the Deployment's rules reject 11 planted violations"
rm -f "$NODE/k8s-check.ts"
echo "4 passed, 0 failed"
