"""Turns rendered Kubernetes YAML (kubectl kustomize) into a TypeScript file
in which every object is an object literal typed with its kubernetes-models
interface, so `tsc --noEmit` checks it: unknown (misspelled) fields fail the
excess-property check, wrong types fail assignability.

  k8s_ts.py RENDERED.yaml OUT.ts            write the .ts file
  k8s_ts.py --policy RENDERED.yaml          check recordd's deployment rules
  k8s_ts.py --pod RENDERED.yaml OUTDIR      the pod's settings for tests/image/run.sh:
                                            OUTDIR/env (the ConfigMap as KEY=VALUE lines)
                                            and OUTDIR/pod.sh (uid, gids, the Secret mount)
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


def policy(docs):
    """The rules of docker/k8s that a schema cannot express."""
    kinds = by_kind(docs)
    (sts,) = kinds["StatefulSet"]
    spec = sts["spec"]
    assert spec["replicas"] == 1, "SQLite has one writer: replicas must be 1"
    (vct,) = spec["volumeClaimTemplates"]
    assert vct["spec"]["accessModes"] == ["ReadWriteOnce"]
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
    assert any(s["spec"].get("clusterIP") == "None" for s in svcs), "no headless Service"
    for s in svcs:
        grpc_ports = [p for p in s["spec"]["ports"] if p["name"] == "grpc"]
        assert grpc_ports and grpc_ports[0]["appProtocol"] == "grpc" and grpc_ports[0]["port"] == 50051
        assert any(p["port"] == 8080 for p in s["spec"]["ports"])
    assert sts["spec"]["serviceName"] in {s["metadata"]["name"] for s in svcs}

    # The ConfigMap points the entrypoint at the Secret's files, under the
    # keys `kubectl create secret generic recordd-keys --from-file=pepper=…
    # --from-file=signing.key=…` (README "Kubernetes") creates; the Secret is
    # read-only, so what recordctl init writes must be on the volume.
    env = cm["data"]
    mount_path, mode, items = secret_mount(pod, c)
    assert set(items) == {"pepper", "signing.key"}, items
    assert env["RECORDD_PEPPER_FILE"] == f"{mount_path}/{items['pepper']}", env
    assert env["RECORDD_SIGNING_KEY"] == f"{mount_path}/{items['signing.key']}", env
    assert mode & 0o040 and not mode & 0o007, f"Secret files {oct(mode)}: group {psc['fsGroup']} reads, others not"
    data_mounts = [m["mountPath"] for m in c["volumeMounts"] if m["name"] == vct["metadata"]["name"]]
    assert data_mounts == ["/data"], data_mounts
    # a misspelled variable type-checks but is silently ignored
    known = set()
    for src in ("service/config.c", "docker/entrypoint.sh"):
        with open(REPO / src) as f:
            known |= set(re.findall(r"RECORDD_[A-Z_]+", f.read()))
    assert set(env) <= known, f"ConfigMap keys neither recordd nor the entrypoint reads: {set(env) - known}"
    assert set(tls) <= known, f"variables recordd does not read: {set(tls) - known}"
    for var in ("RECORDD_KEYS_DIR", "RECORDD_TRUSTED_KEYS", "RECORDD_DB"):
        if var in env:
            assert env[var].startswith("/data/"), (var, env[var])


def pod_settings(docs, outdir):
    """What tests/image/run.sh needs to run the image as the StatefulSet's pod would."""
    kinds = by_kind(docs)
    (sts,) = kinds["StatefulSet"]
    (cm,) = kinds["ConfigMap"]
    pod = sts["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    mount_path, mode, items = secret_mount(pod, c)
    with open(f"{outdir}/env", "w") as f:
        f.writelines(f"{k}={v}\n" for k, v in cm["data"].items())
    psc = pod["securityContext"]
    with open(f"{outdir}/pod.sh", "w") as f:
        f.write(f"POD_UID={psc['runAsUser']}\nPOD_GID={psc['runAsGroup']}\nPOD_FSGROUP={psc['fsGroup']}\n"
                f"SECRET_MOUNT={mount_path}\nSECRET_MODE={mode:o}\n"
                f"SECRET_ITEMS='{' '.join(f'{k}:{p}' for k, p in sorted(items.items()))}'\n")


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
