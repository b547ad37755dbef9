"""The README's worked example of relations ("Relations between models"),
run as written through buf curl (reflection, no .proto files) after the
walkthrough's schema: each call answers as the README says."""

import base64
import json

import harness as h
from test_buf_cli import BASE_FLAGS, buf  # noqa: F401  (the buf fixture)
from test_bulk import readme_calls


def test_readme_relations_example_works_as_written(buf, server_factory):
    s = server_factory()
    auth = ["-H", f"authorization: Bearer {s.admin_key}"]

    def curl(method, body, check=True):
        return buf("curl", *BASE_FLAGS, *auth, "-d", body, f"http://{s.address}/{method}", check=check)

    for method, body in readme_calls("## Five-minute walkthrough", "## Semantics in brief"):
        curl(method, body)
    calls = readme_calls("## Relations between models", "## Bulk writes")
    assert [m.split("/")[1] for m, _ in calls] == [
        "PushSchema", "BulkMutate", "UpdateRecord", "GetRecord", "ListRecords", "DeleteRecord"]
    push, bulk, bad, get, lst, delete = calls

    out = json.loads(curl(*push).stdout)
    assert {"create model countries", "create model cities", "add field students.city"} <= set(out["changes"])
    # the walkthrough's fields are kept
    names = {f["name"] for m in out["schema"]["models"] if m["name"] == "students" for f in m["fields"]}
    assert {"firstName", "email", "age", "city"} <= names

    out = json.loads(curl(*bulk).stdout)
    assert out["receipt"]["success"] is True and out["receipt"]["ops"] == 3

    res = curl(*bad, check=False)
    err = json.loads(res.stderr)
    assert res.returncode != 0 and err["code"] == "invalid_argument", res.stderr
    assert "city" in err["message"] and "paris" in err["message"], err
    info = next(d for d in err["details"] if d["type"] == "google.rpc.ErrorInfo")
    raw = base64.b64decode(info["value"] + "=" * (-len(info["value"]) % 4))
    assert b"reference_not_found" in raw, err  # the ErrorInfo reason

    rec = json.loads(curl(*get).stdout)
    assert rec["data"] == {"firstName": "Grace", "city": "london"}
    city = rec["expanded"]["city"]["record"]
    assert (city["model"], city["id"], city["data"]) == ("cities", "london", {"name": "London", "country": "gb"})
    country = city["expanded"]["country"]["record"]
    assert (country["model"], country["id"], country["data"]) == ("countries", "gb", {"code": "GB"})

    # the same read over HTTP, as the README writes it
    r = s.http("GET", "/v1/models/students/grace?expand=city,city.country&fields=firstName,city.name,"
                      "city.country.code")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["data"] == rec["data"] and body["expanded"]["city"]["record"]["data"] == city["data"]

    page = json.loads(curl(*lst).stdout)
    assert [r["id"] for r in page["records"]] == ["grace"]
    assert page["records"][0]["expanded"]["city"]["record"]["id"] == "london"

    out = json.loads(curl(*delete).stdout)
    assert out["success"] is True and out["ops"] == 3
    assert [(a["model"], a["id"], a["op"]) for a in out["affected"]] == [
        ("cities", "london", "DELETE"), ("students", "grace", "UPDATE")]
    # each record its own sync id, all three within the commit's range
    last = int(out["lastSyncId"])
    ids = [int(a["syncId"]) for a in out["affected"]]
    assert len(set(ids)) == 2 and all(last - 2 <= i <= last for i in ids), out
    assert "city" not in s.get_data("students", "grace")  # SET_NULL cleared it
    h.expect_error(h.grpc.StatusCode.NOT_FOUND, s.get, "cities", "london")
