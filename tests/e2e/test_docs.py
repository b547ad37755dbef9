"""The README and docs/ stand alone: a reader who has only the repository
can follow every reference in them."""

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def test_docs_do_not_send_readers_outside_the_repository():
    for doc in DOCS:
        text = doc.read_text()
        for bad in ("DESIGN.md", "../shared", "NOTES-"):
            assert bad not in text, f"{doc.relative_to(ROOT)} names {bad}"
        # a section sign is only for RFCs ("RFC 9110 §13.1.1")
        for m in re.finditer(r"§\s*\d", text):
            before = text[max(0, m.start() - 12):m.start()]
            assert re.search(r"RFC \d+ $", before), \
                f"{doc.relative_to(ROOT)}: '{text[m.start() - 30:m.end() + 10]}' points at an outside section"


def test_relative_links_and_paths_in_the_docs_exist():
    for doc in DOCS:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", doc.read_text()):
            assert (doc.parent / target).exists(), f"{doc.relative_to(ROOT)} links to missing {target}"


def recordctl_errors(*args):
    import os
    import subprocess

    build = pathlib.Path(os.environ.get("RECORDD_BUILD", ROOT / "build"))
    return subprocess.run([str(build / "recordctl"), "errors", *args], capture_output=True,
                          text=True)


def test_the_error_catalogue_is_generated_from_the_error_table():
    """docs/errors.md is what `recordctl errors` (the error table) prints:
    a code added to the table without regenerating it fails here
    (`make errors-doc`)."""
    out = recordctl_errors()
    assert out.returncode == 0, out.stderr
    assert out.stdout == (ROOT / "docs" / "errors.md").read_text(), \
        "docs/errors.md is stale: run make errors-doc"
    assert recordctl_errors("no_such_code").returncode == 1


def test_problem_types_resolve_to_their_catalogue_entry(server):
    """The type of every problem, urn:recordd:problem:<code>, is described at
    GET /problems/<code>, with no credential."""
    r = server.http("PUT", "/v1/schema", json_body={"schema": {"models": []}},
                    headers={"If-Match": '"41"'})
    assert r.status_code == 412, r.text
    code = r.json()["type"].rsplit(":", 1)[1]
    doc = server.http("GET", f"/problems/{code}", auth=None)
    assert doc.status_code == 200 and doc.headers["Content-Type"].startswith("text/markdown")
    assert doc.text.startswith(f"## {code}\n") and "What to do:" in doc.text
    assert doc.text in (ROOT / "docs" / "errors.md").read_text()
    whole = server.http("GET", "/problems", auth=None)
    assert whole.text == (ROOT / "docs" / "errors.md").read_text()
    missing = server.http("GET", "/problems/no_such_code", auth=None)
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"
