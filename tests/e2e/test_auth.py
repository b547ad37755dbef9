"""Auth and tenancy (DESIGN.md §6, issue 3) over real gRPC: every rejection of
a credential with its exact code and nothing written; two organisations that
cannot see each other; a field-, group- and model-limited token and the
capability each denial names; MintToken attenuation and TTLs; expiry;
revocation of keys and token ids; key rotation; rate limiting; claims bound
to their holder. Credentials come from `recordctl` (harness.Server.ctl)."""

import datetime
import shutil
import time

import grpc
import pytest

import harness as h
from harness import expect_error

UNAUTH = grpc.StatusCode.UNAUTHENTICATED
DENIED = grpc.StatusCode.PERMISSION_DENIED

LIMITED = [{"can": ["update"], "model": "students", "group": "team-a", "fields": ["age"]}]


def iso(dt: datetime.datetime) -> str:
    return dt.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def caps_pb(caps):
    return [h.pb.tokens.Capability(**c) for c in caps]


def mint(srv, caps, ttl=0, auth=h.DEFAULT):
    return srv.call("MintToken", h.pb.tokens.MintTokenRequest(caps=caps_pb(caps), ttl_seconds=ttl), auth=auth)


def other_init(tmp_path, name="other"):
    """A second `recordctl init` elsewhere: its keys are unknown to srv."""
    d = tmp_path / name
    h.recordctl("init", "--dir", str(d), "--db", str(d / "r.db"))
    return d


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    f_dir = tmp_path_factory.mktemp("auth")
    s = h.Server(f_dir / "recordd")
    s.start()
    s.push_schema(h.SCHOOL)
    yield s
    problem = s.kill()
    if problem:
        pytest.fail(problem, pytrace=False)


def assert_rejected(srv, auth, code=UNAUTH, reason="unauthenticated", metadata=None):
    """A create with this credential fails with code/reason and writes
    nothing; a read fails the same way."""
    rid = h.uid("rej")
    view = srv.as_(auth)
    d = expect_error(code, view.call, "CreateRecord",
                     h.pb.records.CreateRecordRequest(model="students", id=rid, data=h.struct({"firstName": "X"})),
                     metadata=metadata, reason=reason)
    expect_error(code, view.call, "GetSchema", h.pb.schema.GetSchemaRequest(), metadata=metadata, reason=reason)
    srv.assert_not_found("students", rid)
    return d


# ---- rejections ---------------------------------------------------------------


def test_no_credential_is_unauthenticated(srv):
    assert_rejected(srv, None)


def test_health_and_reflection_need_no_credential(srv):
    assert srv.as_(None).call("Check", h.pb.health.HealthCheckRequest()).status == \
        h.pb.health.HealthCheckResponse.SERVING


@pytest.mark.parametrize("value", ["Basic {key}", "Token {key}", "{key}", "Bearer", "Bearer "])
def test_wrong_scheme_is_unauthenticated(srv, value):
    assert_rejected(srv, None, metadata=[("authorization", value.format(key=srv.admin_key))])


@pytest.mark.parametrize("cred", ["garbage", "sk_live_short", "eyJhbGciOiJIUzI1NiJ9.e30.x", "v3.public.abc",
                                  "v4.local.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"])
def test_garbage_and_other_token_kinds_are_unauthenticated(srv, cred):
    d = assert_rejected(srv, cred)
    assert cred not in d.message


def test_key_with_a_bad_checksum_is_unauthenticated(srv):
    key = srv.admin_key
    typo = key[:-1] + ("A" if key[-1] != "A" else "B")
    d = assert_rejected(srv, typo)
    assert typo not in d.message and key not in d.message


def test_unknown_key_is_unauthenticated(srv, tmp_path):
    d = other_init(tmp_path)
    assert_rejected(srv, (d / "admin.key").read_text().strip())


def test_revoked_key_is_unauthenticated(srv):
    k = srv.create_key(role="writer")
    assert srv.as_(k["key"]).get_schema().revision >= 1
    srv.ctl("key", "revoke", k["key_id"])
    assert_rejected(srv, k["key"])


def test_sk_test_keys_work_like_live_keys(srv):
    k = srv.create_key(role="tester", test=True)
    assert k["key"].startswith("sk_test_")
    assert srv.as_(k["key"]).get_schema().revision >= 1


def test_expired_token_is_token_expired(srv):
    long_ago = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(hours=2)
    t = srv.mint_offline([{"can": ["read"], "model": "*", "group": "*"}], sub="exp", ttl=60, issued_at=iso(long_ago))
    assert_rejected(srv, t["token"], reason="token_expired")


def test_token_not_valid_yet_is_unauthenticated(srv):
    later = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=2)
    t = srv.mint_offline([{"can": ["read"], "model": "*", "group": "*"}], sub="future", ttl=60, issued_at=iso(later))
    assert_rejected(srv, t["token"])


def test_revoked_jti_is_unauthenticated(srv):
    t = mint(srv, [{"can": ["read", "create"], "model": "*", "group": "*"}])
    assert srv.as_(t.token).get_schema().revision >= 1
    srv.ctl("token", "revoke", t.jti)
    assert_rejected(srv, t.token)


def test_token_of_a_revoked_key_is_unauthenticated(srv):
    k = srv.create_key(role="minter")
    t = mint(srv, [{"can": ["read", "create"], "model": "*", "group": "*"}], auth=k["key"])
    assert srv.as_(t.token).get_schema().revision >= 1
    srv.ctl("key", "revoke", k["key_id"])
    assert_rejected(srv, t.token)


def test_token_signed_by_an_untrusted_key_is_unauthenticated(srv, tmp_path):
    d = other_init(tmp_path)
    t = srv.mint_offline([{"can": ["read", "create"], "model": "*", "group": "*"}], sub="x",
                         signing_key=d / "signing.key")
    assert_rejected(srv, t["token"])


def test_tampered_token_is_unauthenticated(srv):
    t = mint(srv, [{"can": ["read", "create"], "model": "*", "group": "*"}]).token
    body_end = t.rindex(".")
    i = body_end - 20
    bad = t[:i] + ("A" if t[i] != "A" else "B") + t[i + 1:]
    assert_rejected(srv, bad)


def test_secrets_never_reach_the_log(srv):
    k = srv.create_key(role="logged")
    t = mint(srv, [{"can": ["read"], "model": "*", "group": "*"}], auth=k["key"]).token
    for cred in (k["key"], t, k["key"][:-1] + "x", "v4.local.secret-looking"):
        try:
            srv.as_(cred).get_schema()
        except grpc.RpcError:
            pass
    log = srv.log_path.read_text()
    for secret in (srv.admin_key, k["key"], t):
        assert secret not in log and secret[8:30] not in log


# ---- tenancy --------------------------------------------------------------------


@pytest.fixture(scope="module")
def other_org(srv):
    """Organisation "other" with its own admin key, schema (enrollments only)
    and one record whose id also exists in "default"."""
    k = srv.create_key(org="other", role="admin")
    o = srv.as_(k["key"])
    o.push_schema([h.ENROLLMENTS, h.STUDENTS])
    rid = h.uid("t")
    o.create("students", {"firstName": "Other"}, id=rid)
    return o, rid


def test_another_organisations_record_is_not_found(srv, other_org):
    o, rid = other_org
    srv.assert_not_found("students", rid)
    expect_error(grpc.StatusCode.NOT_FOUND, srv.update, "students", rid, {"age": 1}, reason="not_found")
    expect_error(grpc.StatusCode.NOT_FOUND, srv.replace, "students", rid, {"firstName": "Z"}, reason="not_found")
    expect_error(grpc.StatusCode.NOT_FOUND, srv.delete, "students", rid, reason="not_found")
    assert o.get_data("students", rid)["firstName"] == "Other"
    assert o.get("students", rid).version == 1


def test_same_id_in_two_organisations_are_two_records(srv, other_org):
    o, _ = other_org
    rid = h.uid("same")
    srv.create("students", {"firstName": "Mine"}, id=rid)
    o.create("students", {"firstName": "Theirs"}, id=rid)
    assert srv.get_data("students", rid)["firstName"] == "Mine"
    assert o.get_data("students", rid)["firstName"] == "Theirs"
    assert srv.get("students", rid).organization_id == "default"
    assert o.get("students", rid).organization_id == "other"
    o.delete("students", rid)
    assert srv.get_data("students", rid)["firstName"] == "Mine"


def test_schemas_are_per_organisation(srv, other_org):
    o, _ = other_org
    mine = [m.name for m in srv.get_schema().models]
    theirs = [m.name for m in o.get_schema().models]
    assert sorted(mine) == ["enrollments", "students"]
    assert sorted(theirs) == ["enrollments", "students"]
    fresh = srv.create_key(org="fresh", role="admin")
    assert list(srv.as_(fresh["key"]).get_schema().models) == []
    expect_error(grpc.StatusCode.NOT_FOUND, srv.as_(fresh["key"]).get, "students", h.uid(), reason="not_found")


# ---- a limited token ------------------------------------------------------------


@pytest.fixture(scope="module")
def limited(srv):
    a = h.uid("ta")
    b = h.uid("tb")
    e = h.uid("te")
    srv.create("students", {"firstName": "A", "age": 20}, id=a, group="team-a")
    srv.create("students", {"firstName": "B", "age": 30}, id=b, group="team-b")
    srv.create("enrollments", {"studentId": a, "course": "c1", "grade": 1}, id=e, group="team-a")
    tok = mint(srv, LIMITED).token
    return srv.as_(tok), a, b, e


def assert_denied(fn, *args, can, model, group, field=None, receipt=True, **kw):
    d = expect_error(DENIED, fn, *args, reason="permission_denied", **kw)
    md = dict(d.error_info.metadata)
    assert (md.get("can"), md.get("model"), md.get("sync_group")) == (can, model, group), d
    if field is not None:
        assert md.get("field") == field, d
    if receipt:
        rc = d.receipt.error.required_capability
        assert (rc.can, rc.model, rc.sync_group) == (can, model, group), d
        assert d.receipt.error.code == "permission_denied"
        assert not d.receipt.success
    return d


def test_limited_token_updates_age_in_its_group(srv, limited):
    t, a, _, _ = limited
    r = t.update("students", a, {"age": 21})
    assert r.success
    assert srv.get_data("students", a)["age"] == 21


def test_limited_token_denied_another_field(srv, limited):
    t, a, _, _ = limited
    assert_denied(t.update, "students", a, {"firstName": "Z"}, can="update", model="students", group="team-a",
                  field="firstName")
    assert_denied(t.update, "students", a, {"age": 22, "status": "active"}, can="update", model="students",
                  group="team-a", field="status")
    assert srv.get_data("students", a)["firstName"] == "A"


def test_limited_token_denied_another_group(srv, limited):
    t, _, b, _ = limited
    assert_denied(t.update, "students", b, {"age": 31}, can="update", model="students", group="team-b")
    assert srv.get_data("students", b)["age"] == 30


def test_limited_token_denied_another_model(srv, limited):
    t, _, _, e = limited
    assert_denied(t.update, "enrollments", e, {"grade": 2}, can="update", model="enrollments", group="team-a")
    assert srv.get_data("enrollments", e)["grade"] == 1


def test_limited_token_denied_create(srv, limited):
    t, _, _, _ = limited
    rid = h.uid("tc")
    d = expect_error(DENIED, t.create, "students", {"firstName": "N", "age": 1}, id=rid, group="team-a",
                     reason="permission_denied")
    md = dict(d.error_info.metadata)
    assert (md["can"], md["model"], md["sync_group"]) == ("create", "students", "team-a")
    rc = d.receipt.error.required_capability
    assert (rc.can, rc.model, rc.sync_group) == ("create", "students", "team-a")
    srv.assert_not_found("students", rid)


def test_limited_token_denied_delete_replace_and_read(srv, limited):
    t, a, _, _ = limited
    assert_denied(t.delete, "students", a, can="delete", model="students", group="team-a")
    assert_denied(t.replace, "students", a, {"firstName": "R", "age": 3}, can="update", model="students",
                  group="team-a")
    assert_denied(t.get, "students", a, can="read", model="students", group="team-a", receipt=False)
    assert srv.get_data("students", a)["firstName"] == "A"


def test_limited_token_cannot_push_a_schema_or_mint(srv, limited):
    t, _, _, _ = limited
    assert_denied(t.push_schema, h.SCHOOL, can="admin", model="*", group="*", receipt=False)
    expect_error(DENIED, mint, t, LIMITED, reason="permission_denied")


def test_limited_token_missing_record_is_denied_for_other_models(srv, limited):
    t, _, _, _ = limited
    assert_denied(t.update, "enrollments", h.uid("none"), {"grade": 1}, can="update", model="enrollments",
                  group="*")
    expect_error(grpc.StatusCode.NOT_FOUND, t.update, "students", h.uid("none"), {"age": 1}, reason="not_found")


def test_writable_by_roles_are_enforced(srv, tmp_path):
    k = srv.create_key(org="roles", role="admin")
    admin = srv.as_(k["key"])
    admin.push_schema([{"name": "notes", "fields": [
        {"name": "text", "type": "STRING"},
        {"name": "grade", "type": "INTEGER", "writableBy": ["teacher"]}]}])
    everything = [{"can": ["read", "create", "update"], "model": "*", "group": "*"}]
    teacher = srv.as_(srv.create_key(org="roles", role="teacher", caps=everything)["key"])
    pupil = srv.as_(srv.create_key(org="roles", role="pupil", caps=everything)["key"])
    rid = h.uid("n")
    teacher.create("notes", {"text": "t", "grade": 5}, id=rid)
    pupil.update("notes", rid, {"text": "edited"})
    d = assert_denied(pupil.update, "notes", rid, {"grade": 6}, can="update", model="notes", group="default")
    assert dict(d.error_info.metadata)["field"] == "grade"
    expect_error(DENIED, pupil.create, "notes", {"grade": 1}, reason="permission_denied")
    assert admin.get_data("notes", rid) == {"text": "edited", "grade": 5}


# ---- MintToken ------------------------------------------------------------------


def test_mint_token_default_ttl_and_cap(srv):
    now = time.time()
    t = mint(srv, [{"can": ["read"], "model": "*", "group": "*"}])
    assert t.token.startswith("v4.public.") and t.jti
    assert abs(t.expires_at.seconds - (now + 900)) < 30
    t = mint(srv, [{"can": ["read"], "model": "*", "group": "*"}], ttl=99999)
    assert abs(t.expires_at.seconds - (now + 3600)) < 30
    t = mint(srv, [{"can": ["read"], "model": "*", "group": "*"}], ttl=60)
    assert abs(t.expires_at.seconds - (now + 60)) < 30
    expect_error(grpc.StatusCode.INVALID_ARGUMENT, mint, srv, [{"can": ["read"], "model": "*", "group": "*"}],
                 ttl=-1, reason="validation_failed")
    expect_error(grpc.StatusCode.INVALID_ARGUMENT, mint, srv, [], reason="validation_failed")
    expect_error(grpc.StatusCode.INVALID_ARGUMENT, mint, srv, [{"can": ["fly"], "model": "*", "group": "*"}],
                 reason="validation_failed")


def test_mint_token_attenuation(srv):
    k = srv.create_key(role="team", caps=[{"can": ["read", "update"], "model": "students", "group": "team-a"}])
    t = mint(srv, LIMITED, auth=k["key"])
    assert t.token
    for caps, can, model, group in [
        ([{"can": ["create"], "model": "students", "group": "team-a"}], "create", "students", "team-a"),
        ([{"can": ["update"], "model": "students", "group": "team-b"}], "update", "students", "team-b"),
        ([{"can": ["read"], "model": "*", "group": "team-a"}], "read", "*", "team-a"),
        ([{"can": ["read"], "model": "enrollments", "group": "team-a"}], "read", "enrollments", "team-a"),
    ]:
        d = expect_error(DENIED, mint, srv, caps, auth=k["key"], reason="permission_denied")
        md = dict(d.error_info.metadata)
        assert (md["can"], md["model"], md["sync_group"]) == (can, model, group), d


def test_a_token_cannot_mint(srv):
    t = mint(srv, [{"can": ["read", "admin"], "model": "*", "group": "*"}])
    expect_error(DENIED, mint, srv, [{"can": ["read"], "model": "*", "group": "*"}], auth=t.token,
                 reason="permission_denied")


def test_token_acts_as_its_key(srv):
    k = srv.create_key(role="writer", caps=[{"can": ["create", "read"], "model": "*", "group": "*"}])
    t = mint(srv, [{"can": ["create", "read"], "model": "students", "group": "*"}], auth=k["key"])
    rid = h.uid("tk")
    srv.as_(t.token).create("students", {"firstName": "T"}, id=rid)
    rec = srv.get("students", rid)
    assert rec.created_by == k["key_id"]


def test_recordctl_inspect_shows_claims_not_secrets(srv):
    t = mint(srv, LIMITED)
    out = srv.ctl("token", "inspect", t.token).stdout
    assert t.jti in out and '"caps"' in out and "team-a" in out
    assert srv.admin_key not in out


# ---- key rotation -------------------------------------------------------------------


def test_key_rotation_two_kids_then_one_removed(server_factory, tmp_path):
    s = server_factory(name="rot")
    s.push_schema(h.SCHOOL)
    other = other_init(tmp_path, "newkey")
    caps = [{"can": ["read", "create", "admin"], "model": "*", "group": "*"}]
    old = s.mint_offline(caps, sub="rot")["token"]
    new = s.mint_offline(caps, sub="rot", signing_key=other / "signing.key")["token"]
    s.as_(old).get_schema()
    assert_rejected(s, new)
    pubs = list((other / "trusted-keys").glob("*.pub"))
    assert len(pubs) == 1
    shutil.copy(pubs[0], s.var / "trusted-keys" / pubs[0].name)
    s.restart()
    s.as_(old).get_schema()
    s.as_(new).get_schema()
    (s.var / "trusted-keys" / pubs[0].name).unlink()
    s.restart()
    s.as_(old).get_schema()
    assert_rejected(s, new)


def test_server_refuses_to_start_without_keys(tmp_path):
    import subprocess

    res = subprocess.run([str(h.BIN), "--grpc-listen", "127.0.0.1:0", "--db", str(tmp_path / "r.db"),
                          "--pepper-file", str(tmp_path / "nope")], capture_output=True, text=True, timeout=30)
    assert res.returncode == 1
    assert "recordctl init" in res.stderr


# ---- rate limiting --------------------------------------------------------------------


def test_rate_limit_is_resource_exhausted_with_retry_info(server_factory):
    s = server_factory("--rate-limit", "1", "--rate-burst", "2", name="rl")
    other = s.create_key(role="other")
    s.get_schema()
    s.get_schema()
    d = expect_error(grpc.StatusCode.RESOURCE_EXHAUSTED, s.get_schema, reason="rate_limited")
    retry = [a for a in d.other if a.type_url == "type.googleapis.com/google.rpc.RetryInfo"]
    assert len(retry) == 1, d
    info = h.pb.error_details.RetryInfo.FromString(retry[0].value)
    delay = info.retry_delay.seconds + info.retry_delay.nanos / 1e9
    assert 0 < delay <= 1.0
    s.as_(other["key"]).get_schema()  # its own bucket
    time.sleep(delay + 0.05)
    s.get_schema()


# ---- claims belong to their holder ------------------------------------------------------


def test_claim_is_useless_to_another_principal(srv):
    rid = h.uid("cl")
    srv.create("students", {"firstName": "C"}, id=rid)
    other = srv.as_(srv.create_key(role="other")["key"])
    c = srv.call("AcquireClaim", h.pb.claims.AcquireClaimRequest(model="students", id=rid, ttl_seconds=30))
    expect_error(grpc.StatusCode.ABORTED, other.update, "students", rid, {"age": 9}, claim=c.claim_id,
                 reason="claimed")
    expect_error(grpc.StatusCode.ABORTED, other.call, "ReleaseClaim",
                 h.pb.claims.ReleaseClaimRequest(claim_id=c.claim_id), reason="claimed")
    srv.update("students", rid, {"age": 9}, claim=c.claim_id)
    srv.call("ReleaseClaim", h.pb.claims.ReleaseClaimRequest(claim_id=c.claim_id))
    other.update("students", rid, {"age": 10})
    assert srv.get_data("students", rid)["age"] == 10


def test_claims_need_update_on_the_group(srv, limited):
    t, a, b, _ = limited
    c = t.call("AcquireClaim", h.pb.claims.AcquireClaimRequest(model="students", id=a, ttl_seconds=5))
    t.call("ReleaseClaim", h.pb.claims.ReleaseClaimRequest(claim_id=c.claim_id, model="students", id=a))
    assert_denied(t.call, "AcquireClaim", h.pb.claims.AcquireClaimRequest(model="students", id=b, ttl_seconds=5),
                  can="update", model="students", group="team-b", receipt=False)
