"""Cost of GET /v1/openapi.json by the size of the schema (docs/PERFORMANCE.md,
"The OpenAPI document"): one server, N models of the students shape, 20
GETs each of the organisation's document (full and If-None-Match) and of the
anonymous one. Usage: RECORDD_BIN=build/recordd python3 bench/openapi_doc.py [N]"""

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "e2e"))
import harness as h  # noqa: E402
import requests  # noqa: E402


def timed(session, url, headers, n=20):
    t = time.perf_counter()
    for _ in range(n):
        session.get(url, headers=headers).raise_for_status()
    return (time.perf_counter() - t) / n * 1000


def main():
    models = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    h.pb.ensure()
    srv = h.Server(Path(tempfile.mkdtemp()) / "recordd").start()
    try:
        srv.push_schema([{**h.STUDENTS, "name": f"m{i}"} for i in range(models)])
        s = requests.Session()
        url = srv.http_url + "/v1/openapi.json"
        auth = {"Authorization": f"Bearer {srv.admin_key}"}
        first = s.get(url, headers=auth)
        print(f"models {models}: document {len(first.content)} bytes")
        print(f"  full GET      {timed(s, url, auth):8.1f} ms")
        print(f"  If-None-Match {timed(s, url, {**auth, 'If-None-Match': first.headers['ETag']}):8.1f} ms")
        print(f"  anonymous     {timed(s, url, {}):8.1f} ms")
    finally:
        srv.kill()


if __name__ == "__main__":
    main()
