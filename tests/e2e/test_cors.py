"""Browser access (docs/API.md, "Browser access (CORS)"): --cors-origins,
preflight answers, the CORS headers on every kind of answer, and the change
feed read from a browser — by a fetch-based SSE client
(@microsoft/fetch-event-source under node) and by a page served from another
origin in headless Chromium.

The npm packages (pinned in tests/node/package.json) come from build/node
(`make node-deps`, or harness.node_tools when run on their own). Those tests
skip only when node/npm are missing; a failed install is a failure. The
Chromium tests skip only when no chromium binary is installed (Debian
package `chromium`, in the Makefile's deps).
"""

import json
import os
import queue
import shutil
import subprocess
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

import harness as h

ALLOWED = "https://app.example.com"
OTHER_ALLOWED = "http://localhost:5173"
EXPOSED = {"etag", "location", "x-request-id", "idempotent-replayed", "preference-applied", "retry-after"}
READ_HEADERS = {"authorization", "content-type", "idempotency-key", "if-match", "if-none-match", "prefer",
                "last-event-id", "x-request-id", "grpc-timeout"}
PROBLEM = "application/problem+json"

BROWSER_DIR = Path(__file__).resolve().parent / "browser"
NODE_MODULES = h.NODE_DIR / "node_modules"


def split(value):
    return {v.strip().lower() for v in (value or "").split(",") if v.strip()}


def no_cors_headers(r):
    return [k for k in r.headers if k.lower().startswith("access-control-")]


@pytest.fixture(scope="module")
def cors(tmp_path_factory):
    """A server whose allow-list holds two origins, with the test schema."""
    srv = h.Server(tmp_path_factory.mktemp("cors") / "recordd",
                   ("--cors-origins", f"{ALLOWED}, {OTHER_ALLOWED}", "--sse-keepalive", "1"))
    srv.start()
    srv.push_schema(h.SCHOOL)
    yield srv
    problem = srv.kill()
    if problem:
        pytest.fail(problem, pytrace=False)


def preflight(srv, path, method, origin=ALLOWED, headers=None):
    hdrs = {"Origin": origin, "Access-Control-Request-Method": method}
    if headers:
        hdrs["Access-Control-Request-Headers"] = headers
    return srv.http("OPTIONS", path, headers=hdrs, auth=None)  # browsers send no credential here


# ---- the flag -----------------------------------------------------------------------------------------------


def test_cors_is_off_by_default(server):
    server.push_schema(h.SCHOOL)
    r = preflight(server, "/v1/models/students", "POST", headers="authorization, content-type")
    assert r.status_code == 405, r.text  # OPTIONS is not a verb of the API
    assert no_cors_headers(r) == [], r.headers
    for r in (server.http("GET", "/v1/models/students", headers={"Origin": ALLOWED}),
              server.http("GET", "/healthz", headers={"Origin": ALLOWED}, auth=None),
              server.http("GET", "/v1/models/students/nope", headers={"Origin": ALLOWED})):
        assert r.status_code in (200, 404), r.text
        assert no_cors_headers(r) == [] and "Vary" not in r.headers, r.headers


def start_failure(tmp_path, *args, env=None):
    e = dict(os.environ)
    e.update(env or {})
    res = subprocess.run([str(h.BIN), "--db", str(tmp_path / "r.db"), "--grpc-listen", "127.0.0.1:0",
                          "--http-listen", "127.0.0.1:0", *args],
                         capture_output=True, text=True, timeout=30, env=e, stdin=subprocess.DEVNULL)
    return res.returncode, res.stderr


@pytest.mark.parametrize("value, named", [
    ("https://app.example.com/", "'https://app.example.com/'"),
    ("https://app.example.com, *", "'*'"),
    ("app.example.com", "'app.example.com'"),
    ("https://App.Example.com", "'https://App.Example.com'"),
    ("https://app.example.com:443", "drop ':443'"),
    ("http://localhost:5173,,http://x", "empty entry"),
    ("http://localhost:99999", "'http://localhost:99999'"),
])
def test_a_malformed_origin_list_is_a_usage_error_naming_the_entry(tmp_path, value, named):
    rc, err = start_failure(tmp_path, "--cors-origins", value)
    assert rc == 2 and "--cors-origins" in err and named in err, (rc, err)


def test_the_origin_list_from_the_environment_is_checked_too(tmp_path):
    rc, err = start_failure(tmp_path, env={"RECORDD_CORS_ORIGINS": "https://ok.example, ftp://files.example"})
    assert rc == 2 and "RECORDD_CORS_ORIGINS" in err and "'ftp://files.example'" in err, (rc, err)


# ---- preflight ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path, method, asked, methods", [
    ("/v1/models/students", "POST", "authorization, content-type, idempotency-key, prefer",
     {"GET", "HEAD", "POST"}),
    ("/v1/models/students/s1", "PATCH", "authorization, content-type, if-match, prefer",
     {"GET", "HEAD", "PATCH", "PUT", "DELETE"}),
    ("/v1/models/students/s1", "DELETE", "authorization, if-match", {"GET", "HEAD", "PATCH", "PUT", "DELETE"}),
    ("/v1/changes", "GET", "authorization, last-event-id", {"GET", "HEAD"}),
    ("/v1/schema", "PUT", "authorization, content-type, if-match", {"GET", "HEAD", "PUT"}),
    ("/v1/openapi.json", "GET", "authorization, if-none-match", {"GET", "HEAD"}),
    ("/healthz", "GET", None, {"GET", "HEAD"}),
    ("/problems/version_conflict", "GET", None, {"GET", "HEAD"}),
])
def test_a_preflight_from_an_allowed_origin_names_methods_and_headers(cors, path, method, asked, methods):
    for origin in (ALLOWED, OTHER_ALLOWED):
        r = preflight(cors, path, method, origin=origin, headers=asked)
        assert r.status_code == 204, r.text
        assert r.content == b""
        assert r.headers["Access-Control-Allow-Origin"] == origin
        assert "origin" in split(r.headers.get("Vary"))
        allowed = {m.upper() for m in split(r.headers["Access-Control-Allow-Methods"])}
        assert allowed == methods and method in allowed, r.headers
        assert split(r.headers["Access-Control-Allow-Headers"]) == READ_HEADERS
        assert split(asked) <= split(r.headers["Access-Control-Allow-Headers"])
        assert r.headers["Access-Control-Max-Age"] == "600"
        # recordd takes credentials from Authorization, never from cookies
        assert "Access-Control-Allow-Credentials" not in r.headers
        assert r.headers["X-Request-Id"]


def test_a_preflight_runs_no_handler(cors):
    before = cors.http("GET", "/v1/models/enrollments").json()
    r = preflight(cors, "/v1/models/enrollments", "POST", headers="authorization, content-type")
    assert r.status_code == 204
    assert cors.http("GET", "/v1/models/enrollments").json() == before


@pytest.mark.parametrize("origin", [
    "https://evil.example",
    "https://app.example.com.evil.example",
    "https://app.example.co",
    "http://app.example.com",
    "https://app.example.com:8443",
    "https://APP.example.com",
    "null",
    "https://app.example.com" + "m" * 400,
])
def test_a_preflight_from_another_origin_is_refused_without_cors_headers(cors, origin):
    r = preflight(cors, "/v1/models/students", "POST", origin=origin, headers="authorization")
    assert r.status_code == 403, r.text
    assert r.headers["Content-Type"] == PROBLEM
    p = r.json()
    assert p["code"] == "permission_denied" and p["field"] == "Origin", p
    assert "--cors-origins" in p["detail"]
    assert no_cors_headers(r) == [], r.headers
    assert "origin" in split(r.headers.get("Vary"))


def test_a_preflight_for_a_path_without_routes_is_404(cors):
    r = preflight(cors, "/v1/nothing/here", "GET")
    assert r.status_code == 404 and r.json()["code"] == "not_found", r.text


def test_options_without_a_requested_method_is_not_a_preflight(cors):
    r = cors.http("OPTIONS", "/v1/models/students", headers={"Origin": ALLOWED}, auth=None)
    assert r.status_code == 405 and r.json()["code"] == "method_not_allowed", r.text
    assert r.headers["Access-Control-Allow-Origin"] == ALLOWED  # an ordinary answer to an allowed origin
    assert "Access-Control-Allow-Methods" not in r.headers


# ---- actual responses ---------------------------------------------------------------------------------------


def assert_cors(r, origin=ALLOWED):
    assert r.headers.get("Access-Control-Allow-Origin") == origin, (r.status_code, r.headers)
    assert EXPOSED <= split(r.headers["Access-Control-Expose-Headers"]), r.headers
    assert "origin" in split(r.headers.get("Vary"))
    assert "Access-Control-Allow-Credentials" not in r.headers


def test_every_kind_of_answer_to_an_allowed_origin_carries_cors_headers(cors):
    o = {"Origin": ALLOWED}
    created = cors.http("POST", "/v1/models/students?id=c1", json_body={"firstName": "Ada"},
                        headers={**o, "Idempotency-Key": "cors-1"})
    assert created.status_code == 201, created.text
    assert_cors(created)
    assert created.headers["Location"] and created.headers["ETag"]
    replay = cors.http("POST", "/v1/models/students?id=c1", json_body={"firstName": "Ada"},
                       headers={**o, "Idempotency-Key": "cors-1"})
    assert replay.headers.get("Idempotent-Replayed") == "true"
    assert_cors(replay)
    minimal = cors.http("PATCH", "/v1/models/students/c1", json_body={"age": 30},
                        headers={**o, "If-Match": created.headers["ETag"], "Prefer": "return=minimal"})
    assert minimal.status_code == 204 and minimal.headers["Preference-Applied"] == "return=minimal"
    assert_cors(minimal)
    ok = cors.http("GET", "/v1/models/students/c1", headers=o)
    assert ok.status_code == 200
    assert_cors(ok)

    problems = {
        401: cors.http("GET", "/v1/models/students/c1", headers=o, auth=None),
        404: cors.http("GET", "/v1/models/students/nope", headers=o),
        409: cors.http("POST", "/v1/models/students?id=c1", json_body={"firstName": "Ada"}, headers=o),
        412: cors.http("DELETE", "/v1/models/students/c1", headers={**o, "If-Match": '"99"'}),
        405: cors.http("POST", "/v1/changes", headers=o),
    }
    for status, r in problems.items():
        assert r.status_code == status and r.headers["Content-Type"] == PROBLEM, (status, r.text)
        assert_cors(r)
    # the 401 of a request with a body is answered before the body is read
    early = cors.http("POST", "/v1/models/students", json_body={"firstName": "x"}, headers=o, auth="rk_bogus")
    assert early.status_code == 401
    assert_cors(early)

    for path in ("/healthz", "/readyz", "/metrics", "/problems", "/problems/not_found"):
        r = cors.http("GET", path, headers=o, auth=None)
        assert r.status_code == 200, (path, r.text)
        assert_cors(r)

    feed = cors.http("GET", "/v1/changes?sinceSyncId=0", headers={"Origin": OTHER_ALLOWED}, stream=True)
    try:
        assert feed.status_code == 200 and feed.headers["Content-Type"] == "text/event-stream"
        assert_cors(feed, OTHER_ALLOWED)
    finally:
        feed.close()


def test_another_origin_is_served_without_cors_headers(cors):
    """CORS is enforced by browsers: the server answers as to anyone, with
    nothing that lets a page of that origin read the answer."""
    for origin in ("https://evil.example", None):
        hdrs = {"Origin": origin} if origin else {}
        r = cors.http("POST", "/v1/models/enrollments", json_body={"studentId": "s", "course": origin or "none"},
                      headers=hdrs)
        assert r.status_code == 201, r.text
        assert no_cors_headers(r) == [], r.headers
        assert "origin" in split(r.headers.get("Vary"))  # the answer depends on Origin
        r = cors.http("GET", "/v1/models/students/nope", headers=hdrs)
        assert r.status_code == 404 and no_cors_headers(r) == []


# ---- node: a fetch-based SSE client ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def node():
    """node, with the browser-side packages installed into build/node."""
    node_bin = shutil.which("node")
    if node_bin is None:
        pytest.skip("node is not installed, so the browser-side clients cannot run (apt-get install npm)")
    h.node_tools("@microsoft/fetch-event-source", "playwright-core")
    return node_bin


class NodeScript:
    """A node script whose stdout lines are JSON objects, read in a thread."""

    def __init__(self, node_bin, script, *args):
        env = dict(os.environ, NODE_PATH=str(NODE_MODULES))
        self.proc = subprocess.Popen([node_bin, str(BROWSER_DIR / script), *map(str, args)],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                     stdin=subprocess.DEVNULL)
        self.lines = queue.Queue()
        self.err = []
        threading.Thread(target=self._pump_out, daemon=True).start()
        threading.Thread(target=self._pump_err, daemon=True).start()

    def _pump_out(self):
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)  # end of output

    def _pump_err(self):
        for line in self.proc.stderr:
            self.err.append(line.rstrip("\n"))

    def next(self, timeout=90):
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            self.proc.kill()
            raise AssertionError(f"no output from node in {timeout}s; stderr: {''.join(self.err)}")
        if line is None:
            self.proc.wait(timeout=30)
            raise AssertionError(f"node exited {self.proc.returncode} early:\n" + "\n".join(self.err))
        return json.loads(line)

    def finish(self):
        try:
            rc = self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
        assert rc == 0, "\n".join(self.err)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def write_live(srv, model, ids):
    """Writes one enrollment per id through the HTTP gateway; returns the
    sync ids of the writes in order."""
    sync_ids = []
    for i in ids:
        r = srv.http("POST", f"/v1/models/{model}?id={i}", json_body={"studentId": i, "course": "live"})
        assert r.status_code == 201, r.text
        sync_ids.append(r.json()["lastSyncId"])
    return sync_ids


def head_sync_id(srv):
    """The newest sync id of the organisation (0 when nothing was written)."""
    r = srv.http("POST", "/v1/models/students", json_body={"firstName": "marker"})
    assert r.status_code == 201, r.text
    return int(r.json()["lastSyncId"])


def test_fetch_event_source_reads_the_feed_with_an_authorization_header(cors, node):
    since = head_sync_id(cors)
    ids = [f"node-{n}" for n in range(5)]
    client = NodeScript(node, "sse_client.js",
                        f"{cors.http_url}/v1/changes?models=enrollments&sinceSyncId={since}", cors.admin_key,
                        len(ids))
    try:
        opened = client.next()
        assert opened["open"] == 200 and opened["requestId"], opened
        sync_ids = write_live(cors, "enrollments", ids)  # the stream is open: these arrive live
        events = [client.next() for _ in ids]
        client.finish()
    finally:
        client.kill()
    assert [e["data"]["id"] for e in events] == ids
    assert [e["data"]["op"] for e in events] == ["CREATE"] * len(ids)
    assert [e["id"] for e in events] == sync_ids == [e["data"]["syncId"] for e in events]
    assert [int(s) for s in sync_ids] == sorted(int(s) for s in sync_ids)


def test_fetch_event_source_gets_the_problem_without_a_valid_key(cors, node):
    client = NodeScript(node, "sse_client.js", f"{cors.http_url}/v1/changes", "rk_not_a_key", 1)
    try:
        rc = client.proc.wait(timeout=60)
    finally:
        client.kill()
    err = "\n".join(client.err)
    assert rc == 1 and "status 401" in err and "unauthenticated" in err, err


# ---- Chromium: a page from another origin ---------------------------------------------------------------------


def chromium_binary():
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    return None


@pytest.fixture(scope="module")
def chromium(node):
    path = chromium_binary()
    if path is None:
        pytest.skip("no chromium binary: install Debian's chromium package (make deps) to run the browser tests")
    return path


@pytest.fixture(scope="module")
def page_site():
    """tests/e2e/browser served on its own 127.0.0.1 port: another origin
    than any recordd listener. Yields that origin."""
    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(BROWSER_DIR)))
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def request_log(srv):
    """The HTTP request lines of the server's log."""
    out = []
    for line in srv.log_path.read_text().splitlines():
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if obj.get("msg") == "request" and obj.get("transport") == "http":
            out.append(obj)
    return out


def open_page(node_bin, chromium_path, site, srv, want, *write_id):
    from urllib.parse import urlencode

    url = f"{site}/feed.html?" + urlencode({"api": srv.http_url, "key": srv.admin_key})
    return NodeScript(node_bin, "drive_chromium.js", chromium_path, url, want, *write_id)


def test_a_page_from_an_allowed_origin_receives_live_events_in_chromium(tmp_path, node, chromium, page_site):
    srv = h.Server(tmp_path / "recordd", ("--cors-origins", f"{ALLOWED},{page_site}", "--sse-keepalive", "1"))
    srv.start()
    try:
        srv.push_schema(h.SCHOOL)
        ids = [f"page-{n}" for n in range(4)]
        page = open_page(node, chromium, page_site, srv, len(ids), "from-page")
        try:
            opened = page.next()
            assert opened["state"] == "open", opened
            assert opened["requestId"], opened  # X-Request-Id is exposed to the page
            sync_ids = write_live(srv, "enrollments", ids)  # written while the page listens
            events = page.next()["events"]
            writes = page.next()["writes"]
            page.finish()
        finally:
            page.kill()
        assert [e["data"]["id"] for e in events] == ids, events
        assert [e["id"] for e in events] == sync_ids
        assert all(e["event"] == "message" and e["data"]["op"] == "CREATE" for e in events)
        # the page's own writes pass their preflights, and it reads the exposed headers
        created, patched, stale = writes["created"], writes["patched"], writes["stale"]
        assert created["status"] == 201, writes
        assert created["Location"] == "/v1/models/enrollments/from-page" and created["ETag"] == '"1"', writes
        assert created["X-Request-Id"] and created["Preference-Applied"] == "return=representation", writes
        assert patched["status"] == 200 and patched["ETag"] == '"2"', writes
        assert stale["status"] == 412 and stale["body"]["code"] == "version_conflict", writes
        assert srv.http("GET", "/v1/models/enrollments/from-page").json()["data"]["grade"] == 97
        # the browser asked first: a preflight, answered without a credential
        reqs = request_log(srv)
        assert any(r["http_status"] == 204 and "principal_id" not in r for r in reqs), reqs
    finally:
        problem = srv.kill()
        if problem:
            pytest.fail(problem, pytrace=False)


def test_a_page_from_an_origin_not_in_the_list_is_blocked_by_chromium(tmp_path, node, chromium, page_site):
    srv = h.Server(tmp_path / "recordd", ("--cors-origins", ALLOWED))
    srv.start()
    try:
        page = open_page(node, chromium, page_site, srv, 1)
        try:
            result = page.next()
            page.finish()
        finally:
            page.kill()
        assert result["state"].startswith("error: TypeError"), result  # "Failed to fetch"
        assert result["requestId"] is None
        # the preflight was refused, so the feed itself was never requested
        reqs = request_log(srv)
        assert any(r["http_status"] == 403 for r in reqs), reqs
        assert not any(r["method"] == "GET /v1/changes" for r in reqs), reqs
    finally:
        problem = srv.kill()
        if problem:
            pytest.fail(problem, pytrace=False)
