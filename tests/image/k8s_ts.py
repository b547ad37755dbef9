"""Turns rendered Kubernetes YAML (kubectl kustomize) into a TypeScript file
in which every object is an object literal typed with its kubernetes-models
interface, so `tsc --noEmit` checks it: unknown (misspelled) fields fail the
excess-property check, wrong types fail assignability.

  k8s_ts.py RENDERED.yaml OUT.ts            write the .ts file
  k8s_ts.py --policy RENDERED.yaml          check recordd's deployment rules
"""

import json
import sys

import yaml


def module_of(obj):
    api, kind = obj["apiVersion"], obj["kind"]
    group, _, version = api.rpartition("/")
    path = f"kubernetes-models/{version}/{kind}" if not group else f"kubernetes-models/{group}/{version}/{kind}"
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


def policy(docs):
    """The rules of docker/k8s that a schema cannot express."""
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    (sts,) = by_kind["StatefulSet"]
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
    for probe, service in (("startupProbe", "readiness"), ("readinessProbe", "readiness"),
                           ("livenessProbe", "liveness")):
        g = c[probe]["grpc"]
        assert isinstance(g["port"], int) and g["port"] == 50051 and g["service"] == service, (probe, g)
    assert c["resources"]["requests"] and c["resources"]["limits"]
    (cm,) = by_kind["ConfigMap"]
    grace = int(cm["data"]["RECORDD_SHUTDOWN_GRACE"])
    pre = c["lifecycle"]["preStop"]["exec"]["command"]
    assert pre[0] == "sleep"
    assert pod["terminationGracePeriodSeconds"] > grace + int(pre[1]), "terminationGracePeriodSeconds too short"
    assert any(v.get("secret") for v in pod["volumes"]), "keys must come from a Secret"
    assert c["envFrom"][0]["configMapRef"]["name"] == cm["metadata"]["name"]
    svcs = by_kind["Service"]
    assert any(s["spec"].get("clusterIP") == "None" for s in svcs), "no headless Service"
    for s in svcs:
        grpc_ports = [p for p in s["spec"]["ports"] if p["name"] == "grpc"]
        assert grpc_ports and grpc_ports[0]["appProtocol"] == "grpc" and grpc_ports[0]["port"] == 50051
        assert any(p["port"] == 8080 for p in s["spec"]["ports"])
    assert sts["spec"]["serviceName"] in {s["metadata"]["name"] for s in svcs}


def main():
    if sys.argv[1] == "--policy":
        with open(sys.argv[2]) as f:
            policy([d for d in yaml.safe_load_all(f) if d])
        print("policy ok")
        return
    with open(sys.argv[1]) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    with open(sys.argv[2], "w") as f:
        f.write(to_ts(docs))


if __name__ == "__main__":
    main()
