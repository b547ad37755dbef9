"""The gRPC side of tests/image/run.sh: talks to a recordd container through
its published port with the e2e suite's generated modules.

  client.py --addr HOST:PORT --key-file FILE wait
      health Check "readiness" and "liveness" are SERVING (retries for 60 s)
  client.py ... write
      pushes the `notes` schema and creates notes/n1 (CONFIRMED)
  client.py ... read --expect-text TEXT
      notes/n1 has data.text == TEXT
"""

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))

import grpc  # noqa: E402

import harness as h  # noqa: E402

NOTES = {"name": "notes", "fields": [{"name": "text", "type": "STRING", "required": True}]}


def unary(ch, path, resp_cls):
    return ch.unary_unary(path, request_serializer=lambda m: m.SerializeToString(),
                          response_deserializer=resp_cls.FromString)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--addr", required=True)
    ap.add_argument("--key-file", required=True)
    ap.add_argument("--expect-text")
    ap.add_argument("what", choices=["wait", "write", "read"])
    a = ap.parse_args()
    pb = h.pb.ensure()
    ch = grpc.insecure_channel(a.addr)
    check = unary(ch, "/grpc.health.v1.Health/Check", pb.health.HealthCheckResponse)

    if a.what == "wait":
        end = time.monotonic() + 60
        while True:
            try:
                for name in ("readiness", "liveness", ""):
                    st = check(pb.health.HealthCheckRequest(service=name), timeout=5).status
                    assert st == pb.health.HealthCheckResponse.SERVING, (name, st)
                # the key file appears once recordctl init has run
                if Path(a.key_file).exists():
                    return 0
            except (grpc.RpcError, AssertionError) as e:
                if time.monotonic() > end:
                    print(f"not ready: {e}", file=sys.stderr)
                    return 1
            time.sleep(0.3)

    auth = h.bearer(Path(a.key_file).read_text().strip())
    if a.what == "write":
        push = unary(ch, "/recordd.v1.Schemas/PushSchema", pb.schema.PushSchemaResponse)
        push(pb.schema.PushSchemaRequest(schema=h.schema_msg([NOTES])), timeout=30, metadata=auth)
        create = unary(ch, "/recordd.v1.Records/CreateRecord", pb.records.CommitReceipt)
        r = create(pb.records.CreateRecordRequest(model="notes", id="n1", data=h.struct({"text": "first"})),
                   timeout=30, metadata=auth)
        assert r.status == pb.records.CONFIRMED, r
        print(f"created notes/n1 ({r.server_tx_id})")
        return 0

    get = unary(ch, "/recordd.v1.Records/GetRecord", pb.records.Record)
    r = get(pb.records.GetRecordRequest(model="notes", id="n1"), timeout=30, metadata=auth)
    text = h.to_dict(r.data).get("text")
    if text != a.expect_text:
        print(f"notes/n1 text is {text!r}, want {a.expect_text!r}", file=sys.stderr)
        return 1
    print(f"read notes/n1 back: version {r.version}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
