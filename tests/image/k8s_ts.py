"""Turns rendered Kubernetes YAML (kubectl kustomize) into a TypeScript file
in which every object is an object literal typed with its kubernetes-models
interface, so `tsc --noEmit` checks it: unknown (misspelled) fields fail the
excess-property check, wrong types fail assignability.

  k8s_ts.py RENDERED.yaml OUT.ts            write the .ts file
  k8s_ts.py --policy RENDERED.yaml          check recordd's deployment rules (the
                                            StatefulSet's, or the postgres component's
                                            Deployment's)
  k8s_ts.py --pod RENDERED.yaml OUTDIR      the pod's settings for tests/image/run.sh:
                                            OUTDIR/env (the ConfigMap and the container's
                                            literal env as KEY=VALUE lines) and OUTDIR/pod.sh
                                            (uid, gids, the Secret mount, env from Secrets)
"""

import json
import re
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


# CRDs of other projects: their kubernetes-models package
THIRD_PARTY = {"cert-manager.io": "@kubernetes-models/cert-manager"}


def module_of(obj):
    api, kind = obj["apiVersion"], obj["kind"]
    group, _, version = api.rpartition("/")
    package = THIRD_PARTY.get(group, "kubernetes-models")
    path = f"{package}/{version}/{kind}" if not group else f"{package}/{group}/{version}/{kind}"
    return path, kind


def to_ts(docs):
    imports, body = {}, []
    for i, obj in enumerate(docs):
        path, kind = module_of(obj)
        imports[path] = kind
        body.append(f"// {obj['kind']} {obj.get('metadata', {}).get('name', '')}")
        body.append(f"export const o{i}: I{kind} = {json.dumps(obj, indent=2)};")
        body.append(f"new {kind}(o{i});")
    head = [f'import {{ {k}, I{k} }} from "{p}";' for p, k in sorted(imports.items())]
    return "\n".join(head + [""] + body) + "\n"


def by_kind(docs):
    out = {}
    for d in docs:
        out.setdefault(d["kind"], []).append(d)
    return out


def secret_mount(pod, c, name="recordd-keys"):
    """(mountPath, defaultMode, {key: path}) of the container's volume of Secret name."""
    (vol,) = [v for v in pod["volumes"] if v.get("secret", {}).get("secretName") == name]
    (mount,) = [m for m in c["volumeMounts"] if m["name"] == vol["name"]]
    items = {i["key"]: i["path"] for i in vol["secret"].get("items", [])}
    return mount["mountPath"], vol["secret"].get("defaultMode", 0o644), items


def selects(selector, labels):
    """Whether a matchLabels-only label selector selects labels."""
    assert set(selector) == {"matchLabels"}, f"selector {selector}: matchLabels only"
    want = selector["matchLabels"]
    return bool(want) and all(labels.get(k) == v for k, v in want.items())


def workload(kinds):
    """recordd's one workload: the base's StatefulSet, or the Deployment the
    postgres component makes of it."""
    ws = kinds.get("StatefulSet", []) + kinds.get("Deployment", [])
    assert len(ws) == 1, f"one StatefulSet or Deployment, not {[w['kind'] for w in ws]}"
    return ws[0]


def count(value, total, round_up):
    """A PodDisruptionBudget or rollingUpdate int-or-percent value as pods."""
    if isinstance(value, int):
        return value
    pct = int(value.rstrip("%"))
    return -(-total * pct // 100) if round_up else total * pct // 100


def statefulset_policy(sts, kinds, pod, c, env):
    """SQLite: one replica, one ReadWriteOnce volume on /data."""
    spec = sts["spec"]
    assert spec["replicas"] == 1, "SQLite has one writer: replicas must be 1"
    (vct,) = spec["volumeClaimTemplates"]
    assert vct["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert spec["serviceName"] in {s["metadata"]["name"] for s in kinds["Service"]}
    data_mounts = [m["mountPath"] for m in c["volumeMounts"] if m["name"] == vct["metadata"]["name"]]
    assert data_mounts == ["/data"], data_mounts
    for var in ("RECORDD_KEYS_DIR", "RECORDD_TRUSTED_KEYS", "RECORDD_DB"):
        if var in env:
            assert env[var].startswith("/data/"), (var, env[var])


def deployment_policy(dep, kinds, pod, c, env, labels):
    """PostgreSQL: several stateless replicas that a rolling update or a node
    drain never takes below what serves."""
    spec = dep["spec"]
    replicas = spec["replicas"]
    assert replicas >= 2, "a Deployment of recordd runs several replicas (replicas >= 2)"
    st = spec["strategy"]
    assert st["type"] == "RollingUpdate", st
    ru = st["rollingUpdate"]
    assert count(ru["maxUnavailable"], replicas, False) == 0, "rolling updates: maxUnavailable must be 0"
    assert count(ru["maxSurge"], replicas, True) >= 1, "rolling updates: maxSurge must be at least 1"
    # a PodDisruptionBudget covers the pods, lets a drain evict one, keeps one
    pdbs = [p for p in kinds.get("PodDisruptionBudget", []) if selects(p["spec"]["selector"], labels)]
    assert len(pdbs) == 1, f"one PodDisruptionBudget selecting the pods, found {len(pdbs)}"
    pdb = pdbs[0]["spec"]
    if "maxUnavailable" in pdb:
        allowed = count(pdb["maxUnavailable"], replicas, True)
    else:
        allowed = replicas - count(pdb["minAvailable"], replicas, True)
    assert 1 <= allowed < replicas, f"the PodDisruptionBudget lets {allowed} of {replicas} pods go"
    # spread over nodes (required) and zones (preferred: clusters without zones still schedule)
    tsc = {t["topologyKey"]: t for t in pod.get("topologySpreadConstraints", [])}
    for key, when in (("kubernetes.io/hostname", None), ("topology.kubernetes.io/zone", "ScheduleAnyway")):
        assert key in tsc, f"no topologySpreadConstraint over {key}"
        assert selects(tsc[key]["labelSelector"], labels), (key, "does not select the pods")
        assert tsc[key]["maxSkew"] == 1
        if when:
            assert tsc[key]["whenUnsatisfiable"] == when, (key, tsc[key]["whenUnsatisfiable"])
    # stateless: no claim, nothing on /data (the root filesystem is read-only)
    for v in pod["volumes"]:
        assert set(v) - {"name"} <= {"emptyDir", "secret", "configMap", "projected"}, f"volume {v}"
    assert not any(m["mountPath"] == "/data" for m in c["volumeMounts"]), "a stateless pod has no /data"
    # the database URI (with its password) from a Secret, never the ConfigMap
    assert "RECORDD_DB" not in env and "PGPASSWORD" not in env, "the database URI belongs in a Secret"
    (db,) = [e for e in c.get("env", []) if e["name"] == "RECORDD_DB"]
    assert "value" not in db and db["valueFrom"]["secretKeyRef"]["name"], db
    # each pod's own `recordctl init` would add an admin key to the shared database
    assert env.get("RECORDD_INIT") == "never", "RECORDD_INIT must be never: init runs once, not per pod"


def policy(docs):
    """The rules of docker/k8s and its components that a schema cannot express."""
    kinds = by_kind(docs)
    w = workload(kinds)
    spec = w["spec"]
    labels = spec["template"]["metadata"]["labels"]
    assert selects(spec["selector"], labels), "the selector does not select the pod template"
    pod = spec["template"]["spec"]
    psc = pod["securityContext"]
    assert psc["runAsNonRoot"] is True and psc["runAsUser"] == 10001 and psc["fsGroup"] == 10001
    assert psc["seccompProfile"]["type"] == "RuntimeDefault"
    (c,) = pod["containers"]
    sc = c["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert any(m["mountPath"] == "/tmp" for m in c["volumeMounts"]), "no writable /tmp"
    tls = {e["name"]: e["value"] for e in c.get("env", []) if e["name"].startswith("RECORDD_TLS_")}
    for probe, service in (("startupProbe", "readiness"), ("readinessProbe", "readiness"),
                           ("livenessProbe", "liveness")):
        if not tls:
            g = c[probe]["grpc"]
            assert isinstance(g["port"], int) and g["port"] == 50051 and g["service"] == service, (probe, g)
            continue
        # the kubelet's gRPC probe has no TLS: `recordctl health` over TLS instead
        assert "grpc" not in c[probe], (probe, "a gRPC probe cannot reach a TLS listener")
        cmd = c[probe]["exec"]["command"]
        assert cmd[:2] == ["recordctl", "health"], cmd
        args = dict(zip(cmd[2::2], cmd[3::2]))
        assert args["--addr"] == "127.0.0.1:50051" and args["--service"] == service, cmd
        assert args["--cacert"] and args["--server-name"], cmd
        if tls.get("RECORDD_TLS_CLIENT_AUTH") == "require":
            assert args["--cert"] == tls["RECORDD_TLS_CERT"] and args["--key"] == tls["RECORDD_TLS_KEY"], cmd
        probe_args = args
    if tls:
        # the files come from the Secret cert-manager writes, whose certificate
        # names what the probes verify and is usable the way the probes use it
        tls_mount, tls_mode, _ = secret_mount(pod, c, "recordd-tls")
        for var in ("RECORDD_TLS_CERT", "RECORDD_TLS_KEY"):
            assert tls[var].startswith(tls_mount + "/"), (var, tls[var])
        assert probe_args["--cacert"].startswith(tls_mount + "/")
        assert tls_mode & 0o040 and not tls_mode & 0o007, oct(tls_mode)
        (cert,) = [d for d in kinds.get("Certificate", []) if d["spec"]["secretName"] == "recordd-tls"]
        assert probe_args["--server-name"] in cert["spec"]["dnsNames"], cert["spec"]["dnsNames"]
        assert "server auth" in cert["spec"]["usages"]
        if tls.get("RECORDD_TLS_CLIENT_AUTH") == "require":
            assert "client auth" in cert["spec"]["usages"], "the probes present the pod's certificate"
            assert tls["RECORDD_TLS_CLIENT_CA"].startswith(tls_mount + "/")
    assert c["resources"]["requests"] and c["resources"]["limits"]
    (cm,) = kinds["ConfigMap"]
    grace = int(cm["data"]["RECORDD_SHUTDOWN_GRACE"])
    pre = c["lifecycle"]["preStop"]["exec"]["command"]
    assert pre[0] == "sleep"
    assert pod["terminationGracePeriodSeconds"] > grace + int(pre[1]), "terminationGracePeriodSeconds too short"
    assert any(v.get("secret") for v in pod["volumes"]), "keys must come from a Secret"
    assert c["envFrom"][0]["configMapRef"]["name"] == cm["metadata"]["name"]
    svcs = kinds["Service"]
    headless = [s for s in svcs if s["spec"].get("clusterIP") == "None"]
    assert headless, "no headless Service"
    for s in svcs:
        assert selects({"matchLabels": s["spec"]["selector"]}, labels), (s["metadata"]["name"], "selects no pod")
        grpc_ports = [p for p in s["spec"]["ports"] if p["name"] == "grpc"]
        assert grpc_ports and grpc_ports[0]["appProtocol"] == "grpc" and grpc_ports[0]["port"] == 50051
        assert any(p["port"] == 8080 for p in s["spec"]["ports"])

    # The ConfigMap points the entrypoint at the Secret's files, under the
    # keys `kubectl create secret generic recordd-keys --from-file=pepper=…
    # --from-file=signing.key=…` (README "Kubernetes") creates; the Secret is
    # read-only, so what recordctl init writes must be on the volume.
    env = cm["data"]
    mount_path, mode, items = secret_mount(pod, c)
    assert env["RECORDD_PEPPER_FILE"] == f"{mount_path}/{items['pepper']}", env
    assert env["RECORDD_SIGNING_KEY"] == f"{mount_path}/{items['signing.key']}", env
    assert mode & 0o040 and not mode & 0o007, f"Secret files {oct(mode)}: group {psc['fsGroup']} reads, others not"
    if w["kind"] == "StatefulSet":
        assert set(items) == {"pepper", "signing.key"}, items
        statefulset_policy(w, kinds, pod, c, env)
    else:
        # no init in the pod: the trusted public key comes from the Secret too
        assert set(items) == {"pepper", "signing.key", "signing.pub"}, items
        pub = f"{mount_path}/{items['signing.pub']}"
        assert env["RECORDD_TRUSTED_KEYS"] in (pub, pub.rpartition("/")[0]), (env["RECORDD_TRUSTED_KEYS"], pub)
        # only ready pods for clients that balance over the headless Service
        assert not any(s["spec"].get("publishNotReadyAddresses") for s in headless), \
            "the headless Service of a Deployment lists ready pods only"
        deployment_policy(w, kinds, pod, c, env, labels)
    # a misspelled variable type-checks but is silently ignored
    known = set()
    for src in ("service/config.c", "docker/entrypoint.sh"):
        with open(REPO / src) as f:
            known |= set(re.findall(r"RECORDD_[A-Z_]+", f.read()))
    assert set(env) <= known, f"ConfigMap keys neither recordd nor the entrypoint reads: {set(env) - known}"
    names = {e["name"] for e in c.get("env", []) if e["name"].startswith("RECORDD_")}
    assert names <= known, f"variables recordd does not read: {names - known}"


def pod_settings(docs, outdir):
    """What tests/image/run.sh needs to run the image as the workload's pod would."""
    kinds = by_kind(docs)
    w = workload(kinds)
    (cm,) = kinds["ConfigMap"]
    pod = w["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    mount_path, mode, items = secret_mount(pod, c)
    env = dict(cm["data"])
    env.update({e["name"]: e["value"] for e in c.get("env", []) if "value" in e})
    from_secrets = [f"{e['name']}:{e['valueFrom']['secretKeyRef']['name']}:{e['valueFrom']['secretKeyRef']['key']}"
                    for e in c.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})]
    with open(f"{outdir}/env", "w") as f:
        f.writelines(f"{k}={v}\n" for k, v in env.items())
    psc = pod["securityContext"]
    with open(f"{outdir}/pod.sh", "w") as f:
        f.write(f"POD_KIND={w['kind']}\nPOD_REPLICAS={w['spec']['replicas']}\n"
                f"POD_UID={psc['runAsUser']}\nPOD_GID={psc['runAsGroup']}\nPOD_FSGROUP={psc['fsGroup']}\n"
                f"SECRET_MOUNT={mount_path}\nSECRET_MODE={mode:o}\n"
                f"SECRET_ITEMS='{' '.join(f'{k}:{p}' for k, p in sorted(items.items()))}'\n"
                f"SECRET_ENV='{' '.join(from_secrets)}'\n")


def main():
    if sys.argv[1] == "--policy":
        with open(sys.argv[2]) as f:
            policy([d for d in yaml.safe_load_all(f) if d])
        print("policy ok")
        return
    if sys.argv[1] == "--pod":
        with open(sys.argv[2]) as f:
            pod_settings([d for d in yaml.safe_load_all(f) if d], sys.argv[3])
        return
    with open(sys.argv[1]) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    with open(sys.argv[2], "w") as f:
        f.write(to_ts(docs))


if __name__ == "__main__":
    main()
